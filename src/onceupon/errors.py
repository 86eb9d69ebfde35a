"""The one exception type for mistakes the user can fix.

The CLI turns a ``UserError`` into one clear sentence on stderr and exit code 2; anything
else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """Bad input: a missing file, a bad config value, an empty corpus, an unreachable server."""
