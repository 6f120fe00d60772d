"""The command line as a user drives it: the real Prefect flow on the session's server."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
import tomllib
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import canonical_dump, query, run_cli

from usercounts.config import DEMO_LANDING, PROJECT_ROOT, Settings
from usercounts.lock import run_lock
from usercounts.views import format_table

AS_OF = "2026-11-20"


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory, prefect_api_url: str) -> Path:
    """`usercounts run` on the bundled demo data, with 80% notifications off for one plan."""
    database = tmp_path_factory.mktemp("cli") / "data" / "warehouse.duckdb"
    off = run_cli("notify-at-80", "off", "--plan", "acme-jira", "--database", str(database))
    assert off.returncode == 0, off.stderr
    result = run_cli("run", "--database", str(database), "--as-of", AS_OF)
    assert result.returncode == 0, result.stderr
    assert "usercounts: as of 2026-11-20: 14 plans; published" in result.stdout
    assert "rows loaded: plans 16, instances 16, users 380" in result.stdout
    return database


def test_run_publishes_every_threshold_state(demo_run: Path) -> None:
    statuses = query(
        demo_run,
        "select distinct threshold_status from marts.plan_user_counts_current order by 1",
    )
    assert statuses == [("approaching",), ("at_limit",), ("ok",), ("over_limit",)]


def test_notify_at_80_set_before_the_first_run_lasts(demo_run: Path) -> None:
    rows = query(
        demo_run,
        "select plan_id, notify_at_80 from marts.plan_user_counts_current "
        "where plan_id in ('acme-jira', 'acme-confluence') order by 1",
    )
    assert rows == [("acme-confluence", True), ("acme-jira", False)]


def test_counts_shows_the_12_month_view(demo_run: Path) -> None:
    result = run_cli("counts", "--plan", "hooli-jsm", "--database", str(demo_run))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("Hooli Jira Service Management (hooli-jsm, org hooli): 45 of 45")
    assert lines[1].split() == ["month", "closing", "change", "change", "%", "added", "removed",
                                "tier"]  # fmt: skip
    months = [line.split()[0] for line in lines[3:15]]
    assert months == [f"2025-{m:02d}" for m in range(12, 13)] + [
        f"2026-{m:02d}" for m in range(1, 12)
    ]
    # The last row is the month of the as-of date, marked incomplete, closing at the count.
    assert lines[14].split()[:3] == ["2026-11", "*", "45"]
    assert lines[0].endswith(f", as of {AS_OF}")  # the as-of date D, not the instant A
    # every cell as the monthly mart has it: change % is 100 x change_pct, to one decimal
    monthly = query(
        demo_run,
        "select closing_balance, change, change_pct, users_added, users_removed, user_tier "
        "from marts.plan_user_counts_monthly where plan_id = 'hooli-jsm' "
        "and month >= '2025-12-01' order by month",
    )
    for line, (closing, change, pct, added, removed, tier) in zip(
        lines[3:15], monthly, strict=True
    ):
        assert change is not None and pct is not None  # every month here has a previous one
        shown = [closing, f"{change:+d}" if change else "0", f"{100 * pct:.1f}%", added, removed]
        assert line.replace(" *", "").split()[1:] == [str(v) for v in [*shown, tier]]
    assert any(added != removed for *_, added, removed, _ in monthly)  # told apart
    result = run_cli("counts", "--plan", "hooli-jsm", "--months", "3", "--database", str(demo_run))
    assert result.returncode == 0, result.stderr
    assert [line[:9] for line in result.stdout.splitlines()[3:]] == [
        "2026-09  ", "2026-10  ", "2026-11 *", "", "* month o"
    ]  # fmt: skip


def test_counts_into_a_reader_that_stops_early_ends_quietly(demo_run: Path) -> None:
    """`usercounts counts | head -1`: the reader closes the pipe; no traceback follows."""
    command = [str(Path(sys.executable).with_name("usercounts")), "counts", "--database"]
    with subprocess.Popen(
        [*command, str(demo_run)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as process:
        process.stdout.close()  # before the command writes anything: its writes must fail
        stderr = process.stderr.read().decode()
        assert process.wait(timeout=120) == 1
    assert stderr == ""


def test_a_table_shows_control_characters_in_values_as_spaces() -> None:
    """A name with a line break, a tab or a terminal escape stays on its row."""
    table = format_table(["n", "name"], [(1, "Ann\nLee\t\x1b[2Jx\u2028\u202e"), (22, None)], {0})
    assert table.splitlines() == [
        " n  name",
        "--  ---------------",
        " 1  Ann Lee  [2Jx",
        "22",
    ]


def test_counts_for_an_unknown_plan_fails_clearly(demo_run: Path) -> None:
    result = run_cli("counts", "--plan", "nope", "--database", str(demo_run))
    assert result.returncode == 1
    assert result.stderr.strip() == f"usercounts: error: no plan 'nope' in {demo_run}"


def test_notify_at_80_for_a_plan_the_warehouse_lacks_warns_and_keeps_it(demo_run: Path) -> None:
    known = run_cli("notify-at-80", "on", "--plan", "acme-confluence", "--database", str(demo_run))
    assert (known.returncode, known.stderr) == (0, "")
    typo = run_cli("notify-at-80", "on", "--plan", "acme-jria", "--database", str(demo_run))
    assert typo.returncode == 0
    assert typo.stderr == (
        f"usercounts: warning: no plan 'acme-jria' in {demo_run}: check the plan id "
        "(the setting is kept for when such a plan appears)\n"
    )


def test_a_second_run_adds_to_the_working_database_and_full_refresh_rebuilds(
    demo_run: Path,
) -> None:
    before = canonical_dump(demo_run)
    again = run_cli("run", "--database", str(demo_run), "--as-of", AS_OF)
    assert again.returncode == 0, again.stderr
    assert "  build: incremental" in again.stdout.splitlines()
    rebuilt = run_cli("run", "--database", str(demo_run), "--as-of", AS_OF, "--full-refresh")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "  build: full rebuild (full refresh requested)" in rebuilt.stdout.splitlines()
    assert canonical_dump(demo_run) == before


def processes_with_env(entry: str) -> list[int]:
    """Pids of the processes whose environment holds entry (e.g. PREFECT_HOME=/tmp/x)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if entry.encode() in environ:
            found.append(int(pid))
    return found


