"""Errors the command line reports as one line, without a traceback."""


class RunFailed(RuntimeError):
    """The run stopped before publishing; the message says why in one line."""


class UsageError(RuntimeError):
    """A command cannot do what it was asked with what it was given; the message says why."""
