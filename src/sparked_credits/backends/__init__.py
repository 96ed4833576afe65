"""Backends, chosen by URL.

=====================  ==========================================  =================
URL                    store                                       extra
=====================  ==========================================  =================
``memory://[name]``    in-process fakeredis (one store per name)   ``memory``
``redis://``           Redis over TCP (redis-py + hiredis)         ``redis``
``rediss://``          Redis over TLS                              ``redis``
``unix://``            Redis over a Unix socket                    ``redis``
=====================  ==========================================  =================

Optional dependencies are imported only when their URL is used; a missing one raises
ConfigurationError naming the extra to install.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from ..errors import ConfigurationError
from .base import AsyncBackend, SyncBackend

__all__ = ["AsyncBackend", "SyncBackend", "open_async_backend", "open_backend", "scheme_of"]

_REDIS_SCHEMES = ("redis", "rediss", "unix")


def scheme_of(url: str) -> str:
    """The URL's scheme, or a ConfigurationError saying which ones are understood."""
    if not isinstance(url, str) or "://" not in url:
        raise ConfigurationError(
            f"storage URL {url!r} must look like memory://, redis://host:6379/0, "
            "rediss://... or unix:///path/redis.sock"
        )
    scheme = urlsplit(url).scheme.lower()
    if scheme in ("redis+cluster", "http", "https"):
        raise ConfigurationError(
            f"{scheme}:// (Redis Cluster / Upstash REST) is not supported by this version yet"
        )
    if scheme != "memory" and scheme not in _REDIS_SCHEMES:
        raise ConfigurationError(f"unknown storage URL scheme {scheme!r}")
    return scheme


def _memory_name(url: str) -> str:
    parts = urlsplit(url)
    return (parts.netloc + parts.path).strip("/") or "default"


def _redis_module() -> Any:
    try:
        import redis
        import redis.asyncio
        import redis.asyncio.retry
        import redis.retry
    except ImportError as exc:
        raise ConfigurationError(
            "redis:// needs redis-py: pip install 'sparked-credits[redis]'"
        ) from exc
    return redis


def _retry_options(asyncio: bool, retries: int) -> dict[str, Any]:
    """redis-py re-sends after a lost connection or a timeout. Safe for every call here:
    reads change nothing and each mutation carries its idempotency key, so a re-sent script
    replays its first outcome instead of applying again."""
    redis = _redis_module()
    from redis.backoff import ExponentialWithJitterBackoff

    retry_cls = redis.asyncio.retry.Retry if asyncio else redis.retry.Retry
    return {
        "retry": retry_cls(ExponentialWithJitterBackoff(base=0.02, cap=0.5), retries),
        "retry_on_error": [redis.exceptions.ConnectionError, redis.exceptions.TimeoutError],
    }


def open_backend(url: str, *, retries: int = 3) -> SyncBackend:
    """A blocking backend for ``url``."""
    scheme = scheme_of(url)
    if scheme == "memory":
        from .memory import open_memory

        return open_memory(_memory_name(url))
    from .redis_py import RedisBackend

    return RedisBackend(_redis_module().Redis.from_url(url, **_retry_options(False, retries)))


def open_async_backend(url: str, *, retries: int = 3) -> AsyncBackend:
    """An asyncio backend for ``url``."""
    scheme = scheme_of(url)
    if scheme == "memory":
        from .memory import open_async_memory

        return open_async_memory(_memory_name(url))
    from .redis_py import AsyncRedisBackend

    return AsyncRedisBackend(
        _redis_module().asyncio.Redis.from_url(url, **_retry_options(True, retries))
    )
