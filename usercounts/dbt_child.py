"""dbt's child process: it imports dbt first, then waits for the one command it runs.

usercounts.build starts it (`python -m usercounts.dbt_child`) and writes one JSON line to
its standard input: {"args": [...], "env": {...}}. Importing dbt and the DuckDB adapter costs
~3 s, so the nightly flow starts the child before the load step (build.prestart_dbt) and
that time passes while the run loads and checks the landing files. End of input (the
run ended without building) ends the child.
"""

from __future__ import annotations

import json
import os
import sys


def main() -> int:
    import dbt.adapters.duckdb  # noqa: F401 - imported now, before the command arrives
    from dbt.cli.main import dbtRunner

    from usercounts.gc_tuning import tune_for_batch_run

    tune_for_batch_run()  # dbt's ~200k imported objects out of every collection
    line = sys.stdin.readline()
    if not line:
        return 0
    request = json.loads(line)
    os.environ.clear()
    os.environ.update(request["env"])
    result = dbtRunner().invoke(request["args"])
    # dbt's own exit codes: 0 success, 1 a node failed, 2 dbt itself failed
    if result.success:
        return 0
    return 2 if result.exception is not None else 1


if __name__ == "__main__":
    sys.exit(main())
