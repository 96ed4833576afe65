"""The backend contract: carry out one request in one round trip.

A backend knows how to reach its store and nothing about credits. Sync and async twins
implement the same two primitives; ``execute`` dispatches on the request type.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from ..requests import CommandCall, Request, ScriptCall

__all__ = ["AsyncBackend", "SyncBackend"]


class SyncBackend(ABC):
    """A blocking backend."""

    def execute(self, request: Request) -> Any:
        if isinstance(request, ScriptCall):
            return self.run_script(request)
        return self.run_command(request)

    @abstractmethod
    def run_script(self, call: ScriptCall) -> Any:
        """EVALSHA the script; on NOSCRIPT, EVAL it (which also caches it) in the same call."""

    @abstractmethod
    def run_command(self, call: CommandCall) -> Any:
        """Send one plain command."""

    @abstractmethod
    def close(self) -> None:
        """Release connections."""


class AsyncBackend(ABC):
    """An asyncio backend."""

    async def execute(self, request: Request) -> Any:
        if isinstance(request, ScriptCall):
            return await self.run_script(request)
        return await self.run_command(request)

    @abstractmethod
    async def run_script(self, call: ScriptCall) -> Any:
        """EVALSHA the script; on NOSCRIPT, EVAL it (which also caches it) in the same call."""

    @abstractmethod
    async def run_command(self, call: CommandCall) -> Any:
        """Send one plain command."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections."""
