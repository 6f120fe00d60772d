"""Run dbt (in-process) against the working database."""

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

from usercounts.config import PROJECT_ROOT
from usercounts.errors import RunFailed


@dataclass
class BuildResult:
    """What a dbt build did: node counts by status and the slowest models."""

    statuses: dict[str, int]
    timings: list[tuple[str, float]]


def dbt_home(work_path: Path) -> Path:
    """dbt's target and log folders for one working database (runs in other folders differ)."""
    return work_path.parent / f"{work_path.stem}.dbt"


def dbt_args(
    command: str, work_path: Path, as_of: date, *extra: str, inactive_days: int | None = None
) -> list[str]:
    """The dbt command line for this project, with per-database target and log folders."""
    target = dbt_home(work_path)
    dbt_vars: dict[str, object] = {"as_of_date": as_of.isoformat()}
    if inactive_days is not None:
        dbt_vars["inactive_days"] = inactive_days
    return [
        command,
        "--project-dir", str(PROJECT_ROOT),
        "--profiles-dir", str(PROJECT_ROOT),
        "--target-path", str(target / "target"),
        "--log-path", str(target / "logs"),
        "--vars", json.dumps(dbt_vars),
        *extra,
    ]  # fmt: skip


def run_dbt(
    command: str, work_path: Path, as_of: date, *extra: str, inactive_days: int | None = None
) -> BuildResult:
    """Run dbt; raise RunFailed naming the first failing nodes when anything fails.

    dbt runs in a child process: dbt-duckdb keeps its database open for the life of the
    process, and the run must reopen the working file (and readers must see it closed).
    """
    # never read an earlier (or a killed) run's results
    (dbt_home(work_path) / "target" / "run_results.json").unlink(missing_ok=True)
    env = {**os.environ, "USERCOUNTS_WORK_DB": str(work_path)}
    dbt = Path(sys.executable).with_name("dbt")
    args = dbt_args(command, work_path, as_of, *extra, inactive_days=inactive_days)
    proc = subprocess.run(
        [str(dbt), "--quiet", "--no-use-colors", *args],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=False,
        preexec_fn=_die_with_parent(),  # it only calls prctl: safe beside threads
    )
    results_file = dbt_home(work_path) / "target" / "run_results.json"
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
    if proc.returncode != 0 or failures:
        if not failures:
            output = (proc.stdout + proc.stderr).strip().splitlines()
            failures = [output[-1] if output else f"exit {proc.returncode}"]
        logs = dbt_home(work_path) / "logs" / "dbt.log"
        more = f" and {len(failures) - 3} more" if len(failures) > 3 else ""
        raise RunFailed(f"dbt {command} failed: {'; '.join(failures[:3])}{more} (log: {logs})")
    timings.sort(key=lambda t: t[1], reverse=True)
    return BuildResult(statuses=statuses, timings=timings)


def _die_with_parent() -> Callable[[], None] | None:
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
