"""``msalign evaluate``: a trained checkpoint scored on a split of a dataset, or its modality ablation.

The dataset is loaded with the checkpoint's recorded loader options under the ones given (so it is
scored on the features it was trained on), and refused when its features were made differently
(:func:`msalign.training.checkpoint.check_feature_spec`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from msalign import metrics
from msalign.data.options import DatasetOptions, load_dataset_from_options
from msalign.evaluation.ablation import modality_contribution
from msalign.training.checkpoint import check_feature_spec, checkpoint_feature_spec, load_checkpoint
from msalign.training.data import default_device, eval_loader
from msalign.training.module import predict_split


@dataclass(frozen=True)
class EvaluationRequest:
    """What to score: a checkpoint, the dataset options and the split; ``modality_ablation`` asks for
    :func:`msalign.evaluation.ablation.modality_contribution` instead of the plain metrics."""

    checkpoint: str | Path
    dataset: DatasetOptions
    split: str = "test"
    modality_ablation: bool = False


@dataclass(frozen=True)
class EvaluationResult:
    """The scores of one checkpoint on one split: ``metrics`` (n clips), or the ablation's ``contribution``."""

    checkpoint: str
    model_name: str
    split: str
    metric_set: str
    n: int
    metrics: dict[str, float] | None = None
    contribution: dict[str, Any] | None = None


def evaluate_checkpoint(request: EvaluationRequest) -> EvaluationResult:
    """Scores ``request.checkpoint`` (see the module docstring)."""
    model, info = load_checkpoint(request.checkpoint)
    recorded = checkpoint_feature_spec(info).load_kwargs()
    if info.task in ("regression", "classification"):
        recorded["task"] = info.task  # the training task, also for integer class labels
    dataset = load_dataset_from_options(request.dataset, recorded)
    check_feature_spec(info, dataset.feature_spec, dataset.dims, request.checkpoint)
    split = dataset.split(request.split)
    common: dict[str, Any] = {
        "checkpoint": str(request.checkpoint),
        "model_name": info.model,
        "split": request.split,
        "metric_set": dataset.metric_set,
        "n": len(split),
    }
    if request.modality_ablation:
        return EvaluationResult(**common, contribution=modality_contribution(model, dataset, request.split))
    loader = eval_loader(dataset, model.modalities, request.split)
    device = default_device()
    preds, labels = predict_split(model.to(device), loader, device)
    return EvaluationResult(**common, metrics=metrics.compute(preds, labels, dataset.metric_set))


__all__ = ["EvaluationRequest", "EvaluationResult", "evaluate_checkpoint"]
