"""The ``redis+cluster://host:port[,host:port...]`` backend (redis-py's RedisCluster).

Every key one script touches carries the account as a hash tag (``balance:{user_1}``), so
each script runs on the one primary that owns the account's slot: one round trip, atomic,
exactly as on a single Redis. The hold sweep's account search walks SCAN on every primary
(redis-py's ``scan_iter`` keeps one cursor per node).

The sync RedisCluster connects in its constructor (to learn the slot map); this backend
defers that to the first call, so building a client never does I/O and an unreachable
cluster surfaces as a BackendError from that call, like on every other backend.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from ..errors import ConfigurationError
from ..requests import ScanCall
from .redis_py import AsyncRedisBackend, RedisBackend

if TYPE_CHECKING:
    from collections.abc import Callable

    import redis.cluster

__all__ = ["ClusterBackend", "ClusterTarget", "open_async_cluster", "open_cluster", "parse"]


class ClusterTarget:
    """What a cluster URL names: startup nodes and credentials."""

    def __init__(
        self, nodes: list[tuple[str, int]], username: str | None, password: str | None
    ) -> None:
        self.nodes = nodes
        self.username = username
        self.password = password


def parse(url: str) -> ClusterTarget:
    """``redis+cluster://[user:password@]host:port[,host:port...]`` (any path is ignored)."""
    rest = url.split("://", 1)[1]
    netloc = rest.split("/", 1)[0].split("?", 1)[0]
    username = password = None
    if "@" in netloc:
        auth, netloc = netloc.rsplit("@", 1)
        user, _, secret = auth.partition(":")
        username, password = unquote(user) or None, unquote(secret) or None
    nodes: list[tuple[str, int]] = []
    for part in netloc.split(","):
        host, sep, port = part.strip().rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ConfigurationError(
                f"cluster URL needs host:port pairs, e.g. redis+cluster://10.0.0.1:7000,"
                f"10.0.0.2:7000; got {part!r}"
            )
        nodes.append((host.strip("[]"), int(port)))
    return ClusterTarget(nodes, username, password)


def _kwargs(target: ClusterTarget, redis: Any, retry: Any, timeout: float) -> dict[str, Any]:
    return {
        "startup_nodes": [redis.cluster.ClusterNode(h, p) for h, p in target.nodes],
        "username": target.username,
        "password": target.password,
        "retry": retry,
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
    }


class ClusterBackend(RedisBackend):
    """A RedisBackend whose RedisCluster is built (and the slot map fetched) on first use."""

    def __init__(self, factory: Callable[[], redis.cluster.RedisCluster]) -> None:
        from redis.exceptions import ResponseError

        self._factory = factory
        self._lock = threading.Lock()
        self._cluster: redis.cluster.RedisCluster | None = None
        self._response_error = ResponseError
        self._execute = self._connect_and_execute

    def _connected(self) -> redis.cluster.RedisCluster:
        cluster = self._cluster
        if cluster is None:
            with self._lock:
                if self._cluster is None:
                    self._cluster = self._factory()
                cluster = self._cluster
            self._execute = cluster.execute_command
        return cluster

    def _connect_and_execute(self, *args: Any) -> Any:
        self._connected()
        return self._execute(*args)

    def scan_keys(self, call: ScanCall) -> list[Any]:
        return list(self._connected().scan_iter(match=call.match, count=call.count))

    def close(self) -> None:
        if self._cluster is not None:
            self._cluster.close()


def open_cluster(url: str, redis: Any, retry: Any, timeout: float) -> ClusterBackend:
    kwargs = _kwargs(parse(url), redis, retry, timeout)
    return ClusterBackend(lambda: redis.cluster.RedisCluster(**kwargs))


def open_async_cluster(url: str, redis: Any, retry: Any, timeout: float) -> AsyncRedisBackend:
    # The asyncio RedisCluster connects lazily by itself, on its first command.
    kwargs = _kwargs(parse(url), redis, retry, timeout)
    kwargs["startup_nodes"] = [redis.asyncio.cluster.ClusterNode(h, p) for h, p in parse(url).nodes]
    return AsyncRedisBackend(redis.asyncio.cluster.RedisCluster(**kwargs))
