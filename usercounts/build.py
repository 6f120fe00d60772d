"""Run dbt against the working database, in a child process (usercounts/dbt_child.py)."""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from usercounts import incremental, workdb
from usercounts.config import PROJECT_ROOT
from usercounts.dbt_child import PARSED_IN_ADVANCE
from usercounts.errors import RunFailed

# What dbt parses (dbt_project.yml's paths, and dbt's default paths and package files the
# project does not have yet): a change to any of them between the parse in advance and the
# build makes dbt's child parse again.
DBT_PROJECT_FILES = (
    "dbt_project.yml",
    "profiles.yml",
    "models",
    "macros",
    "seeds",
    "tests/dbt",
    "analyses",
    "snapshots",
    "functions",
    "packages.yml",
    "dependencies.yml",
)


@dataclass
class BuildResult:
    """What a dbt build did: node counts by status and the slowest models."""

    statuses: dict[str, int]
    timings: list[tuple[str, float]]
    # Whether every model was rebuilt rather than added to, and why.
    full_refresh: bool = False
    full_refresh_reason: str | None = None
    # Whether dbt skipped its parse, having parsed the project while the run loaded.
    parsed_in_advance: bool = False


def dbt_home(work_path: Path) -> Path:
    """dbt's target and log folders for one working database (runs in other folders differ)."""
    return work_path.parent / f"{work_path.stem}.dbt"


def dbt_target(work_path: Path) -> Path:
    """dbt's target folder for one working database: manifest, run results, compiled SQL."""
    return dbt_home(work_path) / "target"


def dbt_folder(work_path: Path) -> Path:
    """The folder dbt runs in: the working database's. The profile names the working files
    relative to it, so that dbt's parse does not depend on where the folder is (dbt parses
    from scratch when the profile's values change, the database's path among them)."""
    return work_path.parent


def dbt_args(command: str, work_path: Path, *extra: str) -> list[str]:
    """The dbt command line for this project, with per-database target and log folders.

    The as-of date and N are not on it: dbt_env passes them in the environment (see
    macros/as_of.sql), because a changed `--vars` makes dbt re-parse the whole project.
    """
    return [
        command,
        "--project-dir", str(PROJECT_ROOT),
        "--profiles-dir", str(PROJECT_ROOT),
        "--target-path", str(dbt_target(work_path)),
        "--log-path", str(dbt_home(work_path) / "logs"),
        *extra,
    ]  # fmt: skip


def dbt_env(work_path: Path, as_of: date, inactive_days: int | None = None) -> dict[str, str]:
    """The environment dbt runs in: the working database, the as-of date, N, DuckDB's memory.

    The as-of date travels as USERCOUNTS_AS_OF_DATE, read only while models run, because a
    changed `--vars` makes dbt re-parse the whole project (seconds, every night).
    """
    memory_limit = os.environ.get("USERCOUNTS_DUCKDB_MEMORY_LIMIT", "").strip()  # blank: unset
    env = {
        **os.environ,
        # relative to dbt_folder(work_path), where dbt runs
        "USERCOUNTS_WORK_DB": work_path.name,
        "USERCOUNTS_WORK_MARTS_DB": workdb.marts_path(work_path).name,
        "USERCOUNTS_AS_OF_DATE": as_of.isoformat(),
        "USERCOUNTS_DUCKDB_MEMORY_LIMIT": memory_limit or default_memory_limit(),
    }
    if inactive_days is not None:
        env["USERCOUNTS_INACTIVE_DAYS"] = str(inactive_days)
    return env


