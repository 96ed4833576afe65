"""redis-py backends (``redis://``, ``rediss://``, ``unix://``), also used by ``memory://``
(fakeredis raises redis-py's exceptions) and, with a RedisCluster client, by
``redis+cluster://``.

redis-py's own retries are turned off: the SDK re-sends (see :mod:`.recovery`), so it knows
every attempt's outcome and can say whether a failed call may have applied. Re-sending is
safe because every mutation carries its idempotency key inside the script arguments, so a
re-sent EVALSHA replays the first outcome instead of applying twice.
"""

from __future__ import annotations

import inspect
import os
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import redis
import redis.asyncio
import redis.asyncio.retry
import redis.retry
from redis import exceptions as rx
from redis.backoff import NoBackoff

from .base import AsyncBackend, SyncBackend
from .errors import classify_os, classify_reply, never_left
from .recovery import Failure

if TYPE_CHECKING:
    from .registry import Settings

__all__ = [
    "AsyncLanes",
    "AsyncRedisBackend",
    "Lanes",
    "RedisBackend",
    "classify",
    "no_retries",
    "open_async",
    "open_sync",
    "use_lanes",
    "wrapped",
]


def classify(exc: BaseException) -> Failure:
    """redis-py's exceptions, by class; anything else by the operating system's view."""
    if isinstance(exc, rx.NoScriptError):
        return Failure(f"script not cached: {exc}", False, False, noscript=True)
    if isinstance(exc, rx.AuthenticationError | rx.AuthorizationError):
        return Failure(f"authentication failed: {exc}", False, False)
    if isinstance(exc, rx.ConnectionError | rx.TimeoutError):
        if never_left(exc):
            return Failure(f"could not connect: {exc}", False, True)
        return Failure(f"connection lost or timed out: {exc}", True, True)
    if isinstance(exc, rx.ResponseError):
        return classify_reply(str(exc))
    if isinstance(exc, rx.RedisClusterException):
        # Raised by redis-py when no node of the cluster can be reached.
        return Failure(f"cluster unreachable: {exc}", not never_left(exc), True)
    if isinstance(exc, rx.RedisError):
        return Failure(f"{type(exc).__name__}: {exc}", True, True)
    return classify_os(exc)


def no_retries(asyncio: bool) -> Any:
    """A redis-py Retry that never re-sends: the SDK's recovery procedure does."""
    if asyncio:
        return redis.asyncio.retry.Retry(NoBackoff(), 0)
    return redis.retry.Retry(NoBackoff(), 0)


def _options(settings: Settings, asyncio: bool) -> dict[str, Any]:
    """Keywords for redis-py (options in the URL's query, if any, win over these)."""
    return {
        "retry": no_retries(asyncio),
        "socket_timeout": settings.timeout,
        "socket_connect_timeout": settings.timeout,
    }


_hiredis_pack: Callable[[tuple[Any, ...]], bytes] | None
try:
    from hiredis import pack_command as _hiredis_pack
except ImportError:  # pragma: no cover - hiredis comes with the redis extra
    _hiredis_pack = None


def _packed(conn: Any, command: tuple[Any, ...]) -> list[bytes]:
    """The command in RESP, as the blocking client packs it when hiredis is installed
    (the asyncio client packs in Python, at several microseconds per script call)."""
    if _hiredis_pack is None:
        return list(conn.pack_command(*command))
    return [_hiredis_pack(command)]


_UNKNOWN = object()

_LANES: weakref.WeakSet[_LaneState] = weakref.WeakSet()


def _forget_lanes() -> None:
    """In a forked child, drop the parent's connections (the pool does the same with its
    own): two processes writing to one socket would read each other's replies."""
    for lanes in list(_LANES):
        lanes.idle = []


os.register_at_fork(after_in_child=_forget_lanes)


def _ready(conn: Any) -> None:
    """Make a reused connection ready to send, as the pool does before it lends one:
    connected, and with nothing to read (an unread reply, or the EOF of a server that
    closed it, e.g. on a restart, means reconnect). redis-py 5 to 7's blocking pool has no
    ``ensure_connection`` of its own; 8's is used instead (see :func:`_checker`)."""
    conn.connect()
    try:
        if conn.can_read():
            raise rx.ConnectionError("Connection has data")
    except (rx.ConnectionError, rx.TimeoutError, OSError):
        conn.disconnect()
        conn.connect()
        if conn.can_read():
            raise rx.ConnectionError("Connection not ready") from None


