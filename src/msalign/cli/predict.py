"""``msalign predict``: sentiment of raw video / audio files with a trained checkpoint."""

from __future__ import annotations

import argparse
import json
import sys

from msalign.cli.commands import SUMMARIES
from msalign.cli.options import add_cache_dir_option, add_progress_option
from msalign.errors import MsalignError
from msalign.inference.predict import format_table, predict


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Adds ``msalign predict`` to the subcommands."""
    parser = sub.add_parser("predict", help=SUMMARIES["predict"])
    parser.add_argument(
        "inputs", nargs="+", metavar="INPUT", help="video or audio files (a .txt/.srt beside one is its transcript)"
    )
    parser.add_argument("--checkpoint", required=True, help="model.safetensors trained on an msalign extract folder")
    parser.add_argument(
        "--extract-spec",
        default=None,
        help="the training folder's extract.json (default: found through the run's results.json)",
    )
    parser.add_argument(
        "--missing",
        choices=["mask", "error"],
        default=None,
        help="no face / no audio / no speech: mask (score without it, reported) or error; "
        "default mask, except that an input with none of the model's modalities is an error",
    )
    parser.add_argument("--workers", type=int, default=1, help="parallel processes over inputs")
    parser.add_argument(
        "--neutral-band",
        type=float,
        default=None,
        help="|score| below this is neutral (default 0.5 on MOSI's scale, 0.1 on SIMS')",
    )
    add_cache_dir_option(parser)
    add_progress_option(parser, None)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Runs ``msalign predict``; returns the exit status."""
    rows = predict(
        args.checkpoint,
        args.inputs,
        extract_spec=args.extract_spec,
        missing=args.missing,
        workers=args.workers,
        cache_dir=args.cache_dir,
        neutral_band=args.neutral_band,
        progress=args.progress,
    )
    for row in rows:
        print(json.dumps(row, ensure_ascii=False), flush=True)
    print(format_table(rows), file=sys.stderr)
    for row in rows:
        for modality, why in row.get("missing", {}).items():
            given = (
                "the text encoder's features of an empty transcript"
                if modality == "text"
                else "the feature-directory placeholder, one all-zero frame"
            )
            print(
                f"msalign: note: {row['input']}: {modality} missing ({why}); the model was given {given}, "
                "as for such clips in training",
                file=sys.stderr,
            )
    failed = [row for row in rows if "error" in row]
    if len(failed) == len(rows):
        raise MsalignError(f"no input could be scored: {failed[0]['error']}")
    return 1 if failed else 0
