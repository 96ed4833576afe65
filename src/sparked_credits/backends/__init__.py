"""Backends, chosen by URL.

==========================================  ==========================================  =========
URL                                         store                                       extra
==========================================  ==========================================  =========
``memory://[name]``                         in-process fakeredis (one store per name)   ``memory``
``redis://``                                Redis over TCP (redis-py + hiredis)         ``redis``
``rediss://``                               Redis over TLS                              ``redis``
``unix://``                                 Redis over a Unix socket                    ``redis``
``redis+cluster://host:port[,host:port]``   Redis Cluster (redis-py RedisCluster)       ``redis``
``https://...`` plus ``token=``             Upstash REST API (upstash-redis)            ``upstash``
==========================================  ==========================================  =========

``http://`` with a token is accepted for an Upstash-compatible endpoint on a private network
(the test bridge, a local proxy). The table lives in :mod:`.registry`; optional dependencies
are imported only when their URL is used, and a missing one raises ConfigurationError naming
the extra to install.
"""

from __future__ import annotations

from .base import AsyncBackend, SyncBackend
from .registry import BackendKind, Settings, kind_of, load

__all__ = [
    "AsyncBackend",
    "BackendKind",
    "Settings",
    "SyncBackend",
    "kind_of",
    "open_async_backend",
    "open_backend",
]


def open_backend(url: str, settings: Settings) -> SyncBackend:
    """A blocking backend for ``url``."""
    backend: SyncBackend = load(kind_of(url)[1]).open_sync(url, settings)
    return backend


def open_async_backend(url: str, settings: Settings) -> AsyncBackend:
    """An asyncio backend for ``url``."""
    backend: AsyncBackend = load(kind_of(url)[1]).open_async(url, settings)
    return backend
