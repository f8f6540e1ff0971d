"""The one exception type for user errors.

Anything a user can get wrong (a file, a key, a shape, a config value) raises
:class:`MsalignError` with a one-line message naming the culprit. The CLI prints
that line and exits non-zero, without a traceback; library users can catch it.
"""


class MsalignError(Exception):
    """A user-facing error: bad input, bad config, missing file. One line, names the culprit."""


class PartialResults(MsalignError):
    """Some trials of a benchmark or sweep failed: the message names them; ``table`` is the table
    of the finished ones (already written to disk), which the CLI prints before exiting 2."""

    def __init__(self, message: str, table: str):
        super().__init__(message)
        self.table = table
