"""The ``memory://`` backend: an in-process store for demos, local work and tests.

fakeredis runs the same Lua scripts (through lupa). Stores are shared per URL name within
the process: two clients built from ``memory://shop`` see the same balances, sync or async,
while ``memory://other`` is a separate store. Never use it for more than one process.
fakeredis raises redis-py's exceptions, so failures are read as the redis backend reads them.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import fakeredis
import lupa  # noqa: F401  (fakeredis needs it for EVAL)

from .redis_py import AsyncRedisBackend, RedisBackend

if TYPE_CHECKING:
    from .registry import Settings

__all__ = ["open_async", "open_async_memory", "open_memory", "open_sync", "reset_memory_store"]

_servers: dict[str, Any] = {}
_lock = threading.Lock()


def _server(name: str) -> Any:
    with _lock:
        server = _servers.get(name)
        if server is None:
            server = _servers[name] = fakeredis.FakeServer()
        return server


def _name(url: str) -> str:
    parts = urlsplit(url)
    return (parts.netloc + parts.path).strip("/") or "default"


def open_memory(name: str) -> RedisBackend:
    return RedisBackend(fakeredis.FakeRedis(server=_server(name)))


def open_async_memory(name: str) -> AsyncRedisBackend:
    return AsyncRedisBackend(fakeredis.FakeAsyncRedis(server=_server(name)))


def open_sync(url: str, settings: Settings) -> RedisBackend:
    return open_memory(_name(url))


def open_async(url: str, settings: Settings) -> AsyncRedisBackend:
    return open_async_memory(_name(url))


def reset_memory_store(name: str = "default") -> None:
    """Forget an in-process store (tests and demos start from empty this way)."""
    with _lock:
        _servers.pop(name, None)
