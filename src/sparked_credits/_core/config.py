"""Where the storage is: resolved from arguments or the environment, without I/O."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from ..errors import ConfigurationError

__all__ = ["ARCHIVE_ENV", "StorageConfig", "archive_from_env", "storage_from_env"]

ARCHIVE_ENV = "SPARKED_CREDITS_ARCHIVE_URL"
"""The PostgreSQL archive's URL for ``from_env()`` (and the archive and report commands)."""

# Checked in this order; the first pair whose URL is set wins.
ENV_PAIRS = (
    ("UPSTASH_REDIS_URL", "UPSTASH_REDIS_TOKEN"),  # the TypeScript SDK's setup guide
    ("UPSTASH_REDIS_REST_URL", "UPSTASH_REDIS_REST_TOKEN"),  # Upstash's console
)


@dataclass(frozen=True, slots=True)
class StorageConfig:
    url: str
    token: str | None = None


def storage_from_env(environ: Mapping[str, str] | None = None) -> StorageConfig:
    """Upstash's variables first, then ``REDIS_URL``.

    With none set this raises: silently falling back to an in-process store in production
    would give every worker its own balances. Ask for ``memory://`` explicitly instead.
    """
    env = os.environ if environ is None else environ
    for url_name, token_name in ENV_PAIRS:
        url = env.get(url_name, "").strip()
        if url:
            return StorageConfig(url=url, token=env.get(token_name, "").strip() or None)
    url = env.get("REDIS_URL", "").strip()
    if url:
        return StorageConfig(url=url)
    names = ", ".join([p[0] for p in ENV_PAIRS] + ["REDIS_URL"])
    raise ConfigurationError(
        f"no storage configured: set one of {names} (or pass url='memory://' explicitly)"
    )


def archive_from_env(environ: Mapping[str, str] | None = None) -> str | None:
    """The archive's URL from ``SPARKED_CREDITS_ARCHIVE_URL``, None when unset."""
    env = os.environ if environ is None else environ
    return env.get(ARCHIVE_ENV, "").strip() or None
