"""dbt's child process: it imports dbt first, then waits for the one command it runs.

usercounts.build starts it (`python -m usercounts.dbt_child`) and writes one JSON line to
its standard input: {"args": [...], "env": {...}, "cwd": "<the working database's folder>"}.
Importing dbt and the DuckDB adapter costs 1-3 s, so the nightly flow starts the child
before the load step (build.prestart_dbt) and that time passes while the run loads and
checks the landing files; `usercounts run` starts it earlier still, before it imports the
flow (build.start_dbt_child). End of input (the run ended without building) ends the child.

A prestarted child is also told the project to parse, before its command: {"parse": [...],
"env": {...}, "cwd": ...}. It parses then (~0.7 s with dbt's partial parse; parsing opens no
database, so it runs beside the load) and builds from that manifest when the command says
{"parsed_in_advance": true}, and prints PARSED_IN_ADVANCE when it did.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

# What the child prints when its command ran on the manifest parsed in advance.
PARSED_IN_ADVANCE = "usercounts: dbt ran on the project parsed in advance"


def read_request() -> dict[str, Any] | None:
    """The next JSON line on standard input (None at its end)."""
    line = sys.stdin.readline()
    return json.loads(line) if line else None


def use_request(request: dict[str, Any]) -> None:
    """dbt reads its settings and the run's from the environment the run gave, and runs in
    the working database's folder (the profile names the working files relative to it)."""
    os.environ.clear()
    os.environ.update(request["env"])
    # a parse in advance may come before the run's first load has made the folder
    os.makedirs(request["cwd"], exist_ok=True)
    os.chdir(request["cwd"])


def main() -> int:
    from usercounts.gc_tuning import batch_imports

    # dbt's ~200k imported objects out of every collection
    with batch_imports():
        import dbt.adapters.duckdb  # noqa: F401 - imported now, before the command arrives
        from dbt.cli.main import dbtRunner

    request = read_request()
    manifest = None
    if request is not None and "parse" in request:
        use_request(request)
        parsed = dbtRunner().invoke(request["parse"])
        # a failed parse is left for the command to meet and report as dbt does
        manifest = parsed.result if parsed.success else None
        request = read_request()
    if request is None:
        return 0
    use_request(request)
    if not request.get("parsed_in_advance"):
        manifest = None  # parsed for another database, or the project changed since
    if manifest is not None:
        print(PARSED_IN_ADVANCE, file=sys.stderr, flush=True)
    result = dbtRunner(manifest=manifest).invoke(request["args"])
    # dbt's own exit codes: 0 success, 1 a node failed, 2 dbt itself failed
    if result.success:
        return 0
    return 2 if result.exception is not None else 1


if __name__ == "__main__":
    sys.exit(main())
