"""Train a model over seeds: fit with early stopping on validation, restore the best weights,
evaluate on valid and test, write checkpoints and ``results.json``.

Model selection only ever looks at the validation split; the test split is scored once, with the
best-on-validation weights. Every file of the run folder is written through
:mod:`msalign.training.run_folder`.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO

from msalign import metrics
from msalign.atomic import atomic_path
from msalign.config import TrainConfig, config_to_dict
from msalign.data.types import MultimodalDataset
from msalign.errors import MsalignError
from msalign.limits import regular_file
from msalign.models import create_model, get_model_class
from msalign.models.text_tuning import attach_text_encoder, check_text_tuning
from msalign.training.checkpoint import CheckpointMeta, save_checkpoint
from msalign.training.data import MSADataModule
from msalign.training.module import MSALightningModule
from msalign.training.run_folder import (
    CHECKPOINT_FILE,
    PREDICTIONS_FILE,
    History,
    Log,
    RunResults,
    SeedRecord,
    SeedSummary,
    SplitPredictions,
    finished_seed,
    read_run_identity,
    run_identity,
    write_history,
    write_predictions,
    write_results,
    write_run_identity,
    write_seed_record,
)
from msalign.training.run_spec import RunSpec
from msalign.training.weight_averaging import FitEMA


@dataclass
class SeedResult:
    """What training one seed gives: its summary (as results.json keeps it), plus the wall-clock
    time and the epoch history, which results.json leaves out."""

    seed: int
    best_epoch: int
    valid: dict[str, float]
    test: dict[str, float]
    epochs_run: int = 0
    seconds: float = 0.0
    checkpoint: str = ""
    history: list[dict[str, float]] = field(default_factory=list)

    def summary(self) -> SeedSummary:
        """What results.json keeps: no wall-clock times, so reruns give identical files."""
        return SeedSummary(self.seed, self.best_epoch, self.valid, self.test, self.epochs_run, self.checkpoint)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoints written to a temporary file, then renamed (a kill never leaves half a
    last.ckpt), and read back with ``torch.load(weights_only=True)`` (no arbitrary objects)."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        with atomic_path(path) as temporary:
            torch.save(checkpoint, temporary)

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict:
        regular_file(path, str(path))
        try:
            checkpoint = torch.load(path, map_location=map_location or "cpu", weights_only=True)
        except Exception as error:
            detail = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise MsalignError(f"{path}: cannot resume from this checkpoint ({detail})") from None
        return relocate(checkpoint, Path(path).parent)


def relocate(checkpoint: dict, dirpath: Path) -> dict:
    """Make a run folder relocatable: point ModelCheckpoint's saved paths at ``dirpath``, the folder
    the checkpoint is read from now.

    Lightning restores ``best_model_score`` / ``best_model_path`` only when the saved ``dirpath``
    equals the current one; after a run folder is moved or copied it silently forgets the best
    epoch so far, and the resumed run restores (and scores) other weights than an uninterrupted
    run. Moving a folder is common (scratch to project space, a copy to another machine), so the
    paths are rewritten rather than the resume refused; everything they name lives inside the
    folder (best.ckpt, last.ckpt), which moves with it."""
    callbacks = checkpoint.get("callbacks") if isinstance(checkpoint, dict) else None
    if not isinstance(callbacks, dict):
        return checkpoint
    new = os.path.realpath(dirpath)  # as ModelCheckpoint stores its own dirpath
    for key, state in callbacks.items():
        if not (isinstance(key, str) and key.startswith("ModelCheckpoint") and isinstance(state, dict)):
            continue
        old = state.get("dirpath")
        if not isinstance(old, str) or old == new:
            continue

        def moved(value: Any, old: str = old) -> Any:
            if isinstance(value, str) and (value == old or value.startswith(old + os.sep)):
                return new + value[len(old) :]
            return value

        state["dirpath"] = new
        for name in ("best_model_path", "kth_best_model_path", "last_model_path"):
            if name in state:
                state[name] = moved(state[name])
        if isinstance(state.get("best_k_models"), dict):
            state["best_k_models"] = {moved(k): v for k, v in state["best_k_models"].items()}
    return checkpoint


def _trainer(train_config: TrainConfig, **options: Any) -> L.Trainer:
    """A Lightning Trainer on the config's devices; a device setting Lightning refuses is one line
    naming the config keys (not a traceback from inside Lightning)."""
    c = train_config
    for key in ("devices", "num_nodes"):
        if getattr(c, key) < 1:
            raise MsalignError(f"train.{key} {getattr(c, key)}: must be at least 1")
    try:
        return L.Trainer(
            accelerator=c.accelerator,
            devices=c.devices,
            strategy=c.strategy,
            num_nodes=c.num_nodes,
            # any string: Lightning checks it (its error is caught below), though it annotates literals
            precision=c.precision,  # type: ignore[arg-type]
            **options,
        )
    except (MisconfigurationException, ValueError, RuntimeError) as error:
        detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise MsalignError(
            f"train.accelerator {c.accelerator!r}, train.devices {c.devices}, train.strategy "
            f"{c.strategy!r}, train.precision {c.precision!r}: {detail}"
        ) from None


def check_logger(kind: str) -> None:
    """``train.logger`` must be none, csv or tensorboard; tensorboard needs its package (one line otherwise)."""
    if kind not in ("none", "csv", "tensorboard"):
        raise MsalignError(f"train.logger {kind!r}: expected none, csv or tensorboard")
    if kind == "tensorboard" and not any(importlib.util.find_spec(m) for m in ("tensorboard", "tensorboardX")):
        raise MsalignError(
            "--logger tensorboard: the tensorboard package is not installed (pip install tensorboard); "
            "--logger csv needs nothing"
        )


def make_logger(kind: str, seed_dir: Path):
    """Lightning's CSVLogger / TensorBoardLogger writing ``seed_dir/logs/`` (no version subfolders), or False."""
    check_logger(kind)
    if kind == "none":
        return False
    logger = CSVLogger if kind == "csv" else TensorBoardLogger
    return logger(save_dir=str(seed_dir), name="logs", version="")


