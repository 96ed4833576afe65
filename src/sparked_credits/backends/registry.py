"""Storage URL scheme -> backend: one table, imported lazily.

Each row names the module that implements the backend (with ``open_sync(url, settings)``
and ``open_async(url, settings)``), the extra that installs its client library, and what
the client must check before using it. A backend module is imported only when its URL is
used; when its client library is missing the import fails and the error names the extra.
A new backend is one module and one row here.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

from ..errors import ConfigurationError

__all__ = ["BACKENDS", "BackendKind", "Settings", "kind_of", "load"]


@dataclass(frozen=True, slots=True)
class Settings:
    """What every backend is opened with (from the client's options)."""

    retries: int = 3
    timeout: float = 5.0
    token: str | None = None
    redis_path: str = "auto"
    """redis-py backends: 'lanes', 'execute_command' or 'auto' (see redis_py.use_lanes)."""


@dataclass(frozen=True, slots=True)
class BackendKind:
    """One kind of storage and the URL schemes that select it."""

    name: str
    schemes: tuple[str, ...]
    module: str
    extra: str
    requires: tuple[str, ...]
    """Top-level packages of the extra: an ImportError naming one of them means "install
    the extra", any other ImportError is a bug and propagates as is."""
    cluster: bool = False
    """Every key of a script must hash to one slot (hash tags are forced on)."""
    needs_token: bool = False
    """Takes ``token=`` (the Upstash REST API); other kinds refuse one."""


BACKENDS: tuple[BackendKind, ...] = (
    BackendKind("memory", ("memory",), ".memory", "memory", ("fakeredis", "lupa", "redis")),
    BackendKind("redis", ("redis", "rediss", "unix"), ".redis_py", "redis", ("redis",)),
    BackendKind("cluster", ("redis+cluster",), ".cluster", "redis", ("redis",), cluster=True),
    BackendKind(
        "upstash",
        ("https", "http"),
        ".upstash",
        "upstash",
        ("upstash_redis", "httpx"),
        needs_token=True,
    ),
)

_BY_SCHEME = {scheme: kind for kind in BACKENDS for scheme in kind.schemes}


def kind_of(url: str) -> tuple[str, BackendKind]:
    """The URL's scheme and its backend, or a ConfigurationError listing the known ones."""
    if not isinstance(url, str) or "://" not in url:
        raise ConfigurationError(
            f"storage URL {url!r} must look like memory://, redis://host:6379/0, "
            "rediss://..., unix:///path/redis.sock, redis+cluster://host:port,host:port "
            "or https://<db>.upstash.io (with token=)"
        )
    scheme = url.split("://", 1)[0].lower()
    kind = _BY_SCHEME.get(scheme)
    if kind is None:
        raise ConfigurationError(f"unknown storage URL scheme {scheme!r}")
    return scheme, kind


def load(kind: BackendKind) -> ModuleType:
    """Import the backend's module; a missing client library names the extra to install."""
    try:
        return importlib.import_module(kind.module, __package__)
    except ImportError as exc:
        missing = (exc.name or "").split(".", 1)[0]
        if missing not in kind.requires:
            raise
        schemes = ", ".join(f"{s}://" for s in kind.schemes)
        raise ConfigurationError(
            f"{schemes} need{'s' if len(kind.schemes) == 1 else ''} {missing}: "
            f"pip install 'sparked-credits[{kind.extra}]'"
        ) from exc
