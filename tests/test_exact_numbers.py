"""Exact numbers, on every backend, sync and async: ``get_balance`` never counts the
credits of a lot past its expiry (one read-only script, nothing written), and every
``MutationResult.balance`` is the balance after the whole call, with what lapsed in it
(``lapsed``) reported."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from typing import Any

import redis

from conftest import ledger_sum
from sparked_credits import CreditsClient, EntryType

ACCT = "user_exact"
LIFE = 0.4


def soon() -> datetime:
    return datetime.now(timezone.utc) + timedelta(seconds=LIFE)


def wait_past(moment: datetime) -> None:
    time.sleep(max(0.0, (moment - datetime.now(timezone.utc)).total_seconds()) + 0.1)


def test_balance_excludes_lapsed_lots_before_any_sweep(client: Any) -> None:
    client.initialize_user(ACCT)
    expires = soon()
    client.credit(ACCT, 25, source="promo", expires_at=expires)
    assert client.get_balance(ACCT) == 125
    wait_past(expires)
    entries = len(client.history(ACCT).entries)
    assert client.get_balance(ACCT) == 100  # the 125, before any sweep
    assert len(client.history(ACCT).entries) == entries  # a reader: nothing written
    assert client.get_balance("user_never") == 0
    # The next call lapses the lot first (its own entry), and says so.
    debit = client.debit(ACCT, 10, action="chat_message")
    assert (debit.balance, debit.lapsed, debit.entry.balance_after) == (90, 25, 90)
    again = client.debit(ACCT, 10, action="chat_message")
    assert (again.balance, again.lapsed) == (80, 0)
    assert client.get_balance(ACCT) == 80 == ledger_sum(client, ACCT)


def test_refund_release_settle_report_the_balance_after_the_lapse(client: Any) -> None:
    client.initialize_user(ACCT, 300)
    expires = soon()
    client.credit(ACCT, 40, source="promo", priority=10, expires_at=expires)
    spent = client.debit(ACCT, 30, action="chat_message")  # from the promo
    hold = client.reserve(ACCT, 10, action="video_generation")  # the promo's last 10
    other = client.reserve(ACCT, 0 + 5, action="video_generation")  # from the 300
    wait_past(expires)
    assert client.get_balance(ACCT) == 300 - 5 - 0  # the promo had nothing left
    refund = client.refund(ACCT, spent.entry.id)
    assert refund.entry.balance_after == 295 + 30
    assert (refund.balance, refund.lapsed) == (295, 30)  # the 340 vs 300
    assert refund.balance == client.get_balance(ACCT)
    released = client.release(ACCT, hold.hold_id)
    assert (released.balance, released.lapsed) == (client.get_balance(ACCT), 10)
    settled = client.settle(ACCT, other.hold_id, 2)
    assert (settled.balance, settled.lapsed) == (client.get_balance(ACCT), 0)
    assert settled.balance == settled.entry.balance_after == 298
    lapses = client.history(ACCT, types=[EntryType.LOT_EXPIRE]).entries
    assert sorted(e.delta for e in lapses) == [-30, -10]
    assert client.get_balance(ACCT) == ledger_sum(client, ACCT)
    replay = client.refund(ACCT, spent.entry.id)  # a replay: the first call's entry
    assert replay.replayed


def test_get_balance_is_one_round_trip(redis_url: str) -> None:
    with CreditsClient(redis_url) as credits:
        credits.initialize_user(ACCT)
        credits.credit(ACCT, 5, expires_at=soon())
        calls: list[Any] = []
        real = credits._backend.execute

        def counted(request: Any) -> Any:
            calls.append(request)
            return real(request)

        credits._backend.execute = counted  # type: ignore[method-assign]
        assert credits.get_balance(ACCT) == 105
        assert len(calls) == 1


def test_balance_after_an_older_sdk_took_credits_without_lots(raw_redis: redis.Redis,
                                                             redis_url: str) -> None:
    """An older SDK's debit (balance only) is charged to the lots in order by the next
    script, the expiring lot first: that lot then has nothing to lapse, and get_balance
    says what a sweep then leaves."""
    with CreditsClient(redis_url) as credits:
        credits.initialize_user(ACCT)
        expires = soon()
        credits.credit(ACCT, 25, source="promo", expires_at=expires, priority=10)
        raw_redis.decrby(f"balance:{ACCT}", 20)  # an older process's debit
        wait_past(expires)
        before = credits.get_balance(ACCT)
        credits.sweep_expired(ACCT)
        assert before == credits.get_balance(ACCT) == 100
