"""Run dbt against the working database, in a child process forked from a server that
imported dbt once (usercounts/dbt_child.py)."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from usercounts import incremental, workdb
from usercounts.config import PROJECT_ROOT
from usercounts.dbt_child import PARSED_IN_ADVANCE
from usercounts.errors import RunFailed
from usercounts.parent_death import die_with_parent

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


class DbtServer:
    """The run's `python -m usercounts.dbt_child`: it imported dbt once and forks a child for
    each dbt command (usercounts/dbt_child.py says how)."""

    def __init__(self) -> None:
        self.owner = os.getpid()  # the run's process
        self.control, theirs = socket.socketpair()
        # what it says itself (an import that failed): a child it never forked has nothing
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115 - open for the server's life
        started: list[subprocess.Popen | BaseException] = []
        ready = threading.Event()

        def start_and_wait() -> None:
            # PR_SET_PDEATHSIG kills the server when the *thread* that started it ends (a
            # flow's task thread would): this thread lives as long as the server.
            try:
                started.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "usercounts.dbt_child", str(theirs.fileno())],
                        cwd=PROJECT_ROOT,
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL,
                        stderr=self.stderr,
                        pass_fds=[theirs.fileno()],
                        preexec_fn=die_with_parent(),  # it only calls prctl: safe beside threads
                    )
                )
            except BaseException as error:
                started.append(error)
                raise
            finally:
                ready.set()
            started[0].wait()

        threading.Thread(target=start_and_wait, name="dbt-server", daemon=True).start()
        ready.wait()
        theirs.close()
        if isinstance(started[0], BaseException):
            raise started[0]
        self.proc: subprocess.Popen = started[0]

    def fork(self, requests: socket.socket, output: int) -> None:
        """Ask for a child that reads its requests from this socket and writes its output
        to this file. It is forked once the server has imported dbt; this does not wait."""
        socket.send_fds(self.control, [b"f"], [requests.fileno(), output])

    def said(self) -> str:
        """What the server wrote to its standard error (nothing, unless it failed)."""
        if self.stderr.closed:  # stopped and replaced since
            return ""
        return os.pread(self.stderr.fileno(), 1 << 16, 0).decode("utf-8", errors="replace")

    def stop(self) -> None:
        """Kill it (its children die with it) and close its socket and file."""
        self.proc.kill()
        self.proc.wait()
        self.control.close()
        self.stderr.close()


_server: DbtServer | None = None
# one caller at a time starts, replaces or writes to the server
_server_lock = threading.RLock()


def dbt_server(replacing: DbtServer | None = None) -> DbtServer:
    """The run's dbt server, started now if it has none, it has died, or it is the one a
    caller could no longer write to (`replacing`)."""
    global _server
    with _server_lock:
        if _server is None or _server is replacing or _server.proc.poll() is not None:
            if _server is not None:
                _server.stop()
            _server = DbtServer()
        return _server


# (dbt's folder, its environment, the project files' hash): what a parse was made for
ParseKey = tuple[str, dict[str, str], str]


def parse_key(work_path: Path, env: dict[str, str]) -> ParseKey:
    """What a parse in advance was made for: it serves a command only when its key is the
    same (the folder, the environment and the project files it read)."""
    return str(dbt_folder(work_path)), env, incremental.fingerprint(DBT_PROJECT_FILES)


class DbtChild:
    """A child of the run's dbt server that has not been given its command yet."""

    def __init__(self) -> None:
        # parse_key() of the parse in advance it was given
        self.parsed_for: ParseKey | None = None
        # Its exit code once it ended; None while it runs, and when it was killed.
        self.returncode: int | None = None
        self.pid: int | None = None
        self.requests, theirs = socket.socketpair()
        self.replies = self.requests.makefile("r", encoding="utf-8")
        # its standard output and error; closed by run() or discard()
        self.output = tempfile.TemporaryFile()  # noqa: SIM115
        try:
            with _server_lock:
                self.server = dbt_server()
                try:
                    self.server.fork(theirs, self.output.fileno())
                except ConnectionError:  # it died since dbt_server() looked: start another
                    self.server = dbt_server(replacing=self.server)
                    self.server.fork(theirs, self.output.fileno())
        finally:
            theirs.close()

    def parse_in_advance(self, work_path: Path, env: dict[str, str]) -> None:
        """Have the child parse the project now, for a command on this environment later.

        Parsing opens no database: it runs beside the load, which holds the working file.
        """
        args = ["--quiet", "--no-use-colors", *dbt_args("parse", work_path)]
        parsed_for = parse_key(work_path, env)  # before dbt reads the files
        if not self._send({"parse": args, "env": env, "cwd": parsed_for[0]}):
            return  # the child died at its start: the build starts another (_take_dbt_child)
        self.parsed_for = parsed_for

    def run(self, work_path: Path, args: list[str], env: dict[str, str]) -> tuple[int, str]:
        """Give the child its command; wait for it; (exit code, its output). A child that
        was killed has exit code -1."""
        folder = str(dbt_folder(work_path))
        # made for this folder, environment and project (hashed only when there is one)
        parsed = self.parsed_for is not None and self.parsed_for == parse_key(work_path, env)
        try:
            self._send({"args": args, "env": env, "cwd": folder, "parsed_in_advance": parsed})
            returncode = self.wait()
        except BaseException:  # Ctrl-C, a stop request: dbt stops with the run
            self.discard()
            raise
        self.output.seek(0)
        output = self.output.read().decode("utf-8", errors="replace")
        if returncode is None:  # killed, or never forked: the server may say why
            output += self.server.said()
        self.close()
        return (-1 if returncode is None else returncode), output

    def wait(self) -> int | None:
        """Wait for the child to end: its exit code, or None when it was killed."""
        while (line := self._next_line()) != "":
            self._heard(line)
        return self.returncode

    def alive(self) -> bool:
        """Whether the child (or the server that is to fork it) can still take a command:
        its socket is open at both ends (the child's end closes when it dies)."""
        if self.requests.fileno() == -1 or self.returncode is not None:
            return False
        while select.select([self.requests], [], [], 0)[0]:
            line = self._next_line()
            if not line:
                return False
            self._heard(line)
        return self.returncode is None

    def _next_line(self) -> str:
        """The child's next line; "" at the end of its socket. (A server that died with the
        child's descriptors still in its queue resets the socket instead of closing it.)"""
        try:
            return self.replies.readline()
        except ConnectionResetError:
            return ""

    def _heard(self, line: str) -> None:
        said = json.loads(line)
        self.pid = said.get("pid", self.pid)
        self.returncode = said.get("exit", self.returncode)

    def discard(self) -> None:
        """Stop a child that will not be given its command, wait until it has gone (it may
        hold the working database), and close its socket and file."""
        if self.requests.fileno() == -1:
            return
        if self.pid is None and self.returncode is None and (line := self._next_line()):
            self._heard(line)  # it says its pid first (nothing: it has died)
        if self.pid is not None and self.alive():  # not once it has gone: its pid is free
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        self.wait()  # to the end of its socket: the child has exited
        self.close()

    def _send(self, request: dict) -> bool:
        """Send one request; False when the child has died."""
        try:
            self.requests.sendall((json.dumps(request) + "\n").encode())
        except OSError:
            return False
        return True

    def close(self) -> None:
        """Close its socket and output file (the child ends, if it has not)."""
        self.replies.close()
        self.requests.close()
        self.output.close()


