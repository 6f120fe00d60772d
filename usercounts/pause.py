"""A test hook: stop a run at a named point, so a fault-injection test can kill it there.

With `USERCOUNTS_TEST_PAUSE_AT=<point>` and `USERCOUNTS_TEST_PAUSE_MARKER=<file>` set, a run
that reaches that point creates the marker file and waits while it exists (at most ten
minutes), then goes on. The test kills the run once the marker appears, or changes files
and deletes the marker to let the run continue. Unset (always, outside tests), a pause
point does nothing.

Points: each step the nightly flow times (`load`, `dbt build`, `publish`, and any step
added through its `timed` helper, named as in the run summary's `time:` line), plus
`load:files` (landing files found, none read yet) and `publish:copied` (the new warehouse
copied beside the published file, not yet checkpointed nor renamed).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

PAUSE_AT = "USERCOUNTS_TEST_PAUSE_AT"
PAUSE_MARKER = "USERCOUNTS_TEST_PAUSE_MARKER"
MAX_PAUSE_SECONDS = 600.0


def pause_point(name: str) -> None:
    """Wait here while the test's marker file exists, when the test asked to pause at `name`."""
    if os.environ.get(PAUSE_AT) != name:
        return
    marker = Path(os.environ[PAUSE_MARKER])
    marker.write_text(f"{os.getpid()} {name}\n")
    deadline = time.monotonic() + MAX_PAUSE_SECONDS
    while marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
