"""Python's garbage collector, set for a batch run: import a lot, then work for a while.

A full collection walks every object the process tracks. After its imports the run process
tracks ~380k objects (Prefect, GX, pandas) and dbt's child ~200k; with Python's defaults a
1M-user night made five full collections in the run (0.6-1.2 s each, 4.7-9.4 s in all,
most of it during the report) and four in dbt's child (1.6-2.6 s): BENCHMARKS.md.
Freezing what the imports made leaves it out of every collection, and a larger young
generation makes full collections rare. Reference cycles are still collected, later.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def batch_imports() -> Iterator[None]:
    """A batch run's imports: no collection while they run, then tune_for_batch_run().

    An import makes objects that stay alive, so the collections it triggers find nothing to
    free and only cost time (0.5-0.7 s of dbt's 2.3-3.0 s import, 0.5-1.5 s of Great
    Expectations' and the flow's 6-7 s: BENCHMARKS.md); once they are done, what they made
    is frozen."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
    tune_for_batch_run()


# Objects allocated between two young-generation collections (Python's default is 700).
# With it, a 1M-user night makes no full collection; cycles wait a little longer.
YOUNG_GENERATION_THRESHOLD = 10_000


def tune_for_batch_run() -> None:
    """Freeze the objects alive now (the imports) and collect the young generation less often.

    Once per process (the threshold tells): a second call would also freeze what a previous
    run left behind.
    """
    young, older, oldest = gc.get_threshold()
    if young == YOUNG_GENERATION_THRESHOLD:
        return
    gc.freeze()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, older, oldest)
