"""Reliability promises (docs/operations.md, "Promises"), each proved by injecting the fault.

Everything here is black-box: real `usercounts run` processes on the session's Prefect
server, killed with SIGKILL at named pause points (usercounts/pause.py) and at random
moments, while another process reads the published warehouse; the results are judged by
opening the files a user would open. As-of date D = 2025-06-30 unless noted.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path

import duckdb
import pytest
from conftest import (
    Landing,
    build_warehouse,
    canonical_dump,
    ppid_and_state,
    query,
    run_cli,
    validations_without_page,
    wait_until,
)

import usercounts
from usercounts import state, workdb
from usercounts.config import PROJECT_ROOT, Settings
from usercounts.publish import previous_path

AS_OF = date(2025, 6, 30)
DBT_CHILD = "inside dbt"
# A step's inner pause point, when it has one that reaches deeper than the step's start.
INNER_POINTS = {"load": ["load:files"], "dbt build": [DBT_CHILD], "publish": ["publish:copied"]}


# ---------------------------------------------------------------------------- processes


def alive(pid: int) -> bool:
    """True while the process exists and is not a zombie (killed, waiting to be reaped)."""
    info = ppid_and_state(pid)
    return info is not None and info[1] != "Z"


def descendants(pid: int) -> set[int]:
    """Every live process below pid."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (info := ppid_and_state(int(entry.name))):
            children.setdefault(info[0], []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found and alive(child):
                found.add(child)
                todo.append(child)
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def holders(*paths: Path) -> list[str]:
    """Processes that have any of the given files open."""
    wanted = {str(p) for p in paths}
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fds = list((entry / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.removesuffix(" (deleted)") in wanted:
                found.append(f"{entry.name} {cmdline(int(entry.name))[:120]} -> {target}")
    return found


# ---------------------------------------------------------------------------- the site


def write_site_landing(landing: Landing) -> None:
    """Four plans of org O1 (admin a@x.test): ok, over 80%, at the limit, 80% opted out."""
    landing.write(
        "plans",
        [
            landing.plan("P_OK", 10),
            landing.plan("P_80", 5),
            landing.plan("P_LIM", 3, billing_cycle="monthly"),
            landing.plan("P_OFF", 5),
        ],
    )
    landing.write(
        "instances",
        [{"instance_id": f"I{p[1:]}", "plan_id": p} for p in ("P_OK", "P_80", "P_LIM", "P_OFF")],
    )
    landing.write("org_admins", [{"org_id": "O1", "email": "a@x.test", "display_name": "A"}])
    users = {"P_OK": 3, "P_80": 4, "P_LIM": 3, "P_OFF": 4}
    landing.write(
        "users",
        [
            {"user_id": f"{p}-u{n}", "email": f"{p}-u{n}@x.test", "account_type": "atlassian"}
            for p, count in users.items()
            for n in range(count)
        ],
    )
    events = []
    for p, count in users.items():
        for n in range(count):
            events.append(
                {"event_id": f"{p}-g{n}", "occurred_at": f"2025-0{1 + n}-10T09:00:00Z",
                 "instance_id": f"I{p[1:]}", "user_id": f"{p}-u{n}", "action": "grant"}
            )  # fmt: skip
    # P_OK's third user leaves again: 2 of 10.
    events.append(
        {"event_id": "P_OK-r2", "occurred_at": "2025-05-01T00:00:00Z", "instance_id": "I_OK",
         "user_id": "P_OK-u2", "action": "revoke"}
    )  # fmt: skip
    landing.write("access_events", events)
    landing.write(
        "last_seen",
        [{"instance_id": "I_OK", "user_id": "P_OK-u0", "last_seen_at": "2025-06-01T00:00:00Z"}],
    )


@dataclass
class Site:
    """A warehouse home with a published warehouse; tests move `as_of`/`dump` as they publish."""

    root: Path
    landing: Path
    settings: Settings
    as_of: date = AS_OF
    dump: dict = field(default_factory=dict)
    steps: list[str] = field(default_factory=list)
    run_seconds: float = 0.0
    started: list[subprocess.Popen] = field(default_factory=list)

    @property
    def database(self) -> Path:
        return self.settings.published_path

    def run_args(self, as_of: date | None = None) -> list[str]:
        return ["run", "--landing", str(self.landing), "--database", str(self.database),
                "--as-of", (as_of or self.as_of).isoformat()]  # fmt: skip

    def start(self, pause_at: str | None = None, env: dict[str, str] | None = None):
        """Start `usercounts run` (paused at a point when asked); return (process, marker)."""
        marker = self.root / f"paused-{len(self.started)}"
        extra = {"USERCOUNTS_TEST_PAUSE_MARKER": str(marker)}
        if pause_at and pause_at != DBT_CHILD:
            extra["USERCOUNTS_TEST_PAUSE_AT"] = pause_at
        out = (self.root / f"run-{len(self.started)}.log").open("w")
        proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("usercounts")), *self.run_args()],
            cwd=PROJECT_ROOT,
            env={**os.environ, **(env or {}), **extra},
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
        out.close()
        self.started.append(proc)
        return proc, marker

    def output(self, proc: subprocess.Popen) -> str:
        return (self.root / f"run-{self.started.index(proc)}.log").read_text()

    def state(self) -> dict[str, list[tuple]]:
        """The state file's tables, read as an operator would (read-only)."""
        with duckdb.connect(str(self.settings.state_path), read_only=True) as con:
            return {
                table: sorted(con.execute(f"select * from {table}").fetchall(), key=repr)  # noqa: S608
                for table in ("plan_settings", "notification_log", "run_log")
            }

    def outbox(self) -> dict[str, bytes]:
        folder = self.settings.outbox_path
        return {p.name: p.read_bytes() for p in sorted(folder.glob("*"))} if folder.is_dir() else {}


def paused(site: Site, proc: subprocess.Popen, marker: Path, point: str) -> None:
    """Wait until the run stands at the pause point (for DBT_CHILD: until dbt builds)."""

    def there() -> bool:
        if proc.poll() is not None:
            raise AssertionError(
                f"the run ended (exit {proc.returncode}) before reaching {point!r}:\n"
                + site.output(proc)[-2000:]
            )
        if point == DBT_CHILD:
            # dbt's child starts, and parses, before the load; it opens the working
            # database only once its build runs
            work = site.settings.work_path
            return any(int(h.split()[0]) in descendants(proc.pid) for h in holders(work))
        return marker.exists()

    wait_until(there, 180, f"the run to reach {point!r}")


def kill_9(site: Site, proc: subprocess.Popen, *, check_files: bool = True) -> None:
    """SIGKILL the run; check that it took every child with it and holds no file of ours."""
    children = descendants(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    # They die with it (an orphaned dbt would go on for seconds, holding the work files).
    wait_until(
        lambda: not any(alive(c) for c in children),
        3,
        "the killed run's children to die: "
        + "; ".join(cmdline(c)[:100] for c in children if alive(c)),
    )
    if check_files:
        assert_nobody_holds_the_run_files(site)


def assert_nobody_holds_the_run_files(site: Site) -> None:
    assert holders(*workdb.files(site.settings.work_path), site.settings.state_path) == []


def assert_untouched(site: Site, state_before: dict) -> None:
    """The published warehouse opens and is exactly as before; no .wal beside it; state kept."""
    assert canonical_dump(site.database) == site.dump
    assert not site.database.with_name(site.database.name + ".wal").exists()
    assert site.state() == state_before


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, prefect_api_url: str) -> Iterator[Site]:
    """A published warehouse from a real `usercounts run`, with an 80% opt-out in the state."""
    root = tmp_path_factory.mktemp("site")
    landing = Landing(root / "landing")
    write_site_landing(landing)
    settings = Settings(landing=landing.root, database=root / "data" / "warehouse.duckdb")
    site = Site(root=root, landing=landing.root, settings=settings)
    off = run_cli("notify-at-80", "off", "--plan", "P_OFF", "--database", str(site.database))
    assert off.returncode == 0, off.stderr
    started = time.monotonic()
    result = run_cli(*site.run_args())
    site.run_seconds = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    # The flow's timed steps, in run order, as the summary names them ("time: load 0.4s, ...").
    time_line = next(line for line in result.stdout.splitlines() if "time:" in line)
    site.steps = re.findall(r"([a-z][a-z :]*?) \d+\.\d+s", time_line.split("time:")[1])
    # in the documented order (docs/data-quality.md): nothing is mailed or published before
    # the marts are checked, and the report is written from what was published
    assert site.steps == [
        "load", "validate raw", "dbt build", "validate marts", "notify", "publish", "report"
    ]  # fmt: skip
    assert query(
        site.database,
        "select plan_id, user_count from marts.plan_user_counts_current order by plan_id",
    ) == [("P_80", 4), ("P_LIM", 3), ("P_OFF", 4), ("P_OK", 2)]
    site.dump = canonical_dump(site.database)
    yield site
    for proc in site.started:  # a failed test may leave a paused run: end it
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# ------------------------------------------------------------- 1. readers are never blocked

READER = r"""
import duckdb, json, os, sys, time
database, log, stop = sys.argv[1:]
sql = ("select (select count(*) from meta.runs),"
       " (select count(*) from marts.plan_user_counts_daily),"
       " (select max(as_of) from marts.plan_user_counts_current)::varchar")
with open(log, "a") as out:
    try:
        con = duckdb.connect(database, read_only=True)
        while not os.path.exists(stop):
            out.write(json.dumps({"at": time.time(), "seen": con.execute(sql).fetchone()}) + "\n")
            out.flush()
            time.sleep(0.02)
        con.close()
        con = duckdb.connect(database, read_only=True)
        out.write(json.dumps({"at": time.time(), "new": con.execute(sql).fetchone()}) + "\n")
    except Exception as exc:
        out.write(json.dumps({"error": repr(exc)}) + "\n")
        sys.exit(1)
"""


@pytest.mark.slow
def test_a_reader_holding_the_warehouse_open_keeps_its_snapshot_and_never_blocks_a_run(
    site: Site,
) -> None:
    log, stop = site.root / "reader.jsonl", site.root / "reader.stop"
    held = site.database.stat().st_ino  # the file the reader opens
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(site.database), str(log), str(stop)]
    )
    try:
        wait_until(lambda: log.exists() and log.read_text().count("\n") >= 3, 30, "the reader")
        next_day = site.as_of + timedelta(days=1)
        result = run_cli(*site.run_args(next_day))
        run_ended = time.time()
        time.sleep(0.5)  # the reader goes on querying its snapshot after the run
    finally:
        stop.touch()
        assert reader.wait(timeout=60) == 0, log.read_text()[-2000:]
    assert result.returncode == 0, result.stdout + result.stderr

    lines = [json.loads(line) for line in log.read_text().splitlines()]
    seen = [line["seen"] for line in lines if "seen" in line]
    old = seen[0]
    assert old[2].startswith("2025-07-01")  # the as-of instant of D = 2025-06-30
    # Every query of the held connection, before, during and after the run, saw the old
    # snapshot, and the connection stayed open past the end of the run.
    assert all(s == old for s in seen), {tuple(s) for s in seen}
    assert any(line["at"] > run_ended for line in lines if "seen" in line)
    # A new connection (in the same process, after closing the old one) sees the new one.
    new = lines[-1]["new"]
    assert new[0] == old[0] + 1 and new[1] > old[1] and new[2].startswith("2025-07-02")
    assert query(site.database, "select count(*) from meta.runs") == [(new[0],)]
    assert not site.database.with_name(site.database.name + ".wal").exists()
    # The new snapshot was renamed into place, not written over the file the reader held,
    # which is kept beside it (the same file, a hard link), to roll back to by hand.
    assert site.database.stat().st_ino != held
    assert previous_path(site.database).stat().st_ino == held
    assert canonical_dump(previous_path(site.database)) == site.dump
    site.as_of, site.dump = next_day, canonical_dump(site.database)


