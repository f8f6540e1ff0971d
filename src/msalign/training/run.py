"""Train a model over seeds: fit with early stopping on validation, restore the best weights,
evaluate on valid and test, write checkpoints and ``results.json``.

Model selection only ever looks at the validation split; the test split is scored once, with the
best-on-validation weights.
"""

from __future__ import annotations

import json
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
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from msalign import metrics
from msalign.atomic import atomic_path, atomic_savez, atomic_write_text
from msalign.training.checkpoint import save_checkpoint
from msalign.config import TrainConfig, config_to_dict
from msalign.data.types import MultimodalDataset
from msalign.errors import MsalignError
from msalign.limits import regular_file
from msalign.models import create_model, get_model_class
from msalign.models.text_tuning import attach_text_encoder, check_text_tuning
from msalign.training.data import MSADataModule
from msalign.training.module import MSALightningModule


@dataclass
class SeedResult:
    seed: int
    best_epoch: int
    valid: dict[str, float]
    test: dict[str, float]
    epochs_run: int = 0
    seconds: float = 0.0
    checkpoint: str = ""
    history: list[dict[str, float]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """What results.json keeps: no wall-clock times, so reruns give identical files."""
        return {"seed": self.seed, "best_epoch": self.best_epoch, "valid": self.valid, "test": self.test,
                "epochs_run": self.epochs_run, "checkpoint": self.checkpoint}


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

        def moved(value: Any) -> Any:
            if isinstance(value, str) and (value == old or value.startswith(old + os.sep)):
                return new + value[len(old):]
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
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    c = train_config
    for key in ("devices", "num_nodes"):
        if getattr(c, key) < 1:
            raise MsalignError(f"train.{key} {getattr(c, key)}: must be at least 1")
    try:
        return L.Trainer(accelerator=c.accelerator, devices=c.devices, strategy=c.strategy, num_nodes=c.num_nodes,
                         precision=c.precision, **options)
    except (MisconfigurationException, ValueError, RuntimeError) as error:
        detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise MsalignError(f"train.accelerator {c.accelerator!r}, train.devices {c.devices}, train.strategy "
                           f"{c.strategy!r}, train.precision {c.precision!r}: {detail}") from None


def check_logger(kind: str) -> None:
    """``train.logger`` must be none, csv or tensorboard; tensorboard needs its package (one line otherwise)."""
    import importlib.util

    if kind not in ("none", "csv", "tensorboard"):
        raise MsalignError(f"train.logger {kind!r}: expected none, csv or tensorboard")
    if kind == "tensorboard" and not any(importlib.util.find_spec(m) for m in ("tensorboard", "tensorboardX")):
        raise MsalignError("--logger tensorboard: the tensorboard package is not installed (pip install tensorboard); "
                           "--logger csv needs nothing")


def make_logger(kind: str, seed_dir: Path):
    """Lightning's CSVLogger / TensorBoardLogger writing ``seed_dir/logs/`` (no version subfolders), or False."""
    check_logger(kind)
    if kind == "none":
        return False
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

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


def train_seed(
    model_name: str,
    model_config: Any,
    train_config: TrainConfig,
    dataset: MultimodalDataset,
    seed: int,
    out_dir: str | Path,
    progress: bool | None = None,
    resume: bool = False,
) -> SeedResult:
    """One seed: fit, restore the best-on-validation weights, score valid and test, save.

    ``resume``: continue from ``seed_N/lightning/last.ckpt`` (written after every epoch) when it
    exists; the result is the same as an uninterrupted run's."""
    _quiet_lightning()
    out_dir = Path(out_dir)
    seed_dir = out_dir / f"seed_{seed}"
    if train_config.threads > 0:
        torch.set_num_threads(train_config.threads)
    L.seed_everything(seed, workers=True, verbose=False)
    model = create_model(model_name, dims=dataset.dims, output_dim=dataset.output_dim, config=model_config)
    if train_config.finetune_text or train_config.finetune_layers:
        check_text_tuning(train_config)
        # every split's transcripts: the frozen lower layers run once, before the first step
        texts = [t for s in ("train", "valid", "test") for t in (dataset.split(s).raw_text or [])]
        attach_text_encoder(model, dataset.feature_spec, dataset.source or dataset.name,
                            finetune_layers=train_config.finetune_layers, texts=texts)
    modalities = model.modalities
    module = MSALightningModule(model, train_config, dataset.metric_set)
    monitor = f"valid/{module.monitor_key}"
    data = MSADataModule(dataset, modalities, train_config.batch_size, seed, train_config.num_workers)
    best = ModelCheckpoint(dirpath=seed_dir / "lightning", filename="best", monitor=monitor,
                           mode=module.monitor_mode, save_top_k=1, save_last=True, enable_version_counter=False)
    callbacks = [best, EarlyStopping(monitor=monitor, mode=module.monitor_mode, patience=train_config.patience)]
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
    trainer.fit(module, datamodule=data, ckpt_path=last if resume and last.is_file() else None)
    seconds = time.perf_counter() - started

    # Restore the best-on-validation weights before anything is scored.
    if best.best_model_path:
        state = torch.load(best.best_model_path, map_location="cpu", weights_only=True)["state_dict"]
        module.load_state_dict(state)
    best_epoch = _best_epoch(module.history, monitor, module.monitor_mode)
    # Scored through the trainer: under DDP each rank scores a shard and MSALightningModule gathers the
    # whole split before any metric is computed; on one device it is a plain pass in split order.
    trainer.validate(module, dataloaders=data.val_dataloader(), verbose=False)
    # A dataset without a test split (msalign tune's search runs on msalign.experiments.tune.validation_view)
    # is scored on validation only: the test rows are not in the process at all.
    scored = ("valid", "test") if "test" in dataset.splits else ("valid",)
    if "test" in scored:
        trainer.test(module, dataloaders=data.test_dataloader(), verbose=False)
    scores, predictions = {}, {}
    for split in scored:
        index, preds, labels = module.last_predictions[split]
        expected = len(dataset.split(split))
        if not np.array_equal(index, np.arange(expected)):
            raise MsalignError(f"{split} split: scored {len(index)} distinct rows of {expected}")
        scores[split] = module.last_metrics[split]
        predictions[split] = (dataset.split(split).ids, preds, labels)
    result = SeedResult(seed, best_epoch, scores["valid"], scores.get("test", {}), trainer.current_epoch, seconds,
                        str((seed_dir / "model.safetensors").relative_to(out_dir)), module.history)
    if not is_rank_zero():  # one writer: under DDP every rank holds the same weights and scores
        return result
    save_predictions(seed_dir / "predictions.npz", predictions)
    checkpoint = seed_dir / "model.safetensors"
    save_checkpoint(
        checkpoint,
        model,
        {
            "model_config": config_to_dict(model_config),
            "train_config": config_to_dict(train_config),
            "feature_spec": dataset.feature_spec.to_json(),
            "dataset": dataset.name,
            "metric_set": dataset.metric_set,
            "task": dataset.task,
            "modalities": list(modalities),
            "seed": seed,
            "metrics": scores,
            **({"text_tuning": model.text_encoder.metadata()} if getattr(model, "text_encoder", None) is not None else {}),
        },
    )
    atomic_write_text(seed_dir / "history.json", json.dumps(module.history, indent=1))
    return result


def is_rank_zero() -> bool:
    """False in the other processes of a multi-process run (DDP, SLURM): only rank 0 writes and logs."""
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


def save_predictions(path: str | Path, predictions: dict[str, tuple[list[str] | None, np.ndarray, np.ndarray]]) -> None:
    """Writes ``{split}_ids`` (str, when the split has ids), ``{split}_predictions`` and ``{split}_labels``
    per split to an .npz, atomically (temporary file in the same folder, then rename). Rows are in
    the split's order; no pickled objects, so ``np.load(path)`` reads it with pickles disallowed."""
    arrays: dict[str, np.ndarray] = {}
    for split, (ids, preds, labels) in predictions.items():
        preds, labels = np.asarray(preds), np.asarray(labels)
        if ids is not None and len(ids) == len(labels):
            arrays[f"{split}_ids"] = np.asarray([str(i) for i in ids], dtype=str)
        arrays[f"{split}_predictions"] = preds
        arrays[f"{split}_labels"] = labels
    atomic_savez(path, **arrays)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _best_epoch(rows: list[dict[str, float]], monitor: str, mode: str) -> int:
    scored = [r for r in rows if monitor in r]
    if not scored:
        return 0
    pick = min if mode == "min" else max
    return int(pick(scored, key=lambda r: r[monitor])["epoch"])


def run_identity(model_name: str, model_config: Any, train_config: TrainConfig, dataset: MultimodalDataset) -> dict:
    """What makes two runs the same run: a finished seed of the same identity is never trained again."""
    train = {k: v for k, v in config_to_dict(train_config).items() if k != "logger"}  # watching changes no result
    run_config = {"model": config_to_dict(model_config), "train": train}
    return json.loads(json.dumps({"model": model_name, "config": run_config, "feature_spec": dataset.feature_spec.to_json()}))


def finished_seed(out_dir: str | Path, seed: int, identity: dict) -> dict | None:
    """The per-seed summary of ``out_dir/seed_N/result.json`` when that seed finished with ``identity``."""
    previous = _read_json(Path(out_dir) / f"seed_{seed}" / "result.json")
    if previous is not None and previous.get("identity") == identity:
        return previous["result"]
    return None


def run_seed(
    model_name: str,
    dataset: MultimodalDataset,
    model_config: Any,
    train_config: TrainConfig,
    seed: int,
    out_dir: str | Path,
    progress: bool | None = None,
    log=print,
    resume: bool = False,
) -> dict[str, Any]:
    """One seed of a run into ``out_dir/seed_N`` (skipped when already finished; ``resume`` continues
    from its last Lightning checkpoint); returns the seed's summary. Writes only inside
    ``seed_N/``, so seeds and runs can go in parallel (:mod:`msalign.experiments.scheduling`)."""
    out_dir = Path(out_dir)
    if not is_rank_zero():
        log = _silent
    identity = run_identity(model_name, model_config, train_config, dataset)
    done = out_dir / f"seed_{seed}" / "result.json"
    previous = finished_seed(out_dir, seed, identity)
    if previous is not None:
        log(f"[{model_name} seed {seed}] already finished in {done.parent}, skipped")
        return previous
    started = done.parent / "run.json"  # which run the Lightning checkpoints in lightning/ belong to
    last = done.parent / "lightning" / "last.ckpt"
    resuming = resume and last.is_file()
    if resuming:
        if _read_json(started) != identity:
            raise MsalignError(f"--resume: {last} is from another run (model, config or data differ from "
                               f"{started}); drop --resume to start over")
        log(f"[{model_name} seed {seed}] resuming from {last}")
    elif is_rank_zero():
        atomic_write_text(started, json.dumps(identity, indent=1))
    result = train_seed(model_name, model_config, train_config, dataset, seed, out_dir, progress, resuming)
    headline = metrics.headline_keys(dataset.metric_set)
    shown, split = (result.test, "") if result.test else (result.valid, "valid: ")  # no test split: validation
    log(f"[{model_name} seed {seed}] best epoch {result.best_epoch}, {split}"
        + ", ".join(f"{k} {shown[k]:.4f}" for k in headline if k in shown)
        + f" ({result.seconds:.1f}s)")
    if is_rank_zero():
        atomic_write_text(done, json.dumps(
            {"identity": identity, "result": result.summary(), "seconds": round(result.seconds, 2)}, indent=1))
    return result.summary()


def _silent(line: str) -> None:
    pass


def summarize_run(
    model_name: str,
    dataset: MultimodalDataset,
    model_config: Any,
    train_config: TrainConfig,
    seeds: list[int],
    out_dir: str | Path,
    per_seed: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Writes ``out_dir/results.json`` from the finished seeds (per-seed, mean and population std);
    ``per_seed`` defaults to reading each ``seed_N/result.json``."""
    out_dir = Path(out_dir)
    if per_seed is None:
        identity = run_identity(model_name, model_config, train_config, dataset)
        per_seed = []
        for seed in seeds:
            result = finished_seed(out_dir, seed, identity)
            if result is None:
                raise MsalignError(f"{out_dir / f'seed_{seed}'}: seed {seed} has not finished")
            per_seed.append(result)
    mean, std = metrics.summarize([r["test"] for r in per_seed])
    results = {
        "model": model_name,
        "dataset": dataset.source or dataset.name,
        "metric_set": dataset.metric_set,
        "config": {"model": config_to_dict(model_config), "train": config_to_dict(train_config)},
        "seeds": list(seeds),
        "per_seed": per_seed,
        "mean": mean,
        "std": std,
    }
    if is_rank_zero():
        atomic_write_text(out_dir / "results.json", json.dumps(results, indent=2) + "\n")
    return results


def train(
    model_name: str,
    dataset: MultimodalDataset,
    model_config: Any,
    train_config: TrainConfig,
    seeds: list[int],
    out_dir: str | Path,
    progress: bool | None = None,
    log=print,
    resume: bool = False,
) -> dict[str, Any]:
    """Train over ``seeds`` one after another and write ``out_dir/results.json`` (per-seed, mean and
    population std).

    Finished seeds (``seed_N/result.json`` of the same run) are skipped; ``resume`` continues an
    unfinished seed from its last Lightning checkpoint."""
    get_model_class(model_name)  # unknown names fail before any work
    check_text_tuning(train_config)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    per_seed = [run_seed(model_name, dataset, model_config, train_config, seed, out_dir, progress, log, resume)
                for seed in seeds]
    return summarize_run(model_name, dataset, model_config, train_config, seeds, out_dir, per_seed)


__all__ = ["SeedResult", "finished_seed", "run_identity", "run_seed", "save_predictions", "summarize_run", "train",
           "train_seed"]
