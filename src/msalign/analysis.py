"""How much does a trained model use each modality? Test-time modality ablation.

For each modality m the split is scored three ways with the same weights: as it is; with m
*permuted* across clips (each clip gets another clip's m: the marginal distribution is kept,
the pairing with the other modalities and the label is broken); and with m *replaced by its
training mean* (zero after msalign's train-split standardisation, masks unchanged). A modality
the model relies on costs MAE when permuted; one it ignores costs nothing. Permutation is the
cleaner test: mean-replacement feeds an input the model never saw in training.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from msalign import metrics
from msalign.data.types import MultimodalDataset, Split
from msalign.errors import MsalignError
from msalign.training.data import MSADataModule
from msalign.training.module import predict_split


def _with_modality(split: Split, modality: str, how: str, rng: np.random.Generator, mean: np.ndarray) -> Split:
    features = dict(split.features)
    lengths = dict(split.lengths)
    if how == "permute":
        order = rng.permutation(len(split))
        features[modality] = split.features[modality][order]
        lengths[modality] = split.lengths[modality][order]
    elif how == "mean":
        filled = np.zeros_like(split.features[modality])
        filled[split.mask(modality)] = mean
        features[modality] = filled
    else:
        raise MsalignError(f"modality ablation: unknown mode {how!r} (permute or mean)")
    return Split(split.name, features, lengths, split.labels, split.ids, split.raw_text)


def modality_contribution(model: torch.nn.Module, dataset: MultimodalDataset, split: str = "test",
                          repeats: int = 5, seed: int = 0) -> dict[str, Any]:
    """Metrics of ``model`` on ``split``: ``{"full": {...}, "<m>/permute": {...}, "<m>/mean": {...}}``.

    Permutation metrics are averaged over ``repeats`` permutations. A model that fine-tunes its
    text encoder re-encodes the transcripts, so its text cannot be ablated here (skipped).
    """
    base = dataset.split(split)
    train = dataset.split("train")
    device = next(model.parameters()).device
    rng = np.random.default_rng(seed)

    def score(candidate: Split) -> dict[str, float]:
        swapped = MultimodalDataset(dataset.name, {**dataset.splits, split: candidate}, dataset.metric_set,
                                    dataset.task, dataset.num_classes, dataset.source, dataset.feature_spec)
        loader = MSADataModule(swapped, model.modalities, 64, 0)._loader(split, shuffle=False)
        preds, labels = predict_split(model, loader, device)
        return metrics.compute(preds, labels, dataset.metric_set)

    results: dict[str, Any] = {"full": score(base)}
    tuned_text = getattr(model, "text_encoder", None) is not None
    for modality in model.modalities:
        if modality == "text" and tuned_text:
            continue
        mean = train.features[modality][train.mask(modality)].mean(axis=0)
        runs = [score(_with_modality(base, modality, "permute", rng, mean)) for _ in range(repeats)]
        results[f"{modality}/permute"] = {k: float(np.mean([r[k] for r in runs])) for k in runs[0]}
        results[f"{modality}/mean"] = score(_with_modality(base, modality, "mean", rng, mean))
    return results


def format_contribution(results: dict[str, Any], keys: list[str]) -> str:
    """A Markdown table: one row per input condition."""
    names = {"full": "all modalities as recorded"}
    rows = {names.get(name, name.replace("/permute", " permuted across clips").replace("/mean", " set to its train mean")):
            values for name, values in results.items()}
    return metrics.format_table(rows, keys)


__all__ = ["format_contribution", "modality_contribution"]