# ----------------------------------------------------------------- 2. a crash loses nothing


@pytest.mark.slow
def test_kill_9_at_every_step_leaves_the_published_warehouse_and_the_state_as_they_were(
    site: Site, subtests: pytest.Subtests
) -> None:
    """One kill in every step before dbt (loading, validating the raw layer), one at a
    random moment inside dbt, one in the middle of publishing. Each kill after dbt costs a
    whole build, so the steps between dbt and the publish are left to the mail test (a kill
    inside `notify`) and to the random kills; steps after the publish find the new
    snapshot already in place.
    """
    before_dbt = site.steps[: site.steps.index("dbt build")]
    points = [p for step in before_dbt for p in INNER_POINTS.get(step, [step])]
    points += [DBT_CHILD, "publish:copied"]
    state = site.state()
    for point in points:
        with subtests.test(point=point):
            proc, marker = site.start(pause_at=point)
            paused(site, proc, marker, point)
            if point == DBT_CHILD:
                time.sleep(random.uniform(0.0, 1.0))  # somewhere in dbt's build (a few seconds)
            kill_9(site, proc)
            assert_untouched(site, state)


@pytest.mark.slow
def test_kill_9_at_random_moments_then_the_next_run_completes_identically(
    site: Site, subtests: pytest.Subtests
) -> None:
    """Kills at random delays; then a rerun of the same date: identical marts, no new mail."""
    state, outbox = site.state(), site.outbox()
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    span = max(site.run_seconds, 10.0)
    for delay in (rng.uniform(0.5, span / 3), rng.uniform(span / 3, span)):
        with subtests.test(delay=round(delay, 2), seed=seed):
            proc, _ = site.start()
            try:
                proc.wait(timeout=delay)  # finished before the kill: a complete rerun
            except subprocess.TimeoutExpired:
                kill_9(site, proc)
            # The same inputs and date: whether the kill came before or after the publish,
            # the warehouse holds the same marts and opens.
            assert canonical_dump(site.database) == site.dump
            assert site.state()["plan_settings"] == state["plan_settings"]
            assert site.state()["notification_log"] == state["notification_log"]

    result = run_cli(*site.run_args())
    assert result.returncode == 0, result.stdout + result.stderr
    assert canonical_dump(site.database) == site.dump
    assert site.outbox() == outbox, "a rerun of the same as-of date sent mail"
    after = site.state()
    assert after["plan_settings"] == state["plan_settings"]
    assert after["notification_log"] == state["notification_log"]
    assert set(state["run_log"]) < set(after["run_log"])
    # The next run cleared what the killed ones left: staging copy, its log, no .wal.
    leftover = re.compile(r"publishing|linking|\.wal$")
    assert [p.name for p in site.settings.home.iterdir() if leftover.search(p.name)] == []
    assert oct(site.settings.state_path.stat().st_mode & 0o777) == "0o600"