def default_memory_limit() -> str:
    """Half the machine's memory: DuckDB spills to disk beyond it (its own default is 80%,
    which leaves too little beside two dbt threads, the run and the page cache)."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return f"{max(1024, total // 2 // 2**20)}MB"


class DbtChild:
    """A started `python -m usercounts.dbt_child` that has not been given its command yet."""

    def __init__(self) -> None:
        # (folder, environment, project files' hash) of the parse in advance it was given
        self.parsed_for: tuple[str, dict[str, str], str] | None = None
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "usercounts.dbt_child"],
            cwd=PROJECT_ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=die_with_parent(),  # it only calls prctl: safe beside threads
        )

    def parse_in_advance(self, work_path: Path, env: dict[str, str]) -> None:
        """Have the child parse the project now, for a command on this environment later.

        Parsing opens no database: it runs beside the load, which holds the working file.
        """
        args = ["--quiet", "--no-use-colors", *dbt_args("parse", work_path)]
        folder = str(dbt_folder(work_path))
        project = incremental.fingerprint(DBT_PROJECT_FILES)  # before dbt reads the files
        assert self.proc.stdin is not None
        try:
            request = {"parse": args, "env": env, "cwd": folder}
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            return  # the child died at its start: the build starts another (_take_dbt_child)
        self.parsed_for = (folder, env, project)

    def run(self, work_path: Path, args: list[str], env: dict[str, str]) -> tuple[int, str]:
        """Give the child its command; wait for it; (exit code, its output)."""
        folder = str(dbt_folder(work_path))
        # the parse in advance serves only the folder, environment and project files it was
        # made for
        parsed = self.parsed_for is not None and self.parsed_for == (
            folder,
            env,
            incremental.fingerprint(DBT_PROJECT_FILES),
        )
        request = {"args": args, "env": env, "cwd": folder, "parsed_in_advance": parsed}
        request = json.dumps(request) + "\n"
        try:
            stdout, stderr = self.proc.communicate(request)
        except BaseException:  # Ctrl-C, a stop request: dbt stops with the run
            self.proc.kill()
            self.proc.wait()
            raise
        return self.proc.returncode, stdout + stderr

    def discard(self) -> None:
        """Stop a child that will not be given its command, and close its pipes."""
        self.proc.kill()
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


_prestarted: DbtChild | None = None


def start_dbt_child() -> DbtChild:
    """Start dbt's child now, for its imports only: prestart_dbt gives it the project to parse.

    `usercounts run` calls it first, so that dbt imports while the run imports Great
    Expectations and Prefect starts the flow: a night's load and raw checks (~1.5 s at 1M
    users) are shorter than dbt's import and parse together.
    """
    global _prestarted
    if _prestarted is not None and (
        _prestarted.parsed_for is not None or _prestarted.proc.poll() is not None
    ):
        # left by a run that failed before its build (it parsed for that run), or dead
        _prestarted.discard()
        _prestarted = None
    if _prestarted is None:
        _prestarted = DbtChild()
    return _prestarted


def prestart_dbt(work_path: Path, as_of: date, inactive_days: int | None = None) -> DbtChild:
    """Start dbt's child now (or take the one start_dbt_child started), and have it parse
    the project for a build of this working database, so that its imports and its parse
    overlap the steps before the build."""
    child = start_dbt_child()
    child.parse_in_advance(work_path, dbt_env(work_path, as_of, inactive_days))
    return child


def _take_dbt_child() -> DbtChild:
    """The prestarted child when it is still waiting, else a new one. (A child dies with the
    thread that started it, PR_SET_PDEATHSIG: one started by an ended thread is gone.)"""
    global _prestarted
    child, _prestarted = _prestarted, None
    if child is None or child.proc.poll() is not None:
        return DbtChild()
    return child


def run_dbt(
    command: str, work_path: Path, as_of: date, *extra: str, inactive_days: int | None = None
) -> BuildResult:
    """Run dbt; raise RunFailed naming the first failing nodes when anything fails.

    dbt runs in a child process: dbt-duckdb keeps its database open for the life of the
    process, and the run must reopen the working file (and readers must see it closed).
    """
    results_file = dbt_target(work_path) / "run_results.json"
    # never read an earlier (or a killed) run's results
    results_file.unlink(missing_ok=True)
    env = dbt_env(work_path, as_of, inactive_days)
    args = ["--quiet", "--no-use-colors", *dbt_args(command, work_path, *extra)]
    returncode, output = _take_dbt_child().run(work_path, args, env)
    parsed_in_advance = PARSED_IN_ADVANCE in output
    # out of the output an error message quotes the last line of
    output = output.replace(PARSED_IN_ADVANCE + "\n", "")
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    statuses: dict[str, int] = {}
    timings: list[tuple[str, float]] = []
    failures: list[str] = []
    for node in results.get("results", []):
        status = node["status"]
        statuses[status] = statuses.get(status, 0) + 1
        name = node["unique_id"].split(".")[-1]
        timings.append((name, float(node.get("execution_time") or 0)))
        if status in ("error", "fail"):
            detail = (node.get("message") or status).strip().splitlines()
            failures.append(f"{name} ({detail[0] if detail else status})")
    if returncode != 0 or failures:
        if not failures:
            lines = output.strip().splitlines()
            failures = [lines[-1] if lines else f"exit {returncode}"]
        logs = dbt_home(work_path) / "logs" / "dbt.log"
        more = f" and {len(failures) - 3} more" if len(failures) > 3 else ""
        raise RunFailed(f"dbt {command} failed: {'; '.join(failures[:3])}{more} (log: {logs})")
    timings.sort(key=lambda t: t[1], reverse=True)
    return BuildResult(statuses=statuses, timings=timings, parsed_in_advance=parsed_in_advance)


def die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn that makes Linux kill the child when the run dies, even by kill -9.

    Without it a killed run leaves dbt running on: it keeps writing the dead run's working
    database and target folder while the next run starts. Elsewhere: None (no such call).
    """
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here, not in the child
    parent = os.getpid()
    pr_set_pdeathsig = 1

    def preexec() -> None:
        prctl(pr_set_pdeathsig, signal.SIGKILL)
        if os.getppid() != parent:  # the run died before the line above took effect
            os._exit(1)

    return preexec
