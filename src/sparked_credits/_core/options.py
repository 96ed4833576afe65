"""Client options, validated once when a client is built."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..errors import ConfigurationError
from . import validation

__all__ = ["MAX_RETRIES", "MAX_TIMEOUT", "ClientOptions", "RedisPath", "make_options"]

DEFAULT_GRANT_SOURCE = validation.DEFAULT_GRANT_SOURCE
DEFAULT_IDEMPOTENCY_TTL = timedelta(days=7)
DEFAULT_HOLD_TTL = timedelta(hours=1)

MAX_RETRIES = 10
MAX_TIMEOUT = 300.0
"""The bounds of ``retries`` and ``timeout``: they bound how long one call can last, which
the debit's fast block relies on (``ledger_format.RESEND_WINDOW_MS``)."""

RedisPath = Literal["auto", "lanes", "execute_command"]
"""How a redis-py backend sends commands (``ClientOptions.redis_path``)."""


class ClientOptions(BaseModel):
    """Everything that shapes a client's behaviour apart from where its storage is."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    default_credits: int = Field(
        default=100,
        ge=0,
        le=validation.MAX_CREDITS,
        description="Starting credits for initialize_user() and auto-initialization.",
    )
    app: str | None = Field(
        default=None, description="Tag written on every entry, e.g. 'app.sparked.world'."
    )
    auto_initialize: bool = Field(
        default=False,
        description="Initialize a never-seen account inside its first mutation.",
    )
    key_prefix: str = Field(default="", max_length=64, description="Namespace for a tenant.")
    hash_tags: bool = Field(
        default=False, description="Brace the account in key names (always on a cluster)."
    )
    retries: int = Field(
        default=3,
        ge=0,
        le=MAX_RETRIES,
        description="Re-sends after a lost connection or timeout. Safe: every mutation "
        "carries its idempotency key, so a re-sent script replays instead of repeating.",
    )
    timeout: float = Field(
        default=5.0,
        gt=0,
        le=MAX_TIMEOUT,
        description="Seconds to wait for a reply (connect, send, read) before a call fails "
        "with a BackendError; then retried up to `retries` times. upstash-redis has no "
        "timeout of its own, so without this a stalled request would hang forever.",
    )
    redis_path: RedisPath = Field(
        default="auto",
        description="How a redis://, rediss:// or unix:// client sends commands: 'lanes' "
        "(redis-py's pooled connections driven directly, the fastest), 'execute_command' "
        "(redis-py's public path, which tracing integrations wrap), or 'auto': lanes, "
        "unless something (OpenTelemetry's redis instrumentation, Sentry...) wrapped "
        "redis-py's execute_command before the client was made.",
    )
    idempotency_ttl: timedelta = Field(
        default=DEFAULT_IDEMPOTENCY_TTL,
        description="How long an idempotency key is remembered (at least; at most twice).",
    )

    @field_validator("app")
    @classmethod
    def _check_app(cls, value: str | None) -> str | None:
        return validation.label(value, "app") or None

    @field_validator("key_prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        if any(c.isspace() or c in "{}" for c in value):
            raise ValueError("must not contain whitespace or braces")
        return value

    @field_validator("idempotency_ttl")
    @classmethod
    def _check_ttl(cls, value: timedelta) -> timedelta:
        if value < timedelta(seconds=1):
            raise ValueError("must be at least one second")
        return value

    @property
    def idempotency_ttl_ms(self) -> int:
        return int(self.idempotency_ttl.total_seconds() * 1000)


def make_options(**values: object) -> ClientOptions:
    """Build options, turning pydantic's errors into a ConfigurationError that names the field."""
    try:
        return ClientOptions.model_validate(values)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "options"
        raise ConfigurationError(f"{where}: {first['msg']}") from None
