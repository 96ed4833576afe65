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
(the test bridge, a local proxy). Optional dependencies are imported only when their URL is
used; a missing one raises ConfigurationError naming the extra to install.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from ..errors import ConfigurationError
from .base import AsyncBackend, SyncBackend

__all__ = [
    "AsyncBackend",
    "SyncBackend",
    "is_cluster",
    "is_upstash",
    "open_async_backend",
    "open_backend",
    "scheme_of",
]

_REDIS_SCHEMES = ("redis", "rediss", "unix")
_CLUSTER_SCHEMES = ("redis+cluster",)
_UPSTASH_SCHEMES = ("https", "http")
_KNOWN = ("memory", *_REDIS_SCHEMES, *_CLUSTER_SCHEMES, *_UPSTASH_SCHEMES)


def scheme_of(url: str) -> str:
    """The URL's scheme, or a ConfigurationError saying which ones are understood."""
    if not isinstance(url, str) or "://" not in url:
        raise ConfigurationError(
            f"storage URL {url!r} must look like memory://, redis://host:6379/0, "
            "rediss://..., unix:///path/redis.sock, redis+cluster://host:port,host:port "
            "or https://<db>.upstash.io (with token=)"
        )
    scheme = url.split("://", 1)[0].lower()
    if scheme not in _KNOWN:
        raise ConfigurationError(f"unknown storage URL scheme {scheme!r}")
    return scheme


def is_cluster(scheme: str) -> bool:
    return scheme in _CLUSTER_SCHEMES


def is_upstash(scheme: str) -> bool:
    return scheme in _UPSTASH_SCHEMES


def _memory_name(url: str) -> str:
    parts = urlsplit(url)
    return (parts.netloc + parts.path).strip("/") or "default"


def _redis_module() -> Any:
    try:
        import redis
        import redis.asyncio
        import redis.asyncio.cluster
        import redis.asyncio.retry
        import redis.cluster
        import redis.retry
    except ImportError as exc:
        raise ConfigurationError(
            "redis://, rediss://, unix:// and redis+cluster:// need redis-py: "
            "pip install 'sparked-credits[redis]'"
        ) from exc
    return redis


def _retry(asyncio: bool, retries: int) -> Any:
    """redis-py re-sends after a lost connection or a timeout. Safe for every call here:
    reads change nothing and each mutation carries its idempotency key, so a re-sent script
    replays its first outcome instead of applying again."""
    redis = _redis_module()
    from redis.backoff import ExponentialWithJitterBackoff

    retry_cls = redis.asyncio.retry.Retry if asyncio else redis.retry.Retry
    return retry_cls(ExponentialWithJitterBackoff(base=0.02, cap=0.5), retries)


def _redis_options(asyncio: bool, retries: int, timeout: float) -> dict[str, Any]:
    redis = _redis_module()
    return {
        "retry": _retry(asyncio, retries),
        "retry_on_error": [redis.exceptions.ConnectionError, redis.exceptions.TimeoutError],
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
    }


def open_backend(
    url: str, *, retries: int = 3, timeout: float = 5.0, token: str | None = None
) -> SyncBackend:
    """A blocking backend for ``url``."""
    scheme = scheme_of(url)
    if scheme == "memory":
        from .memory import open_memory

        return open_memory(_memory_name(url))
    if is_upstash(scheme):
        from .upstash import open_upstash

        return open_upstash(url, token, retries=retries, timeout=timeout)
    redis = _redis_module()
    if is_cluster(scheme):
        from .cluster import open_cluster

        return open_cluster(url, redis, _retry(False, retries), timeout)
    from .redis_py import RedisBackend

    return RedisBackend(redis.Redis.from_url(url, **_redis_options(False, retries, timeout)))


def open_async_backend(
    url: str, *, retries: int = 3, timeout: float = 5.0, token: str | None = None
) -> AsyncBackend:
    """An asyncio backend for ``url``."""
    scheme = scheme_of(url)
    if scheme == "memory":
        from .memory import open_async_memory

        return open_async_memory(_memory_name(url))
    if is_upstash(scheme):
        from .upstash import open_async_upstash

        return open_async_upstash(url, token, retries=retries, timeout=timeout)
    redis = _redis_module()
    if is_cluster(scheme):
        from .cluster import open_async_cluster

        return open_async_cluster(url, redis, _retry(True, retries), timeout)
    from .redis_py import AsyncRedisBackend

    return AsyncRedisBackend(
        redis.asyncio.Redis.from_url(url, **_redis_options(True, retries, timeout))
    )
