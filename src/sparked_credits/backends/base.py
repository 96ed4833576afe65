"""The backend contract: carry out one request in one round trip.

A backend knows how to reach its store and nothing about credits. Sync and async twins
implement the same primitives; ``execute`` dispatches on the request type. What both twins
of a backend would otherwise repeat (a SCAN cursor walk, the retry policy) lives here as
pure code: generators the twins drive, one with blocking calls, one with awaits.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Generator
from typing import Any, TypeVar

from ..requests import CommandCall, Request, ScanCall, ScriptCall

__all__ = ["AsyncBackend", "SyncBackend", "drive", "drive_async", "scan_steps"]

T = TypeVar("T")

# A procedure of plain commands: yields a command's arguments, receives its raw reply.
Steps = Generator[tuple[str, ...], Any, T]


def scan_steps(call: ScanCall) -> Steps[list[Any]]:
    """Follow one server's SCAN cursor to its end, collecting the matching keys."""
    cursor = "0"
    found: list[Any] = []
    while True:
        reply = yield ("SCAN", cursor, "MATCH", call.match, "COUNT", str(call.count))
        raw_cursor, keys = reply
        cursor = raw_cursor.decode() if isinstance(raw_cursor, bytes) else str(raw_cursor)
        found += keys
        if cursor == "0":
            return found


def drive(steps: Steps[T], send: Callable[..., Any]) -> T:
    """Run ``steps`` with a blocking ``send(*args)``."""
    try:
        args = next(steps)
        while True:
            args = steps.send(send(*args))
    except StopIteration as done:
        result: T = done.value
        return result


async def drive_async(steps: Steps[T], send: Callable[..., Awaitable[Any]]) -> T:
    """Run ``steps`` with an awaited ``send(*args)``."""
    try:
        args = next(steps)
        while True:
            args = steps.send(await send(*args))
    except StopIteration as done:
        result: T = done.value
        return result


class SyncBackend(ABC):
    """A blocking backend."""

    def execute(self, request: Request) -> Any:
        if isinstance(request, ScriptCall):
            return self.run_script(request)
        if isinstance(request, CommandCall):
            return self.run_command(request)
        return self.scan_keys(request)

    @abstractmethod
    def run_script(self, call: ScriptCall) -> Any:
        """EVALSHA the script; on NOSCRIPT, EVAL it (which also caches it) in the same call."""

    @abstractmethod
    def run_command(self, call: CommandCall) -> Any:
        """Send one plain command."""

    @abstractmethod
    def scan_keys(self, call: ScanCall) -> list[Any]:
        """Every key matching the pattern, from every primary of the store."""

    @abstractmethod
    def close(self) -> None:
        """Release connections."""


class AsyncBackend(ABC):
    """An asyncio backend."""

    async def execute(self, request: Request) -> Any:
        if isinstance(request, ScriptCall):
            return await self.run_script(request)
        if isinstance(request, CommandCall):
            return await self.run_command(request)
        return await self.scan_keys(request)

    @abstractmethod
    async def run_script(self, call: ScriptCall) -> Any:
        """EVALSHA the script; on NOSCRIPT, EVAL it (which also caches it) in the same call."""

    @abstractmethod
    async def run_command(self, call: CommandCall) -> Any:
        """Send one plain command."""

    @abstractmethod
    async def scan_keys(self, call: ScanCall) -> list[Any]:
        """Every key matching the pattern, from every primary of the store."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections."""