def test_run_without_a_prefect_server_boots_a_temporary_one_and_stops_it(tmp_path: Path) -> None:
    """The default a user meets first: no PREFECT_API_URL. The run boots Prefect's temporary
    server (in the background while it imports), completes, and leaves no process behind."""
    database = tmp_path / "data" / "warehouse.duckdb"
    home = tmp_path / "prefect-home"
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(home)
    command = [
        str(Path(sys.executable).with_name("usercounts")),
        "run",
        "--database",
        str(database),
    ]
    result = subprocess.run(
        [*command, "--as-of", AS_OF], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert f"published {database}" in result.stdout
    assert "Traceback" not in result.stderr
    assert (home / "prefect.db").exists()  # the temporary server ran on this home
    assert processes_with_env(f"PREFECT_HOME={home}") == []


def test_a_run_with_no_api_url_and_no_leave_for_a_temporary_server_says_so_in_one_line(
    tmp_path: Path,
) -> None:
    """Prefect's ephemeral mode off (its own default outside its bundled profile; here by
    the environment) and no PREFECT_API_URL: the flow has no server to run on. The run says
    so and starts none, instead of failing in Prefect's first API call with its traceback."""
    home = tmp_path / "prefect-home"
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_EPHEMERAL_ENABLED="false")
    database = tmp_path / "data" / "warehouse.duckdb"
    command = [str(Path(sys.executable).with_name("usercounts")), "run", "--database"]
    result = subprocess.run(
        [*command, str(database)], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "usercounts: error: no Prefect server to run the flow on: PREFECT_API_URL is not set "
        "and Prefect's settings do not allow a temporary server (PREFECT_SERVER_EPHEMERAL_ENABLED "
        "is false); set PREFECT_API_URL to a running server (`prefect server start`), or set "
        "PREFECT_SERVER_EPHEMERAL_ENABLED=true"
    ]
    assert not (home / "prefect.db").exists()  # no temporary server ran on this home
    assert not database.exists()
    assert processes_with_env(f"PREFECT_HOME={home}") == []


def test_a_run_killed_by_sigkill_takes_its_temporary_prefect_server_with_it(
    tmp_path: Path,
) -> None:
    """kill -9 of a run started without PREFECT_API_URL leaves no server (nor dbt) behind:
    the temporary server is the run's child and dies with it (PR_SET_PDEATHSIG)."""
    home = tmp_path / "prefect-home"
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(home)
    command = [
        str(Path(sys.executable).with_name("usercounts")),
        "run",
        "--database",
        str(tmp_path / "data" / "warehouse.duckdb"),
        "--as-of",
        AS_OF,
    ]
    run = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not any(
            b"uvicorn" in cmdline(pid) for pid in processes_with_env(f"PREFECT_HOME={home}")
        ):
            assert run.poll() is None, "the run ended before its server started"
            assert time.monotonic() < deadline, "no temporary server within 120 s"
            time.sleep(0.1)
    finally:
        run.kill()
        run.wait()
    deadline = time.monotonic() + 10
    while processes_with_env(f"PREFECT_HOME={home}"):
        assert time.monotonic() < deadline, [
            cmdline(p) for p in processes_with_env(f"PREFECT_HOME={home}")
        ]
        time.sleep(0.1)


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def test_missing_landing_folder_is_one_line_and_publishes_nothing(
    tmp_path: Path, prefect_api_url: str
) -> None:
    database = tmp_path / "data" / "warehouse.duckdb"
    result = run_cli("run", "--landing", str(tmp_path / "nowhere"), "--database", str(database))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"usercounts: error: landing folder {tmp_path / 'nowhere'} does not exist"
    )
    assert "Traceback" not in result.stderr
    assert not database.exists()


