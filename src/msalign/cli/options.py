"""Option groups shared by several commands, each declared once, and what turns them into the
library's typed requests (:class:`~msalign.data.options.DatasetOptions`,
:class:`~msalign.config.ConfigSources`, :class:`~msalign.experiments.scheduling.Backend`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from msalign import metrics
from msalign.config import ConfigSources, TrainConfig, describe_config_sources, resolve_run_config
from msalign.data.options import DatasetOptions, config_keys_for_spec, load_dataset_from_options
from msalign.data.types import MultimodalDataset
from msalign.experiments.scheduling import BACKENDS, Backend, import_ray
from msalign.models import build_config
from msalign.training.run import check_logger
from msalign.training.run_folder import check_planned_runs
from msalign.training.run_spec import RunSpec

CACHE_DIR_HELP = "text-feature cache (default $MSALIGN_CACHE or ~/.cache/msalign)"


def log_to_stderr(line: str) -> None:
    """Progress and notes go to stderr; stdout carries only a command's result."""
    print(line, file=sys.stderr)


# --- the dataset -------------------------------------------------------------------------------
def add_cache_dir_option(parser: argparse.ArgumentParser) -> None:
    """``--cache-dir``: where text features are cached."""
    parser.add_argument("--cache-dir", default=None, help=CACHE_DIR_HELP)


def add_dataset_options(parser: argparse.ArgumentParser, required: bool = True, positional: bool = False) -> None:
    """``--dataset`` (or, with ``positional``, a SOURCE argument stored as ``dataset``) and the load options."""
    what = "synthetic[:key=value,...], an MMSA .pkl, a feature directory or a feature store"
    if positional:
        parser.add_argument("dataset", metavar="SOURCE", help=what)
    else:
        parser.add_argument("--dataset", required=required, default=None if required else "synthetic", help=what)
    parser.add_argument("--modalities", default=None, help="comma-separated subset, e.g. text,audio")
    parser.add_argument(
        "--blank",
        default=None,
        metavar="MODALITIES",
        help="replace these modalities' features by zeros (the same model, the stream carrying nothing)",
    )
    parser.add_argument("--text-encoder", default=None, help="minilm (default), a local HF folder, or a hub name")
    parser.add_argument(
        "--task",
        default=None,
        choices=["regression", "classification"],
        help="what the labels are (default: from the metric set, class names or the path; integer-only "
        "labels must say)",
    )
    parser.add_argument(
        "--metric-set",
        default=None,
        choices=["mosi", "mosei", "sims", "iemocap"],
        help="metrics to score with (iemocap: the classification set, WAcc/WAF1)",
    )
    parser.add_argument(
        "--empty-clips",
        default=None,
        choices=["drop", "error"],
        help="clips that are all padding in every modality: error (default) or drop them (counted per split)",
    )
    add_cache_dir_option(parser)
    parser.add_argument(
        "--descriptions",
        nargs="?",
        const=True,
        default=None,
        metavar="FILE",
        help="append msalign describe's descriptions (DATASET/descriptions.json, or FILE) to the text",
    )
    parser.add_argument(
        "--group-standardize",
        nargs="?",
        const=True,
        default=None,
        metavar="MODALITIES",
        help="z-score each clip with its group's statistics, shrunk toward the training split's "
        "(feature directories; default every non-text modality, or e.g. audio,vision)",
    )
    parser.add_argument("--group-column", default=None, help="label.csv column naming the group (default video_id)")
    parser.add_argument(
        "--group-strength",
        type=float,
        default=None,
        help="weight of the training prior in a group's statistics, in clips (default 2)",
    )
    parser.add_argument(
        "--text-lexicon",
        nargs="?",
        const=True,
        default=None,
        metavar="NAMES",
        help="append sentiment-lexicon descriptors of each transcript (vader, textblob, valence; default all) "
        "to every position of its text features; from the transcript only, no label is read "
        "(feature directories with a text column; extra: bash scripts/setup.sh lexicon)",
    )
    parser.add_argument(
        "--group-context",
        nargs="?",
        const=True,
        default=None,
        metavar="MODALITIES",
        help="append to each clip the mean features of its group's clips (--group-column, itself included, "
        "within its split; features only, no label is read); width doubles (default text, or e.g. text,audio). "
        "predict: the clips of one call form the group",
    )


