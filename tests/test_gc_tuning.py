"""The run's processes collect garbage as a batch job should (usercounts/gc_tuning.py):
what their imports made is frozen, and the young generation is collected less often.

The flow's own process is checked in tests/test_report.py (its module's one flow run);
the time this saves is measured by the benchmark (BENCHMARKS.md), not here.
"""

from __future__ import annotations

import subprocess
import sys

from usercounts.config import PROJECT_ROOT
from usercounts.gc_tuning import YOUNG_GENERATION_THRESHOLD


def run_python(code: str) -> str:
    """Run code in a new Python process (its garbage collector untouched); its output."""
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return proc.stdout.strip()


def test_tuning_freezes_once_per_process() -> None:
    out = run_python(
        "import gc\n"
        "from usercounts.gc_tuning import tune_for_batch_run\n"
        "before = gc.get_threshold()[0]\n"
        "tune_for_batch_run()\n"
        "frozen = gc.get_freeze_count()\n"
        "kept = [[n] for n in range(1000)]  # objects of a first run, still alive\n"
        "tune_for_batch_run()\n"
        "print(before, gc.get_threshold()[0], frozen > 0, gc.get_freeze_count() == frozen)\n"
    )
    assert out == f"700 {YOUNG_GENERATION_THRESHOLD} True True"


def test_dbt_server_tunes_after_importing_dbt() -> None:
    # The server whose run has ended (its control socket closed) returns after its imports
    # and tuning; the children it forks inherit both.
    out = run_python(
        "import gc, socket, sys\n"
        "from usercounts import dbt_child\n"
        "run, server = socket.socketpair()\n"
        "run.close()\n"
        "sys.argv[1:] = [str(server.fileno())]\n"
        "code = dbt_child.main()\n"
        "frozen = gc.get_freeze_count() > 100_000  # dbt's imports\n"
        "print(code, gc.get_threshold()[0], 'dbt' in sys.modules, frozen, gc.isenabled())\n"
    )
    assert out == f"0 {YOUNG_GENERATION_THRESHOLD} True True True"


def test_batch_imports_run_without_collection_then_are_frozen() -> None:
    out = run_python(
        "import gc\n"
        "from usercounts.gc_tuning import batch_imports\n"
        "with batch_imports():\n"
        "    during = gc.isenabled()\n"
        "    imported = [[n] for n in range(1000)]  # objects an import leaves alive\n"
        "print(during, gc.isenabled(), gc.get_freeze_count() >= 1000, gc.get_threshold()[0])\n"
        "gc.disable()  # a caller that had turned collection off keeps it off\n"
        "with batch_imports():\n"
        "    pass\n"
        "print(gc.isenabled())\n"
    )
    assert out.splitlines() == [f"False True True {YOUNG_GENERATION_THRESHOLD}", "False"]