@pytest.mark.parametrize("name", ["work_marts.duckdb", "State_DB.v1.duckdb"])
def test_a_warehouse_name_the_run_uses_for_its_own_files_is_refused_at_once(
    tmp_path: Path, name: str
) -> None:
    # DuckDB would name the working database after the file: attaching the marts (or state)
    # file under the same name failed deep in the load with a Binder Error.
    database = tmp_path / "data" / name
    result = run_cli("run", "--database", str(database), timeout=60)
    assert result.returncode == 1
    clash = name.split(".")[0]
    assert result.stderr.strip().splitlines()[-1] == (
        f"usercounts: error: invalid settings: the warehouse file name {name!r} (--database "
        "or USERCOUNTS_DATABASE) cannot be used: DuckDB would name its working database "
        f"{clash!r}, a name the run gives one of its own files; choose another file name"
    )
    assert not database.parent.exists()


def test_the_settings_defaults_are_the_documented_ones() -> None:
    """README's configuration table and docs/notifications.md's SMTP table."""
    documented = {
        "inactive_days": 90,
        "quarantine_max_share": 0.05,
        "schedule_cron": "0 2 * * *",
        "schedule_timezone": "UTC",
        "smtp_host": None,  # unset: the outbox
        "smtp_port": 25,
        "smtp_starttls": False,
        "smtp_timeout_seconds": 10,
        "mail_from": "usercounts@localhost",
        "notify_retries": 3,
        "notify_retry_delay_seconds": 30,
    }
    assert {name: Settings.model_fields[name].default for name in documented} == documented


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        ("USERCOUNTS_INACTIVE_DAYS", "0", "Input should be greater than or equal to 1"),
        (
            "USERCOUNTS_DUCKDB_MEMORY_LIMIT",
            "lots",
            "not a DuckDB memory limit (e.g. 12GB, 4GiB, 80%)",
        ),
        (
            "USERCOUNTS_SCHEDULE_TIMEZONE",
            "Mars/Base",
            "not a time zone name (e.g. UTC, Europe/Berlin)",
        ),
        ("USERCOUNTS_QUARANTINE_MAX_SHARE", "1.5", "Input should be less than or equal to 1"),
        ("USERCOUNTS_NOTIFY_RETRIES", "-1", "Input should be greater than or equal to 0"),
    ],
)
def test_an_invalid_setting_stops_a_run_at_once_in_one_line_naming_it(
    tmp_path: Path, variable: str, value: str, problem: str
) -> None:
    # before, a bad memory limit stopped the run inside dbt's build, without naming it
    database = tmp_path / "warehouse.duckdb"
    result = run_cli("run", "--database", str(database), env={variable: value}, timeout=60)
    assert result.returncode == 1
    assert result.stderr == (
        f"usercounts: error: invalid settings: {variable}: {problem} (got {value!r})\n"
    )
    assert not database.exists()


def test_version_is_the_projects() -> None:
    result = run_cli("--version")
    assert result.returncode == 0, result.stderr
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    assert result.stdout == f"usercounts {project['version']}\n"


@pytest.mark.parametrize(
    "args",
    [
        ("counts", "--months", "-2"),
        ("inactive", "--plan", "P", "--limit", "0"),
        ("inactive", "--plan", "P", "--days", "0"),
    ],
)
def test_a_count_below_one_is_refused_by_the_options(args: tuple[str, ...]) -> None:
    result = run_cli(*args, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].endswith(f"not a whole number >= 1: {args[-1]!r}")