# -------------------------------------------------------------------- 3. one run at a time


@pytest.mark.slow
def test_a_second_run_exits_at_once_and_a_killed_runs_lock_does_not_block(site: Site) -> None:
    state = site.state()
    first, marker = site.start(pause_at="load")
    paused(site, first, marker, "load")
    second = run_cli(*site.run_args(), timeout=120)
    assert second.returncode == 1
    assert f"another usercounts run (pid {first.pid}) is using" in second.stderr
    assert "Traceback" not in second.stderr + second.stdout
    assert first.poll() is None  # the second run did not disturb the first
    assert_untouched(site, state)

    kill_9(site, first)
    assert site.settings.lock_path.read_text().strip() == str(first.pid)  # left behind
    third, marker = site.start(pause_at="load")
    paused(site, third, marker, "load")  # it took the lock

    # Stopped the polite way (SIGTERM: systemd, `timeout`): one line, its children gone.
    children = descendants(third.pid)
    third.send_signal(signal.SIGTERM)
    assert third.wait(timeout=60) == 130
    output = site.output(third)
    assert output.strip().splitlines()[-1] == "usercounts: interrupted"
    assert "Traceback" not in output
    wait_until(lambda: not any(alive(c) for c in children), 15, "the stopped run's children")
    assert_nobody_holds_the_run_files(site)
    assert_untouched(site, state)


def test_a_run_stopped_during_dbt_still_builds_its_raw_checks_pages(site: Site) -> None:
    """The data docs are built once a run, after the marts checks; a run stopped between
    the two layers (SIGTERM while dbt runs) builds its raw checks' pages on its way out."""
    state = site.state()
    results = site.settings.quality_path / "results"
    before = set(results.rglob("*.json"))
    run, marker = site.start(pause_at=DBT_CHILD)
    paused(site, run, marker, DBT_CHILD)
    run.send_signal(signal.SIGTERM)
    assert run.wait(timeout=60) == 130
    assert "Traceback" not in site.output(run)
    stored = sorted(str(p.relative_to(results)) for p in set(results.rglob("*.json")) - before)
    raw_suites = (PROJECT_ROOT / "expectations" / "expectations").glob("raw_*.json")
    # this run's raw checks, only
    assert [name.split("/")[0] for name in stored] == sorted(p.stem for p in raw_suites)
    # each with its page (runs the kill -9 tests stopped between the layers may lack theirs)
    unpaged = validations_without_page(site.settings.quality_path)
    assert [name for name in stored if name in unpaged] == []
    assert_untouched(site, state)


def test_a_mart_check_failing_in_a_real_run_publishes_nothing(site: Site) -> None:
    """The flow checks the built marts before it notifies and publishes: a mart broken
    after dbt (an invited count above its user count, edited in while the run is paused
    before the marts checks) stops the run with the check's name, and the published
    warehouse stays as it was (and the notification log and outbox, though none is due
    here: the site's first run sent them)."""
    state, outbox = site.state(), site.outbox()
    run, marker = site.start(pause_at="validate marts")
    paused(site, run, marker, "validate marts")
    with workdb.connect(site.settings.work_path) as con:
        con.execute(
            "update marts.plan_user_counts_current set invited_count = user_count + 1 "
            "where plan_id = 'P_80'"
        )
    marker.unlink()
    assert run.wait(timeout=300) == 1
    output = site.output(run)
    assert "Traceback" not in output
    last = output.strip().splitlines()[-1]
    assert last.startswith(
        "usercounts: error: data quality check failed: suite plan_user_counts_current, "
        'expectation "invited_count <= user_count": 1 row'
    ), output[-2000:]
    assert canonical_dump(site.database) == site.dump
    assert site.state()["notification_log"] == state["notification_log"]
    assert site.outbox() == outbox