def dataset_options(args: argparse.Namespace) -> DatasetOptions:
    """The options of :func:`add_dataset_options` as the library's :class:`DatasetOptions`."""
    return DatasetOptions(
        dataset=args.dataset,
        modalities=args.modalities,
        blank=args.blank,
        text_encoder=args.text_encoder,
        task=args.task,
        metric_set=args.metric_set,
        empty_clips=args.empty_clips,
        cache_dir=args.cache_dir,
        descriptions=args.descriptions,
        group_standardize=args.group_standardize,
        group_column=args.group_column,
        group_strength=args.group_strength,
        text_lexicon=args.text_lexicon,
        group_context=args.group_context,
    )


def load_dataset(args: argparse.Namespace) -> MultimodalDataset:
    """The dataset of :func:`add_dataset_options`'s options."""
    return load_dataset_from_options(dataset_options(args))


# --- the run's config --------------------------------------------------------------------------
def add_config_options(parser: argparse.ArgumentParser, set_help: str) -> None:
    """``--config FILE`` and ``--set KEY=VALUE ...``."""
    parser.add_argument("--config", default=None, help="YAML file with 'model' and 'train' sections")
    parser.add_argument("--set", action="extend", nargs="+", default=[], metavar="KEY=VALUE", help=set_help)


def add_progress_option(parser: argparse.ArgumentParser, help: str | None) -> None:
    """``--progress/--no-progress`` (default: bars when stderr is a terminal)."""
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None, help=help)


def add_run_options(
    parser: argparse.ArgumentParser, set_help: str = "override config fields (repeatable: --set a=1 b=2 --set c=3)"
) -> None:
    """The config options and the shortcuts for train fields of every command that trains."""
    add_config_options(parser, set_help)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument(
        "--devices",
        type=int,
        default=None,
        help="devices per run (train.devices): GPUs, or CPU processes with --accelerator cpu",
    )
    parser.add_argument(
        "--strategy", default=None, help="Lightning strategy for several devices (train.strategy), e.g. ddp"
    )
    parser.add_argument("--accelerator", default=None, help="train.accelerator: auto (default), cpu, gpu, mps, ...")
    add_progress_option(parser, "progress bars (default: when stderr is a terminal)")
    parser.add_argument(
        "--logger",
        default=None,
        choices=["none", "csv", "tensorboard"],
        help="train.logger: a Lightning log in OUT/.../seed_N/logs/ to watch a run (csv: metrics.csv; "
        "tensorboard: tensorboard --logdir OUT)",
    )


def config_sources(args: argparse.Namespace) -> ConfigSources:
    """``--config``, ``--set`` and the train shortcuts (absent on commands that do not train: None)."""
    return ConfigSources(
        config_file=args.config,
        overrides=tuple(args.set),
        epochs=getattr(args, "epochs", None),
        devices=getattr(args, "devices", None),
        strategy=getattr(args, "strategy", None),
        accelerator=getattr(args, "accelerator", None),
        logger=getattr(args, "logger", None),
    )


def config_keys(dataset: MultimodalDataset | None, args: argparse.Namespace) -> tuple[str, ...]:
    """The dataset's config keys (configs/MODEL/<key>.yaml); without a dataset, the --metric-set given."""
    if dataset is not None:
        return dataset.resolved_config_keys()
    return tuple(filter(None, [getattr(args, "metric_set", None)]))


def resolve_for_keys(
    model: str, keys: Sequence[str], args: argparse.Namespace, extra: Sequence[str] = ()
) -> tuple[Any, TrainConfig]:
    """(model config, train config) of ``model`` from the config files of ``keys`` and the options."""
    model_config, train_config = resolve_run_config(model, build_config(model), keys, config_sources(args), extra)
    if train_config.logger != "none":  # before any training: tensorboard may be missing
        check_logger(train_config.logger)
    return model_config, train_config