_prestarted: DbtChild | None = None


def start_dbt_child() -> DbtChild:
    """Ask for dbt's child now (starting the dbt server if the run has none), without a
    command yet: prestart_dbt gives it the project to parse.

    `usercounts run` calls it first, so that the server imports dbt while the run imports
    Great Expectations and Prefect starts the flow: a night's load and raw checks (~1.5 s at
    1M users) are shorter than dbt's import and parse together.
    """
    global _prestarted
    if _prestarted is not None and (_prestarted.parsed_for is not None or not _prestarted.alive()):
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
    """The prestarted child when it is still waiting, else a new one (it was killed, or its
    server died: a server dies with the run, PR_SET_PDEATHSIG)."""
    global _prestarted
    child, _prestarted = _prestarted, None
    if child is not None and not child.alive():
        child.discard()  # closes its socket and output file
        child = None
    return child or DbtChild()


def stop_dbt_server() -> None:
    """Stop the run's dbt server, and with it any child it forked (the next dbt command
    starts another). The benchmark calls it at each night's start and end, as a new
    `usercounts run` starts its own and ends with it: the night's CPU then counts the
    server's, and its children's (the server waits for them)."""
    global _server, _prestarted
    with _server_lock:
        child, _prestarted = _prestarted, None
        if _server is not None:
            _server.stop()  # its children die with it (PR_SET_PDEATHSIG)
            _server = None
    if child is not None:
        child.discard()  # waits for it to go (with its server, or never forked: at once)


def _stop_dbt_server_at_exit() -> None:
    """A run that ends leaves no process behind (Linux's PR_SET_PDEATHSIG would kill the
    server too, but a moment after the run's exit); kill -9 skips this and leaves it to
    Linux. Not in a forked copy of the run, whose exit must not stop the run's server."""
    if _server is not None and _server.owner == os.getpid():
        stop_dbt_server()


atexit.register(_stop_dbt_server_at_exit)


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
