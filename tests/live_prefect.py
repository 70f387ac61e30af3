"""A real ``prefect server start`` on loopback, for tests of schedules, Dask and resume.

The session's ``prefect_server`` fixture is Prefect's test harness (an in-process temporary
server); schedules and Dask workers need a server other processes can reach, as in production.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

__all__ = ["live_server", "free_port", "cli_env"]

PREFECT = Path(sys.executable).with_name("prefect")
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli_env(api_url: str | None, home: Path) -> dict[str, str]:
    """Environment of a camaudit/prefect child process: this checkout first on the path, quiet."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update({
        "PYTHONPATH": os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
        "GX_ANALYTICS_ENABLED": "false",
        "DASK_LOGGING__DISTRIBUTED": "error",
        "OMP_NUM_THREADS": "1",
    })
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return env


@contextmanager
def live_server(home: Path, timeout: float = 180.0) -> Iterator[str]:
    """Start ``prefect server start`` with its own PREFECT_HOME; yield its API URL; stop it."""
    port = free_port()
    home.mkdir(parents=True, exist_ok=True)
    log = open(home / "server.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [str(PREFECT), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=cli_env(None, home), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"prefect server exited {proc.returncode}: {(home / 'server.log').read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"prefect server not healthy after {timeout} s")
            time.sleep(0.5)
        yield url
    finally:
        for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):  # its own session: the server and its uvicorn
            try:
                os.killpg(proc.pid, sig)
                proc.wait(timeout=wait)
                break
            except (ProcessLookupError, subprocess.TimeoutExpired):
                continue
        log.close()