def _quiet_lightning() -> None:
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "lightning_utilities"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*is smaller than the logging interval.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    # DDP: MSALightningModule gathers predictions over ranks and drops the sampler's padding repeats before
    # computing metrics, and logs values that are already equal on every rank
    warnings.filterwarnings("ignore", message=".*Using `DistributedSampler` with the dataloaders.*")
    warnings.filterwarnings("ignore", message=".*when logging on epoch level in distributed setting.*")
    warnings.filterwarnings("ignore", message=".*all_gather is deprecated.*")


def train_seed(spec: RunSpec, seed: int, dataset: MultimodalDataset, progress: bool | None = None) -> SeedResult:
    """One seed of ``spec``: fit, restore the best-on-validation weights, score valid and test, save.

    ``spec.resume``: continue from ``seed_N/lightning/last.ckpt`` (written after every epoch) when it
    exists; the result is the same as an uninterrupted run's."""
    _quiet_lightning()
    out_dir, train_config = spec.out_dir, spec.train_config
    seed_dir = spec.seed_dir(seed)
    if train_config.threads > 0:
        torch.set_num_threads(train_config.threads)
    L.seed_everything(seed, workers=True, verbose=False)
    model = create_model(spec.model_name, dims=dataset.dims, output_dim=dataset.output_dim, config=spec.model_config)
    if train_config.finetune_text or train_config.finetune_layers:
        check_text_tuning(train_config)
        # every split's transcripts: the frozen lower layers run once, before the first step
        texts = [t for s in ("train", "valid", "test") for t in (dataset.split(s).raw_text or [])]
        attach_text_encoder(
            model,
            dataset.feature_spec,
            dataset.source or dataset.name,
            finetune_layers=train_config.finetune_layers,
            texts=texts,
        )
    modalities = model.modalities
    module = MSALightningModule(model, train_config, dataset.metric_set)
    monitor = f"valid/{module.monitor_key}"
    data = MSADataModule(dataset, modalities, train_config.batch_size, seed, train_config.num_workers)
    best = ModelCheckpoint(
        dirpath=seed_dir / "lightning",
        filename="best",
        monitor=monitor,
        mode=module.monitor_mode,
        save_top_k=1,
        save_last=True,
        enable_version_counter=False,
    )
    callbacks: list[Callback] = [
        best,
        EarlyStopping(monitor=monitor, mode=module.monitor_mode, patience=train_config.patience),
    ]
    if train_config.ema_decay > 0:
        callbacks.append(FitEMA(train_config.ema_decay))
    if progress is None:
        progress = sys.stderr.isatty()
    trainer = _trainer(
        train_config,
        max_epochs=train_config.epochs,
        deterministic="warn" if torch.cuda.is_available() else True,
        gradient_clip_val=train_config.grad_clip or None,
        gradient_clip_algorithm=train_config.grad_clip_algorithm,
        accumulate_grad_batches=train_config.accumulate_batches,
        limit_train_batches=train_config.max_train_batches,
        num_sanity_val_steps=0,
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        logger=make_logger(train_config.logger, seed_dir),
        enable_model_summary=False,
        enable_progress_bar=progress,
        default_root_dir=str(seed_dir),
    )
    last = seed_dir / "lightning" / "last.ckpt"
    started = time.perf_counter()
    trainer.fit(module, datamodule=data, ckpt_path=last if spec.resume and last.is_file() else None)
    seconds = time.perf_counter() - started

    # Restore the best-on-validation weights before anything is scored.
    if best.best_model_path:
        state = torch.load(best.best_model_path, map_location="cpu", weights_only=True)["state_dict"]
        module.load_state_dict(state)
    best_epoch = _best_epoch(module.history, monitor, module.monitor_mode)
    # Scored through the trainer: under DDP each rank scores a shard and MSALightningModule gathers the
    # whole split before any metric is computed; on one device it is a plain pass in split order.
    trainer.validate(module, dataloaders=data.val_dataloader(), verbose=False)
    # A dataset without a test split (msalign tune's search runs on msalign.experiments.tune_search.validation_view)
    # is scored on validation only: the test rows are not in the process at all.
    scored = ("valid", "test") if "test" in dataset.splits else ("valid",)
    if "test" in scored:
        trainer.test(module, dataloaders=data.test_dataloader(), verbose=False)
    scores: dict[str, dict[str, float]] = {}
    predictions: dict[str, SplitPredictions] = {}
    for split in scored:
        index, preds, labels = module.last_predictions[split]
        expected = len(dataset.split(split))
        if not np.array_equal(index, np.arange(expected)):
            raise MsalignError(f"{split} split: scored {len(index)} distinct rows of {expected}")
        scores[split] = module.last_metrics[split]
        predictions[split] = SplitPredictions(preds, labels, dataset.split(split).ids)
    checkpoint = seed_dir / CHECKPOINT_FILE
    result = SeedResult(
        seed,
        best_epoch,
        scores["valid"],
        scores.get("test", {}),
        trainer.current_epoch,
        seconds,
        str(checkpoint.relative_to(out_dir)),
        module.history,
    )
    if not is_rank_zero():  # one writer: under DDP every rank holds the same weights and scores
        return result
    write_predictions(seed_dir / PREDICTIONS_FILE, predictions)
    save_checkpoint(
        checkpoint,
        model,
        CheckpointMeta.describe(
            model,
            config_to_dict(spec.model_config),
            train_config=config_to_dict(train_config),
            feature_spec=dataset.feature_spec.to_json(),
            dataset=dataset.name,
            metric_set=dataset.metric_set,
            task=dataset.task,
            modalities=list(modalities),
            seed=seed,
            metrics=scores,
            text_tuning=model.text_encoder.metadata() if model.text_encoder is not None else None,
        ),
    )
    write_history(seed_dir, History(module.history))
    return result


