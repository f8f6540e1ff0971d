"""``msalign sweep``: one model over a grid of config values, the best point chosen on validation."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from msalign.atomic import run_dir_lock
from msalign.cli.commands import SUMMARIES
from msalign.cli.options import (
    add_backend_options,
    add_dataset_options,
    add_out_options,
    add_run_options,
    backend_from_args,
    check_runs,
    load_dataset,
    log_to_stderr,
    resolve,
    summary,
)
from msalign.config import parse_seeds
from msalign.experiments.sweep import (
    SWEEP_FILE,
    check_grid,
    format_sweep,
    parse_grid,
    point_runs,
    run_sweep,
)
from msalign.models import build_config, get_model_class
from msalign.training.run_spec import RunSpec


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Adds ``msalign sweep`` to the subcommands."""
    parser = sub.add_parser("sweep", help=SUMMARIES["sweep"])
    parser.add_argument("--model", required=True)
    add_dataset_options(parser)
    parser.add_argument(
        "--grid",
        nargs="+",
        required=True,
        metavar="KEY=V1,V2,...",
        help="model config keys and their values, e.g. --grid alpha=0.01,0.05,0.1 beta=0.01,0.05,0.1",
    )
    add_run_options(parser, set_help="override config fields for every point (the grid keys win)")
    parser.add_argument("--seeds", default="1111")
    parser.add_argument("--out", required=True)
    add_out_options(
        parser, None, "replace points run with another configuration (their seeds; sweep.json, sweep.md, report/)"
    )
    add_backend_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Runs ``msalign sweep``; returns the exit status."""
    get_model_class(args.model)
    seeds = parse_seeds(args.seeds)
    backend = backend_from_args(args)
    # keys and types before any data is loaded; whole points against the resolved config in run_sweep
    grid = check_grid(args.model, build_config(args.model), parse_grid(args.grid), check_points=False)
    dataset = load_dataset(args)
    model_config, train_config = resolve(args.model, dataset, args)
    spec = RunSpec(args.model, model_config, train_config, tuple(seeds), Path(args.out))
    with run_dir_lock(args.out):  # one sweep per --out at a time; taken before anything is printed
        print(summary(dataset, [args.model], args), file=sys.stderr)
        # a point's folder holding seeds of another configuration: refused unless --overwrite
        check_runs(
            point_runs(spec, check_grid(args.model, model_config, grid)), dataset, args, derived_root=Path(args.out)
        )
        result = run_sweep(spec, grid, dataset, progress=args.progress, log=log_to_stderr, backend=backend)
    print(format_sweep(result))
    print(f"sweep: {Path(args.out) / SWEEP_FILE}", file=sys.stderr)
    return 0
