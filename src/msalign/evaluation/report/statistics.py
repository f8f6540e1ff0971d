"""The numbers behind the figures: sentiment classes, confusion counts, per-class accuracy, a 2-D PCA
and the modality gap. Pure numpy, no plotting."""

from __future__ import annotations

import numpy as np

from msalign import metrics

SIMS_CLASS_NAMES = ["negative", "weakly neg.", "neutral", "weakly pos.", "positive"]


def sentiment_classes(values: np.ndarray, metric_set: str) -> tuple[np.ndarray, list[str]]:
    """Class index per clip and the class names, as the dataset's multi-class accuracy counts them.

    MOSI/MOSEI: ``round(clip(score, -3, 3))`` (round half to even, in float32, exactly as Acc-7),
    classes -3..3 -> indices 0..6. SIMS: the 5 MMSA buckets of the clipped score. IEMOCAP: argmax of
    (N, 6) logits, or the integer labels.
    """
    values = np.asarray(values)
    if metric_set == "iemocap":
        index = values.argmax(axis=1) if values.ndim == 2 else values.astype(np.int64).reshape(-1)
        return index, [str(i) for i in range(metrics.IEMOCAP_CLASSES)]
    scores = values.reshape(-1).astype(np.float32)
    if metric_set == "sims":
        return metrics.sims_classes(scores, 5), list(SIMS_CLASS_NAMES)
    index = (np.round(np.clip(scores, -3.0, 3.0)) + 3).astype(np.int64)
    return index, ["-3", "-2", "-1", "0", "+1", "+2", "+3"]


def confusion_counts(preds: np.ndarray, labels: np.ndarray, metric_set: str) -> tuple[np.ndarray, list[str]]:
    """(K, K) counts: rows true class, columns predicted class."""
    predicted, names = sentiment_classes(preds, metric_set)
    true, _ = sentiment_classes(labels, metric_set)
    counts = np.zeros((len(names), len(names)), dtype=np.int64)
    np.add.at(counts, (true, predicted), 1)
    return counts, names


def per_class_accuracy(counts: np.ndarray) -> np.ndarray:
    """Share of each true class predicted correctly; NaN for a class without clips."""
    totals = counts.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, np.diag(counts) / np.maximum(totals, 1), np.nan)


def pca_2d(x: np.ndarray, fit: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Projection of every row on the first two principal components and their shares of the variance.

    ``fit``: boolean row mask of the rows the components (and the centre) are fitted on, e.g. without
    a few extreme clips that would otherwise claim a whole component; every row is projected.
    """
    fit_rows = x if fit is None else x[fit]
    centre = fit_rows.mean(axis=0, keepdims=True)
    _, singular, vt = np.linalg.svd(fit_rows - centre, full_matrices=False)
    components = vt[:2]
    if components.shape[0] < 2:  # 1-d features: pad with a zero axis
        components = np.vstack([components, np.zeros_like(components)])
        singular = np.concatenate([singular, [0.0]])
    total = float((singular**2).sum()) or 1.0
    return (x - centre) @ components.T, (singular[:2] ** 2) / total


def typical_rows(x: np.ndarray, groups: list[slice], quantile: float = 0.99) -> np.ndarray:
    """Rows within the ``quantile`` of their group's distances to the group median (the rest: outliers)."""
    keep = np.zeros(len(x), dtype=bool)
    for group in groups:
        rows = x[group]
        distance = np.linalg.norm(rows - np.median(rows, axis=0), axis=1)
        keep[group] = distance <= np.quantile(distance, quantile)
    return keep


def modality_gap(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Distance between the two modalities' centroids (in feature units), the mean distance of a
    clip to its own modality's centroid (the spread), and their ratio (scale-free)."""
    ca, cb = a.mean(axis=0), b.mean(axis=0)
    distance = float(np.linalg.norm(ca - cb))
    spread = float(0.5 * (np.linalg.norm(a - ca, axis=1).mean() + np.linalg.norm(b - cb, axis=1).mean()))
    return {"centroid_distance": distance, "spread": spread, "ratio": distance / spread if spread > 0 else float("inf")}


__all__ = [
    "SIMS_CLASS_NAMES",
    "confusion_counts",
    "modality_gap",
    "pca_2d",
    "per_class_accuracy",
    "sentiment_classes",
    "typical_rows",
]
