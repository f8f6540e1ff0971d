"""``msalign report RUN_DIR``: a Markdown or HTML report with figures of a finished run
(:mod:`msalign.evaluation.report`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from msalign.cli.commands import SUMMARIES
from msalign.cli.options import add_cache_dir_option
from msalign.evaluation.report import build_report, report_dataset, run_kind


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Adds ``msalign report`` to the CLI's subparsers."""
    parser = sub.add_parser("report", help=SUMMARIES["report"])
    parser.add_argument(
        "run_dir", metavar="RUN_DIR", help="a train run (results.json), benchmark (table.json) or sweep (sweep.json)"
    )
    parser.add_argument(
        "--format", choices=["md", "html"], default=None, help="default: md, or html when --out ends in .html"
    )
    parser.add_argument(
        "--dataset",
        default=None,
        help="default: the dataset the run recorded (used for the modality gap and missing predictions); "
        "another one is refused",
    )
    add_cache_dir_option(parser)
    parser.add_argument(
        "--out", default=None, help="report file (default RUN_DIR/report/report.md); figures go beside it"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Writes the report; prints where it went and any figure that was skipped, and why."""
    run_dir = Path(args.run_dir)
    run_kind(run_dir)  # a missing or foreign directory fails before any data is loaded
    chosen = report_dataset(run_dir, args.dataset, args.cache_dir)
    if chosen.dataset is not None:
        print(f"dataset{' (from the run)' if chosen.from_run else ''}: {chosen.dataset.describe()}", file=sys.stderr)
    target, report = build_report(run_dir, chosen.dataset, args.out, args.format)
    if chosen.skipped:
        print(f"note: {chosen.skipped}", file=sys.stderr)
    for text in report.notes:
        print(f"note: {text}", file=sys.stderr)
    print(f"report: {target} ({len(report.figures)} figures)")
    return 0


__all__ = ["add_parser", "run"]