# ------------------------------------------------------ 5. hostile and broken input contained

# Values that would break SQL built as text, or a CSV writer without quoting.
HOSTILE = {
    "plan_id": "P'; drop table marts.plan_user_counts_current; --",
    "org_id": "O\"1'",
    "plan_name": 'O\'Brien "Plan"\nline two; drop schema marts cascade; --',
    "instance_id": "I'); delete from raw.instances; --",
    "user_id": "u'\"; select 1; --\nx",
    "email": 'o\'brien+"x"@example.test',
    "display_name": "Robert'); DROP TABLE users;--\tünïcödé",
}
USERS_HEADER = "user_id,email,display_name,account_type,is_billable\n"
EVENTS_HEADER = "event_id,occurred_at,instance_id,user_id,action\n"


def user_line(user: str) -> str:
    return f"{user},{user}@x.test,{user.upper()},atlassian,true\n"


def grant_line(event: str, user: str, instance: str = "I_N") -> str:
    return f"{event},2025-03-0{len(event) % 9 + 1}T10:00:00Z,{instance},{user},grant\n"


def write_hostile_landing(landing: Landing) -> None:
    """Plan P_N collects one user from each broken file's good rows; P_H carries HOSTILE."""
    root = landing.root
    landing.write(
        "plans",
        [
            landing.plan("P_N", 100, org_id="O_N"),
            landing.plan(HOSTILE["plan_id"], 10, org_id=HOSTILE["org_id"],
                         plan_name=HOSTILE["plan_name"]),
            landing.plan("P_MAIL", 1, org_id="O_MAIL"),
        ],
    )  # fmt: skip
    landing.write(
        "instances",
        [
            {"instance_id": "I_N", "plan_id": "P_N"},
            {"instance_id": HOSTILE["instance_id"], "plan_id": HOSTILE["plan_id"]},
            {"instance_id": "I_MAIL", "plan_id": "P_MAIL"},
        ],
    )
    landing.write("org_admins", [{"org_id": "O_MAIL", "email": "m@x.test"}])
    landing.write(
        "users",
        [{"user_id": HOSTILE["user_id"], "email": HOSTILE["email"],
          "display_name": HOSTILE["display_name"], "account_type": "atlassian"}],
        name="hostile.csv",
    )  # fmt: skip
    # Wrong encoding: line 3 is latin-1 (not UTF-8); lines 2 and 4 are good.
    (root / "users" / "latin1.csv").write_bytes(
        (
            USERS_HEADER + user_line("n1") + "n2,n2@x.test,José,atlassian,true\n" + user_line("n3")
        ).encode("latin-1")
    )
    # A 10 MB value in a good row (line 2), a 10 MB line of junk (line 3), a good row (4).
    (root / "users" / "long.csv").write_text(
        USERS_HEADER + "n4,n4@x.test," + "x" * 10_000_000 + ",atlassian,true\n"
        + "y" * 10_000_000 + "\n" + user_line("n5")
    )  # fmt: skip

    events = root / "access_events"
    # Truncated mid-row (the writer died): lines 2-3 good, line 4 cut inside a quote.
    (events / "truncated.csv").write_text(
        EVENTS_HEADER + grant_line("t1", "n1") + grant_line("t2", "n2") + 't3,"2025-0'
    )
    # A row with extra columns (line 3) between good rows.
    (events / "extra_columns.csv").write_text(
        EVENTS_HEADER + grant_line("x1", "n3") + "x2,2025-03-01T00:00:00Z,I_N,n9,grant,more,more\n"
        + grant_line("x3", "n4")
    )  # fmt: skip
    # An unknown extra column is ignored (data contract, section 1).
    (events / "extra_header.csv").write_text(
        EVENTS_HEADER.replace("\n", ",note\n") + grant_line("h1", "n5").replace("\n", ",hi\n")
    )
    # Parquet with the wrong types: integer ids, a real timestamp, a struct column; its row
    # 3 (1-based, as the contract numbers Parquet rows) has an unknown action.
    with duckdb.connect() as con:
        con.sql(
            "select * from (values "
            "(1001, timestamptz '2025-03-01 10:00:00+00', 'I_N', 6, 'grant', {'a': 1}), "
            "(1002, timestamptz '2025-03-02 10:00:00+00', 'I_N', 7, 'invite', {'a': 2}), "
            "(1003, timestamptz '2025-03-03 10:00:00+00', 'I_N', 8, 'promote', {'a': 3})"
            ") as t(event_id, occurred_at, instance_id, user_id, action, note)"
        ).write_parquet(str(events / "types.parquet"))
    # A hostile file name, a hostile event, and a bad row quarantined verbatim (line 4: the
    # hostile user id holds a line break, so its row spans lines 2 and 3).
    with (events / "it's; drop.csv").open("w", newline="") as out:
        csv.writer(out).writerows(
            [
                EVENTS_HEADER.strip().split(","),
                ["hx", "2025-03-01T00:00:00Z", HOSTILE["instance_id"], HOSTILE["user_id"], "grant"],
                ["hy", "2025-03-01T00:00:00Z", "I_N", "n9", "drop table x"],
                ["m1", "2025-03-01T00:00:00Z", "I_MAIL", "m1", "grant"],
            ]
        )
    (root / "last_seen" / "good.csv").write_text(
        "instance_id,user_id,last_seen_at\nI_N,n1,2025-03-15T00:00:00Z\n"
    )


def write_broken_files(landing: Landing) -> list[Path]:
    """Whole files that cannot be used: empty, header only, corrupt, and one that vanishes."""
    events = landing.root / "access_events"
    broken = [events / "empty.csv", events / "header_only.csv", events / "vanishing.csv",
              landing.root / "last_seen" / "corrupt.parquet"]  # fmt: skip
    broken[0].write_bytes(b"")
    broken[1].write_text(EVENTS_HEADER)
    broken[2].write_text(EVENTS_HEADER + grant_line("v1", "n8"))
    broken[3].write_bytes(b"PAR1" + os.urandom(4096))
    return broken


