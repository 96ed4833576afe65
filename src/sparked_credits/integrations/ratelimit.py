"""Per-account rate limits on the spending routes, kept where the credits are.

Credits stop a user from spending what they do not have; a rate limit stops a script from
spending all they have in a second (or hammering a model behind the route). This wraps the
``limits`` library (moving window by default: no burst at a window edge) on the same store
as the balances: ``redis://``/``rediss://``/``unix://`` URLs share one counter across every
process and app, ``memory://`` keeps it in-process, as the memory credits store does.

Needs the ``ratelimit`` extra (``pip install 'sparked-credits[ratelimit]'``), imported on
first use.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from ..errors import ConfigurationError, CreditsError, ValidationError

__all__ = ["AccountRateLimiter", "RateLimitDecision", "RateLimitedError", "limits_storage_url"]

logger = logging.getLogger(__name__)

Strategy = Literal["moving-window", "fixed-window", "sliding-window-counter"]

_EXTRA_HINT = "pip install 'sparked-credits[ratelimit]'"


def _limits() -> Any:
    try:
        import limits
        import limits.storage
        import limits.strategies
    except ImportError as exc:
        raise ConfigurationError(f"rate limits need the limits library: {_EXTRA_HINT}") from exc
    return limits


def limits_storage_url(credits_url: str) -> str:
    """The ``limits`` storage URL for a credits storage URL (same server, same database)."""
    scheme = credits_url.split("://", 1)[0].lower()
    if scheme == "memory":
        return "memory://"
    if scheme in ("redis", "rediss"):
        return credits_url
    if scheme == "unix":
        return "redis+unix://" + credits_url.split("://", 1)[1]
    raise ConfigurationError(
        f"no rate-limit storage for {scheme}:// URLs; pass storage_url= (a limits URL)"
    )


class RateLimitedError(CreditsError):
    """Past the rate limit (HTTP 429, with ``retry_after`` seconds for the Retry-After
    header); refused before the route ran, so nothing was charged."""

    http_status = 429
    code = "rate_limited"

    def __init__(self, limit: str, retry_after: int) -> None:
        super().__init__(f"too many requests: {limit}")
        self.limit = limit
        self.retry_after = retry_after

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "limit": self.limit, "retry_after": self.retry_after}


class RateLimitDecision(BaseModel):
    """The outcome of one hit: allowed or not, and when to try again."""

    model_config = ConfigDict(frozen=True)

    allowed: bool
    limit: str
    remaining: int
    retry_after: int
    """Whole seconds until a request would be allowed again (0 when allowed)."""


class AccountRateLimiter:
    """``limit`` (``"10/minute"``, ``"5 per second; 100 per hour"``) per account and scope.

    >>> limiter = AccountRateLimiter("2/minute", storage_url="memory://")
    >>> [limiter.hit("user_1", "chat").allowed for _ in range(3)]
    [True, True, False]
    """

    def __init__(
        self,
        limit: str,
        *,
        storage_url: str,
        strategy: Strategy = "moving-window",
        key_prefix: str = "sparked-credits:ratelimit",
    ) -> None:
        lib = _limits()
        try:
            self._items = list(lib.parse_many(limit))
        except ValueError as exc:
            raise ValidationError(
                "limit", f"{limit!r} is not a rate limit like '10/minute'"
            ) from exc
        if not self._items:
            raise ValidationError("limit", "empty rate limit")
        self.limit = limit
        options: dict[str, Any] = {}
        if not storage_url.startswith("memory://"):
            options["key_prefix"] = key_prefix
        try:
            storage = lib.storage.storage_from_string(storage_url, **options)
        except Exception as exc:
            raise ConfigurationError(f"rate-limit storage: {type(exc).__name__}: {exc}") from exc
        strategies = {
            "moving-window": lib.strategies.MovingWindowRateLimiter,
            "fixed-window": lib.strategies.FixedWindowRateLimiter,
            "sliding-window-counter": lib.strategies.SlidingWindowCounterRateLimiter,
        }
        if strategy not in strategies:
            raise ValidationError("strategy", f"one of {', '.join(strategies)}")
        self._limiter = strategies[strategy](storage)

    @classmethod
    def for_credits_url(cls, limit: str, credits_url: str, **options: Any) -> AccountRateLimiter:
        """A limiter on the same store as a credits client built from ``credits_url``."""
        return cls(limit, storage_url=limits_storage_url(credits_url), **options)

    def hit(self, account: str, scope: str = "default") -> RateLimitDecision:
        """Count one request of ``account`` on ``scope`` (a route, an action); every limit
        in the spec is counted, and the request is refused when any one is exhausted."""
        refused = None
        for item in self._items:
            if not self._limiter.hit(item, scope, account):
                refused = item
                break
        if refused is None:
            remaining = min(
                self._limiter.get_window_stats(item, scope, account).remaining
                for item in self._items
            )
            return RateLimitDecision(
                allowed=True, limit=self.limit, remaining=remaining, retry_after=0
            )
        stats = self._limiter.get_window_stats(refused, scope, account)
        retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        logger.info("rate limit %s hit by %s on %s", refused, account, scope)
        return RateLimitDecision(
            allowed=False, limit=str(refused), remaining=0, retry_after=retry_after
        )

    def check(self, account: str, scope: str = "default") -> RateLimitDecision:
        """:meth:`hit`, raising :class:`RateLimitedError` when refused."""
        decision = self.hit(account, scope)
        if not decision.allowed:
            raise RateLimitedError(decision.limit, decision.retry_after)
        return decision

    def reset(self, account: str, scope: str = "default") -> None:
        """Forget an account's counts on a scope (tests, support tooling)."""
        for item in self._items:
            self._limiter.clear(item, scope, account)
