"""redis-py backends (``redis://``, ``rediss://``, ``unix://``), also used by ``memory://``
and, with a RedisCluster client, by ``redis+cluster://``.

redis-py retries a command after a connection error; that is safe here because every
mutation carries its idempotency key inside the script arguments, so a re-sent EVALSHA
replays the first outcome instead of applying twice.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

from ..requests import CommandCall, ScanCall, ScriptCall
from .base import AsyncBackend, SyncBackend
from .errors import is_noscript

if TYPE_CHECKING:
    import redis
    import redis.asyncio

__all__ = ["AsyncRedisBackend", "RedisBackend", "is_noscript"]


def _eval_args(call: ScriptCall) -> tuple[str | int, ...]:
    return (len(call.keys), *call.keys, *call.args)


class RedisBackend(SyncBackend):
    """A blocking redis-py client (or a fakeredis one, which is the same class underneath)."""

    def __init__(self, client: redis.Redis) -> None:
        from redis.exceptions import ResponseError

        self.client = client
        self._response_error = ResponseError
        self._execute: Callable[..., Any] = client.execute_command

    def run_script(self, call: ScriptCall) -> Any:
        args = _eval_args(call)
        try:
            return self._execute("EVALSHA", call.script.sha, *args)
        except self._response_error as exc:
            if not is_noscript(exc):
                raise
            return self._execute("EVAL", call.script.source, *args)

    def run_command(self, call: CommandCall) -> Any:
        return self._execute(*call.args)

    def scan_keys(self, call: ScanCall) -> list[Any]:
        # redis-py's scan_iter follows one cursor per primary on a RedisCluster.
        return list(self.client.scan_iter(match=call.match, count=call.count))

    def close(self) -> None:
        self.client.close()


class AsyncRedisBackend(AsyncBackend):
    """An asyncio redis-py client (or fakeredis's async one)."""

    def __init__(self, client: redis.asyncio.Redis) -> None:
        from redis.exceptions import ResponseError

        self.client = client
        self._response_error = ResponseError
        self._execute = cast(Callable[..., Awaitable[Any]], client.execute_command)

    async def run_script(self, call: ScriptCall) -> Any:
        args = _eval_args(call)
        try:
            return await self._execute("EVALSHA", call.script.sha, *args)
        except self._response_error as exc:
            if not is_noscript(exc):
                raise
            return await self._execute("EVAL", call.script.source, *args)

    async def run_command(self, call: CommandCall) -> Any:
        return await self._execute(*call.args)

    async def scan_keys(self, call: ScanCall) -> list[Any]:
        return [key async for key in self.client.scan_iter(match=call.match, count=call.count)]

    async def close(self) -> None:
        await self.client.aclose()
