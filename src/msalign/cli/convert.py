"""``msalign convert``: a dataset (MMSA .pkl, feature directory, synthetic:...) to an on-disk feature store."""

from __future__ import annotations

import argparse
from pathlib import Path

from msalign.cli.commands import SUMMARIES
from msalign.cli.options import add_dataset_options, dataset_options, log_to_stderr
from msalign.data.store.convert import convert_to_store


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Adds ``msalign convert`` to the subcommands."""
    parser = sub.add_parser("convert", help=SUMMARIES["convert"])
    add_dataset_options(parser, positional=True)
    parser.add_argument("out", metavar="OUT", help="the store folder to write")
    parser.add_argument(
        "--force",
        action="store_true",
        help="write into a non-empty OUT that is not a store (its files are kept; none is replaced)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Runs ``msalign convert``; returns the exit status."""
    done = convert_to_store(dataset_options(args), args.out, args.force, log_to_stderr)
    sizes, dataset = done.sizes, done.dataset
    total = sum(s.bytes for s in sizes.values())
    shapes = ", ".join(f"{m} {dataset.max_lengths[m]}x{d}" for m, d in dataset.dims.items())
    print(f"wrote feature store {Path(args.out)}: {shapes}")
    for name, s in sizes.items():
        print(f"  {name:5s} {s.rows:8d} rows  {s.bytes / 1e9:8.3f} GB")
    print(
        f"  total {sum(s.rows for s in sizes.values()):8d} rows  {total / 1e9:8.3f} GB "
        f"(loaded in {done.load_seconds:.1f}s, written in {done.write_seconds:.1f}s)"
    )
    return 0
