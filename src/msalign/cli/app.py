"""The ``msalign`` command line: a thin layer over the library.

Every user error is one line on stderr and a non-zero exit; no tracebacks
(set MSALIGN_DEBUG=1 to see one for an unexpected internal error).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from msalign.errors import MsalignError, PartialResults

DEFAULT_MODELS = ("text_only", "late_fusion", "mult", "decalign")


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise MsalignError(f"--seeds {text!r}: expected comma-separated integers, e.g. 1111,1112") from None
    if not seeds:
        raise MsalignError("--seeds: no seed given")
    return seeds


def _add_dataset_options(parser: argparse.ArgumentParser, required: bool = True, positional: bool = False) -> None:
    """``--dataset`` (or, with ``positional``, a SOURCE argument stored as ``dataset``) and the load options."""
    what = "synthetic[:key=value,...], an MMSA .pkl, a feature directory or a feature store"
    if positional:
        parser.add_argument("dataset", metavar="SOURCE", help=what)
    else:
        parser.add_argument("--dataset", required=required, default=None if required else "synthetic", help=what)
    parser.add_argument("--modalities", default=None, help="comma-separated subset, e.g. text,audio")
    parser.add_argument("--blank", default=None, metavar="MODALITIES",
                        help="replace these modalities' features by zeros (the same model, the stream carrying nothing)")
    parser.add_argument("--text-encoder", default=None, help="minilm (default), a local HF folder, or a hub name")
    parser.add_argument("--task", default=None, choices=["regression", "classification"],
                        help="what the labels are (default: from the metric set, class names or the path; integer-only "
                             "labels must say)")
    parser.add_argument("--metric-set", default=None, choices=["mosi", "mosei", "sims", "iemocap"],
                        help="metrics to score with (iemocap: the classification set, WAcc/WAF1)")
    parser.add_argument("--empty-clips", default=None, choices=["drop", "error"],
                        help="clips that are all padding in every modality: error (default) or drop them (counted per split)")
    parser.add_argument("--cache-dir", default=None, help="text-feature cache (default $MSALIGN_CACHE or ~/.cache/msalign)")
    parser.add_argument("--descriptions", nargs="?", const=True, default=None, metavar="FILE",
                        help="append msalign describe's descriptions (DATASET/descriptions.json, or FILE) to the text")
    parser.add_argument("--group-standardize", nargs="?", const=True, default=None, metavar="MODALITIES",
                        help="z-score each clip with its group's statistics, shrunk toward the training split's "
                             "(feature directories; default every non-text modality, or e.g. audio,vision)")
    parser.add_argument("--group-column", default=None, help="label.csv column naming the group (default video_id)")
    parser.add_argument("--group-strength", type=float, default=None,
                        help="weight of the training prior in a group's statistics, in clips (default 2)")


def _add_run_options(parser: argparse.ArgumentParser,
                     set_help: str = "override config fields (repeatable: --set a=1 b=2 --set c=3)") -> None:
    parser.add_argument("--config", default=None, help="YAML file with 'model' and 'train' sections")
    parser.add_argument("--set", action="extend", nargs="+", default=[], metavar="KEY=VALUE", help=set_help)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--devices", type=int, default=None,
                        help="devices per run (train.devices): GPUs, or CPU processes with --accelerator cpu")
    parser.add_argument("--strategy", default=None, help="Lightning strategy for several devices (train.strategy), e.g. ddp")
    parser.add_argument("--accelerator", default=None, help="train.accelerator: auto (default), cpu, gpu, mps, ...")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="progress bars (default: when stderr is a terminal)")
    parser.add_argument("--logger", default=None, choices=["none", "csv", "tensorboard"],
                        help="train.logger: a Lightning log in OUT/.../seed_N/logs/ to watch a run (csv: metrics.csv; "
                             "tensorboard: tensorboard --logdir OUT)")


def _load_dataset(args: argparse.Namespace, defaults: dict | None = None):
    from msalign.data import load_dataset

    options = dict(defaults or {})
    for key in ("text_encoder", "metric_set", "task", "cache_dir", "modalities", "descriptions", "empty_clips",
                "group_column", "group_strength", "blank"):
        if getattr(args, key, None) is not None:
            options[key] = getattr(args, key)
    group = getattr(args, "group_standardize", None)
    if isinstance(group, str):
        group = [m.strip() for m in group.split(",") if m.strip()]
    if group is not None and not isinstance(options.get("group_standardize"), dict):  # a checkpoint's priors win
        options["group_standardize"] = group
    return load_dataset(args.dataset, **options)


def _check_settings_early(model: str, args: argparse.Namespace, extra: list[str] = ()) -> None:
    """Resolve --config / --set before any data loads, so a wrong key or a value out of range costs
    no loading time. The dataset's own config file (configs/MODEL/<name or metric set>.yaml) is
    chosen as the loaded dataset would choose it; when that cannot be known from the spec alone
    (no metric set in the path or --metric-set), the check waits for the data, as it always ran."""
    spec = str(getattr(args, "dataset", "") or "")
    if spec == "synthetic" or spec.startswith("synthetic:"):
        keys: tuple[str, ...] = ("synthetic", "mosi")
    elif args.metric_set:
        keys = (args.metric_set,)
    else:
        found = [key for part in reversed(Path(spec).parts) for key in ("mosei", "mosi", "sims", "iemocap")
                 if key in part.lower()]
        if not found:
            return
        keys = (found[0],)
    from types import SimpleNamespace

    # a stand-in for the dataset: only its config keys are read before the data loads
    _resolve(model, SimpleNamespace(resolved_config_keys=lambda: keys), args, extra)


def _resolve(model: str, dataset, args: argparse.Namespace, extra: list[str] = ()):
    from msalign.config import resolve_config
    from msalign.models import build_config

    # the dataset's config files (configs/MODEL/<name or metric set>.yaml); none without a dataset
    keys = _config_keys(dataset, args)
    model_config, train_config = resolve_config(model, build_config(model), keys, args.config, [*args.set, *extra])
    if args.epochs is not None:
        if args.epochs < 1:
            raise MsalignError(f"--epochs {args.epochs}: must be at least 1")
        train_config.epochs = args.epochs
    if getattr(args, "devices", None) is not None:
        if args.devices < 1:
            raise MsalignError(f"--devices {args.devices}: must be at least 1")
        train_config.devices = args.devices
    for key in ("strategy", "accelerator", "logger"):
        if getattr(args, key, None) is not None:
            setattr(train_config, key, getattr(args, key))
    if train_config.logger != "none":  # before any training: tensorboard may be missing
        from msalign.training.run import check_logger

        check_logger(train_config.logger)
    return model_config, train_config


def _config_keys(dataset, args: argparse.Namespace) -> tuple[str, ...]:
    return dataset.resolved_config_keys() if dataset is not None else tuple(filter(None, [getattr(args, "metric_set", None)]))


def _summary(dataset, models: list[str], args: argparse.Namespace) -> str:
    """The one-line dataset summary (sizes, shapes, task and metric set with why) and the config files applied."""
    from msalign.config import config_files, describe_files

    keys = _config_keys(dataset, args)
    files = {m: describe_files(config_files(m, keys, args.config)) for m in dict.fromkeys(models)}
    applied = next(iter(files.values())) if len(set(files.values())) == 1 else "; ".join(f"{m}: {f}" for m, f in files.items())
    head = dataset.describe() if dataset is not None else "no dataset"
    return f"{head}; config files: {applied}"


def cmd_models(args: argparse.Namespace) -> int:
    from msalign.models.config_docs import format_model_help, modality_summary
    from msalign.models import get_model_class, list_models

    if args.name:
        print(format_model_help(args.name))
        return 0
    for name in list_models():
        cls = get_model_class(name)
        doc = (sys.modules[cls.__module__].__doc__ or "").strip().splitlines()[0].partition(": ")[2]
        print(f"{name:12s} {modality_summary(cls):52s} {doc}")
    print("msalign models NAME: every config key of a model with its type, default and meaning")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from msalign.models import get_model_class
    from msalign.training import RunSpec, train

    get_model_class(args.model)  # fail before any data is loaded
    seeds = _seeds(args.seeds)
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise MsalignError(f"--out {args.out}: exists and is not a directory")
    _check_settings_early(args.model, args)
    dataset = _load_dataset(args)
    model_config, train_config = _resolve(args.model, dataset, args)
    with _out_lock(args.out):  # taken before anything is printed: a refused second run says one line
        print(_summary(dataset, [args.model], args), file=sys.stderr)
        spec = RunSpec(args.model, model_config, train_config, seeds, Path(args.out), resume=args.resume)
        _check_out({args.model: spec}, dataset, args)
        results = train(spec, dataset, progress=args.progress, log=lambda line: print(line, file=sys.stderr))
    several = len(seeds) > 1  # "± std" only over more than one seed
    print(f"Test metrics, {f'mean ± population std over seeds {seeds}' if several else f'seed {seeds[0]}'}:")
    _print_table({args.model: results.mean}, dataset.metric_set, std={args.model: results.std} if several else None)
    print(f"results: {Path(args.out) / 'results.json'}", file=sys.stderr)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from msalign import metrics
    from msalign.training.checkpoint import check_feature_spec, load_checkpoint
    from msalign.training.data import default_device, eval_loader
    from msalign.training.module import predict_split

    model, info = load_checkpoint(args.checkpoint)
    defaults = {k: v for k, v in info.get("feature_spec", {}).get("options", {}).items()}
    if info.get("task") in ("regression", "classification"):
        defaults["task"] = info["task"]  # the training task, also for integer class labels
    dataset = _load_dataset(args, defaults)
    check_feature_spec(info, dataset.feature_spec, dataset.dims, args.checkpoint)
    if args.modality_ablation:
        from msalign.evaluation.ablation import format_contribution, modality_contribution

        results = modality_contribution(model, dataset, args.split)
        if args.json:
            print(json.dumps({"checkpoint": str(args.checkpoint), "split": args.split, "modality_ablation": results}))
        else:
            print(format_contribution(results, metrics.headline_keys(dataset.metric_set)))
        return 0
    split = dataset.split(args.split)
    loader = eval_loader(dataset, model.modalities, args.split)
    device = default_device()
    preds, labels = predict_split(model.to(device), loader, device)
    values = metrics.compute(preds, labels, dataset.metric_set)
    if args.json:
        print(json.dumps({"checkpoint": str(args.checkpoint), "split": args.split, "n": len(split), "metrics": values}))
    else:
        _print_table({f"{info['model']} ({args.split}, n={len(split)})": values}, dataset.metric_set)
    return 0


def cmd_benchmark(args: argparse.Namespace) -> int:
    from msalign.experiments.benchmark import parse_entries, run_benchmark
    from msalign.experiments.scheduling import backend_from_args
    from msalign.training import RunSpec

    from msalign.models import get_model_class

    entries = parse_entries(args.models)
    for _, name, _ in entries:
        get_model_class(name)
    seeds = _seeds(args.seeds)
    backend = backend_from_args(args)
    for _, name, overrides in entries:
        _check_settings_early(name, args, overrides)
    dataset = _load_dataset(args)
    runs = {label: RunSpec(name, *_resolve(name, dataset, args, extra=overrides), seeds, Path(args.out) / label,
                           resume=args.resume) for label, name, overrides in entries}
    with _out_lock(args.out):  # taken before anything is printed: a refused second run says one line
        print(_summary(dataset, [name for _, name, _ in entries], args), file=sys.stderr)
        _check_out(runs, dataset, args, derived_root=Path(args.out))
        table = run_benchmark(runs, dataset, args.out, seeds, progress=args.progress,
                              log=lambda line: print(line, file=sys.stderr), backend=backend)
    print(table)
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from msalign.experiments.scheduling import backend_from_args
    from msalign.models import get_model_class
    from msalign.experiments.tune import TuneSettings, fixed_keys, format_result, tune

    get_model_class(args.model)  # fail before any data is loaded
    settings = TuneSettings(trials=args.trials, search_seeds=tuple(_seeds(args.seeds_search)),
                            seeds=tuple(_seeds(args.seeds)), sampler_seed=args.sampler_seed,
                            write_config=args.write_config)
    backend = backend_from_args(args)
    dataset = _load_dataset(args)
    print(_summary(dataset, [args.model], args), file=sys.stderr)
    model_config, train_config = _resolve(args.model, dataset, args)
    out = args.out or str(Path("runs") / "tune" / f"{args.model}-{dataset.name}")
    result = tune(args.model, dataset, model_config, train_config, settings, out,
                  fixed=fixed_keys(model_config, train_config, args.set), backend=backend,
                  log=lambda line: print(line, file=sys.stderr), progress=args.progress)
    print(format_result(result))
    print(f"tuned config: {Path(out) / result.files['config']}; search record: {Path(out) / result.files['record']}",
          file=sys.stderr)
    return 0


def _add_tune_parser(sub, run_options) -> None:
    from msalign.experiments.scheduling import add_backend_options

    tune = sub.add_parser("tune", help="search a model's declared hyperparameter space on VALIDATION (Optuna, "
                                       "resumable), then train the best over 5 seeds and write the tuned config")
    tune.add_argument("--model", required=True)
    _add_dataset_options(tune)
    run_options(tune, set_help="fix config fields (a searchable key given here is not searched)")
    tune.add_argument("--trials", type=int, required=True, help="search trials (the budget; the same for every model)")
    tune.add_argument("--seeds-search", default="1111", help="seeds each search trial trains (validation mean)")
    tune.add_argument("--seeds", default="1111,1112,1113,1114,1115", help="seeds of the final run of the chosen config")
    tune.add_argument("--sampler-seed", type=int, default=0, help="seed of Optuna's TPE sampler (default 0)")
    tune.add_argument("--out", default=None, help="study, trials and final run (default runs/tune/MODEL-DATASET)")
    tune.add_argument("--write-config", action="store_true",
                      help="also write configs/MODEL/DATASET.yaml and its .search.json record")
    add_backend_options(tune)
    tune.set_defaults(func=cmd_tune)


def _check_out(runs: dict, dataset, args: argparse.Namespace, derived_root: Path | None = None) -> None:
    """Refuses a run folder holding another run unless --overwrite (then clears it): msalign.training.run_folder.

    ``runs``: label -> RunSpec."""
    from msalign.training.run_folder import check_out_dirs, run_identity

    identities = {label: (run.out_dir, run_identity(run, dataset)) for label, run in runs.items()}
    check_out_dirs(identities, args.overwrite, lambda line: print(line, file=sys.stderr), derived_root)


def _print_table(rows: dict, metric_set: str, std: dict | None = None) -> None:
    from msalign import metrics

    print(metrics.format_table(rows, metrics.headline_keys(metric_set), std=std))


def build_parser() -> argparse.ArgumentParser:
    from msalign import __version__

    parser = argparse.ArgumentParser(prog="msalign", description="Multimodal sentiment analysis with cross-modal alignment")
    parser.add_argument("--version", action="version", version=f"msalign {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    models = sub.add_parser("models", help="list the registered models; with NAME, its modalities and every config key")
    models.add_argument("name", nargs="?", metavar="NAME", help="a model: print its config keys (type, default, meaning)")
    models.set_defaults(func=cmd_models)

    run_options = _add_run_options

    train = sub.add_parser("train", help="train a model over seeds; writes OUT/results.json and checkpoints")
    train.add_argument("--model", required=True)
    _add_dataset_options(train)
    run_options(train)
    train.add_argument("--seeds", default="1111")
    train.add_argument("--out", required=True)
    train.add_argument("--resume", action="store_true",
                       help="continue an interrupted seed from OUT/seed_N/lightning/last.ckpt (finished seeds are always skipped)")
    train.add_argument("--overwrite", action="store_true",
                       help="replace a run of another configuration in OUT (its seeds, results.json and report/)")
    train.set_defaults(func=cmd_train)

    evaluate = sub.add_parser("evaluate", help="score a checkpoint on a dataset split")
    evaluate.add_argument("--checkpoint", required=True)
    _add_dataset_options(evaluate)
    evaluate.add_argument("--split", default="test", choices=["train", "valid", "test"])
    evaluate.add_argument("--json", action="store_true")
    evaluate.add_argument("--modality-ablation", action="store_true",
                          help="also score with each modality permuted across clips / set to its train mean")
    evaluate.set_defaults(func=cmd_evaluate)

    bench = sub.add_parser("benchmark", help="models x seeds on one dataset; a comparison table (resumable)")
    bench.add_argument("--models", default=",".join(DEFAULT_MODELS),
                       help="comma-separated models; NAME[key=value,...] adds a variant, e.g. decalign[hete=false]")
    _add_dataset_options(bench, required=False)
    run_options(bench)
    bench.add_argument("--seeds", default="1111,1112,1113")
    bench.add_argument("--out", default="runs/benchmark")
    bench.add_argument("--resume", action="store_true",
                       help="continue an interrupted seed from its last Lightning checkpoint (finished seeds are always skipped)")
    bench.add_argument("--overwrite", action="store_true",
                       help="replace entries run with another configuration (their seeds; the table and report/)")
    from msalign.experiments.scheduling import add_backend_options

    add_backend_options(bench)
    bench.set_defaults(func=cmd_benchmark)

    from msalign.cli import report
    from msalign.evaluation import profiling as profile
    from msalign.experiments import sweep

    profile.add_parser(sub, _add_dataset_options)

    sweep.add_parser(sub)
    _add_tune_parser(sub, run_options)
    from msalign.data import store; store.add_parser(sub)  # noqa: E702  msalign convert
    report.add_parser(sub)

    from msalign.inference import predict
    from msalign.extract import pipeline as extract_pipeline

    extract_pipeline.add_parser(sub)
    predict.add_parser(sub)
    from msalign.describe import run as describe_run

    describe_run.add_parser(sub)
    return parser


def _out_lock(out: str | Path):
    """An exclusive lock on ``--out`` for the run (atomic.locked_dir); DDP ranks > 0 repeat rank 0's
    command inside rank 0's lock, so they take none."""
    from contextlib import nullcontext

    from msalign.atomic import locked_dir

    return locked_dir(out) if _process_rank() == 0 else nullcontext(Path(out))


def _process_rank() -> int:
    """This process's rank in a multi-process job (Lightning's DDP children, torchrun, SLURM's srun),
    from the variables they set, as Lightning reads them; 0 outside one."""
    for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        if os.environ.get(key, "").strip().isdigit():
            return int(os.environ[key])
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if _process_rank() > 0:
        # the other processes of a DDP run repeat rank 0's command; rank 0 alone prints results
        # (errors still reach stderr)
        sys.stdout = open(os.devnull, "w")
    try:
        return args.func(args)
    except MsalignError as error:
        if isinstance(error, PartialResults):  # some trials failed: the finished ones' table first
            print(error.table)
        print(f"msalign: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("msalign: interrupted", file=sys.stderr)
        return 130
    except (FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError, NotADirectoryError) as error:
        print(f"msalign: error: {error.strerror or error}: {error.filename}", file=sys.stderr)
        return 2
    except Exception as error:  # an internal error: one line, traceback on request
        if os.environ.get("MSALIGN_DEBUG"):
            raise
        print(f"msalign: internal error: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''} "
              "(set MSALIGN_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
