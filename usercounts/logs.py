"""Console logging for the command line: one line per problem, no tracebacks.

Prefect logs a failed task with its traceback. An expected failure (bad input, a failed
check) must read as one line on the terminal; the full record still goes to the Prefect
API (the flow run's logs in the UI), which handles it before the console does.
"""

from __future__ import annotations

import logging


class _DropTraceback(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.exc_info = None
        record.exc_text = None
        record.stack_info = None
        return True


def console_without_tracebacks() -> None:
    """Strip tracebacks from the records Prefect's console handler prints."""
    from prefect.logging.handlers import PrefectConsoleHandler

    for handler in logging.getLogger().handlers:
        if isinstance(handler, PrefectConsoleHandler):
            handler.addFilter(_DropTraceback())
