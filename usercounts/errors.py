"""Errors the command line reports as one line, without a traceback."""


class RunFailed(RuntimeError):
    """The run stopped before publishing; the message says why in one line."""
