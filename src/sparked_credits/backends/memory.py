"""The ``memory://`` backend: an in-process store for demos, local work and tests.

fakeredis runs the same Lua scripts (through lupa). Stores are shared per URL name within
the process: two clients built from ``memory://shop`` see the same balances, sync or async,
while ``memory://other`` is a separate store. Never use it for more than one process.
"""

from __future__ import annotations

import threading
from typing import Any

from ..errors import ConfigurationError
from .redis_py import AsyncRedisBackend, RedisBackend

__all__ = ["open_async_memory", "open_memory", "reset_memory_store"]

_servers: dict[str, Any] = {}
_lock = threading.Lock()


def _import_fakeredis() -> Any:
    try:
        import fakeredis
        import lupa  # noqa: F401  (fakeredis needs it for EVAL)
    except ImportError as exc:
        raise ConfigurationError(
            "memory:// needs fakeredis with Lua: pip install 'sparked-credits[memory]'"
        ) from exc
    return fakeredis


def _server(name: str) -> Any:
    fakeredis = _import_fakeredis()
    with _lock:
        server = _servers.get(name)
        if server is None:
            server = _servers[name] = fakeredis.FakeServer()
        return server


def open_memory(name: str) -> RedisBackend:
    fakeredis = _import_fakeredis()
    return RedisBackend(fakeredis.FakeRedis(server=_server(name)))


def open_async_memory(name: str) -> AsyncRedisBackend:
    fakeredis = _import_fakeredis()
    return AsyncRedisBackend(fakeredis.FakeAsyncRedis(server=_server(name)))


def reset_memory_store(name: str = "default") -> None:
    """Forget an in-process store (tests and demos start from empty this way)."""
    with _lock:
        _servers.pop(name, None)
