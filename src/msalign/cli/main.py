"""The ``msalign`` command line: the top-level parser, and one line plus an exit status for every error.

Every user error is one line on stderr and exit status 2; no tracebacks (set MSALIGN_DEBUG=1 to see
one for an unexpected internal error, which exits 1). Each command's options and its call into the
library live in its own module of this package.
"""

from __future__ import annotations

import argparse
import os
import sys

from msalign import __version__
from msalign.atomic import process_rank
from msalign.cli import (
    benchmark,
    convert,
    describe,
    evaluate,
    extract,
    models,
    predict,
    profile,
    report,
    sweep,
    train,
    tune,
)
from msalign.errors import MsalignError, PartialResults


def build_parser() -> argparse.ArgumentParser:
    """The ``msalign`` parser with every subcommand (``args.func`` runs the chosen one)."""
    parser = argparse.ArgumentParser(
        prog="msalign", description="Multimodal sentiment analysis with cross-modal alignment"
    )
    parser.add_argument("--version", action="version", version=f"msalign {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in (
        models,
        train,
        evaluate,
        benchmark,
        profile,
        sweep,
        tune,
        convert,
        report,
        extract,
        predict,
        describe,
    ):
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs ``msalign ARGV``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if process_rank() > 0:
        # the other processes of a DDP run repeat rank 0's command; rank 0 alone prints results
        # (errors still reach stderr)
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (open for the rest of the process)
    try:
        return args.func(args)
    except MsalignError as error:
        if isinstance(error, PartialResults):  # some trials failed: the finished ones' table first
            print(error.table)
        print(f"msalign: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("msalign: interrupted", file=sys.stderr)
        return 130
    except (FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError, NotADirectoryError) as error:
        print(f"msalign: error: {error.strerror or error}: {error.filename}", file=sys.stderr)
        return 2
    except Exception as error:  # an internal error: one line, traceback on request
        if os.environ.get("MSALIGN_DEBUG"):
            raise
        print(
            f"msalign: internal error: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''} "
            "(set MSALIGN_DEBUG=1 for the traceback)",
            file=sys.stderr,
        )
        return 1
