"""The ``msalign`` command line: the top-level parser, and one line plus an exit status for every error.

Every user error is one line on stderr and exit status 2; no tracebacks (set MSALIGN_DEBUG=1 to see
one for an unexpected internal error, which exits 1). Each command's options and its call into the
library live in its own module of this package.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from msalign import __version__
from msalign.atomic import process_rank
from msalign.cli.commands import SUMMARIES
from msalign.errors import MsalignError, PartialResults


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The ``msalign`` parser (``args.func`` runs the chosen command).

    ``only``: build that command's options and list the others by name and help alone, without
    importing their modules (:mod:`msalign.cli.commands`): a command module imports the library it
    drives, and Lightning alone takes seconds to import, which ``msalign --help`` or ``msalign
    models`` should not pay for. ``""``: no command's options; ``None``: every command's."""
    parser = argparse.ArgumentParser(
        prog="msalign", description="Multimodal sentiment analysis with cross-modal alignment"
    )
    parser.add_argument("--version", action="version", version=f"msalign {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, summary in SUMMARIES.items():
        if only is None or name == only:
            importlib.import_module(f"msalign.cli.{name}").add_parser(sub)
        else:
            sub.add_parser(name, help=summary)
    return parser


def chosen_command(argv: Sequence[str]) -> str:
    """The command named in ``argv`` (its first word that is a command), or ``""``."""
    return next((word for word in argv if word in SUMMARIES), "")


def main(argv: list[str] | None = None) -> int:
    """Runs ``msalign ARGV``; returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(chosen_command(argv)).parse_args(argv)
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
