"""Shared test parts: landing folders written by hand, real dbt builds, one Prefect server.

Counting rules are tested by building a real warehouse with the pipeline's own steps (real
DuckDB, real dbt) without Prefect; flow and command-line tests share one real Prefect
server per session, because starting one costs 13-23 s. The suite runs on two processes
(pytest-xdist, whole files per process: pyproject.toml), each a session with its own server.
"""

from __future__ import annotations

import csv
import email
import email.policy
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from email.message import EmailMessage
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pytest

from usercounts import pipeline, workdb
from usercounts.build import DBT_PROJECT_FILES, dbt_target, run_dbt
from usercounts.config import PROJECT_ROOT, Settings, quiet_tool_defaults
from usercounts.load import SOURCE_COLUMNS

if TYPE_CHECKING:
    from usercounts.quality import CheckResult

quiet_tool_defaults()

# The files that take longest, started first: xdist hands whole files to its processes in
# collection order, and one of these started last would make the whole suite wait for it.
LONGEST_FIRST = ("test_reliability.py", "test_notifications.py", "test_incremental.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: the order within a file is kept


class Landing:
    """A landing folder a test writes row by row, one file per call."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._counter = 0
        for source in SOURCE_COLUMNS:
            (root / source).mkdir(parents=True, exist_ok=True)

    def write(
        self,
        source: str,
        rows: list[dict[str, Any]],
        *,
        name: str | None = None,
        fmt: str = "csv",
        columns: list[str] | None = None,
    ) -> Path:
        """Write rows as one file of a source; columns default to the contract's."""
        self._counter += 1
        name = name or f"{source}_{self._counter:03d}.{fmt}"
        path = self.root / source / name
        columns = columns or list(SOURCE_COLUMNS[source])
        if fmt == "csv":
            with path.open("w", newline="", encoding="utf-8") as fh:
                writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
                writer.writeheader()
                for row in rows:
                    writer.writerow({c: row.get(c, "") for c in columns})
        else:
            con = duckdb.connect()
            if rows:
                select = ", ".join(
                    f"unnest(${i + 1}::varchar[]) as {c}" for i, c in enumerate(columns)
                )
                params = [[None if r.get(c) is None else str(r[c]) for r in rows] for c in columns]
                con.execute(f"create table t as select {select}", params)  # noqa: S608
            else:
                con.execute("create table t (" + ", ".join(f"{c} varchar" for c in columns) + ")")
            con.execute(f"copy t to '{path}' (format parquet)")
            con.close()
        return path

    def plan(self, plan_id: str, tier: int, **fields: Any) -> dict[str, Any]:
        """A plan version row with sensible defaults (annual product, org O1)."""
        row = {
            "plan_id": plan_id,
            "org_id": "O1",
            "plan_name": f"Plan {plan_id}",
            "product_key": "jira-software",
            "plan_type": "product",
            "billing_cycle": "annual",
            "user_tier": tier,
            "renewal_date": "2027-01-01",
            "updated_at": "2024-01-01T00:00:00Z",
        }
        row.update(fields)
        return row


# dbt's setting for where its parse is kept (dbt_target's partial_parse.msgpack otherwise).
SHARED_PARSE = "DBT_PARTIAL_PARSE_FILE_PATH"


@pytest.fixture(scope="session", autouse=True)
def shared_dbt_parse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Every dbt run of this test process (and of the processes it starts) begins from one
    parse of the project made now, whatever folder it builds in: a test's new data folder
    would otherwise parse the project from scratch (~4 s each, against ~0.7 s). The run
    allows it: the profile names the working files relative to their folder. A run in a real
    data folder keeps its own parse, in dbt's target folder; tests/test_dbt_child.py checks
    that without this. dbt only reads the file this names (each run still writes its own)."""
    work_path = tmp_path_factory.mktemp("shared_dbt_parse") / ".warehouse.work.duckdb"
    run_dbt("parse", work_path, date(2025, 1, 1))  # a parse reads no as-of date
    os.environ[SHARED_PARSE] = str(dbt_target(work_path) / "partial_parse.msgpack")
    yield
    os.environ.pop(SHARED_PARSE, None)


@pytest.fixture
def landing(tmp_path: Path) -> Landing:
    return Landing(tmp_path / "landing")


def settings_for(home: Path, landing: Path, **extra: Any) -> Settings:
    """Settings whose every file lives under home (a test's own data folder)."""
    return Settings(landing=landing, database=home / "warehouse.duckdb", **extra)


def raw_checks(home: Path, landing: Path, as_of: date, **extra: Any) -> list[CheckResult]:
    """Load a landing folder into a new working database under home and run the raw checks
    on it, as a run does before dbt."""
    settings = settings_for(home, landing, **extra)
    summary = pipeline.RunSummary(as_of=as_of)
    workdb.remove(settings.work_path)
    pipeline.load(settings)
    pipeline.validate_raw(settings, summary)
    return summary.checks


def build_warehouse(
    landing: Path, home: Path, as_of: date, *, full_refresh: bool = False, **extra: Any
) -> Settings:
    """Load, dbt build and publish with the pipeline's own steps (no Prefect).

    As the nightly flow does: the working database under home is added to when it can be.
    """
    settings = settings_for(home, landing, **extra)
    pipeline.load_build_publish(settings, as_of, full_refresh)
    return settings


def singular_test_rows(work_path: Path, test_name: str, *edits: str) -> int:
    """The rows dbt's singular test tests/dbt/<test_name>.sql returns after the edits: its SQL
    as the working database's last dbt build compiled it, run in a transaction that is then
    rolled back (dbt fails the test when it returns any row). Faster than a `dbt test` per
    case: test_quality runs one real `dbt test` to show a failure stops the run."""
    compiled = dbt_target(work_path) / "compiled" / "usercounts" / "tests" / "dbt"
    sql = (compiled / f"{test_name}.sql").read_text()
    with workdb.connect(work_path) as con:
        con.execute("begin transaction")
        try:
            for edit in edits:
                con.execute(edit)
            return len(con.execute(sql).fetchall())
        finally:
            con.execute("rollback")


def query(database: Path, sql: str, params: list[Any] | None = None) -> list[tuple]:
    """Rows from the published warehouse, opened read-only as an analyst would."""
    with duckdb.connect(str(database), read_only=True) as con:
        return con.execute(sql, params or []).fetchall()


def ppid_and_state(pid: int) -> tuple[int, str] | None:
    """A process's parent pid and state letter from /proc/PID/stat ("pid (comm) state ppid
    ..."; comm may hold spaces and parentheses, so the fields are read after its last ")");
    None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[1]), fields[0]


def wait_until(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


def validations_without_page(quality_path: Path) -> list[str]:
    """The data-quality validation results stored in quality/ that have no data docs page."""
    results, pages = quality_path / "results", quality_path / "docs" / "validations"
    return [
        str(result.relative_to(results))
        for result in sorted(results.rglob("*.json"))
        if not (pages / result.relative_to(results)).with_suffix(".html").is_file()
    ]


@pytest.fixture(scope="session")
def prefect_api_url() -> Iterator[str]:
    """One real Prefect server for the whole session; flows and CLI runs report to it."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        url = PREFECT_API_URL.value()
        os.environ["PREFECT_API_URL"] = url
        yield url
        os.environ.pop("PREFECT_API_URL", None)


def copy_project(project: Path) -> Path:
    """A copy of the package and the dbt project, for a test that edits the project (run it
    in a process with PYTHONPATH=project): the checkout is shared by the other tests."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("usercounts", *DBT_PROJECT_FILES, "expectations"):
        source = PROJECT_ROOT / name
        if source.is_dir():
            shutil.copytree(source, project / name, ignore=ignore)
        elif source.exists():
            (project / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, project / name)
    return project


def run_in_project(project: Path, script: str, *args: str) -> str:
    """Run a Python script in a new process on a copy_project() copy; its standard output."""
    # the shared parse is of the checkout: it names the checkout's files
    env = {k: v for k, v in os.environ.items() if k != SHARED_PARSE}
    proc = subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=project,
        env={**env, "PYTHONPATH": str(project)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300, cwd: Path = PROJECT_ROOT
) -> subprocess.CompletedProcess[str]:
    """Run the installed `usercounts` command as a user would, capturing its output."""
    command = [str(Path(sys.executable).with_name("usercounts")), *args]
    return subprocess.run(
        command,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# Run logs grow by one set of rows per run by design; they are not figures of the as-of date.
RUN_HISTORY_TABLES = ("marts.data_quality_runs", "marts.quarantine_history")


def canonical_dump(
    database: Path,
    schemas: tuple[str, ...] = ("marts", "quarantine"),
    exclude: tuple[str, ...] = RUN_HISTORY_TABLES,
) -> dict:
    """Every table of the given schemas as sorted rows: equal dumps mean equal contents."""
    dump = {}
    with duckdb.connect(str(database), read_only=True) as con:
        tables = con.execute(
            "select schema_name, table_name from duckdb_tables() "
            "where schema_name in (select unnest(?)) order by 1, 2",
            [list(schemas)],
        ).fetchall()
        for schema, table in tables:
            if f"{schema}.{table}" in exclude:
                continue
            rows = con.execute(f"select * from {schema}.{table}").fetchall()  # noqa: S608
            dump[f"{schema}.{table}"] = sorted(rows, key=repr)
    return dump


# --- a real SMTP server -----------------------------------------------------------------


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage


@dataclass
class Recorder:
    """aiosmtpd handler: records every accepted message; `reply` makes it answer DATA with
    an error instead, `fail_first` fails only that many DATA commands, `refuse` answers
    RCPT TO for those addresses with their reply."""

    received: list[Received] = field(default_factory=list)
    reply: str | None = None
    fail_first: int = 0
    refuse: dict[str, str] = field(default_factory=dict)

    async def handle_RCPT(  # noqa: N802 - aiosmtpd API
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.fail_first > 0:
            self.fail_first -= 1
            return "451 4.3.0 try again later"
        if self.reply:
            return self.reply
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), message))
        return "250 OK"

    def take(self) -> list[Received]:
        """What arrived since the last call."""
        taken, self.received = self.received, []
        return taken


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def smtp_server(handler: Recorder) -> Iterator[Any]:
    """A real SMTP server (aiosmtpd) on 127.0.0.1 with `handler`: its controller (`.port`,
    `.handler`), stopped on leaving."""
    from aiosmtpd.controller import Controller

    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield controller
    finally:
        controller.stop()
