"""Evaluation metrics, numerically matching MMSA 2.2.1 (``metricsTop``) and DecAlign.

``compute(preds, truth, metric_set)`` returns a flat ``{name: float}`` dict, every value
rounded to 4 decimals as the peer code does. Regression inputs are cast to float32
before anything else, because the peers evaluate float32 tensors: thresholds such as
SIMS's ``-0.7`` / ``0.1`` bucket edges and ``np.round`` of ``x.5`` values are then
compared exactly as they are there (a float64 path puts ``float32(0.1)`` above ``0.1``).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from typing import Any, Literal

import numpy as np
from sklearn.metrics import accuracy_score, f1_score

from msalign.errors import MsalignError

METRIC_SETS = ("mosi", "mosei", "sims", "iemocap")
IEMOCAP_CLASSES = 6
_SIMS_EDGES = {
    2: (-1.01, 0.0, 1.01),
    3: (-1.01, -0.1, 0.1, 1.01),
    5: (-1.01, -0.7, -0.1, 0.1, 0.7, 1.01),
}
_HEADLINE = {
    "mosi": ["Has0_acc_2", "Non0_acc_2", "Non0_F1_score", "Mult_acc_7", "MAE", "Corr"],
    "sims": ["Mult_acc_2", "F1_score", "Mult_acc_5", "MAE", "Corr"],
    "iemocap": ["WAcc", "WAF1"],
}
_RAW_KEYS = ("MAE", "Corr", "loss")


def _metric_set(name: str) -> str:
    key = str(name).lower()
    if key not in METRIC_SETS:
        raise MsalignError(f"unknown metric set {name!r}; expected one of {', '.join(METRIC_SETS)}")
    return key


def _to_numpy(x: Any, what: str) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor, CPU or GPU
        x = x.detach().cpu().numpy()
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise MsalignError(f"{what} is not numeric: {exc}") from None
    if arr.size == 0:
        raise MsalignError(f"{what} is empty (shape {arr.shape})")
    if not np.all(np.isfinite(arr)):
        raise MsalignError(f"{what} has {int((~np.isfinite(arr)).sum())} non-finite values (shape {arr.shape})")
    return arr


def _r4(x: float) -> float:
    return round(float(x), 4)


def _corr(p: np.ndarray, t: np.ndarray) -> float:
    """Pearson correlation; 0.0 (not NaN) when either side is constant."""
    if np.ptp(p) == 0 or np.ptp(t) == 0:
        return 0.0
    return float(np.corrcoef(p, t)[0, 1])


def _wf1(t: np.ndarray, p: np.ndarray, labels: Sequence[int] | None = None) -> float:
    return float(f1_score(t, p, labels=labels, average="weighted", zero_division=0))


def _mosi(p: np.ndarray, t: np.ndarray) -> dict[str, float]:
    """MOSI/MOSEI: Has0/Non0 Acc-2 + weighted F1, Acc-3/5/7 by rounding, MAE, Corr (unclipped).

    ``Mult_acc_3`` is msalign's own addition (MMSA's MOSI output has no Acc-3): equality of
    ``np.round(clip(x, -1, 1))``, i.e. negative / neutral / positive after rounding.
    If every truth is 0, the Non0 metrics are 0.0 (MMSA would fail there).
    """

    def acc(c: float) -> float:  # np.round rounds halves to even, as in MMSA
        return float(np.mean(np.round(np.clip(p, -c, c)) == np.round(np.clip(t, -c, c))))

    nz = t != 0
    out = {
        "Has0_acc_2": accuracy_score(t >= 0, p >= 0),
        "Has0_F1_score": _wf1(t >= 0, p >= 0),
        "Non0_acc_2": accuracy_score(t[nz] > 0, p[nz] > 0) if nz.any() else 0.0,
        "Non0_F1_score": _wf1(t[nz] > 0, p[nz] > 0) if nz.any() else 0.0,
        "Mult_acc_3": acc(1.0),
        "Mult_acc_5": acc(2.0),
        "Mult_acc_7": acc(3.0),
        "MAE": np.mean(np.abs(p - t)),
        "Corr": _corr(p, t),
    }
    return {k: _r4(v) for k, v in out.items()}


def _bucket(x: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """Class i where ``edges[i] < x <= edges[i+1]`` (MMSA's SIMS bucketing)."""
    out = np.zeros(x.shape, dtype=np.int64)
    for i, (lo, hi) in enumerate(pairwise(edges)):
        out[(x > lo) & (x <= hi)] = i
    return out


def sims_classes(scores: np.ndarray, classes: int = 5) -> np.ndarray:
    """SIMS class index per score, as ``Mult_acc_<classes>`` buckets the clipped score (classes 2, 3 or 5)."""
    return _bucket(np.clip(scores, -1.0, 1.0), _SIMS_EDGES[classes])


def is_raw(key: str) -> bool:
    """Whether a metric is shown as it is (MAE, Corr, loss) rather than as a percentage."""
    return key in _RAW_KEYS


def _sims(p: np.ndarray, t: np.ndarray) -> dict[str, float]:
    """SIMS: clip to [-1, 1], bucket into 2/3/5 classes; weighted F1 on 2; MAE/Corr on clipped."""
    p, t = np.clip(p, -1.0, 1.0), np.clip(t, -1.0, 1.0)
    b = {n: (_bucket(p, e), _bucket(t, e)) for n, e in _SIMS_EDGES.items()}
    out = {f"Mult_acc_{n}": float(np.mean(bp == bt)) for n, (bp, bt) in b.items()}
    out["F1_score"] = _wf1(b[2][1], b[2][0])
    out["MAE"] = float(np.mean(np.abs(p - t)))
    out["Corr"] = _corr(p, t)
    return {k: _r4(v) for k, v in out.items()}


def _iemocap(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """IEMOCAP 6-class (or any C-class classification, C = the logits' width, e.g. an image-text
    dataset's positive / neutral / negative): argmax; WAcc = accuracy, WAF1 = weighted F1 over 0..C-1."""
    if logits.ndim != 2 or logits.shape[1] < 2:
        raise MsalignError(
            f"iemocap preds must be logits of shape (N, {IEMOCAP_CLASSES}) (or (N, C)), got {logits.shape}"
        )
    classes = logits.shape[1]
    y = labels.reshape(-1)
    if np.any(y != np.round(y)) or y.min() < 0 or y.max() >= classes:
        raise MsalignError(f"iemocap labels must be integers in 0..{classes - 1}")
    y, pred = y.astype(np.int64), logits.argmax(axis=1)
    acc = _r4(accuracy_score(y, pred))
    f1 = _r4(_wf1(y, pred, labels=list(range(classes))))
    return {"WAcc": acc, "WAF1": f1, "Acc": acc, "F1_score": f1}


def compute(preds: Any, truth: Any, metric_set: str) -> dict[str, float]:
    """Metrics for one evaluation with ``metric_set`` (mosi, mosei, sims or iemocap). preds: scores (N,) or
    IEMOCAP logits (N, 6); truth: scores or int labels."""
    ds = _metric_set(metric_set)
    p, t = _to_numpy(preds, "preds"), _to_numpy(truth, "truth")
    n_p = p.shape[0] if ds == "iemocap" and p.ndim == 2 else p.size
    if n_p != t.size:
        raise MsalignError(f"preds and truth differ in length: preds {p.shape} vs truth {t.shape}")
    if ds == "iemocap":
        return _iemocap(p, t)
    p, t = p.reshape(-1).astype(np.float32), t.reshape(-1).astype(np.float32)  # peers' dtype; see module doc
    if not (np.all(np.isfinite(p)) and np.all(np.isfinite(t))):
        raise MsalignError(f"preds/truth overflow float32 (shapes {p.shape}, {t.shape})")
    return _sims(p, t) if ds == "sims" else _mosi(p, t)


def selection_metric(metric_set: str) -> tuple[str, Literal["min", "max"]]:
    """Validation metric for early stopping / model selection, and its mode."""
    return ("WAF1", "max") if _metric_set(metric_set) == "iemocap" else ("MAE", "min")


def headline_keys(metric_set: str) -> list[str]:
    """The usual table columns for a metric set."""
    ds = _metric_set(metric_set)
    return list(_HEADLINE["mosi" if ds == "mosei" else ds])


def summarize(per_seed: list[dict[str, float]]) -> tuple[dict[str, float], dict[str, float]]:
    """Mean and population std (ddof=0, as MMSA) per key common to all seeds, rounded to 4."""
    if not per_seed:
        raise MsalignError("summarize needs at least one result")
    keys = [k for k in per_seed[0] if all(k in r for r in per_seed[1:])]
    vals = {k: np.array([r[k] for r in per_seed], dtype=np.float64) for k in keys}
    return ({k: _r4(v.mean()) for k, v in vals.items()}, {k: _r4(v.std()) for k, v in vals.items()})


def format_metric(key: str, value: float | None, std: float | None = None) -> str:
    """One cell: accuracy / F1 as a percentage (2 dp), MAE / Corr raw (3 dp), ``–`` when missing."""
    if value is None:
        return "–"
    raw = is_raw(key)
    text = f"{value:.3f}" if raw else f"{100 * value:.2f}"
    if std is not None:
        text += f" ± {std:.3f}" if raw else f" ± {100 * std:.2f}"
    return text


def format_table(
    rows: dict[str, dict[str, float]],
    keys: list[str] | None = None,
    std: dict[str, dict[str, float]] | None = None,
) -> str:
    """Markdown table: one row per name; accuracy/F1 as percentages (2 dp), MAE/Corr raw (3 dp).

    With ``std`` (same names and keys), each cell reads ``mean ± std``.
    """
    if keys is None:
        keys = list(dict.fromkeys(k for r in rows.values() for k in r))

    def cell(name: str, k: str) -> str:
        return format_metric(k, rows[name].get(k), (std or {}).get(name, {}).get(k))

    lines = ["| name | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    lines += [f"| {n} | " + " | ".join(cell(n, k) for k in keys) + " |" for n in rows]
    return "\n".join(lines)
