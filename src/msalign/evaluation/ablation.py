"""How much does a trained model use each modality? Test-time modality ablation.

For each modality m the split is scored three ways with the same weights: as it is; with m
*permuted* across clips (each clip gets another clip's m: the marginal distribution is kept,
the pairing with the other modalities and the label is broken); and with m *replaced by its
training mean* (zero after msalign's train-split standardisation, masks unchanged). A modality
the model relies on costs MAE when permuted; one it ignores costs nothing. Permutation is the
cleaner test: mean-replacement feeds an input the model never saw in training.

Datasets on disk (:mod:`msalign.data.store`): the training mean is accumulated chunk by chunk,
and a permuted or mean-filled modality is a lazy view read batch by batch, so no feature array is
ever loaded whole; in-memory arrays are permuted and filled as arrays.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import DTypeLike

from msalign import metrics
from msalign.data.types import MultimodalDataset, Split
from msalign.errors import MsalignError
from msalign.models import MSAModel
from msalign.training.data import eval_loader
from msalign.training.module import predict_split


class _LazyRows:
    """An (N, L, D) view read on indexing (``x[rows, :longest]``, ``x[start:stop]``, ...), for arrays on disk."""

    def __init__(self, shape: tuple[int, ...], dtype: DTypeLike):
        self.shape, self.dtype, self.ndim = tuple(shape), np.dtype(dtype), len(shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        rows = np.arange(self.shape[0])[key[0]]
        out = self._rows(np.atleast_1d(rows))[(slice(None), *key[1:])]
        return out[0] if np.ndim(rows) == 0 else out

    def __array__(self, dtype=None, copy=None):
        return self[:] if dtype is None else self[:].astype(dtype)

    def _rows(self, rows: np.ndarray) -> np.ndarray:
        """The (len(rows), L, D) rows at ``rows``; each subclass says how they are made."""
        raise NotImplementedError


class _PermutedRows(_LazyRows):
    """Row ``i`` is row ``order[i]`` of ``x``."""

    def __init__(self, x, order: np.ndarray):
        super().__init__(x.shape, x.dtype)
        self.x, self.order = x, order

    def _rows(self, rows: np.ndarray) -> np.ndarray:
        return self.x[self.order[rows]]


class _MeanFilled(_LazyRows):
    """``mean`` at each row's real positions, zero beyond its length."""

    def __init__(self, shape: tuple[int, ...], lengths: np.ndarray, mean: np.ndarray):
        super().__init__(shape, np.float32)
        self.lengths, self.mean = lengths, np.asarray(mean, dtype=np.float32)

    def _rows(self, rows: np.ndarray) -> np.ndarray:
        out = np.zeros((len(rows), *self.shape[1:]), dtype=np.float32)
        out[np.arange(self.shape[1])[None, :] < self.lengths[rows][:, None]] = self.mean
        return out


def train_mean(split: Split, modality: str, chunk_rows: int = 512) -> np.ndarray:
    """Mean feature vector over the real (non-padding) positions of ``split``'s ``modality``,
    accumulated in float64 over chunks of rows (an on-disk array is never read whole)."""
    x, lengths = split.features[modality], split.lengths[modality]
    if isinstance(x, np.ndarray):
        return x[split.mask(modality)].mean(axis=0)
    total = np.zeros(x.shape[2], dtype=np.float64)
    for start in range(0, len(x), chunk_rows):
        chunk = np.asarray(x[start : start + chunk_rows])
        total += chunk.sum(axis=(0, 1), dtype=np.float64)  # padding is zero
    return (total / max(int(np.sum(lengths)), 1)).astype(np.float32)


def _with_modality(split: Split, modality: str, how: str, rng: np.random.Generator, mean: np.ndarray) -> Split:
    features = dict(split.features)
    lengths = dict(split.lengths)
    x = split.features[modality]
    if how == "permute":
        order = rng.permutation(len(split))
        features[modality] = x[order] if isinstance(x, np.ndarray) else _PermutedRows(x, order)
        lengths[modality] = split.lengths[modality][order]
    elif how == "mean":
        if isinstance(x, np.ndarray):
            filled = np.zeros_like(x)
            filled[split.mask(modality)] = mean
        else:
            filled = _MeanFilled(x.shape, split.lengths[modality], mean)
        features[modality] = filled
    else:
        raise MsalignError(f"modality ablation: unknown mode {how!r} (permute or mean)")
    return Split(split.name, features, lengths, split.labels, split.ids, split.raw_text)


def modality_contribution(
    model: MSAModel, dataset: MultimodalDataset, split: str = "test", repeats: int = 5, seed: int = 0
) -> dict[str, Any]:
    """Metrics of ``model`` on ``split``: ``{"full": {...}, "<m>/permute": {...}, "<m>/mean": {...}}``.

    Permutation metrics are averaged over ``repeats`` permutations. A model that fine-tunes its
    text encoder re-encodes the transcripts, so its text cannot be ablated here (skipped).
    """
    base = dataset.split(split)
    train = dataset.split("train")
    device = next(model.parameters()).device
    rng = np.random.default_rng(seed)

    def score(candidate: Split) -> dict[str, float]:
        swapped = MultimodalDataset(
            dataset.name,
            {**dataset.splits, split: candidate},
            dataset.metric_set,
            dataset.task,
            dataset.num_classes,
            dataset.source,
            dataset.feature_spec,
        )
        loader = eval_loader(swapped, model.modalities, split)
        preds, labels = predict_split(model, loader, device)
        return metrics.compute(preds, labels, dataset.metric_set)

    results: dict[str, Any] = {"full": score(base)}
    tuned_text = getattr(model, "text_encoder", None) is not None
    for modality in model.modalities:
        if modality == "text" and tuned_text:
            continue
        mean = train_mean(train, modality)
        runs = [score(_with_modality(base, modality, "permute", rng, mean)) for _ in range(repeats)]
        results[f"{modality}/permute"] = {k: float(np.mean([r[k] for r in runs])) for k in runs[0]}
        results[f"{modality}/mean"] = score(_with_modality(base, modality, "mean", rng, mean))
    return results


def format_contribution(results: dict[str, Any], keys: list[str]) -> str:
    """A Markdown table: one row per input condition."""
    names = {"full": "all modalities as recorded"}
    rows = {
        names.get(
            name, name.replace("/permute", " permuted across clips").replace("/mean", " set to its train mean")
        ): values
        for name, values in results.items()
    }
    return metrics.format_table(rows, keys)


__all__ = ["format_contribution", "modality_contribution", "train_mean"]
