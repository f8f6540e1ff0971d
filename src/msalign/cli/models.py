"""``msalign models``: the registered models; with NAME, every config key of one."""

from __future__ import annotations

import argparse
import sys

from msalign.cli.commands import SUMMARIES
from msalign.models import get_model_class, list_models
from msalign.models.config_docs import format_model_help, modality_summary


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Adds ``msalign models`` to the subcommands."""
    parser = sub.add_parser("models", help=SUMMARIES["models"])
    parser.add_argument(
        "name", nargs="?", metavar="NAME", help="a model: print its config keys (type, default, meaning)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Runs ``msalign models``; returns the exit status."""
    if args.name:
        print(format_model_help(args.name))
        return 0
    for name in list_models():
        cls = get_model_class(name)
        doc = (sys.modules[cls.__module__].__doc__ or "").strip().splitlines()[0].partition(": ")[2]
        print(f"{name:12s} {modality_summary(cls):52s} {doc}")
    print("msalign models NAME: every config key of a model with its type, default and meaning")
    return 0
