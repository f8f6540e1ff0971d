"""The one exception type for user errors.

Anything a user can get wrong (a file, a key, a shape, a config value) raises
:class:`MsalignError` with a one-line message naming the culprit. The CLI prints
that line and exits non-zero, without a traceback; library users can catch it.
"""

from __future__ import annotations

import difflib


class MsalignError(Exception):
    """A user-facing error: bad input, bad config, missing file. One line, names the culprit."""


class PartialResults(MsalignError):
    """Some trials of a benchmark or sweep failed: the message names them; ``table`` is the table
    of the finished ones (already written to disk), which the CLI prints before exiting 2."""

    def __init__(self, message: str, table: str):
        super().__init__(message)
        self.table = table


def suggest(key: str, known: list[str]) -> str:
    """`` (did you mean 'x' or 'y'?)`` for close matches among ``known``, else '': the tail of a
    one-line error about an unknown key."""
    bare = {k.rpartition(".")[2]: k for k in known}
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
    close += [
        bare[k]
        for k in difflib.get_close_matches(key.rpartition(".")[2], list(bare), n=3, cutoff=0.6)
        if bare[k] not in close
    ]
    if not close:
        return ""
    return " (did you mean " + " or ".join(repr(k) for k in close[:3]) + "?)"
