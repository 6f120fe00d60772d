"""Prefect's temporary API server for a `usercounts run` without PREFECT_API_URL.

Prefect starts one itself when a flow finds no API URL (prefect.server.api.server.
SubprocessASGIServer), but importing that class costs 3-5 s in the run's own process before
the server even begins to boot. This starts the same server process, with the same command
and environment as Prefect's class (Prefect 3.9), without that import: it boots while the
run imports the flow and Great Expectations. It also dies with the run, even by kill -9
(PR_SET_PDEATHSIG), where Prefect's own outlives a killed run.
"""

from __future__ import annotations

import atexit
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from usercounts.errors import RunFailed
from usercounts.parent_death import die_with_parent


class TemporaryPrefectServer:
    """One `uvicorn prefect.server.api.server:create_app` on a free local port."""

    def __init__(self) -> None:
        import prefect
        from prefect.settings import get_current_settings

        self.env = {
            **os.environ,
            # what Prefect's SubprocessASGIServer sets: no UI, an ephemeral server
            "PREFECT_UI_ENABLED": "0",
            "PREFECT__SERVER_EPHEMERAL": "1",
            "PREFECT__SERVER_FINAL": "1",
            **get_current_settings().to_environment_variables(exclude_unset=True),
        }
        self.app_dir = str(Path(prefect.__file__).parent.parent)
        self.timeout = get_current_settings().server.ephemeral.startup_timeout_seconds
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self._start()
        atexit.register(self.stop)  # after Prefect's log and event workers have drained

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def _start(self) -> None:
        with socket.socket() as sock:  # a port nobody listens on now
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--app-dir",
                self.app_dir,
                "--factory",
                "prefect.server.api.server:create_app",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "error",
                "--lifespan",
                "on",
            ],  # fmt: skip
            env=self.env,
            preexec_fn=die_with_parent(),
        )

    def wait_until_ready(self) -> None:
        """Wait for the server's health check; raise RunFailed when it does not come up."""
        import httpx

        deadline = time.monotonic() + self.timeout
        retries = 2
        with httpx.Client() as client:
            while time.monotonic() < deadline:
                assert self.proc is not None
                if self.proc.poll() == 3 and retries:  # uvicorn: startup failed (port taken?)
                    retries -= 1
                    self._start()
                    continue
                if self.proc.poll() is not None:
                    break
                try:
                    if client.get(f"{self.api_url}/health").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
        code = self.proc.poll() if self.proc else None
        self.stop()
        raise RunFailed(
            "Prefect's temporary server did not start"
            + (f" (exit {code})" if code is not None else f" within {self.timeout:g} s")
            + "; set PREFECT_API_URL to a running server (`prefect server start`)"
        )

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


def start_temporary_server() -> TemporaryPrefectServer | None:
    """Start the temporary server and point this process's Prefect at it, unless an API URL
    is configured (environment or Prefect profile). RunFailed when there is neither an API
    URL nor leave to start a temporary server (Prefect's ephemeral mode is off, by its
    environment, settings files or profile): the flow would fail on its first call to the
    API, with Prefect's traceback."""
    from prefect.context import refresh_global_settings_context
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    if settings.api.url:
        return None
    if not settings.server.ephemeral.enabled:
        raise RunFailed(
            "no Prefect server to run the flow on: PREFECT_API_URL is not set and Prefect's "
            "settings do not allow a temporary server (PREFECT_SERVER_EPHEMERAL_ENABLED is "
            "false); set PREFECT_API_URL to a running server (`prefect server start`), or set "
            "PREFECT_SERVER_EPHEMERAL_ENABLED=true"
        )
    server = TemporaryPrefectServer()
    os.environ["PREFECT_API_URL"] = server.api_url
    # Prefect reads its settings at import; its background workers read this global copy
    refresh_global_settings_context()
    return server