class Mailbox:
    """A real SMTP server (aiosmtpd) on 127.0.0.1 that requires a login."""

    def __init__(self, user: str, password: str) -> None:
        import socket

        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult

        self.messages: list[bytes] = []
        self.logins: list[tuple[bytes, bytes]] = []
        # Called when a message's data has arrived, before the server answers: True accepts
        # it (250), False refuses it (451). A test can hold a message there.
        self.gate: Callable[[], bool] | None = None

        def authenticate(server, session, envelope, mechanism, auth_data) -> AuthResult:
            self.logins.append((auth_data.login, auth_data.password))
            ok = (auth_data.login, auth_data.password) == (user.encode(), password.encode())
            return AuthResult(success=ok)

        class Handler:
            async def handle_DATA(inner, server, session, envelope) -> str:  # noqa: N805
                if self.gate is not None and not self.gate():
                    return "451 4.3.0 not now"
                self.messages.append(envelope.content)
                return "250 OK"

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        warnings.filterwarnings("ignore", "Requiring AUTH while not requiring TLS")
        self.controller = Controller(
            Handler(), hostname="127.0.0.1", port=self.port, authenticator=authenticate,
            auth_required=True, auth_require_tls=False,
        )  # fmt: skip
        self.controller.start()

    def env(self, user: str, password: str) -> dict[str, str]:
        return {"USERCOUNTS_SMTP_HOST": "127.0.0.1", "USERCOUNTS_SMTP_PORT": str(self.port),
                "USERCOUNTS_SMTP_USER": user, "USERCOUNTS_SMTP_PASSWORD": password}  # fmt: skip


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    box = Mailbox("usercounts", PASSWORD)
    yield box
    box.controller.stop()


PASSWORD = f"pw-{os.urandom(6).hex()}-never-logged"


@pytest.mark.slow
def test_hostile_input_is_contained_good_rows_count_and_nothing_leaks(
    tmp_path: Path, prefect_api_url: str, mailbox: Mailbox
) -> None:
    """Two runs: with whole files broken (one vanishing mid-run), then without them."""
    landing = Landing(tmp_path / "landing")
    write_hostile_landing(landing)
    broken = write_broken_files(landing)
    database = tmp_path / "data" / "warehouse.duckdb"
    site = Site(root=tmp_path, landing=landing.root,
                settings=Settings(landing=landing.root, database=database))  # fmt: skip
    env = {
        **mailbox.env("usercounts", PASSWORD),
        "USERCOUNTS_QUARANTINE_MAX_SHARE": "1",  # bad rows on purpose: do not stop the run
        "PREFECT_LOGGING_LEVEL": "DEBUG",  # so that "never logged" covers debug records too
    }
    proc, marker = site.start(pause_at="load:files", env=env)
    try:
        paused(site, proc, marker, "load:files")
        broken[2].unlink()  # found, not yet read
        marker.unlink()
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    outputs = [site.output(proc)]
    assert "Traceback" not in outputs[0]
    # Unusable whole files: either quarantined as one row each (the run goes on), or, where
    # a data-quality check makes them critical, one line naming the check and nothing
    # published.
    if proc.returncode == 0:
        files = query(
            database,
            "select file_name, reason from quarantine.access_events where row_number is null "
            "union all select file_name, reason from quarantine.last_seen order by 1",
        )
        assert [(f, r.split(":")[0]) for f, r in files] == [
            ("access_events/vanishing.csv", "file could not be read"),
            ("last_seen/corrupt.parquet", "file could not be read"),
        ]
    else:
        last = outputs[0].strip().splitlines()[-1]
        assert proc.returncode == 1 and last.startswith("usercounts: error: "), outputs[0][-3000:]
        assert "can be read" in last or "empty" in last, last
        assert not database.exists()

    # Without the broken files: every bad line quarantined with a reason ...
    for path in broken:
        path.unlink(missing_ok=True)
    result = run_cli(*site.run_args(), env=env)
    outputs.append(result.stdout + result.stderr)
    assert result.returncode == 0, outputs[1][-3000:]
    assert "Traceback" not in outputs[1]
    rows = [
        row
        for table in ("users", "access_events", "last_seen")
        for row in query(
            database,
            f"select file_name, row_number, reason from quarantine.{table}",  # noqa: S608
        )
    ]
    quarantined = {(file, row): reason for file, row, reason in rows}
    assert len(quarantined) == len(rows)  # one row per bad line (not one per missing column)
    expected = {
        ("users/latin1.csv", 3): "INVALID ENCODING",
        ("users/long.csv", 3): "MISSING COLUMNS",
        ("access_events/truncated.csv", 4): "",
        ("access_events/extra_columns.csv", 3): "TOO MANY COLUMNS",
        ("access_events/it's; drop.csv", 4): "unknown action: drop table x",
        ("access_events/types.parquet", 3): "unknown action: promote",
    }
    assert set(quarantined) == set(expected), quarantined
    for key, reason in expected.items():
        assert quarantined[key].startswith(reason), (key, quarantined[key])

    # ... and every good row of the same files counted: n1-n5 from the CSVs, 6 and 7 from
    # the Parquet file with integer ids (7 invited).
    assert query(
        database,
        "select user_count, invited_count from marts.plan_user_counts_current "
        "where plan_id = 'P_N'",
    ) == [(7, 1)]
    people = query(
        database,
        "select user_id, email, length(display_name) from marts.user_last_seen "
        "where plan_id = 'P_N' order by user_id",
    )
    assert people == [
        ("6", None, None), ("7", None, None), ("n1", "n1@x.test", 2), ("n2", None, None),
        ("n3", "n3@x.test", 2), ("n4", "n4@x.test", 10_000_000), ("n5", "n5@x.test", 2),
    ]  # fmt: skip

    # Hostile values come out verbatim, and every mart is still there.
    assert query(
        database,
        "select org_id, plan_name, user_count from marts.plan_user_counts_current "
        "where plan_id = ?",
        [HOSTILE["plan_id"]],
    ) == [(HOSTILE["org_id"], HOSTILE["plan_name"], 1)]
    assert query(
        database,
        "select instance_id, user_id, email, display_name from marts.user_last_seen "
        "where plan_id = ?",
        [HOSTILE["plan_id"]],
    ) == [(HOSTILE["instance_id"], HOSTILE["user_id"], HOSTILE["email"], HOSTILE["display_name"])]
    tables = query(database, "select table_name from duckdb_tables() where schema_name = 'marts'")
    assert {"plan_user_counts_current", "plan_user_counts_daily", "plan_user_counts_monthly",
            "user_last_seen"} <= {t for (t,) in tables}  # fmt: skip

    # 6. The SMTP password is nowhere: not in the output (debug logging on), nor in any file
    # the runs wrote (dbt's log, the warehouse, the state, the outbox, reports).
    assert all(PASSWORD not in output for output in outputs)
    leaks = [p for p in tmp_path.rglob("*") if p.is_file() and PASSWORD.encode() in p.read_bytes()]
    assert leaks == []


