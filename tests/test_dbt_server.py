"""dbt's children are forked from one server per run, which imported dbt once
(usercounts/dbt_child.py, usercounts.build.DbtServer). That it dies with the run, and its
children with it, is checked by the kill -9 tests (tests/test_reliability.py, tests/test_cli.py).
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from conftest import copy_project, ppid_and_state, query, run_in_project, wait_until
from test_incremental import D1

from usercounts.build import dbt_server, run_dbt, start_dbt_child, stop_dbt_server


def test_dbt_commands_in_one_process_run_in_children_of_one_dbt_server(tmp_path: Path) -> None:
    """The run's dbt server imports dbt once and forks a child for each command. A child
    closes dbt's database before it says it ended: the run finds no WAL left to replay."""
    server = dbt_server()
    children = []
    for folder in ("first", "second"):
        work_path = tmp_path / folder / ".warehouse.work.duckdb"
        child = start_dbt_child()  # the child run_dbt takes
        wait_until(lambda c=child: c.alive() and c.pid is not None, 120, "the child's pid")
        assert child.pid is not None and ppid_and_state(child.pid)[0] == server.proc.pid
        run_dbt("seed", work_path, D1)
        assert child.returncode == 0
        assert sorted(p.name for p in work_path.parent.glob("*.wal")) == []
        assert query(work_path, "select count(*) > 0 from seeds.tier_ladder") == [(True,)]
        children.append(child.pid)
    assert dbt_server() is server
    assert len(set(children)) == 2


@pytest.mark.parametrize("end", ["killed", "stopped"])
def test_a_dbt_server_that_ended_is_replaced_by_the_next_command(tmp_path: Path, end: str) -> None:
    waiting = start_dbt_child()
    dead = dbt_server()
    if end == "killed":
        dead.proc.kill()
    else:
        stop_dbt_server()  # as the benchmark does at each night's start and end
    assert dead.proc.wait(timeout=60) == -signal.SIGKILL
    wait_until(lambda: not waiting.alive(), 10, "the waiting child to go with its server")
    work_path = tmp_path / "home" / ".warehouse.work.duckdb"
    run_dbt("seed", work_path, D1)
    assert dbt_server() is not dead
    assert query(work_path, "select count(*) > 0 from seeds.tier_ladder") == [(True,)]


# A dbt command in a new process on a copy of the project whose dbt cannot be imported.
COMMAND_WITHOUT_DBT = """
import sys
from datetime import date
from pathlib import Path

from usercounts.build import run_dbt
from usercounts.errors import RunFailed

try:
    run_dbt("parse", Path(sys.argv[1]), date(2025, 1, 1))
except RunFailed as failed:
    print(failed)
"""


def test_a_server_that_cannot_import_dbt_is_named_in_the_command_s_error(tmp_path: Path) -> None:
    # Its children are never forked: what the server itself said is the only reason there is.
    project = copy_project(tmp_path / "project")
    (project / "dbt").mkdir()
    (project / "dbt" / "__init__.py").write_text('raise ImportError("no dbt in this install")\n')
    out = run_in_project(project, COMMAND_WITHOUT_DBT, str(tmp_path / "home" / "work.duckdb"))
    assert out.startswith("dbt parse failed: ImportError: no dbt in this install (log: ")