def is_rank_zero() -> bool:
    """False in the other processes of a multi-process run (DDP, SLURM): only rank 0 writes and logs."""
    return getattr(rank_zero_only, "rank", 0) == 0


def _best_epoch(rows: list[dict[str, float]], monitor: str, mode: str) -> int:
    scored = [r for r in rows if monitor in r]
    if not scored:
        return 0
    pick = min if mode == "min" else max
    return int(pick(scored, key=lambda r: r[monitor])["epoch"])


def run_seed(
    spec: RunSpec, seed: int, dataset: MultimodalDataset, progress: bool | None = None, log: Log = print
) -> SeedSummary:
    """One seed of ``spec`` into ``spec.out_dir/seed_N`` (skipped when already finished;
    ``spec.resume`` continues from its last Lightning checkpoint); returns the seed's summary.
    Writes only inside ``seed_N/``, so seeds and runs can go in parallel
    (:mod:`msalign.experiments.scheduling`)."""
    if not is_rank_zero():
        log = _silent
    identity = run_identity(spec, dataset)
    folder = spec.seed_dir(seed)
    previous = finished_seed(spec.out_dir, seed, identity)
    if previous is not None:
        log(f"[{spec.model_name} seed {seed}] already finished in {folder}, skipped")
        return previous
    last = folder / "lightning" / "last.ckpt"
    resuming = spec.resume and last.is_file()
    if resuming:
        # run.json says which run the Lightning checkpoints in lightning/ belong to
        if read_run_identity(folder) != identity:
            raise MsalignError(
                f"--resume: {last} is from another run (model, config or data differ from "
                f"{folder / 'run.json'}); drop --resume to start over"
            )
        log(f"[{spec.model_name} seed {seed}] resuming from {last}")
    elif is_rank_zero():
        write_run_identity(folder, identity)
    result = train_seed(spec.replace(resume=resuming), seed, dataset, progress)
    headline = metrics.headline_keys(dataset.metric_set)
    shown, split = (result.test, "") if result.test else (result.valid, "valid: ")  # no test split: validation
    log(
        f"[{spec.model_name} seed {seed}] best epoch {result.best_epoch}, {split}"
        + ", ".join(f"{k} {shown[k]:.4f}" for k in headline if k in shown)
        + f" ({result.seconds:.1f}s)"
    )
    if is_rank_zero():
        write_seed_record(folder, SeedRecord(identity, result.summary(), result.seconds))
    return result.summary()


