"""``msalign benchmark``: models x seeds on one dataset, and their comparison table."""

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
    check_settings_early,
    load_dataset,
    log_to_stderr,
    resolve,
    summary,
)
from msalign.config import parse_seeds
from msalign.experiments.benchmark import parse_entries, run_benchmark
from msalign.models import get_model_class
from msalign.training.run_spec import RunSpec

DEFAULT_MODELS = ("text_only", "late_fusion", "mult", "decalign")


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Adds ``msalign benchmark`` to the subcommands."""
    parser = sub.add_parser("benchmark", help=SUMMARIES["benchmark"])
    parser.add_argument(
        "--models",
        default=",".join(DEFAULT_MODELS),
        help="comma-separated models; NAME[key=value,...] adds a variant, e.g. decalign[hete=false]",
    )
    add_dataset_options(parser, required=False)
    add_run_options(parser)
    parser.add_argument("--seeds", default="1111,1112,1113")
    parser.add_argument("--out", default="runs/benchmark")
    add_out_options(
        parser,
        "continue an interrupted seed from its last Lightning checkpoint (finished seeds are always skipped)",
        "replace entries run with another configuration (their seeds; the table and report/)",
    )
    add_backend_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Runs ``msalign benchmark``; returns the exit status."""
    entries = parse_entries(args.models)
    for entry in entries:
        get_model_class(entry.model_name)
    seeds = parse_seeds(args.seeds)
    backend = backend_from_args(args)
    for entry in entries:
        check_settings_early(entry.model_name, args, entry.overrides)
    dataset = load_dataset(args)
    runs = {
        entry.label: RunSpec(
            entry.model_name,
            *resolve(entry.model_name, dataset, args, extra=entry.overrides),
            tuple(seeds),
            Path(args.out) / entry.label,
            resume=args.resume,
        )
        for entry in entries
    }
    with run_dir_lock(args.out):  # taken before anything is printed: a refused second run says one line
        print(summary(dataset, [entry.model_name for entry in entries], args), file=sys.stderr)
        check_runs(runs, dataset, args, derived_root=Path(args.out))
        table = run_benchmark(
            runs, dataset, args.out, seeds, progress=args.progress, log=log_to_stderr, backend=backend
        )
    print(table)
    return 0
