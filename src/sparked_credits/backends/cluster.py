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

import asyncio
import threading
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import redis.asyncio.cluster
import redis.cluster
from redis import exceptions as rx
from redis.crc import key_slot

from .._core.requests import ScanCall, ScriptCall
from .._drive import drive, drive_async
from ..errors import ConfigurationError
from .base import eval_, evalsha
from .recovery import recover
from .redis_py import AsyncRedisBackend, RedisBackend, no_retries

if TYPE_CHECKING:
    from collections.abc import Callable

    from .registry import Settings

__all__ = [
    "AsyncClusterBackend",
    "ClusterBackend",
    "ClusterTarget",
    "open_async",
    "open_sync",
    "parse",
]


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


def _kwargs(target: ClusterTarget, asyncio: bool, settings: Settings) -> dict[str, Any]:
    node = redis.asyncio.cluster.ClusterNode if asyncio else redis.cluster.ClusterNode
    return {
        "startup_nodes": [node(h, p) for h, p in target.nodes],
        "username": target.username,
        "password": target.password,
        "retry": no_retries(asyncio),
        "socket_timeout": settings.timeout,
        "socket_connect_timeout": settings.timeout,
    }


_ROUTES_MAX = 4096


class ClusterBackend(RedisBackend):
    """A RedisBackend whose RedisCluster is built (and the slot map fetched) on first use.

    A script goes straight to the primary that owns the account's slot (every key of a
    script carries the account's hash tag): the same one hop as on a single Redis, without
    RedisCluster's per-command dispatch. A MOVED or ASK reply (the slot moved) sends it
    through RedisCluster, which follows the redirect and refreshes its slot map; any other
    failure goes to the recovery procedure, whose re-sends also go through RedisCluster.
    """

    def __init__(self, factory: Callable[[], redis.cluster.RedisCluster], retries: int) -> None:
        self._factory = factory
        self._lock = threading.Lock()
        self._cluster: redis.cluster.RedisCluster | None = None
        self.retries = retries
        self._call = self._connect_and_call
        self._routes: dict[str, Callable[..., Any]] = {}

    def _route(self, key: str) -> Callable[..., Any]:
        """The send function of the primary owning ``key``'s slot (memoized per key)."""
        cluster = self._connected()
        node = cluster.nodes_manager.get_node_from_slot(key_slot(key.encode()))
        send: Callable[..., Any] = cluster.get_redis_connection(node).execute_command
        if len(self._routes) >= _ROUTES_MAX:
            self._routes.clear()
        self._routes[key] = send
        return send

    def run_script(self, call: ScriptCall) -> Any:
        keys = call.keys
        try:
            send = self._routes.get(keys[0]) or self._route(keys[0])
            return send("EVALSHA", call.script.sha, len(keys), *keys, *call.args)
        except (rx.MovedError, rx.AskError):
            self._routes.clear()  # the slot map changed: RedisCluster follows and refreshes
            return super().run_script(call)
        except Exception as exc:
            if not isinstance(exc, rx.NoScriptError):
                self._routes.clear()  # a node may have failed: learn the routes again
            steps = recover(exc, evalsha(call), self.classify, self.retries, eval_(call))
            return drive(steps, self._send_raw, time.sleep)

    def _connected(self) -> redis.cluster.RedisCluster:
        cluster = self._cluster
        if cluster is None:
            with self._lock:
                if self._cluster is None:
                    self._cluster = self._factory()
                cluster = self._cluster
            self._call = cluster.execute_command
        return cluster

    def _connect_and_call(self, *args: Any) -> Any:
        self._connected()
        return self._call(*args)

    def scan_keys(self, call: ScanCall) -> list[Any]:
        # redis-py's scan_iter follows one cursor per primary.
        return list(self._connected().scan_iter(match=call.match, count=call.count))

    def close(self) -> None:
        if self._cluster is not None:
            self._cluster.close()


class AsyncClusterBackend(AsyncRedisBackend):
    """An AsyncRedisBackend on the asyncio RedisCluster (which connects on first use),
    sending scripts straight to the slot's primary like :class:`ClusterBackend`."""

    client: redis.asyncio.cluster.RedisCluster  # type: ignore[assignment]

    def __init__(self, client: redis.asyncio.cluster.RedisCluster, retries: int) -> None:
        super().__init__(client, retries)  # type: ignore[arg-type]
        self._routes: dict[str, Callable[..., Any]] = {}

    async def _route(self, key: str) -> Callable[..., Any]:
        """The send function of the primary (an asyncio ClusterNode) owning ``key``'s slot
        (memoized per key)."""
        cluster = self.client
        await cluster.initialize()  # the slot map, once (a no-op afterwards)
        node = cluster.nodes_manager.get_node_from_slot(key_slot(key.encode()))
        send: Callable[..., Any] = node.execute_command
        if len(self._routes) >= _ROUTES_MAX:
            self._routes.clear()
        self._routes[key] = send
        return send

    async def run_script(self, call: ScriptCall) -> Any:
        keys = call.keys
        try:
            send = self._routes.get(keys[0]) or await self._route(keys[0])
            return await send("EVALSHA", call.script.sha, len(keys), *keys, *call.args)
        except (rx.MovedError, rx.AskError):
            self._routes.clear()  # the slot map changed: RedisCluster follows and refreshes
            return await super().run_script(call)
        except Exception as exc:
            if not isinstance(exc, rx.NoScriptError):
                self._routes.clear()  # a node may have failed: learn the routes again
            steps = recover(exc, evalsha(call), self.classify, self.retries, eval_(call))
            return await drive_async(steps, self._send_raw, asyncio.sleep)

    async def scan_keys(self, call: ScanCall) -> list[Any]:
        # redis-py's scan_iter follows one cursor per primary.
        return [key async for key in self.client.scan_iter(match=call.match, count=call.count)]


def open_sync(url: str, settings: Settings) -> ClusterBackend:
    kwargs = _kwargs(parse(url), False, settings)
    return ClusterBackend(lambda: redis.cluster.RedisCluster(**kwargs), settings.retries)


def open_async(url: str, settings: Settings) -> AsyncClusterBackend:
    cluster = redis.asyncio.cluster.RedisCluster(**_kwargs(parse(url), True, settings))
    return AsyncClusterBackend(cluster, settings.retries)