def test_relative_paths_are_the_current_folders(tmp_path: Path, prefect_api_url: str) -> None:
    """A run started in another folder than the project, with relative paths: dbt and Great
    Expectations (which run in the project folder) read and write the same files."""
    shutil.copytree(DEMO_LANDING, tmp_path / "in")
    result = run_cli(
        "run", "--landing", "in", "--database", "out/wh.duckdb", "--as-of", AS_OF, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert query(
        tmp_path / "out" / "wh.duckdb", "select count(*) from marts.plan_user_counts_current"
    ) == [(14,)]
    assert (tmp_path / "out" / "quality" / "docs" / "index.html").exists()


def test_a_second_run_while_one_holds_the_lock_exits_at_once(
    tmp_path: Path, prefect_api_url: str
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterStartTime

    database = tmp_path / "data" / "warehouse.duckdb"
    began = datetime.now(UTC)
    lock_path = Settings(database=database).lock_path
    with run_lock(lock_path):
        assert lock_path.read_text() == f"{os.getpid()}\n"  # the running run's pid
        result = run_cli("run", "--database", str(database), timeout=60)
    assert lock_path.read_text() == ""  # no run: no pid (docs/operations.md)
    assert result.returncode == 1
    assert f"another usercounts run (pid {os.getpid()}) is using " in result.stderr
    assert not database.exists()

    # refused before the flow starts (and before a temporary Prefect server would boot)
    async def runs_for_this_database() -> list:
        started_since = FlowRunFilter(start_time=FlowRunFilterStartTime(after_=began))
        async with get_client() as client:
            runs = await client.read_flow_runs(flow_run_filter=started_since)
        return [r for r in runs if r.parameters.get("database") == str(database)]

    assert asyncio.run(runs_for_this_database()) == []


def test_serve_refuses_what_it_cannot_schedule(tmp_path: Path, prefect_api_url: str) -> None:
    database = str(tmp_path / "w.duckdb")
    bad_cron = run_cli("serve", "--cron", "61 2 * * *", "--database", database, timeout=60)
    assert (bad_cron.returncode, bad_cron.stderr) == (
        1,
        'usercounts: error: Invalid cron string: "61 2 * * *" '
        "(five fields: minute hour day month weekday)\n",
    )
    # without a server Prefect would serve against its own temporary one, which never runs it
    no_server = run_cli("serve", "--database", database, env={"PREFECT_API_URL": ""}, timeout=60)
    assert no_server.returncode == 1
    assert no_server.stderr.startswith(
        "usercounts: error: usercounts serve needs a running Prefect"
    )


def test_serve_registers_the_nightly_schedule_and_runs_the_flow_runs_it_is_given(
    tmp_path: Path, prefect_api_url: str
) -> None:
    """`usercounts serve`, started outside the project as a supervisor would, registers the
    deployment and executes its flow runs (Prefect's runner, not `usercounts run`'s path)."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    landing = tmp_path / "landing"
    shutil.copytree(DEMO_LANDING, landing)
    database = tmp_path / "w.duckdb"
    env = {
        **os.environ,
        "USERCOUNTS_LANDING": str(landing),
        "USERCOUNTS_OUTBOX": str(tmp_path / "outbox"),
        "USERCOUNTS_SCHEDULE_TIMEZONE": "Europe/Berlin",  # (default UTC)
    }
    usercounts = str(Path(sys.executable).with_name("usercounts"))
    serving = subprocess.Popen(
        [usercounts, "serve", "--cron", "30 1 * * *", "--database", str(database)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )

    async def registered_then_run() -> tuple:
        async with get_client() as client:
            deadline = time.monotonic() + 120
            while True:  # serve registers the deployment once its imports are done
                assert serving.poll() is None, "serve ended before registering"
                try:
                    deployment = await client.read_deployment_by_name("usercounts-nightly/nightly")
                except ObjectNotFound:
                    deployment = None
                if deployment and deployment.parameters.get("database") == str(database):
                    break
                assert time.monotonic() < deadline, "serve registered nothing in 120 s"
                await asyncio.sleep(1)
            flow_run = await client.create_flow_run_from_deployment(deployment.id)
            deadline = time.monotonic() + 180
            while not (flow_run.state and flow_run.state.is_final()):
                assert time.monotonic() < deadline, "the run serve was given did not end"
                await asyncio.sleep(1)
                flow_run = await client.read_flow_run(flow_run.id)
            return deployment, flow_run.state

    try:
        deployment, state = asyncio.run(registered_then_run())
    finally:
        serving.terminate()
        output, _ = serving.communicate(timeout=60)

    assert [(s.schedule.cron, s.schedule.timezone) for s in deployment.schedules] == [
        ("30 1 * * *", "Europe/Berlin")
    ]
    assert deployment.parameters["landing"] == str(landing)
    assert state.is_completed(), output[-3000:]
    assert query(database, "select count(*) from marts.plan_user_counts_current") == [(14,)]
    assert list((tmp_path / "outbox").glob("*.eml")), "the run sent no notification"
