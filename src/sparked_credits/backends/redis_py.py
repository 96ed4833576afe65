"""redis-py backends (``redis://``, ``rediss://``, ``unix://``), also used by ``memory://``
(fakeredis raises redis-py's exceptions) and, with a RedisCluster client, by
``redis+cluster://``.

redis-py's own retries are turned off: the SDK re-sends (see :mod:`.recovery`), so it knows
every attempt's outcome and can say whether a failed call may have applied. Re-sending is
safe because every mutation carries its idempotency key inside the script arguments, so a
re-sent EVALSHA replays the first outcome instead of applying twice.
"""

from __future__ import annotations

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
    "AsyncRedisBackend",
    "RedisBackend",
    "classify",
    "no_retries",
    "open_async",
    "open_sync",
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


class RedisBackend(SyncBackend):
    """A blocking redis-py client (or a fakeredis one, which is the same class underneath)."""

    def __init__(self, client: redis.Redis, retries: int = 0) -> None:
        self.client = client
        self.retries = retries
        self._call = client.execute_command

    def classify(self, exc: BaseException) -> Failure:
        return classify(exc)

    def close(self) -> None:
        self.client.close()


class AsyncRedisBackend(AsyncBackend):
    """An asyncio redis-py client (or fakeredis's async one)."""

    def __init__(self, client: redis.asyncio.Redis, retries: int = 0) -> None:
        self.client = client
        self.retries = retries
        self._call = client.execute_command

    def classify(self, exc: BaseException) -> Failure:
        return classify(exc)

    async def close(self) -> None:
        await self.client.aclose()


def open_sync(url: str, settings: Settings) -> RedisBackend:
    client = redis.Redis.from_url(url, **_options(settings, asyncio=False))
    return RedisBackend(client, settings.retries)


def open_async(url: str, settings: Settings) -> AsyncRedisBackend:
    client = redis.asyncio.Redis.from_url(url, **_options(settings, asyncio=True))
    return AsyncRedisBackend(client, settings.retries)
