"""``msalign convert``: the command's arguments and its body (the CLI's part of the store)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from msalign.data.store.reader import store_sizes
from msalign.data.store.writer import check_destination, write_store


def add_parser(sub) -> argparse.ArgumentParser:
    """Adds ``msalign convert`` to the CLI's subparsers."""
    parser = sub.add_parser("convert", help="convert a dataset (MMSA .pkl, feature directory, synthetic:...) to an "
                            "on-disk feature store read row by row (datasets larger than memory)")
    from msalign.cli.app import _add_dataset_options

    _add_dataset_options(parser, positional=True)
    parser.add_argument("out", metavar="OUT", help="the store folder to write")
    parser.add_argument("--force", action="store_true",
                        help="write into a non-empty OUT that is not a store (its files are kept; none is replaced)")
    parser.set_defaults(func=cmd_convert)
    return parser


def cmd_convert(args: argparse.Namespace) -> int:
    from msalign.cli.app import _load_dataset

    out = Path(args.out)
    check_destination(out, args.force)  # before the (possibly long) load
    leftovers = sorted(p.name for p in out.parent.glob(f".{out.name}.*.partial")) if out.parent.is_dir() else []
    if leftovers:
        print(f"note: {out.parent} holds unfinished conversions {leftovers} (safe to delete)", file=sys.stderr)
    started = time.perf_counter()
    print(f"loading {args.dataset} ...", file=sys.stderr)
    dataset = _load_dataset(args)
    print(dataset.describe(), file=sys.stderr)
    rows = sum(len(s) for s in dataset.splits.values())
    print(f"writing feature store {out} ({rows} clips) ...", file=sys.stderr)
    loaded = time.perf_counter()
    write_store(dataset, out, force=args.force, source=str(args.dataset))
    written = time.perf_counter()
    sizes = store_sizes(out)
    total = sum(s["bytes"] for s in sizes.values())
    shapes = ", ".join(f"{m} {dataset.max_lengths[m]}x{d}" for m, d in dataset.dims.items())
    print(f"wrote feature store {out}: {shapes}")
    for name, s in sizes.items():
        print(f"  {name:5s} {s['rows']:8d} rows  {s['bytes'] / 1e9:8.3f} GB")
    print(f"  total {sum(s['rows'] for s in sizes.values()):8d} rows  {total / 1e9:8.3f} GB "
          f"(loaded in {loaded - started:.1f}s, written in {written - loaded:.1f}s)")
    return 0