def resolve(
    model: str, dataset: MultimodalDataset | None, args: argparse.Namespace, extra: Sequence[str] = ()
) -> tuple[Any, TrainConfig]:
    """:func:`resolve_for_keys` with the dataset's config keys."""
    return resolve_for_keys(model, config_keys(dataset, args), args, extra)


def check_settings_early(model: str, args: argparse.Namespace, extra: Sequence[str] = ()) -> None:
    """Resolve --config / --set before any data loads, so a wrong key or a value out of range costs
    no loading time. The dataset's own config file is chosen as the loaded dataset would choose it;
    when the spec alone cannot tell (:func:`config_keys_for_spec`), the check waits for the data."""
    keys = config_keys_for_spec(str(getattr(args, "dataset", "") or ""), args.metric_set)
    if keys is not None:
        resolve_for_keys(model, keys, args, extra)


def summary(dataset: MultimodalDataset | None, models: Sequence[str], args: argparse.Namespace) -> str:
    """The one-line dataset summary (sizes, shapes, task and metric set with why) and the config files applied."""
    head = dataset.describe() if dataset is not None else "no dataset"
    return f"{head}; config files: {describe_config_sources(models, config_keys(dataset, args), args.config)}"


# --- run folders -------------------------------------------------------------------------------
def add_out_options(parser: argparse.ArgumentParser, resume_help: str | None, overwrite_help: str) -> None:
    """``--resume`` (when the command resumes seeds) and ``--overwrite``."""
    if resume_help is not None:
        parser.add_argument("--resume", action="store_true", help=resume_help)
    parser.add_argument("--overwrite", action="store_true", help=overwrite_help)


def check_runs(
    runs: Mapping[str, RunSpec], dataset: MultimodalDataset, args: argparse.Namespace, derived_root: Path | None = None
) -> None:
    """Refuses a run folder holding another run unless --overwrite (then clears it)."""
    check_planned_runs(runs, dataset, args.overwrite, log_to_stderr, derived_root)


def print_table(rows: dict[str, dict[str, float]], metric_set: str, std: dict | None = None) -> None:
    """The headline metrics of ``metric_set``, one row per entry of ``rows``."""
    print(metrics.format_table(rows, metrics.headline_keys(metric_set), std=std))


# --- where trials run --------------------------------------------------------------------------
def add_backend_options(parser: argparse.ArgumentParser) -> None:
    """``--backend``, ``--jobs``, ``--ray-address``, ``--ray-cpus``, ``--cpus-per-trial``,
    ``--gpus-per-trial`` (benchmark, sweep, tune); :func:`backend_from_args` reads them."""
    group = parser.add_argument_group("where the trials run (one trial = one model/point and seed)")
    group.add_argument(
        "--backend",
        choices=BACKENDS,
        default="local",
        help="local: this machine (default); ray: Ray tasks on a cluster or a local Ray instance",
    )
    group.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="local: trials at once, each in its own process (default 1: one after another here)",
    )
    group.add_argument(
        "--ray-address",
        default=None,
        help="ray: a running cluster, e.g. auto or ray://host:10001 (default: start a local instance)",
    )
    group.add_argument("--ray-cpus", type=int, default=None, help="ray: CPUs of the local instance (default: all)")
    group.add_argument(
        "--cpus-per-trial",
        type=float,
        default=1.0,
        help="CPUs a trial reserves on Ray, and its torch threads when train.threads is 0 (default 1)",
    )
    group.add_argument("--gpus-per-trial", type=float, default=0.0, help="ray: GPUs a trial reserves (default 0)")


def backend_from_args(args: argparse.Namespace) -> Backend:
    """The :class:`Backend` the options of :func:`add_backend_options` ask for (one-line errors;
    ``--backend ray`` without Ray installed fails here, before any data is loaded)."""
    if args.backend == "ray":
        import_ray()
    return Backend(
        kind=args.backend,
        jobs=1 if args.jobs is None else args.jobs,
        ray_address=args.ray_address,
        ray_cpus=args.ray_cpus,
        cpus_per_trial=args.cpus_per_trial,
        gpus_per_trial=args.gpus_per_trial,
    )
