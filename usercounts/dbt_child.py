"""dbt's children: each runs one dbt command, forked from a server that imported dbt once.

Importing dbt and the DuckDB adapter costs 2-3 s of CPU. usercounts.build starts this
module's server (`python -m usercounts.dbt_child FD`) the first time the run needs dbt and
keeps it for the life of the run, so a process that builds many times (the tests, the
benchmark's nights) pays for that import once. `usercounts run` starts it before it imports
the flow (build.start_dbt_child), so that dbt imports while the run imports the flow.

Each dbt command still runs in a process of its own: dbt-duckdb keeps its database open for
the life of the process (the run must reopen the working file, and readers must see it
closed), and dbt keeps state from one invocation to the next. The run asks for a child on
the server's control socket (FD, a Unix stream socket), sending one byte and two file
descriptors: its socket for the child's requests, and the file the child writes its
standard output and error to. The server forks; the child says {"pid": N} on its socket,
then reads one JSON line: {"args": [...], "env": {...}, "cwd": "<the working database's
folder>"}, runs dbt, and says {"exit": code} once dbt has closed its database. The end of
its socket (the run ended without building) ends the child.

A prestarted child is also told the project to parse, before its command: {"parse": [...],
"env": {...}, "cwd": ...}. It parses then (~0.7 s with dbt's partial parse; parsing opens no
database, so it runs beside the load) and builds from that manifest when the command says
{"parsed_in_advance": true}, and prints PARSED_IN_ADVANCE when it did.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import socket
import sys
import traceback
from collections.abc import Callable
from typing import Any, TextIO

from usercounts.parent_death import die_with_parent

# What the child prints when its command ran on the manifest parsed in advance.
PARSED_IN_ADVANCE = "usercounts: dbt ran on the project parsed in advance"


def read_request(requests: TextIO) -> dict[str, Any] | None:
    """The next JSON line from the run (None at its end)."""
    line = requests.readline()
    return json.loads(line) if line else None


def use_request(request: dict[str, Any]) -> None:
    """dbt reads its settings and the run's from the environment the run gave, and runs in
    the working database's folder (the profile names the working files relative to it)."""
    os.environ.clear()
    os.environ.update(request["env"])
    # a parse in advance may come before the run's first load has made the folder
    os.makedirs(request["cwd"], exist_ok=True)
    os.chdir(request["cwd"])


def run_requests(requests: TextIO) -> int:
    """Parse in advance if asked to, then run the command: dbt's own exit code (0 success,
    1 a node failed, 2 dbt itself failed), or 0 when the run ended without a command."""
    from dbt.cli.main import dbtRunner  # imported by the server already

    request = read_request(requests)
    manifest = None
    if request is not None and "parse" in request:
        use_request(request)
        parsed = dbtRunner().invoke(request["parse"])
        # a failed parse is left for the command to meet and report as dbt does
        manifest = parsed.result if parsed.success else None
        request = read_request(requests)
    if request is None:
        return 0
    use_request(request)
    if not request.get("parsed_in_advance"):
        manifest = None  # parsed for another database, or the project changed since
    if manifest is not None:
        print(PARSED_IN_ADVANCE, file=sys.stderr, flush=True)
    result = dbtRunner(manifest=manifest).invoke(request["args"])
    if result.success:
        return 0
    return 2 if result.exception is not None else 1


def child(die_with_server: Callable[[], None] | None, requests_fd: int, output_fd: int) -> int:
    """One forked child: its command, then what an interpreter's exit would do."""
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C stops dbt, as in a run
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # dbt's own subprocesses are waited for
    if die_with_server is not None:
        die_with_server()
    os.dup2(output_fd, 1)
    os.dup2(output_fd, 2)
    os.close(output_fd)
    # dbt's own subprocesses must not keep it open: the run waits for its end
    os.set_inheritable(requests_fd, False)
    channel = socket.socket(fileno=requests_fd)
    say(channel, {"pid": os.getpid()})
    try:
        code = run_requests(channel.makefile("r", encoding="utf-8"))
    except Exception:  # a request it could not use: the run quotes the last line
        traceback.print_exc()
        code = 2
    sys.stdout.flush()
    sys.stderr.flush()
    # os._exit skips them, and dbt-duckdb closes (checkpoints) its database in one
    atexit._run_exitfuncs()
    say(channel, {"exit": code})
    return code


def say(channel: socket.socket, message: dict[str, int]) -> None:
    channel.sendall((json.dumps(message) + "\n").encode())


def reap_children(*_: object) -> None:
    """SIGCHLD's handler in the server: wait for every child that has ended."""
    while True:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def serve(control: socket.socket) -> int:
    """Fork a child for each request on the control socket, until the run closes it."""
    # The children tell the run their exit code themselves; the server reaps them as they
    # end (not the kernel, SIG_IGN), so that their CPU time adds to the server's, and so to
    # the run's once it has waited for the server (the benchmark counts it).
    signal.signal(signal.SIGCHLD, reap_children)
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(control, 1, 2)
        except OSError:
            return 0
        if not message:
            return 0  # the run closed the socket: it ended
        if len(fds) != 2:  # not a request of ours (each is one byte and two descriptors)
            for fd in fds:
                os.close(fd)
            continue
        die_with_server = die_with_parent()  # made here: it names this process the parent
        if os.fork() == 0:
            code = 2
            try:
                control.close()
                code = child(die_with_server, *fds)
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        for fd in fds:
            os.close(fd)


def main() -> int:
    # Ctrl-C reaches the whole process group: it stops the children's dbt (they restore
    # the handler), not the server, even while it imports
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from usercounts.gc_tuning import batch_imports

    # dbt's ~200k imported objects out of every collection, in the server and its children
    with batch_imports():
        import dbt.adapters.duckdb  # noqa: F401 - imported once, before any child is forked
        import dbt.cli.main  # noqa: F401

    return serve(socket.socket(fileno=int(sys.argv[1])))


if __name__ == "__main__":
    sys.exit(main())
