"""Processes the run starts die with it, even when it is killed by kill -9 (Linux)."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable


def die_with_parent() -> Callable[[], None] | None:
    """A function that makes Linux kill the process that calls it when this one dies, even
    by kill -9: a Popen preexec_fn, or the first call of a forked child. Elsewhere: None (no
    such call).

    Without it a killed run leaves dbt running on: it keeps writing the dead run's working
    database and target folder while the next run starts.
    """
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here, not in the child
    parent = os.getpid()
    pr_set_pdeathsig = 1

    def die_with_this_parent() -> None:
        prctl(pr_set_pdeathsig, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before the line above took effect
            os._exit(1)

    return die_with_this_parent