# ---------------------------------------- 5. properties: the marts against a model in Python

# As-of date D = 2025-02-28: A = 2025-03-01 00:00 UTC. Instants cluster on day and month
# boundaries, so that same-instant ties, midnight and the as-of instant itself come up often.
PROP_AS_OF = date(2025, 2, 28)
PROP_A = datetime(2025, 3, 1)
INSTANTS = [datetime.fromisoformat(t) for t in (
    "2024-12-31 23:59:59.999999", "2025-01-01 00:00:00", "2025-01-15 12:00:00",
    "2025-01-31 00:00:00", "2025-01-31 23:59:59", "2025-02-01 00:00:00",
    "2025-02-01 00:00:00.000001", "2025-02-14 08:30:00", "2025-02-28 23:59:59.999999",
    "2025-03-01 00:00:00", "2025-03-02 10:00:00",
)]  # fmt: skip
# The same instant written the ways the contract allows (no offset means UTC).
FORMATS = [
    lambda t: t.isoformat() + "Z",
    lambda t: t.isoformat(sep=" "),
    lambda t: (t + timedelta(hours=2)).isoformat() + "+02:00",
    lambda t: (t - timedelta(hours=5, minutes=30)).isoformat() + "-05:30",
]
BILLING = {"true": True, "false": False, "": True, None: True}  # None: no users row


def history_strategy():
    from hypothesis import strategies as st

    event = st.tuples(
        st.integers(0, 11),  # event number: few, so ids repeat (e10 sorts before e2)
        st.integers(0, len(INSTANTS) - 1),
        st.integers(0, len(FORMATS) - 1),
        st.integers(0, 1),  # instance
        st.integers(0, 2),  # user
        st.sampled_from(["invite", "grant", "revoke"]),
        st.integers(0, 1),  # file: a CSV read first, then a Parquet file
    )
    return st.fixed_dictionaries(
        {
            "instances": st.integers(1, 2),
            "billable": st.lists(st.sampled_from(list(BILLING)), min_size=3, max_size=3),
            "events": st.lists(event, max_size=10),
        }
    )


@dataclass
class Row:
    event_id: str
    at: datetime
    text: str
    instance: str
    user: str
    action: str
    file: int


def plan_rows(plan: str, history: dict) -> list[Row]:
    return [
        Row(f"{plan}-e{n}", INSTANTS[i], FORMATS[f](INSTANTS[i]),
            f"{plan}-i{inst % history['instances']}", f"{plan}-u{user}", action, file)
        for n, i, f, inst, user, action, file in history["events"]
    ]  # fmt: skip


def model(plan: str, history: dict) -> dict:
    """The contract's figures for one plan, straight from its state table."""
    rows = plan_rows(plan, history)
    read_order = sorted(range(len(rows)), key=lambda k: (rows[k].file, k))
    first: dict[str, Row] = {}
    for k in read_order:  # rows with the same event_id are one event: the first read wins
        first.setdefault(rows[k].event_id, rows[k])
    events = sorted((r for r in first.values() if r.at < PROP_A), key=lambda r: (r.at, r.event_id))
    billable = {f"{plan}-u{u}": BILLING[b] for u, b in enumerate(history["billable"])}
    table = {  # the contract's state table, as written there
        "none": {"invite": "invited", "grant": "active", "revoke": "none"},
        "invited": {"invite": "invited", "grant": "active", "revoke": "none"},
        "active": {"invite": "active", "grant": "active", "revoke": "none"},
    }

    def states(t: datetime) -> dict[tuple[str, str], str]:
        state: dict[tuple[str, str], str] = {}
        for e in events:
            if e.at < t:
                key = (e.instance, e.user)
                state[key] = table[state.get(key, "none")][e.action]
        return state

    def counted(t: datetime) -> tuple[set[str], set[str]]:
        per_user: dict[str, set[str]] = {}
        for (_, user), s in states(t).items():
            if s != "none":
                per_user.setdefault(user, set()).add(s)
        return set(per_user), {u for u, s in per_user.items() if s == {"invited"}}

    def midnight(d: date) -> datetime:
        return datetime(d.year, d.month, d.day)

    result: dict = {"daily": [], "monthly": []}
    users, invited = counted(PROP_A)
    result["current"] = (len(users), len(invited), sum(billable.get(u, True) for u in users))
    if events:
        day = events[0].at.date()
        while day <= PROP_AS_OF:
            users, invited = counted(midnight(day + timedelta(days=1)))
            result["daily"].append((day, len(users), len(invited)))
            day += timedelta(days=1)
        month, previous = events[0].at.date().replace(day=1), None
        while month <= PROP_AS_OF:
            following = (month + timedelta(days=32)).replace(day=1)
            users, invited = counted(min(midnight(following), PROP_A))
            before = previous or set()
            result["monthly"].append((
                month, len(users), None if previous is None else len(previous),
                None if previous is None else len(users) - len(previous),
                len(users - before), len(before - users), len(invited),
                sum(billable.get(u, True) for u in users), following <= PROP_AS_OF,
            ))  # fmt: skip
            month, previous = following, users
    # user_last_seen: access at A and since when (the start of the unbroken run holding at
    # A; a revoke and a re-grant at one instant leave no instant without access).
    result["access"] = []
    for key, s in sorted(states(PROP_A).items()):
        if s == "none":
            continue
        instants = sorted({e.at for e in events if (e.instance, e.user) == key})
        since = instants[-1]
        for t in reversed(instants[:-1]):
            if states(t + timedelta(microseconds=1)).get(key, "none") == "none":
                break
            since = t
        result["access"].append((*key, s, since))
    return result


