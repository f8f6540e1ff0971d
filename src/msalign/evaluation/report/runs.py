"""The runs a report shows, read through :mod:`msalign.training.run_folder`, and what a report
recomputes from their checkpoints (predictions of old runs, the decalign features before and after
alignment)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from msalign.config import resolve_config
from msalign.data import load_dataset
from msalign.data.spec import parse_synthetic
from msalign.data.types import MultimodalDataset
from msalign.errors import MsalignError
from msalign.models import MSAModel, build_config
from msalign.training.checkpoint import (
    CheckpointMeta,
    check_feature_spec,
    checkpoint_feature_spec,
    load_checkpoint,
    read_checkpoint_meta,
)
from msalign.training.data import default_device, eval_loader
from msalign.training.module import predict_split
from msalign.training.run_folder import (
    CHECKPOINT_FILE,
    PREDICTIONS_FILE,
    RESULTS_FILE,
    RunResults,
    read_history,
    read_predictions,
    read_results,
    recorded_dataset,
    recorded_model,
    seed_dir,
)

# split -> (predictions, labels)
SplitArrays = dict[str, tuple[np.ndarray, np.ndarray]]


@dataclass
class TrainRun:
    """One ``msalign train`` output directory, with what the report needs from each seed."""

    label: str
    path: Path
    results: RunResults
    predictions: dict[int, SplitArrays] = field(default_factory=dict)  # seed -> split -> arrays
    histories: dict[int, list[dict[str, float]]] = field(default_factory=dict)
    seeds_without_predictions: list[int] = field(default_factory=list)

    @property
    def model(self) -> str:
        return self.results.model

    @property
    def metric_set(self) -> str:
        return self.results.metric_set

    @property
    def seeds(self) -> list[int]:
        return [r.seed for r in self.results.per_seed]

    def checkpoint(self, seed: int) -> Path:
        return seed_dir(self.path, seed) / CHECKPOINT_FILE

    def pooled(self, split: str) -> tuple[np.ndarray, np.ndarray] | None:
        """Predictions and labels of every seed with predictions, concatenated."""
        parts = [p[split] for p in self.predictions.values() if split in p]
        if not parts:
            return None
        return np.concatenate([p for p, _ in parts]), np.concatenate([t for _, t in parts])


def load_train_run(path: Path, label: str, dataset: MultimodalDataset | None = None) -> TrainRun:
    """The run in ``path``: results.json, each seed's history and predictions (recomputed from the
    checkpoint with ``dataset`` when a seed has no predictions.npz)."""
    run = TrainRun(label, path, read_results(path))
    for seed in run.seeds:
        folder = seed_dir(path, seed)
        history = read_history(folder)
        if history is not None:
            run.histories[seed] = history.rows
        stored = folder / PREDICTIONS_FILE
        if stored.is_file():
            run.predictions[seed] = {
                split: (rows.predictions, rows.labels) for split, rows in read_predictions(stored).items()
            }
        elif dataset is not None and run.checkpoint(seed).is_file():
            run.predictions[seed] = predict_checkpoint(run.checkpoint(seed), dataset)
        else:
            run.seeds_without_predictions.append(seed)
    return run


def _check_checkpoint(path: Path, dataset: MultimodalDataset) -> tuple[MSAModel, CheckpointMeta]:
    model, info = load_checkpoint(path)
    check_feature_spec(info, dataset.feature_spec, dataset.dims, path)
    return model, info


def predict_checkpoint(path: Path, dataset: MultimodalDataset) -> SplitArrays:
    """Valid and test predictions of a checkpoint on ``dataset`` (for runs without predictions.npz)."""
    model, _ = _check_checkpoint(path, dataset)
    device = default_device()
    model.to(device)
    return {
        split: predict_split(model, eval_loader(dataset, model.modalities, split), device)
        for split in ("valid", "test")
    }


@runtime_checkable
class _HasRepresentations(Protocol):
    """A model with features before and after alignment (DecAlign.representations); the isinstance
    check asks only whether the method exists."""

    def representations(self, batch: dict) -> dict[str, dict[str, torch.Tensor]]: ...


def compute_representations(
    checkpoint: Path, dataset: MultimodalDataset, split: str = "test"
) -> tuple[dict[str, dict[str, np.ndarray]], MSAModel]:
    """``DecAlign.representations`` over a split, in eval mode: {"before"|"after": {modality: (N, d)}}."""
    model, info = _check_checkpoint(checkpoint, dataset)
    if not isinstance(model, _HasRepresentations):  # only DecAlign has before/after-alignment features
        raise MsalignError(f"checkpoint {checkpoint}: model {info.model} has no before/after-alignment representations")
    model.eval()
    parts: dict[str, dict[str, list[np.ndarray]]] = {"before": {}, "after": {}}
    with torch.no_grad():
        for batch in eval_loader(dataset, model.modalities, split):
            for stage, features in model.representations(batch).items():
                for modality, value in features.items():
                    parts[stage].setdefault(modality, []).append(value.float().numpy())
    return {stage: {m: np.concatenate(v) for m, v in stages.items()} for stage, stages in parts.items()}, model


def run_variant(results: RunResults) -> str:
    """``[hete=false,width=16]``: the model config keys a run changed from what its dataset's config
    files give (the benchmark's variant notation); '' when none, or when that cannot be told."""
    model, config = results.model, results.config.get("model")
    if not isinstance(config, dict):
        return ""
    dataset = results.dataset
    name = "synthetic" if dataset.startswith("synthetic") else Path(dataset).name
    metric_set = results.metric_set
    keys = (name, metric_set if metric_set != "iemocap" or "iemocap" in dataset.lower() else "classification")
    try:
        base, _ = resolve_config(model, build_config(model), keys)
    except MsalignError:
        return ""
    changed = [
        f"{k}={str(v).lower() if isinstance(v, bool) else v}"
        for k, v in config.items()
        if k in base.__dataclass_fields__ and _listed(getattr(base, k)) != _listed(v)
    ]
    return f"[{','.join(changed)}]" if changed else ""


def _listed(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


# --- the dataset a report recomputes with ---------------------------------------------------------
def same_dataset(given: str, recorded: str) -> bool:
    """Whether ``--dataset given`` names the dataset a run recorded (paths compared resolved when both
    exist, else by their last component; synthetic:... variants by their generator name)."""
    if given == recorded:
        return True
    if given.split(":")[0] == "synthetic" or recorded.split(":")[0] == "synthetic":
        return given.split(":")[0] == recorded.split(":")[0] and parse_synthetic(given) == parse_synthetic(recorded)
    a, b = Path(given).expanduser(), Path(recorded).expanduser()
    if a.exists() and b.exists():
        return a.resolve() == b.resolve()
    return a.resolve().name == b.resolve().name


def _needs_dataset(run_dir: Path) -> bool:
    """A decalign run (the modality gap) or a seed without predictions.npz needs the data."""
    for folder in [run_dir, *(p.parent for p in run_dir.glob(f"*/{RESULTS_FILE}"))]:
        if recorded_model(folder) == "decalign":
            return True
    return any(not (seed / PREDICTIONS_FILE).is_file() for seed in run_dir.glob("**/seed_*") if seed.is_dir())


def _first_checkpoint(run_dir: Path) -> Path | None:
    return next(iter(sorted(run_dir.glob(f"**/seed_*/{CHECKPOINT_FILE}"))), None)


@dataclass(frozen=True)
class ReportDataset:
    """The dataset a report recomputes with, and why none is used when the recorded one failed."""

    dataset: MultimodalDataset | None
    from_run: bool  # the dataset the run recorded (no --dataset given)
    skipped: str | None = None


def report_dataset(run_dir: Path, given: str | None = None, cache_dir: str | None = None) -> ReportDataset:
    """``given`` (``--dataset``), which must be the run's; else the dataset the run recorded, loaded
    only when the report needs it (a decalign run, or seeds without predictions) and with the
    checkpoint's options. A recorded dataset that cannot be used any more is skipped with a note."""
    recorded, metric_set = recorded_dataset(run_dir)
    if given is not None and recorded is not None and not same_dataset(given, recorded):
        raise MsalignError(
            f"--dataset {given}: the run was trained on {recorded} (recorded in {run_dir}); "
            "omit --dataset to use that one"
        )
    spec = given if given is not None else (recorded if _needs_dataset(run_dir) else None)
    if spec is None:
        return ReportDataset(None, False)
    checkpoint = _first_checkpoint(run_dir)
    options = checkpoint_feature_spec(read_checkpoint_meta(checkpoint)).load_kwargs() if checkpoint else {}
    if cache_dir is not None:
        options["cache_dir"] = cache_dir
    if metric_set is not None and not str(spec).startswith("synthetic"):
        options.setdefault("metric_set", metric_set)  # the run's task, also for integer class labels
    try:
        dataset = load_dataset(spec, **options)
        if given is None and checkpoint is not None:  # the recorded spec must still give the run's features
            check_feature_spec(read_checkpoint_meta(checkpoint), dataset.feature_spec, dataset.dims, checkpoint)
    except MsalignError as error:
        if given is not None:
            raise
        return ReportDataset(
            None, True, f"the recorded dataset {spec} could not be used ({error}); pass --dataset SPEC"
        )
    return ReportDataset(dataset, given is None)


__all__ = [
    "ReportDataset",
    "SplitArrays",
    "TrainRun",
    "compute_representations",
    "load_train_run",
    "predict_checkpoint",
    "report_dataset",
    "run_variant",
    "same_dataset",
]