def _silent(line: str) -> None:
    pass


def summarize_run(spec: RunSpec, dataset: MultimodalDataset, per_seed: list[SeedSummary] | None = None) -> RunResults:
    """Writes ``spec.out_dir/results.json`` from the finished seeds (per-seed, mean and population
    std); ``per_seed`` defaults to reading each ``seed_N/result.json``."""
    if per_seed is None:
        identity = run_identity(spec, dataset)
        per_seed = []
        for seed in spec.seeds:
            result = finished_seed(spec.out_dir, seed, identity)
            if result is None:
                raise MsalignError(f"{spec.seed_dir(seed)}: seed {seed} has not finished")
            per_seed.append(result)
    mean, std = metrics.summarize([r.test for r in per_seed])
    results = RunResults(
        model=spec.model_name,
        dataset=dataset.source or dataset.name,
        metric_set=dataset.metric_set,
        config={"model": config_to_dict(spec.model_config), "train": config_to_dict(spec.train_config)},
        seeds=list(spec.seeds),
        per_seed=per_seed,
        mean=mean,
        std=std,
    )
    if is_rank_zero():
        write_results(spec.out_dir, results)
    return results


def train(spec: RunSpec, dataset: MultimodalDataset, progress: bool | None = None, log: Log = print) -> RunResults:
    """Train ``spec`` over its seeds one after another and write ``results.json`` (per-seed, mean and
    population std).

    Finished seeds (``seed_N/result.json`` of the same run) are skipped; ``spec.resume`` continues an
    unfinished seed from its last Lightning checkpoint."""
    get_model_class(spec.model_name)  # unknown names fail before any work
    check_text_tuning(spec.train_config)
    spec.out_dir.mkdir(parents=True, exist_ok=True)
    per_seed = [run_seed(spec, seed, dataset, progress, log) for seed in spec.seeds]
    return summarize_run(spec, dataset, per_seed)


__all__ = [
    "SeedResult",
    "check_logger",
    "is_rank_zero",
    "make_logger",
    "run_seed",
    "summarize_run",
    "train",
    "train_seed",
]
