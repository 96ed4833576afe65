"""What the sync and async clients share: construction, options, the operation builders."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any, TypeVar

from ._core import reconciliation, transfers
from ._core.config import StorageConfig, archive_from_env, storage_from_env
from ._core.operations import Operations
from ._core.options import DEFAULT_IDEMPOTENCY_TTL, ClientOptions, RedisPath, make_options
from ._core.steps import Fanout, Steps
from .backends import Settings, kind_of
from .errors import ConfigurationError, CreditsError
from .pricing import PriceTable
from .reports import ReconcileReport, ReconcileResult

__all__ = ["TRANSFER_GRACE_SECONDS", "ClientBase", "now_ms"]

TRANSFER_GRACE_SECONDS = 60.0
"""How long a transfer's intent waits before recovery finishes or drops it: longer than
any call in flight (so recovery never races a transfer still running), far shorter than the
idempotency retention (so its keyed steps still replay)."""


def now_ms() -> int:
    """This machine's clock in ms: only the age of a transfer's intent uses it."""
    return int(time.time() * 1000)


C = TypeVar("C", bound="ClientBase")


class ClientBase(ABC):
    """Validates configuration once and holds the pure operation builders."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        default_credits: int = 100,
        app: str | None = None,
        auto_initialize: bool = False,
        key_prefix: str = "",
        hash_tags: bool | None = None,
        idempotency_ttl: timedelta = DEFAULT_IDEMPOTENCY_TTL,
        retries: int = 3,
        timeout: float = 5.0,
        pricing: PriceTable | None = None,
        redis_path: RedisPath = "auto",
        archive: str | None = None,
    ) -> None:
        scheme, kind = kind_of(url)
        if kind.needs_token:
            if not token:
                raise ConfigurationError(
                    f"{scheme}:// is the Upstash REST API and needs token= (the database's "
                    "UPSTASH_REDIS_REST_TOKEN)"
                )
        elif token is not None:
            raise ConfigurationError(f"token= is only used by Upstash URLs, not {scheme}://")
        if kind.cluster:
            # Every key of one script must hash to one slot; that is not optional here.
            if hash_tags is False:
                raise ConfigurationError(
                    "redis+cluster:// needs hash_tags=True (or leave it unset)"
                )
            hash_tags = True
        self.storage = StorageConfig(url=url, token=token)
        self.options: ClientOptions = make_options(
            default_credits=default_credits,
            app=app,
            auto_initialize=auto_initialize,
            key_prefix=key_prefix,
            hash_tags=bool(hash_tags),
            idempotency_ttl=idempotency_ttl,
            retries=retries,
            timeout=timeout,
            redis_path=redis_path,
        )
        if pricing is not None and not isinstance(pricing, PriceTable):
            raise ConfigurationError("pricing must be a PriceTable (see sparked_credits.pricing)")
        self._ops = Operations(self.options, pricing)
        # The PostgreSQL archive (sparked_credits.archive) that history and usage read on
        # into where Redis no longer holds entries; None: Redis only.
        self._archive = None if archive is None else self._open_archive(archive)
        self._backend = self._open_backend(
            url,
            Settings(
                retries=self.options.retries,
                timeout=self.options.timeout,
                token=token,
                redis_path=self.options.redis_path,
            ),
        )

    def calculate_cost(self, action: str, /, **usage: object) -> int:
        """What ``action`` costs for ``usage`` under this client's price table (no I/O),
        e.g. ``calculate_cost("model_training", gpu_hours=2.5)`` for a webhook's settle."""
        return self._ops.price_table().calculate_cost(action, **usage)

    def _reconcile_all(
        self,
        accounts: Iterable[str] | None,
        repair: bool,
        full: bool,
        concurrency: int,
        on_progress: Callable[[str], None] | None,
    ) -> Steps[ReconcileReport]:
        """reconcile_all as one procedure: find the accounts, then check them all at once
        (a Fanout: threads for the blocking client, tasks for the asyncio one)."""
        started = time.monotonic()
        if accounts is not None:
            ids = sorted(set(accounts))
        else:
            ids = yield from reconciliation.find_accounts(self._ops)
        recovered = yield from self._recover_transfers(
            None if accounts is None else ids, TRANSFER_GRACE_SECONDS
        )
        checks = tuple(self._check_account(a, repair, full, on_progress) for a in ids)
        outcomes = yield Fanout(checks, concurrency)
        found = dict(zip(ids, outcomes, strict=True))
        report = reconciliation.build_report(found, time.monotonic() - started)
        return report.model_copy(update={"transfers_recovered": recovered})

    def _recover_transfers(
        self, accounts: Iterable[str] | str | None, older_than: float
    ) -> Steps[int]:
        """Transfers interrupted between their steps, of the accounts given (None: all),
        finished or dropped (see ``_core.transfers``); returns how many."""
        older_than_ms = int(float(older_than) * 1000)
        if accounts is None or isinstance(accounts, str):
            done: int = yield from transfers.recover_transfers(
                self._ops, accounts, older_than_ms=older_than_ms, now_ms=now_ms()
            )
            return done
        total = 0
        for account in accounts:
            total += yield from transfers.recover_transfers(
                self._ops, account, older_than_ms=older_than_ms, now_ms=now_ms()
            )
        return total

    def _check_account(
        self,
        account: str,
        repair: bool,
        full: bool,
        on_progress: Callable[[str], None] | None,
    ) -> Steps[tuple[int, ReconcileResult] | CreditsError]:
        """One account of reconcile_all; its failure is its outcome, not raised."""
        outcome: tuple[int, ReconcileResult] | CreditsError
        try:
            outcome = yield from reconciliation.check_account(self._ops, account, repair, full)
        except CreditsError as exc:
            outcome = exc
        if on_progress is not None:
            on_progress(account)
        return outcome

    @abstractmethod
    def _open_backend(self, url: str, settings: Settings) -> Any:
        """The sync or async backend for ``url``."""

    @abstractmethod
    def _open_archive(self, url: str) -> Any:
        """The sync or async reader of the PostgreSQL archive at ``url``."""

    @classmethod
    def from_url(cls: type[C], url: str, **options: Any) -> C:
        """Same as calling the class with ``url``; options as keywords."""
        return cls(url, **options)

    @classmethod
    def from_env(cls: type[C], **options: Any) -> C:
        """Storage from ``UPSTASH_REDIS_URL``/``_TOKEN``, Upstash's ``_REST_`` names, or
        ``REDIS_URL``; raises ConfigurationError when none is set (an in-process store in
        production would give every worker its own balances). The archive, unless given,
        from ``SPARKED_CREDITS_ARCHIVE_URL``."""
        storage = storage_from_env()
        options.setdefault("archive", archive_from_env())
        return cls(storage.url, token=storage.token, **options)

    def __repr__(self) -> str:
        scheme = self.storage.url.split("://", 1)[0]
        return f"{type(self).__name__}({scheme}://..., app={self.options.app!r})"
