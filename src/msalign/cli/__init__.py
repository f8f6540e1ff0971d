"""Command-line interface: argument parsing only; every command calls a library function.

:mod:`msalign.cli.main` builds the parser and turns errors into one line; :mod:`msalign.cli.options`
declares the option groups several commands share; every other module is one command.
"""

from msalign.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
