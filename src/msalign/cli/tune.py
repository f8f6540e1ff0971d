"""``msalign tune``: search a model's declared hyperparameter space on validation, then train the best."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from msalign.cli.commands import SUMMARIES
from msalign.cli.options import (
    add_backend_options,
    add_dataset_options,
    add_run_options,
    backend_from_args,
    load_dataset,
    log_to_stderr,
    resolve,
    summary,
)
from msalign.config import parse_seeds
from msalign.experiments.tune import tune
from msalign.experiments.tune_record import format_result
from msalign.experiments.tune_search import TuneSettings, fixed_keys
from msalign.models import get_model_class


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Adds ``msalign tune`` to the subcommands."""
    parser = sub.add_parser("tune", help=SUMMARIES["tune"])
    parser.add_argument("--model", required=True)
    add_dataset_options(parser)
    add_run_options(parser, set_help="fix config fields (a searchable key given here is not searched)")
    parser.add_argument(
        "--trials", type=int, required=True, help="search trials (the budget; the same for every model)"
    )
    parser.add_argument("--seeds-search", default="1111", help="seeds each search trial trains (validation mean)")
    parser.add_argument(
        "--seeds", default="1111,1112,1113,1114,1115", help="seeds of the final run of the chosen config"
    )
    parser.add_argument("--sampler-seed", type=int, default=0, help="seed of Optuna's TPE sampler (default 0)")
    parser.add_argument("--out", default=None, help="study, trials and final run (default runs/tune/MODEL-DATASET)")
    parser.add_argument(
        "--write-config", action="store_true", help="also write configs/MODEL/DATASET.yaml and its .search.json record"
    )
    add_backend_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Runs ``msalign tune``; returns the exit status."""
    get_model_class(args.model)  # fail before any data is loaded
    settings = TuneSettings(
        trials=args.trials,
        search_seeds=tuple(parse_seeds(args.seeds_search)),
        seeds=tuple(parse_seeds(args.seeds)),
        sampler_seed=args.sampler_seed,
        write_config=args.write_config,
    )
    backend = backend_from_args(args)
    dataset = load_dataset(args)
    print(summary(dataset, [args.model], args), file=sys.stderr)
    model_config, train_config = resolve(args.model, dataset, args)
    out = args.out or str(Path("runs") / "tune" / f"{args.model}-{dataset.name}")
    result = tune(
        args.model,
        dataset,
        model_config,
        train_config,
        settings,
        out,
        fixed=fixed_keys(model_config, train_config, args.set),
        backend=backend,
        log=log_to_stderr,
        progress=args.progress,
    )
    print(format_result(result))
    print(
        f"tuned config: {Path(out) / result.files['config']}; search record: {Path(out) / result.files['record']}",
        file=sys.stderr,
    )
    return 0
