"""The one exception type a user mistake raises: the CLI prints its message as one line."""


class FlwbcError(Exception):
    """A user-facing error (bad config, missing data, bad file) with a one-line message."""