def write_histories(landing: Landing, histories: list[dict]) -> list[str]:
    plans = [f"H{n:02d}" for n in range(len(histories))]
    landing.write("plans", [landing.plan(p, 10, org_id=f"O{p}") for p in plans])
    landing.write(
        "instances",
        [{"instance_id": f"{p}-i{i}", "plan_id": p}
         for p, h in zip(plans, histories, strict=True) for i in range(h["instances"])],
    )  # fmt: skip
    landing.write(
        "users",
        [{"user_id": f"{p}-u{u}", "account_type": "atlassian", "is_billable": b}
         for p, h in zip(plans, histories, strict=True)
         for u, b in enumerate(h["billable"]) if b is not None],
    )  # fmt: skip
    rows = [r for p, h in zip(plans, histories, strict=True) for r in plan_rows(p, h)]
    for file, fmt in ((0, "csv"), (1, "parquet")):
        landing.write(
            "access_events",
            [{"event_id": r.event_id, "occurred_at": r.text, "instance_id": r.instance,
              "user_id": r.user, "action": r.action} for r in rows if r.file == file],
            name=f"events_{file}.{fmt}", fmt=fmt,
        )  # fmt: skip
    return plans


def built(database: Path, plan: str) -> dict:
    daily = query(
        database,
        "select day, user_count, invited_count from "
        "marts.plan_user_counts_daily where plan_id = ? order by day",
        [plan],
    )
    monthly = query(
        database,
        "select month, closing_balance, previous_closing_balance, change, "
        "users_added, users_removed, invited_count, billable_count, "
        "is_month_complete from marts.plan_user_counts_monthly "
        "where plan_id = ? order by month",
        [plan],
    )
    current = query(
        database,
        "select user_count, invited_count, billable_count from "
        "marts.plan_user_counts_current where plan_id = ?",
        [plan],
    )
    access = query(
        database,
        "select instance_id, user_id, access_status, access_since "
        "from marts.user_last_seen where plan_id = ? order by 1, 2",
        [plan],
    )
    return {"daily": daily, "monthly": monthly, "current": current[0], "access": access}


@pytest.fixture(scope="module")
def property_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("properties")


def test_marts_equal_a_python_model_of_the_state_table(property_home: Path) -> None:
    """Random histories (30 plans per build), each plan's marts against model()."""
    from hypothesis import Phase, assume, given, note, settings
    from hypothesis import strategies as st

    @settings(max_examples=2, deadline=None, database=None,
              phases=[Phase.explicit, Phase.generate])  # fmt: skip
    @given(st.lists(history_strategy(), min_size=30, max_size=30))
    def check(histories: list[dict]) -> None:
        assume(sum(len(h["events"]) for h in histories) >= 60)  # skip near-empty examples
        # One landing folder and one dbt build for all histories (a build costs seconds);
        # the home is kept across examples so that dbt parses the project once.
        landing_root = property_home / "landing"
        shutil.rmtree(landing_root, ignore_errors=True)
        plans = write_histories(Landing(landing_root), histories)
        settings_ = build_warehouse(landing_root, property_home / "data", PROP_AS_OF)
        for plan, history in zip(plans, histories, strict=True):
            note(f"{plan}: {history}")
            assert built(settings_.published_path, plan) == model(plan, history), plan

    check()


# ---------------------------------------------------------------------------- 6. security


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644, 0o700 | 0o004])
def test_a_password_file_others_can_read_is_refused(tmp_path: Path, mode: int) -> None:
    from usercounts.mail import smtp_password

    secret = tmp_path / "smtp-password"
    secret.write_text(PASSWORD + "\n")
    secret.chmod(mode)
    with pytest.raises(PermissionError, match="chmod 600"):
        smtp_password(Settings(smtp_password_file=secret))
    secret.chmod(0o600)
    assert smtp_password(Settings(smtp_password_file=secret)) == PASSWORD


