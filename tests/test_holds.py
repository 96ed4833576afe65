"""Holds for metered work: reserve, settle, release, expiry, on every backend and mode."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from conftest import ledger_sum
from sparked_credits import (
    AsyncCreditsClient,
    CreditsClient,
    EntryType,
    HoldExpiredError,
    HoldNotFoundError,
    HoldOverageError,
    HoldState,
    IdempotencyConflictError,
    InsufficientCreditsError,
    RefundError,
)

ACCT = "user_2abc"


def test_reserve_then_settle_partially(client: Any) -> None:
    client.initialize_user(ACCT, 5000)
    hold = client.reserve(ACCT, 3000, action="model_training", ttl=timedelta(hours=2))
    assert hold.state is HoldState.OPEN
    assert hold.amount == 3000
    assert hold.balance == 2000 == client.get_balance(ACCT)
    assert hold.entry.type is EntryType.RESERVE
    assert hold.entry.delta == -3000
    assert hold.expires_at is not None
    assert timedelta(minutes=119) < hold.expires_at - datetime.now(timezone.utc) < timedelta(
        minutes=121
    )
    settled = client.settle(ACCT, hold.hold_id, 1250)
    assert settled.entry.type is EntryType.SETTLE
    assert settled.entry.delta == 1750  # the rest comes back
    assert settled.entry.ref == hold.hold_id
    assert settled.entry.action == "model_training"
    assert settled.balance == 3750 == client.get_balance(ACCT) == ledger_sum(client, ACCT)


def test_settle_is_once_per_hold(client: Any) -> None:
    client.initialize_user(ACCT, 5000)
    hold = client.reserve(ACCT, 3000, action="model_training")
    outcomes = [client.settle(ACCT, hold.hold_id, 2000) for _ in range(3)]  # webhook x3
    assert [o.replayed for o in outcomes] == [False, True, True]
    assert {o.entry.id for o in outcomes} == {outcomes[0].entry.id}
    assert client.get_balance(ACCT) == 3000
    with pytest.raises(IdempotencyConflictError):
        client.settle(ACCT, hold.hold_id, 2500)  # a different amount for the same hold
    with pytest.raises(HoldNotFoundError) as info:
        client.release(ACCT, hold.hold_id)
    assert info.value.state == "settled"
    assert client.get_balance(ACCT) == 3000 == ledger_sum(client, ACCT)


def test_release_gives_everything_back_once(client: Any) -> None:
    client.initialize_user(ACCT, 100)
    hold = client.reserve(ACCT, 60, action="video_generation")
    assert client.get_balance(ACCT) == 40
    released = client.release(ACCT, hold.hold_id, reason="generation failed")
    assert released.entry.type is EntryType.RELEASE
    assert released.entry.delta == 60
    assert client.release(ACCT, hold.hold_id).replayed is True
    with pytest.raises(HoldNotFoundError) as info:
        client.settle(ACCT, hold.hold_id, 10)
    assert info.value.state == "released"
    assert client.get_balance(ACCT) == 100 == ledger_sum(client, ACCT)


def test_unknown_hold(client: Any) -> None:
    client.initialize_user(ACCT)
    with pytest.raises(HoldNotFoundError) as info:
        client.settle(ACCT, "1700000000000-0", 1)
    assert info.value.state is None
    assert client.get_balance(ACCT) == 100


def test_overage(client: Any) -> None:
    client.initialize_user(ACCT, 100)
    hold = client.reserve(ACCT, 50, action="model_training")
    with pytest.raises(HoldOverageError) as info:
        client.settle(ACCT, hold.hold_id, 70)
    assert (info.value.reserved, info.value.actual) == (50, 70)
    assert client.get_balance(ACCT) == 50
    result = client.settle(ACCT, hold.hold_id, 70, allow_overage=True)
    assert result.entry.delta == -20
    assert client.get_balance(ACCT) == 30 == ledger_sum(client, ACCT)


def test_overage_never_overdraws(client: Any) -> None:
    client.initialize_user(ACCT, 100)
    hold = client.reserve(ACCT, 90, action="model_training")
    with pytest.raises(InsufficientCreditsError) as info:
        client.settle(ACCT, hold.hold_id, 200, allow_overage=True)
    assert (info.value.balance, info.value.required) == (10, 110)
    assert client.get_balance(ACCT) == 10
    assert client.settle(ACCT, hold.hold_id, 100, allow_overage=True).balance == 0


def test_reserve_short_writes_nothing(client: Any) -> None:
    client.initialize_user(ACCT, 40)
    with pytest.raises(InsufficientCreditsError) as info:
        client.reserve(ACCT, 600, action="video_generation")
    assert (info.value.balance, info.value.required) == (40, 600)
    assert len(client.history(ACCT).entries) == 1


def test_reserve_is_idempotent(client: Any) -> None:
    client.initialize_user(ACCT, 1000)
    first = client.reserve(ACCT, 300, action="model_training", idempotency_key="job-7")
    again = client.reserve(ACCT, 300, action="model_training", idempotency_key="job-7")
    assert again.replayed is True
    assert again.hold_id == first.hold_id
    assert again.state is HoldState.OPEN
    assert client.get_balance(ACCT) == 700
    client.settle(ACCT, first.hold_id, 100)
    assert client.reserve(
        ACCT, 300, action="model_training", idempotency_key="job-7"
    ).state is HoldState.SETTLED


def test_expired_hold_returns_on_next_touch(client: Any) -> None:
    client.initialize_user(ACCT, 100)
    hold = client.reserve(ACCT, 70, action="model_training", ttl=0.2)
    assert client.get_balance(ACCT) == 30
    time.sleep(0.3)
    # A plain read changes nothing; the next script that touches the account returns it.
    assert client.get_balance(ACCT) == 30
    debit = client.debit(ACCT, 50, action="chat_message")
    assert debit.balance == 50
    types = [e.type for e in client.history(ACCT).entries]
    assert types[:2] == [EntryType.DEBIT, EntryType.EXPIRE]
    with pytest.raises(HoldExpiredError):
        client.settle(ACCT, hold.hold_id, 10)
    assert client.get_balance(ACCT) == 50 == ledger_sum(client, ACCT)


def test_settle_of_a_due_hold_is_refused_and_returned(client: Any) -> None:
    client.initialize_user(ACCT, 100)
    hold = client.reserve(ACCT, 70, action="model_training", ttl=0.1)
    time.sleep(0.2)
    with pytest.raises(HoldExpiredError):
        client.settle(ACCT, hold.hold_id, 10)
    assert client.get_balance(ACCT) == 100 == ledger_sum(client, ACCT)


def test_sweep_expired_returns_holds(make_client: Any) -> None:
    client = make_client()
    for acct in ("user_a", "user_b", "user_c"):
        client.initialize_user(acct, 100)
    client.reserve("user_c", 10, action="video_generation", ttl=3600)
    # A due hold is also returned by the next script on its account: the three of an
    # account are reserved well within their ttl, also on a loaded machine.
    for acct in ("user_a", "user_b", "user_c"):
        for _ in range(3):
            client.reserve(acct, 10, action="video_generation", ttl=1.0)
    time.sleep(1.1)
    assert client.sweep_expired("user_a") == 3
    assert client.get_balance("user_a") == 100
    assert client.sweep_expired() == 6  # user_b and user_c, found by SCAN
    assert client.get_balance("user_b") == 100
    assert client.get_balance("user_c") == 90  # the long hold stays
    assert client.sweep_expired() == 0
    for acct in ("user_a", "user_b", "user_c"):
        assert ledger_sum(client, acct) == client.get_balance(acct)


def test_many_due_holds_return_in_batches(client: Any) -> None:
    client.initialize_user(ACCT, 1000)
    started = time.monotonic()
    for _ in range(40):
        client.reserve(ACCT, 10, action="video_generation", ttl=3.0)
    assert time.monotonic() - started < 3.0, "too slow to test batching"
    time.sleep(3.1)
    assert client.sweep_expired(ACCT) == 40  # more than one script batch of 16
    expired = [e for e in client.history(ACCT, limit=100).entries if e.type is EntryType.EXPIRE]
    assert len(expired) == 40
    assert client.get_balance(ACCT) == 1000 == ledger_sum(client, ACCT)


def test_refund_of_a_settled_hold(client: Any) -> None:
    client.initialize_user(ACCT, 1000)
    hold = client.reserve(ACCT, 500, action="model_training")
    settle = client.settle(ACCT, hold.hold_id, 300).entry
    with pytest.raises(RefundError) as info:
        client.refund(ACCT, settle.id, amount=301)
    assert info.value.refundable == 300
    refund = client.refund(ACCT, settle.id)
    assert refund.entry.delta == 300
    assert client.get_balance(ACCT) == 1000 == ledger_sum(client, ACCT)
    with pytest.raises(RefundError):
        client.refund(ACCT, hold.hold_id)  # a reserve entry is not refundable


def test_hold_context_settles_on_success(redis_url: str) -> None:
    with CreditsClient(redis_url) as client:
        client.initialize_user(ACCT, 1000)
        with client.hold(ACCT, 600, action="video_generation") as h:
            assert client.get_balance(ACCT) == 400
            h.actual = 450
        assert h.closed
        assert h.result is not None
        assert client.get_balance(ACCT) == 550
        with client.hold(ACCT, 100, action="video_generation"):
            pass
        assert client.get_balance(ACCT) == 450  # settled in full
        with client.hold(ACCT, 100, action="video_generation") as h2:
            h2.settle(5)
        assert client.get_balance(ACCT) == 445 == ledger_sum(client, ACCT)


def test_hold_context_releases_on_failure(redis_url: str) -> None:
    with CreditsClient(redis_url) as client:
        client.initialize_user(ACCT, 1000)
        with pytest.raises(RuntimeError, match="GPU"), client.hold(
            ACCT, 600, action="video_generation"
        ) as h:
            raise RuntimeError("GPU on fire")
        assert h.result is not None
        assert h.result.entry.type is EntryType.RELEASE
        assert client.get_balance(ACCT) == 1000 == ledger_sum(client, ACCT)


def test_async_hold_context(redis_url: str) -> None:
    async def main() -> None:
        async with AsyncCreditsClient(redis_url) as client:
            await client.initialize_user(ACCT, 1000)
            async with client.hold(ACCT, 600, action="video_generation") as h:
                h.actual = 100
            assert await client.get_balance(ACCT) == 900
            with pytest.raises(ValueError, match="boom"):
                async with client.hold(ACCT, 600, action="video_generation"):
                    raise ValueError("boom")
            assert await client.get_balance(ACCT) == 900

    asyncio.run(main())
    with CreditsClient(redis_url) as client:
        assert ledger_sum(client, ACCT) == 900


def test_expiry_uses_server_time(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with CreditsClient(redis_url) as client:
        client.initialize_user(ACCT, 100)
        real = time.time()
        monkeypatch.setattr(time, "time", lambda: real + 86400 * 365)  # a client a year ahead
        hold = client.reserve(ACCT, 50, action="model_training", ttl=60)
        monkeypatch.undo()
        assert hold.expires_at is not None
        assert abs((hold.expires_at - datetime.now(timezone.utc)).total_seconds() - 60) < 5
        client.debit(ACCT, 1, action="chat_message")  # touches the account: nothing expires
        assert client.settle(ACCT, hold.hold_id, 10).balance == 89


def test_racing_settle_release_and_expiry(redis_url: str) -> None:
    """Many threads race to settle, release and expire the same holds: each hold closes
    exactly once, and the ledger adds up."""
    with CreditsClient(redis_url) as client:
        client.initialize_user(ACCT, 100_000)
        holds = [
            client.reserve(ACCT, 100, action="model_training", ttl=0.05 if i % 3 == 0 else 60)
            for i in range(60)
        ]
        time.sleep(0.1)

        def race(i: int) -> str:
            hold = holds[i % len(holds)]
            try:
                if i % 2:
                    client.settle(ACCT, hold.hold_id, 40, idempotency_key=f"s{i}")
                    return "settled"
                client.release(ACCT, hold.hold_id, idempotency_key=f"r{i}")
                return "released"
            except (HoldNotFoundError, HoldExpiredError) as exc:
                return type(exc).__name__

        with ThreadPoolExecutor(8) as pool:
            outcomes = list(pool.map(race, range(240)))
        client.sweep_expired(ACCT)
        entries = []
        cursor = None
        while True:
            page = client.history(ACCT, limit=1000, cursor=cursor)
            entries += page.entries
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
    closing = [e for e in entries if e.type in (EntryType.SETTLE, EntryType.RELEASE,
                                                 EntryType.EXPIRE)]
    assert len(closing) == 60  # every hold closed, none twice
    assert len({e.ref for e in closing}) == 60
    assert sum(1 for e in closing if e.type is EntryType.EXPIRE) == 20
    assert outcomes.count("settled") + outcomes.count("released") == 40
    running = 0
    for entry in reversed(entries):
        running += entry.delta
        assert entry.balance_after == running >= 0
    with CreditsClient(redis_url) as client:
        assert client.get_balance(ACCT) == running
