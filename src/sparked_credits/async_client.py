"""The asyncio client: the same methods and signatures as CreditsClient, awaited."""

from __future__ import annotations

from types import TracebackType
from typing import Any, TypeVar

from ._client_base import ClientBase
from .backends import AsyncBackend, open_async_backend
from .backends.errors import translate
from .models import HistoryPage, InitResult, MutationResult
from .options import ClientOptions
from .requests import Operation

__all__ = ["AsyncCreditsClient"]

T = TypeVar("T")


class AsyncCreditsClient(ClientBase):
    """A shared, prepaid credit balance per account, kept in Redis.

    The asyncio twin of :class:`CreditsClient`; every method is awaited.
    """

    _backend: AsyncBackend

    def _open_backend(self, url: str, options: ClientOptions) -> AsyncBackend:
        return open_async_backend(url, retries=options.retries)

    async def _run(self, op: Operation[T]) -> T:
        try:
            raw = await self._backend.execute(op.request)
        except Exception as exc:
            raise translate(exc, op) from exc
        return op.decode(raw)

    async def initialize_user(
        self, account: str, credits: int | None = None, *, reason: str | None = None
    ) -> InitResult:
        """Give a new account its starting credits, once ever; later calls change nothing
        and return ``created=False``. ``credits`` defaults to the client's default_credits."""
        return await self._run(self._ops.initialize_user(account, credits, reason))

    async def get_balance(self, account: str) -> int:
        """The balance (one GET). A never-initialized account reads as 0, or as
        default_credits when auto_initialize is on."""
        return await self._run(self._ops.get_balance(account))

    async def debit(
        self,
        account: str,
        amount: int,
        *,
        action: str,
        reason: str | None = None,
        metadata: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> MutationResult:
        """Take ``amount`` credits for ``action``; InsufficientCreditsError (nothing written)
        when the balance is short."""
        return await self._run(
            self._ops.debit(account, amount, action, reason, metadata, idempotency_key)
        )

    async def credit(
        self,
        account: str,
        amount: int,
        *,
        source: str | None = None,
        reason: str | None = None,
        metadata: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> MutationResult:
        """Add ``amount`` credits (admin grant, purchase, referral: say which in ``source``)."""
        return await self._run(
            self._ops.credit(account, amount, source, reason, metadata, idempotency_key)
        )

    async def refund(
        self,
        account: str,
        entry_id: str,
        *,
        amount: int | None = None,
        reason: str | None = None,
        metadata: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> MutationResult:
        """Give back a debit, in full (default, once) or in parts never adding up to more
        than it took."""
        return await self._run(
            self._ops.refund(account, entry_id, amount, reason, metadata, idempotency_key)
        )

    async def adjust(
        self,
        account: str,
        delta: int,
        *,
        allow_overdraft: bool = False,
        action: str | None = None,
        reason: str | None = None,
        metadata: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> MutationResult:
        """A signed admin correction; may take the balance below zero only with
        ``allow_overdraft=True``."""
        return await self._run(
            self._ops.adjust(
                account, delta, allow_overdraft, action, reason, metadata, idempotency_key
            )
        )

    async def history(
        self, account: str, limit: int = 20, cursor: str | None = None
    ) -> HistoryPage:
        """One page of entries, newest first (one XREVRANGE); pass ``next_cursor`` on."""
        return await self._run(self._ops.history(account, limit, cursor))

    async def close(self) -> None:
        await self._backend.close()

    async def __aenter__(self) -> AsyncCreditsClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