def test_smtp_login_uses_the_password_and_never_logs_it(
    mailbox: Mailbox, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    from email.message import EmailMessage

    from usercounts.mail import DeliveryError, deliver

    message = EmailMessage()
    message["To"], message["Subject"] = "a@x.test", "hello"
    message.set_content("body")
    caplog.set_level(logging.DEBUG)
    good = Settings(smtp_host="127.0.0.1", smtp_port=mailbox.port, smtp_user="usercounts",
                    smtp_password=PASSWORD)  # fmt: skip
    deliver(good, message)
    assert mailbox.logins == [(b"usercounts", PASSWORD.encode())]
    assert len(mailbox.messages) == 1
    # A refused login: the error names the server's answer, not the password tried.
    wrong = good.model_copy(update={"smtp_user": "someone", "smtp_timeout_seconds": 2})
    with pytest.raises(DeliveryError) as refused:
        deliver(wrong, message)
    out, err = capfd.readouterr()
    for text in (str(refused.value), repr(wrong), caplog.text, out, err):
        assert PASSWORD not in text


def test_the_state_file_and_exports_are_readable_by_their_owner_only(site: Site) -> None:
    assert oct(site.settings.state_path.stat().st_mode & 0o777) == "0o600"
    assert oct(site.settings.lock_path.stat().st_mode & 0o777) == "0o600"
    from usercounts.cli import build_parser

    commands = build_parser()._subparsers._group_actions[0].choices  # noqa: SLF001
    if "export" not in commands:
        pytest.skip("exports arrive with issue 4 (usercounts export): check their mode then")
    result = run_cli("export", "--plan", "P_OK", "--database", str(site.database))
    assert result.returncode == 0, result.stdout + result.stderr
    exports = site.settings.exports_path
    files = [p for p in exports.rglob("*") if p.is_file()]
    assert files
    assert {oct(p.stat().st_mode & 0o777) for p in files} == {"0o600"}
    assert exports.stat().st_mode & 0o077 == 0, oct(exports.stat().st_mode)


# ----------------------------------------------- 2. a crash while sending mail (issue 3)

NOTIFY_MODULE = Path(usercounts.__file__).parent / "notify.py"


@pytest.mark.slow
@pytest.mark.skipif(
    not NOTIFY_MODULE.exists(),
    reason="notifications arrive with issue 3 (usercounts/notify.py); this test is ready for them",
)
def test_kill_9_while_sending_mail_resends_only_the_message_sent_but_not_recorded(
    tmp_path: Path, prefect_api_url: str, mailbox: Mailbox
) -> None:
    """Two notifications are due. The SMTP server accepts the first, and the test then
    holds the state file so that the run cannot record it as sent; the run is killed there.
    The second was recorded as pending and never sent. The next run sends the first again
    (once, same Message-ID) and the second once.
    """
    landing = Landing(tmp_path / "landing")
    plans = ("P_A", "P_B")
    landing.write(
        "plans", [landing.plan(p, 1, org_id="O_M", billing_cycle="monthly") for p in plans]
    )
    landing.write("instances", [{"instance_id": f"I{p}", "plan_id": p} for p in plans])
    landing.write("org_admins", [{"org_id": "O_M", "email": "m@x.test"}])
    landing.write(
        "access_events",
        [{"event_id": f"e{p}", "occurred_at": "2025-06-01T00:00:00Z", "instance_id": f"I{p}",
          "user_id": "u1", "action": "grant"} for p in plans],
    )  # fmt: skip
    database = tmp_path / "data" / "warehouse.duckdb"
    site = Site(root=tmp_path, landing=landing.root,
                settings=Settings(landing=landing.root, database=database))  # fmt: skip
    env = mailbox.env("usercounts", PASSWORD)
    held: list[duckdb.DuckDBPyConnection] = []

    def accept_then_hold_the_state() -> bool:
        if not held:  # the run gets its 250, then waits for the state file to record it
            held.append(duckdb.connect(str(site.settings.state_path)))
        return True

    mailbox.gate = accept_then_hold_the_state
    proc, _ = site.start(env=env)
    try:
        wait_until(lambda: held or proc.poll() is not None, 300, "the first message")
        assert held, site.output(proc)[-3000:]
        time.sleep(1.0)
        kill_9(site, proc, check_files=False)
    finally:
        for con in held:
            con.close()
        mailbox.gate = None
    assert_nobody_holds_the_run_files(site)
    assert not database.exists()  # killed before publishing
    statuses = "select plan_id, status from notification_log order by 1"
    # Both intents were recorded before anything was sent.
    assert query(site.settings.state_path, statuses) == [("P_A", "pending"), ("P_B", "pending")]
    assert len(mailbox.messages) == 1

    result = run_cli(*site.run_args(), env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert query(site.settings.state_path, statuses) == [("P_A", "sent"), ("P_B", "sent")]
    ids = [re.search(rb"(?im)^message-id:\s*(\S+)", m).group(1) for m in mailbox.messages]
    assert len(ids) == 3 and ids[0] in ids[1:] and len(set(ids)) == 2, ids
    assert query(database, "select plan_id, status from marts.notifications order by 1") == [
        ("P_A", "sent"),
        ("P_B", "sent"),
    ]


def test_a_failed_run_whose_history_cannot_be_written_keeps_its_own_error(
    tmp_path: Path,
) -> None:
    """A full disk fails the run and then the recording of its data-quality history too:
    the error raised (the command's one line) is still the run's, not the recording's."""
    from usercounts.errors import RunFailed
    from usercounts.pipeline import RunSummary, failure_recorded

    blocker = tmp_path / "a-file"  # the state file's folder is a file: writing it fails
    blocker.write_text("")
    settings = Settings(database=blocker / "warehouse.duckdb")
    summary = RunSummary(as_of=AS_OF)
    summary.quarantine_reasons.append(("users", "user_id is missing", 1, 10))
    with (
        pytest.raises(RunFailed, match="^the run's own error$"),
        failure_recorded(settings, summary),
    ):
        raise RunFailed("the run's own error")


# A process that holds a DuckDB file open for writing for a moment, then writes a mark and
# lets it go.
HOLD_THEN_MARK = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1])
print("holding", flush=True)
time.sleep(1.5)
con.execute("create table held_mark as select 42 as mark")
con.close()
"""


@pytest.mark.parametrize("opened_by", ["connect_state", "attach_with_retry"])
def test_a_file_another_process_holds_is_waited_for(tmp_path: Path, opened_by: str) -> None:
    """docs/operations.md: commands wait (up to 30 s) for the state file another process
    holds, and the run's attach of its working files waits the same way, instead of failing
    at once on DuckDB's lock. The mark shows the file was opened after the holder let go."""
    path = tmp_path / "warehouse.state.duckdb"
    duckdb.connect(str(path)).close()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_THEN_MARK, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline() == "holding\n"
        if opened_by == "connect_state":
            with state.connect_state(path) as con:
                mark = con.execute("select mark from held_mark").fetchall()
        else:
            with duckdb.connect() as con:
                state.attach_with_retry(con, path, "held", read_only=False)
                mark = con.execute("select mark from held.held_mark").fetchall()
    finally:
        assert holder.wait(timeout=60) == 0
    assert mark == [(42,)]


def test_an_os_error_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    """Not only a missing file or a refused permission: any OSError (here, a folder that is
    a file; a full disk or a read-only mount alike) ends the command with one line."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    database = blocker / "warehouse.duckdb"
    result = run_cli("notify-at-80", "off", "--plan", "P", "--database", str(database))
    assert result.returncode == 1
    assert result.stderr.startswith("usercounts: error: [Errno 17] File exists: ")
    assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) == 1
