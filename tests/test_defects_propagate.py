"""A TypeError or AttributeError raised inside the SDK or a client library is a defect,
not a failure of the store: it propagates as it is, never wrapped in a BackendError whose
``retry_safe`` invites the caller to repeat it (backends/recovery.py, ``BUGS``), and it is
not re-sent. A connection failure is still a BackendError."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from conftest import AsyncFacade
from sparked_credits import AsyncCreditsClient, CreditsClient
from sparked_credits._core.requests import ScriptCall
from sparked_credits.backends.errors import translate
from sparked_credits.backends.recovery import Failure, GaveUp, recover
from sparked_credits.errors import BackendError

ACCT = "user_defect"


def _classify(exc: BaseException) -> Failure:
    return Failure(str(exc), may_have_applied=True, transient=True)


@pytest.mark.parametrize("bug", [TypeError("bad"), AttributeError("gone"), NameError("x")])
def test_recover_raises_a_defect_at_once(bug: Exception) -> None:
    steps = recover(bug, ("GET", "k"), _classify, retries=5)
    with pytest.raises(type(bug)) as raised:
        next(steps)
    assert raised.value is bug


def test_recover_raises_a_defect_met_on_a_retry() -> None:
    steps = recover(ConnectionError("reset"), ("GET", "k"), _classify, retries=5)
    next(steps)  # the backoff sleep
    assert next(steps) == ("GET", "k")  # the re-send
    bug = TypeError("a library changed its signature")
    with pytest.raises(TypeError) as raised:
        steps.throw(bug)
    assert raised.value is bug


def _debit_op(client: CreditsClient) -> Any:
    return client._ops.debit(ACCT, 1, action="chat_message")


def test_translate_never_wraps_a_defect() -> None:
    with CreditsClient("memory://defects") as client:
        op = _debit_op(client)
        assert isinstance(op.request, ScriptCall)
        for bug in (TypeError("t"), AttributeError("a")):
            with pytest.raises(type(bug)):
                translate(bug, op, _classify)
        # A GaveUp summing up connection failures still becomes a BackendError.
        gave_up = GaveUp(Failure("lost", True, True))
        error, _ = translate(gave_up, op, _classify)
        assert isinstance(error, BackendError)
        assert error.retry_safe


class _Once:
    """Raises ``exc`` on the first call, then behaves as ``inner``."""

    def __init__(self, inner: Callable[..., Any], exc: Exception) -> None:
        self.inner, self.exc, self.calls = inner, exc, 0

    def __call__(self, *args: Any) -> Any:
        self.calls += 1
        if self.calls == 1:
            raise self.exc
        return self.inner(*args)


class _OnceAsync(_Once):
    async def __call__(self, *args: Any) -> Any:  # type: ignore[override]
        self.calls += 1
        if self.calls == 1:
            raise self.exc
        return await self.inner(*args)


def _backend(client: Any) -> Any:
    return client._client._backend if isinstance(client, AsyncFacade) else client._backend


def _break_first_send(client: Any, exc: Exception) -> _Once:
    """Make the backend's first send of a script raise ``exc``, where that backend sends
    it: ``_route`` for a cluster (the slot's primary), else ``_call``."""
    asyncio_ = isinstance(client, AsyncFacade)
    backend = _backend(client)
    name = "_call"
    if hasattr(backend, "_route"):
        name = "_route"
        backend._routes.clear()
    broken = (_OnceAsync if asyncio_ else _Once)(getattr(backend, name), exc)
    setattr(backend, name, broken)
    return broken


@pytest.mark.parametrize("bug", [TypeError, AttributeError])
def test_a_defect_in_a_backend_propagates_on_every_backend(
    make_client: Callable[..., Any], bug: type[Exception]
) -> None:
    client = make_client()
    client.initialize_user(ACCT, 100)
    _backend(client).retries = 3
    broken = _break_first_send(client, bug("raised inside the client library"))
    with pytest.raises(bug):
        client.debit(ACCT, 1, action="chat_message")
    assert broken.calls == 1  # not re-sent
    assert client.get_balance(ACCT) == 100  # nothing applied
    assert client.debit(ACCT, 1, action="chat_message").balance == 99
    # A connection failure, by contrast, is a BackendError that says retrying is safe.
    _backend(client).retries = 0
    _break_first_send(client, ConnectionResetError("reset by peer"))
    with pytest.raises(BackendError) as raised:
        client.debit(ACCT, 1, action="chat_message")
    assert raised.value.retry_safe
    assert client.get_balance(ACCT) == 99


def test_a_lane_defect_propagates_and_keeps_the_connection(redis_url: str) -> None:
    """The lane's own code raising a TypeError (as redis-py 5's ``get_connection`` did
    when called without a command name): the TypeError, not a BackendError."""
    with CreditsClient(redis_url, retries=3) as client:
        client.initialize_user(ACCT, 100)
        lanes = client._backend._call.__self__  # type: ignore[attr-defined]
        ready = lanes.ready
        lanes.ready = lambda conn, unexpected: None  # wrong arity: a TypeError
        with pytest.raises(TypeError):
            client.debit(ACCT, 1, action="chat_message")
        lanes.ready = ready
        assert len(lanes.idle) == 1  # the connection went back to the lane
        assert client.debit(ACCT, 1, action="chat_message").balance == 99


def test_an_async_lane_defect_propagates(redis_url: str) -> None:
    async def main() -> int:
        async with AsyncCreditsClient(redis_url, retries=3) as client:
            await client.initialize_user(ACCT, 100)
            lanes = client._backend._call.__self__  # type: ignore[attr-defined]
            ready = lanes.ready

            async def broken(conn: Any) -> None:
                raise AttributeError("'Connection' object has no attribute 'can_read'")

            lanes.ready = broken
            with pytest.raises(AttributeError):
                await client.debit(ACCT, 1, action="chat_message")
            lanes.ready = ready
            return (await client.debit(ACCT, 1, action="chat_message")).balance

    assert asyncio.run(main()) == 99