async def _ready_async(conn: Any) -> None:
    """The asyncio twin of :func:`_ready`, for redis-py 5.0's asyncio pool (no
    ``ensure_connection``), whose connections call the check ``can_read_destructive``."""
    await conn.connect()
    try:
        if await conn.can_read_destructive():
            raise rx.ConnectionError("Connection has data")
    except (rx.ConnectionError, rx.TimeoutError, OSError):
        await conn.disconnect()
        await conn.connect()
        if await conn.can_read_destructive():
            raise rx.ConnectionError("Connection not ready") from None


def _checker(pool: Any, own: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """How a lane readies a reused connection: the pool's own ``ensure_connection`` where
    redis-py has one (the asyncio pool after 5.0.0, the blocking one in 8, whose check
    also applies pending maintenance notifications instead of reconnecting), else
    ``own``, the check the pool inlines in ``get_connection`` (redis-py renamed its
    asyncio half between majors: ``can_read_destructive`` up to 7, ``can_read`` in 8)."""
    ensure = getattr(pool, "ensure_connection", None)
    return own if ensure is None else ensure


def _checkout_args(pool: Any) -> tuple[Any, ...]:
    """The arguments of ``pool.get_connection``: redis-py 5.x requires a command name
    (which the pools ignore), 6 and later deprecate passing one."""
    try:
        param = inspect.signature(pool.get_connection).parameters.get("command_name")
    except (TypeError, ValueError):  # pragma: no cover - a pool without a signature
        return ()
    if param is not None and param.default is inspect.Parameter.empty:
        return ("EVALSHA",)
    return ()


class _LaneState:
    """What both lanes keep: the client's pool, its reply callbacks (each looked up once
    per command name), the idle connections (registered so a forked child drops them)."""

    def __init__(self, client: redis.Redis | redis.asyncio.Redis) -> None:
        self.pool: Any = client.connection_pool
        self.callbacks: Any = client.response_callbacks
        self.parsers: dict[Any, Any] = {}
        self.idle: list[Any] = []
        self.checkout = _checkout_args(self.pool)
        _LANES.add(self)

    def parse(self, name: Any, reply: Any) -> Any:
        """The reply as ``execute_command`` returns it: through redis-py's response
        callback for the command, when it has one."""
        parse = self.parsers.get(name, _UNKNOWN)
        if parse is _UNKNOWN:
            parse = self.parsers[name] = self.callbacks.get(name)
        return reply if parse is None else parse(reply)


class Lanes(_LaneState):
    """How a redis-py backend sends every command: connections of the client's own pool,
    each sending one command and reading its reply with redis-py's
    ``send_packed_command``/``read_response``, then redis-py's response callback for the
    command if it has one (SCAN, XRANGE...), as ``execute_command`` would.

    ``execute_command`` does much more per call: it checks the connection out of the pool
    and back in (two ``getpid`` system calls, a lock, a ``poll``), runs the call in a retry
    wrapper and two closures, records observability figures and looks for special
    commands; the asyncio client also packs in Python. On one shared CPU that cost more
    than the SDK's own work per debit (see BENCHMARKS.md). A lane keeps what matters: the
    same connection class and settings (timeouts, TLS, auth, protocol), the same exception
    classes (redis-py raises them inside ``send_packed_command``/``read_response``, which
    disconnect the connection on any failure but a reply error, so no connection is left
    holding an unread reply), the pool's check of a reused connection for stale data, the
    health check (a PING after ``health_check_interval``, when the URL sets one), and the
    pool's ``max_connections``: a lane checks a new connection out of the pool when it
    has no idle one, keeps it, and the client's ``close`` disconnects it with the pool.

    Idle connections sit on a list: ``pop`` and ``append`` are atomic, so threads (or
    tasks) never share one connection and need no lock.

    What lies below ``execute_command`` changes between redis-py majors; a lane touches
    only ``get_connection`` (its arguments: :func:`_checkout_args`), the pool's check of
    a reused connection (:func:`_checker`), ``send_packed_command``, ``read_response``
    and ``response_callbacks``, and tests/test_lanes.py runs on the floor of the declared
    range and on the newest of each major.
    """

    def __init__(self, client: redis.Redis) -> None:
        super().__init__(client)
        self.ready = _checker(self.pool, _ready)

    def call(self, *command: Any) -> Any:
        idle = self.idle
        if idle:
            conn = idle.pop()
            try:
                self.ready(conn)
            except BaseException:
                idle.append(conn)
                raise
        else:
            conn = self.pool.get_connection(*self.checkout)
        try:
            conn.send_packed_command(_packed(conn, command))
            reply = conn.read_response()
        finally:
            idle.append(conn)
        return self.parse(command[0], reply)


class AsyncLanes(_LaneState):
    """The asyncio twin of :class:`Lanes`."""

    def __init__(self, client: redis.asyncio.Redis) -> None:
        super().__init__(client)
        self.ready = _checker(self.pool, _ready_async)

    async def call(self, *command: Any) -> Any:
        idle = self.idle
        if idle:
            conn = idle.pop()
            try:
                await self.ready(conn)
            except BaseException:
                idle.append(conn)
                raise
        else:
            conn = await self.pool.get_connection(*self.checkout)
        try:
            await conn.send_packed_command(_packed(conn, command))
            reply = await conn.read_response()
        finally:
            idle.append(conn)
        return self.parse(command[0], reply)


def _close(client: redis.Redis) -> None:
    client.close()


async def _aclose(client: redis.asyncio.Redis) -> None:
    """redis-py 5.0.0's asyncio client has only ``close`` (5.0.1 added ``aclose`` and
    deprecated ``close``)."""
    aclose = getattr(client, "aclose", None)
    await (client.close() if aclose is None else aclose())


class RedisBackend(SyncBackend):
    """A blocking redis-py client (or a fakeredis one, which is the same class underneath)."""

    def __init__(self, client: redis.Redis, retries: int = 0, lanes: bool = False) -> None:
        self.client = client
        self.retries = retries
        self._call = client.execute_command
        if lanes:
            self._call = Lanes(client).call

    def classify(self, exc: BaseException) -> Failure:
        return classify(exc)

    def close(self) -> None:
        _close(self.client)


class AsyncRedisBackend(AsyncBackend):
    """An asyncio redis-py client (or fakeredis's async one)."""

    def __init__(self, client: redis.asyncio.Redis, retries: int = 0, lanes: bool = False) -> None:
        self.client = client
        self.retries = retries
        self._call = client.execute_command
        if lanes:
            self._call = AsyncLanes(client).call

    def classify(self, exc: BaseException) -> Failure:
        return classify(exc)

    async def close(self) -> None:
        await _aclose(self.client)


def wrapped(cls: type) -> bool:
    """True when something replaced ``cls.execute_command`` with a wrapper of it:
    OpenTelemetry's redis instrumentation (wrapt), Sentry's integration, any tracer
    written with ``functools.wraps``. redis-py's own is a plain function in 5.0 to 8."""
    return hasattr(getattr(cls, "execute_command", None), "__wrapped__")


def use_lanes(path: str, cls: type) -> bool:
    """Whether a client of ``cls`` sends through lanes, for the client's ``redis_path``:
    'lanes', 'execute_command', or 'auto' (lanes unless a tracer wrapped
    ``execute_command``, so an instrumented app keeps its span per command)."""
    if path == "auto":
        return not wrapped(cls)
    return path == "lanes"


def open_sync(url: str, settings: Settings) -> RedisBackend:
    client = redis.Redis.from_url(url, **_options(settings, asyncio=False))
    return RedisBackend(client, settings.retries, use_lanes(settings.redis_path, redis.Redis))


def open_async(url: str, settings: Settings) -> AsyncRedisBackend:
    client = redis.asyncio.Redis.from_url(url, **_options(settings, asyncio=True))
    lanes = use_lanes(settings.redis_path, redis.asyncio.Redis)
    return AsyncRedisBackend(client, settings.retries, lanes)
