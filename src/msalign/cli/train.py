"""``msalign train``: one model over seeds into OUT (results.json, per-seed checkpoints)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from msalign.atomic import run_dir_lock
from msalign.cli.commands import SUMMARIES
from msalign.cli.options import (
    add_dataset_options,
    add_out_options,
    add_run_options,
    check_runs,
    check_settings_early,
    load_dataset,
    log_to_stderr,
    print_table,
    resolve,
    summary,
)
from msalign.config import parse_seeds
from msalign.errors import MsalignError
from msalign.models import get_model_class
from msalign.training import RunSpec, train


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Adds ``msalign train`` to the subcommands."""
    parser = sub.add_parser("train", help=SUMMARIES["train"])
    parser.add_argument("--model", required=True)
    add_dataset_options(parser)
    add_run_options(parser)
    parser.add_argument("--seeds", default="1111")
    parser.add_argument("--out", required=True)
    add_out_options(
        parser,
        "continue an interrupted seed from OUT/seed_N/lightning/last.ckpt (finished seeds are always skipped)",
        "replace a run of another configuration in OUT (its seeds, results.json and report/)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Runs ``msalign train``; returns the exit status."""
    get_model_class(args.model)  # fail before any data is loaded
    seeds = parse_seeds(args.seeds)
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise MsalignError(f"--out {args.out}: exists and is not a directory")
    check_settings_early(args.model, args)
    dataset = load_dataset(args)
    model_config, train_config = resolve(args.model, dataset, args)
    with run_dir_lock(args.out):  # taken before anything is printed: a refused second run says one line
        print(summary(dataset, [args.model], args), file=sys.stderr)
        spec = RunSpec(args.model, model_config, train_config, tuple(seeds), Path(args.out), resume=args.resume)
        check_runs({args.model: spec}, dataset, args)
        results = train(spec, dataset, progress=args.progress, log=log_to_stderr)
    several = len(seeds) > 1  # "± std" only over more than one seed
    print(f"Test metrics, {f'mean ± population std over seeds {seeds}' if several else f'seed {seeds[0]}'}:")
    print_table({args.model: results.mean}, dataset.metric_set, std={args.model: results.std} if several else None)
    print(f"results: {Path(args.out) / 'results.json'}", file=sys.stderr)
    return 0
