"""Holds as context managers: reserve on entry, settle on success, release on failure.

``with credits.hold(account, 600, action="video_generation") as hold:`` reserves; if the
block raises, the hold is released (the user gets every credit back) and the exception
goes on; if it finishes, the hold is settled at ``hold.actual`` (default: the whole
reservation) unless the block settled or released it itself.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Protocol, TypeVar

from ._core.operations import Extras, Operations
from ._core.steps import Steps
from .errors import HoldExpiredError
from .models import Hold, MutationResult

T = TypeVar("T")


class _Client(Protocol):
    """What a :class:`HoldContext` uses of :class:`~sparked_credits.CreditsClient`: named
    by shape, so this module sits below the clients instead of in a circle with them."""

    _ops: Operations

    @property
    def reserve(self) -> Callable[..., Hold]: ...
    @property
    def settle(self) -> Callable[..., MutationResult]: ...
    @property
    def release(self) -> Callable[..., MutationResult]: ...
    def _drive(self, steps: Steps[T]) -> T: ...


class _AsyncClient(Protocol):
    """What an :class:`AsyncHoldContext` uses of the asyncio client (see :class:`_Client`)."""

    _ops: Operations

    @property
    def reserve(self) -> Callable[..., Awaitable[Hold]]: ...
    @property
    def settle(self) -> Callable[..., Awaitable[MutationResult]]: ...
    @property
    def release(self) -> Callable[..., Awaitable[MutationResult]]: ...
    async def _drive(self, steps: Steps[T]) -> T: ...


__all__ = ["AsyncHoldContext", "HoldContext"]


class _HoldState:
    """What both context managers share: the reserve arguments and the exit decision."""

    def __init__(self, account: str, credits: int | None, reserve_options: dict[str, Any]) -> None:
        self.account = account
        self._credits = credits
        self._reserve_options = reserve_options
        self._hold: Hold | None = None
        self.closed = False
        self.actual: int | None = None
        """Credits to keep when the block ends normally; None keeps the whole reservation."""
        self.result: MutationResult | None = None
        """The settle or release outcome, once the hold is closed."""

    @property
    def hold(self) -> Hold:
        if self._hold is None:
            raise RuntimeError("the hold is reserved when the with-block is entered")
        return self._hold

    @property
    def hold_id(self) -> str:
        return self.hold.hold_id

    def _exit_steps(self, ops: Operations, failed: type[BaseException] | None) -> Steps[None]:
        """What leaving the block does, once for both twins: release the hold if the block
        raised (a hold that expired meanwhile already gave its credits back), else settle
        it at ``actual`` (default: all of it); nothing if the block closed it itself."""
        if self.closed or self._hold is None:
            return
        if failed is not None:
            try:
                reason = f"work failed: {failed.__name__}"
                self._closed_with(
                    (yield ops.release(self.account, self.hold_id, extras=Extras(reason=reason)))
                )
            except HoldExpiredError:
                self.closed = True  # its credits already went back
            return
        actual = self.hold.amount if self.actual is None else self.actual
        self._closed_with(
            (yield ops.settle(self.account, self.hold_id, actual, allow_overage=False))
        )

    def _closed_with(self, result: MutationResult) -> MutationResult:
        self.closed = True
        self.result = result
        return result


class HoldContext(_HoldState):
    """Returned by :meth:`CreditsClient.hold`."""

    def __init__(
        self,
        client: _Client,
        account: str,
        credits: int | None,
        reserve_options: dict[str, Any],
    ) -> None:
        super().__init__(account, credits, reserve_options)
        self._client = client

    def __enter__(self) -> HoldContext:
        self._hold = self._client.reserve(self.account, self._credits, **self._reserve_options)
        return self

    def settle(self, actual: int, **options: Any) -> MutationResult:
        """Keep ``actual`` credits now and give back the rest."""
        return self._closed_with(self._client.settle(self.account, self.hold_id, actual, **options))

    def release(self, **options: Any) -> MutationResult:
        """Give every reserved credit back now."""
        return self._closed_with(self._client.release(self.account, self.hold_id, **options))

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._client._drive(self._exit_steps(self._client._ops, exc_type))


class AsyncHoldContext(_HoldState):
    """Returned by :meth:`AsyncCreditsClient.hold`."""

    def __init__(
        self,
        client: _AsyncClient,
        account: str,
        credits: int | None,
        reserve_options: dict[str, Any],
    ) -> None:
        super().__init__(account, credits, reserve_options)
        self._client = client

    async def __aenter__(self) -> AsyncHoldContext:
        self._hold = await self._client.reserve(
            self.account, self._credits, **self._reserve_options
        )
        return self

    async def settle(self, actual: int, **options: Any) -> MutationResult:
        """Keep ``actual`` credits now and give back the rest."""
        return self._closed_with(
            await self._client.settle(self.account, self.hold_id, actual, **options)
        )

    async def release(self, **options: Any) -> MutationResult:
        """Give every reserved credit back now."""
        return self._closed_with(await self._client.release(self.account, self.hold_id, **options))

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._client._drive(self._exit_steps(self._client._ops, exc_type))
