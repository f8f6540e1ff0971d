"""Command-line interface: argument parsing only; every command calls a library function."""

from msalign.cli.app import main

__all__ = ["main"]
