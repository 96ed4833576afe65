"""The backend contract: carry out one request in one round trip.

A backend knows how to reach its store and how to read its client library's exceptions
(``classify``), and nothing about credits. A concrete backend gives three things: ``_call``
(send one command, raw), ``classify`` and, where one cursor is not the whole keyspace,
``scan_keys``. What happens after a failure (EVAL on NOSCRIPT, the retry loop) is the pure
procedure of :mod:`.recovery`, entered only when the first attempt raised, so the fast path
is one call. The sync and async twins below differ only by ``async``/``await`` (a test
checks it).
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from typing import Any

from .._core.requests import CommandCall, Request, ScanCall, ScriptCall
from .._core.steps import Steps
from .._drive import drive, drive_async
from .recovery import Failure, recover

__all__ = ["AsyncBackend", "SyncBackend", "eval_", "evalsha", "scan_steps"]


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


def evalsha(call: ScriptCall) -> tuple[Any, ...]:
    return ("EVALSHA", call.script.sha, len(call.keys), *call.keys, *call.args)


def eval_(call: ScriptCall) -> tuple[Any, ...]:
    return ("EVAL", call.script.source, len(call.keys), *call.keys, *call.args)


class SyncBackend(ABC):
    """A blocking backend."""

    _call: Callable[..., Any]
    """Send one command (its arguments) and return the raw reply; may raise."""
    retries: int = 0
    """Re-sends after a transient failure (the client's ``retries``)."""

    @abstractmethod
    def classify(self, exc: BaseException) -> Failure:
        """What a failure of this backend's client library means (see Failure)."""

    def execute(self, request: Request) -> Any:
        """The result of the request's method."""
        if type(request) is ScriptCall:
            return self.run_script(request)
        if type(request) is CommandCall:
            return self.send(*request.args)
        assert isinstance(request, ScanCall)
        return self.scan_keys(request)

    def _send_raw(self, command: tuple[Any, ...]) -> Any:
        return self._call(*command)

    def _send(self, command: tuple[Any, ...]) -> Any:
        return self.send(*command)

    def send(self, *command: Any) -> Any:
        """One command, with the recovery procedure after a failure."""
        try:
            return self._call(*command)
        except Exception as exc:
            steps = recover(exc, command, self.classify, self.retries)
            return drive(steps, self._send_raw, time.sleep)

    def run_script(self, call: ScriptCall) -> Any:
        """EVALSHA the script; on NOSCRIPT, EVAL it (which also caches it)."""
        try:
            return self._call("EVALSHA", call.script.sha, len(call.keys), *call.keys, *call.args)
        except Exception as exc:
            steps = recover(exc, evalsha(call), self.classify, self.retries, eval_(call))
            return drive(steps, self._send_raw, time.sleep)

    def scan_keys(self, call: ScanCall) -> list[Any]:
        """Every key matching the pattern (one server: one cursor)."""
        return drive(scan_steps(call), self._send, time.sleep)

    @abstractmethod
    def close(self) -> None:
        """Release connections."""


class AsyncBackend(ABC):
    """An asyncio backend."""

    _call: Callable[..., Awaitable[Any]]
    """Send one command (its arguments) and return the raw reply; may raise."""
    retries: int = 0
    """Re-sends after a transient failure (the client's ``retries``)."""

    @abstractmethod
    def classify(self, exc: BaseException) -> Failure:
        """What a failure of this backend's client library means (see Failure)."""

    def execute(self, request: Request) -> Awaitable[Any]:
        """The awaitable of the request's method (not a coroutine of its own: one frame
        less on the hot path)."""
        if type(request) is ScriptCall:
            return self.run_script(request)
        if type(request) is CommandCall:
            return self.send(*request.args)
        assert isinstance(request, ScanCall)
        return self.scan_keys(request)

    async def _send_raw(self, command: tuple[Any, ...]) -> Any:
        return await self._call(*command)

    async def _send(self, command: tuple[Any, ...]) -> Any:
        return await self.send(*command)

    async def send(self, *command: Any) -> Any:
        """One command, with the recovery procedure after a failure."""
        try:
            return await self._call(*command)
        except Exception as exc:
            steps = recover(exc, command, self.classify, self.retries)
            return await drive_async(steps, self._send_raw, asyncio.sleep)

    async def run_script(self, call: ScriptCall) -> Any:
        """EVALSHA the script; on NOSCRIPT, EVAL it (which also caches it)."""
        try:
            return await self._call(
                "EVALSHA", call.script.sha, len(call.keys), *call.keys, *call.args
            )
        except Exception as exc:
            steps = recover(exc, evalsha(call), self.classify, self.retries, eval_(call))
            return await drive_async(steps, self._send_raw, asyncio.sleep)

    async def scan_keys(self, call: ScanCall) -> list[Any]:
        """Every key matching the pattern (one server: one cursor)."""
        return await drive_async(scan_steps(call), self._send, asyncio.sleep)

    @abstractmethod
    async def close(self) -> None:
        """Release connections."""
