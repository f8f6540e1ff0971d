"""The one exception type for user errors.

Anything a user can get wrong (a file, a key, a shape, a config value) raises
:class:`MsalignError` with a one-line message naming the culprit. The CLI prints
that line and exits non-zero, without a traceback; library users can catch it.
"""


class MsalignError(Exception):
    """A user-facing error: bad input, bad config, missing file. One line, names the culprit."""
