"""A uvicorn process on a free loopback port, for tests that need an app in a process of
its own (two apps on one Redis, a worker killed mid-request). Started by the test, stopped
by its fixture: ``stop()`` terminates (then kills) it and closes its log."""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from redis_servers import free_port


class UvicornProcess:
    """``uvicorn --factory <factory>`` from ``app_dir``, with ``env`` as its environment."""

    def __init__(self, factory: str, app_dir: Path, env: dict[str, str], name: str) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = tempfile.TemporaryFile()  # noqa: SIM115  (closed by stop())
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "uvicorn", "--factory", factory,
                "--app-dir", str(app_dir), "--host", "127.0.0.1",
                "--port", str(self.port), "--log-level", "warning",
            ],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.output()}")
            try:
                httpx.get(self.url + "/openapi.json", timeout=0.5)
                return
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not start:\n{self.output()}")

    def output(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def kill(self) -> None:
        """SIGKILL: the process dies wherever it is, as in a crash."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
