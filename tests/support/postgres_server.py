"""A throwaway real PostgreSQL server for tests and benchmarks (not part of the package).

``PostgresServer`` runs ``initdb`` into a temporary directory and starts ``postgres`` on a
free loopback port (trust authentication, socket in the same directory), and stops it by
its PID on exit, so a test session never leaves a process behind. The binaries come from
``PG_BIN`` (a directory), else the newest ``/usr/lib/postgresql/<version>/bin`` (Debian's
``postgresql`` package, which ``.ci/run`` installs), else ``initdb`` on the PATH.

PostgreSQL refuses to run as root: as root the server runs as the ``postgres`` user (which
Debian's package creates), with the data directory handed over to it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

__all__ = ["INSTALL_HINT", "PostgresServer", "find_pg_bin"]

INSTALL_HINT = "apt-get install -y postgresql (or set PG_BIN to a directory with initdb)"


def find_pg_bin() -> Path | None:
    """The directory holding initdb and postgres, or None."""
    given = os.environ.get("PG_BIN")
    if given:
        return Path(given) if (Path(given) / "initdb").is_file() else None
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if versions:
        return versions[-1].parent
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """One postgres process on 127.0.0.1 with a fresh cluster; ``url`` to connect."""

    def __init__(self, bin_dir: Path, *, durable: bool = False) -> None:
        self.bin_dir = bin_dir
        self.durable = durable
        self.port = _free_port()
        self._tmp: str | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._user: str | None = "postgres" if os.geteuid() == 0 else None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def _run_as(self) -> dict[str, str]:
        return {"user": self._user, "group": self._user} if self._user else {}

    def start(self, timeout: float = 30.0) -> PostgresServer:
        self._tmp = tempfile.mkdtemp(prefix="sc-pg-")
        data = Path(self._tmp) / "data"
        if self._user:
            shutil.chown(self._tmp, self._user, self._user)
        subprocess.run(
            [str(self.bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
             "-E", "UTF8", "--no-sync", "--locale=C"],
            check=True, capture_output=True, timeout=120, **self._run_as(),  # type: ignore[arg-type]
        )
        settings = ["-c", "listen_addresses=127.0.0.1",
                    "-c", f"unix_socket_directories={self._tmp}",
                    "-c", "max_connections=50", "-c", "shared_buffers=64MB"]
        if not self.durable:
            settings += ["-c", "fsync=off", "-c", "synchronous_commit=off",
                         "-c", "full_page_writes=off"]
        log = open(Path(self._tmp) / "server.log", "wb")  # noqa: SIM115 (kept by the process)
        self._proc = subprocess.Popen(
            [str(self.bin_dir / "postgres"), "-D", str(data), "-p", str(self.port), *settings],
            stdout=log, stderr=subprocess.STDOUT, **self._run_as(),  # type: ignore[arg-type]
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"postgres exited at start: {self.log_tail()}")
            if self._ready():
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"postgres did not accept connections in {timeout}s")

    def _ready(self) -> bool:
        probe = subprocess.run(
            [str(self.bin_dir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port),
             "-U", "postgres"], capture_output=True, timeout=10,
        )
        return probe.returncode == 0

    def log_tail(self) -> str:
        if self._tmp is None:
            return ""
        path = Path(self._tmp) / "server.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def stop(self) -> None:
        """Fast shutdown by PID (SIGINT), then SIGKILL if it hangs; the directory goes."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        if self._tmp is not None:
            with contextlib.suppress(OSError):
                shutil.rmtree(self._tmp)
            self._tmp = None

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
