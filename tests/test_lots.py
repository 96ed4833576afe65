"""Credit lots through the public API, on every backend, sync and async.

After every call the invariants hold: balance == sum of ledger deltas == sum of
``remaining`` over ``grants()``, and no lot is negative. Expiry is Redis server time, so the
tests give lots a short life and wait it out.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import redis

from conftest import ledger_sum
from sparked_credits import CreditsClient, EntryType, InsufficientCreditsError
from sparked_credits._core.keys import KeySpace
from sparked_credits._core.lots import IMPLICIT, decode_draws

ACCT = "user_lots"
LIFE = 1.2  # seconds a short-lived lot lives


def check(client: Any, account: str = ACCT) -> list[Any]:
    """The invariants; returns grants()."""
    lots = client.grants(account)
    balance = client.get_balance(account)
    assert balance == ledger_sum(client, account)
    # An admin overdraft is owed, not a lot: nothing is open until a new lot pays it off.
    assert max(balance, 0) == sum(g.remaining for g in lots), lots
    assert all(g.remaining > 0 for g in lots)
    return lots


def soon(seconds: float = LIFE) -> datetime:
    return datetime.now(timezone.utc) + timedelta(seconds=seconds)


def wait_past(moment: datetime) -> None:
    time.sleep(max(0.0, (moment - datetime.now(timezone.utc)).total_seconds()) + 0.15)


def test_promotional_grant_is_spent_first_and_lapses_with_its_own_entry(client: Any) -> None:
    client.initialize_user(ACCT)
    expires = soon()
    promo = client.credit(ACCT, 50, source="promo", expires_at=expires)
    lots = check(client)
    assert [(g.source, g.remaining) for g in lots] == [("promo", 50), ("init", 100)]
    assert lots[0].grant_id == promo.entry.id
    assert lots[0].expires_at is not None
    assert abs((lots[0].expires_at - expires).total_seconds()) < 0.002
    assert (lots[0].priority, lots[0].amount) == (50, 50)

    spent = client.debit(ACCT, 30, action="chat_message")
    assert decode_draws(spent.entry.lots) == [(promo.entry.id, 30)]
    assert [(g.source, g.remaining) for g in check(client)] == [("promo", 20), ("init", 100)]

    wait_past(expires)
    lots = check(client)  # grants() expires what is due first
    assert [(g.source, g.remaining) for g in lots] == [("init", 100)]
    lapsed = client.history(ACCT, types=[EntryType.LOT_EXPIRE]).entries
    assert [(e.delta, e.ref, e.action) for e in lapsed] == [(-20, promo.entry.id, "promo")]
    assert client.get_balance(ACCT) == 100
    assert client.usage(ACCT, days=1).total == 30  # the lapse is not usage

    # A refund after expiry gives the 30 back to the promo lot, which lapses at once.
    refund = client.refund(ACCT, spent.entry.id)
    assert decode_draws(refund.entry.lots) == [(promo.entry.id, 30)]
    lots = check(client)
    assert [(g.source, g.remaining) for g in lots] == [("init", 100)]
    lapsed = client.history(ACCT, types=[EntryType.LOT_EXPIRE]).entries
    assert [e.delta for e in lapsed] == [-30, -20]
    assert client.get_balance(ACCT) == 100
    assert client.usage(ACCT, days=1).total == 0


def test_consumption_order_and_one_entry_per_debit(client: Any) -> None:
    client.initialize_user(ACCT)  # 100, never expires, priority 50
    far = datetime.now(timezone.utc) + timedelta(days=30)
    near = datetime.now(timezone.utc) + timedelta(days=2)
    late = client.credit(ACCT, 10, source="referral", expires_at=far)
    early = client.credit(ACCT, 10, source="subscription", expires_at=near)
    first = client.credit(ACCT, 10, source="purchase", priority=10)
    last = client.credit(ACCT, 10, source="grant", priority=90)
    lots = check(client)
    assert [g.source for g in lots] == ["purchase", "subscription", "referral", "init", "grant"]
    before = len(client.history(ACCT, limit=100).entries)
    result = client.debit(ACCT, 125, action="training")
    assert len(client.history(ACCT, limit=100).entries) == before + 1
    init_id = lots[3].grant_id
    assert decode_draws(result.entry.lots) == [
        (first.entry.id, 10),
        (early.entry.id, 10),
        (late.entry.id, 10),
        (init_id, 95),
    ]
    assert [(g.source, g.remaining) for g in check(client)] == [("init", 5), ("grant", 10)]
    assert last.entry.id == check(client)[1].grant_id
    with pytest.raises(InsufficientCreditsError):
        client.debit(ACCT, 16, action="training")
    check(client)


def test_partial_refunds_unwind_last_drawn_first(client: Any) -> None:
    client.initialize_user(ACCT, 20)
    promo = client.credit(ACCT, 20, source="promo", priority=0)
    spent = client.debit(ACCT, 30, action="video")  # 20 from promo, 10 from init
    client.refund(ACCT, spent.entry.id, amount=5)  # back to init first
    assert [(g.source, g.remaining) for g in check(client)] == [("init", 15)]
    second = client.refund(ACCT, spent.entry.id, amount=10)  # 5 to init, 5 to promo
    init_id = client.history(ACCT, types=["init"]).entries[0].id
    assert decode_draws(second.entry.lots) == [(init_id, 5), (promo.entry.id, 5)]
    assert [(g.source, g.remaining) for g in check(client)] == [("promo", 5), ("init", 20)]


def test_holds_remember_their_lots(client: Any) -> None:
    client.initialize_user(ACCT, 100)
    promo = client.credit(ACCT, 40, source="promo", priority=0)
    hold = client.reserve(ACCT, 60, action="training", ttl=600)
    assert decode_draws(hold.entry.lots)[0] == (promo.entry.id, 40)
    assert [(g.source, g.remaining) for g in check(client)] == [("init", 80)]
    settled = client.settle(ACCT, hold.hold_id, 30)  # keeps 30: promo 30, gives back 30
    assert [(g.source, g.remaining) for g in check(client)] == [("promo", 10), ("init", 100)]
    assert settled.balance == 110
    client.refund(ACCT, settled.entry.id)  # the 30 kept go back to promo
    assert [(g.source, g.remaining) for g in check(client)] == [("promo", 40), ("init", 100)]
    other = client.reserve(ACCT, 50, action="training", ttl=600)
    client.release(ACCT, other.hold_id)
    assert [(g.source, g.remaining) for g in check(client)] == [("promo", 40), ("init", 100)]
    short = client.reserve(ACCT, 50, action="training", ttl=0.3)
    time.sleep(0.45)
    assert [(g.source, g.remaining) for g in check(client)] == [("promo", 40), ("init", 100)]
    assert client.history(ACCT, limit=1).entries[0].ref == short.hold_id


def test_hold_given_back_after_its_lot_expired(client: Any) -> None:
    client.initialize_user(ACCT, 10)
    expires = soon()
    client.credit(ACCT, 20, source="promo", expires_at=expires)
    hold = client.reserve(ACCT, 25, action="training", ttl=600)  # 20 promo + 5 init
    wait_past(expires)
    client.release(ACCT, hold.hold_id)  # the promo's 20 lapse at once, init gets its 5
    assert [(g.source, g.remaining) for g in check(client)] == [("init", 10)]
    lapsed = client.history(ACCT, types=[EntryType.LOT_EXPIRE]).entries
    assert [e.delta for e in lapsed] == [-20]


def test_adjust_opens_or_draws_and_an_overdraft_is_owed(client: Any) -> None:
    client.initialize_user(ACCT, 10)
    client.adjust(ACCT, 5, reason="goodwill")
    assert [(g.source, g.remaining) for g in check(client)] == [("init", 10), ("adjust", 5)]
    client.adjust(ACCT, -12)
    assert [(g.source, g.remaining) for g in check(client)] == [("adjust", 3)]
    client.adjust(ACCT, -10, allow_overdraft=True)
    assert client.get_balance(ACCT) == -7
    assert check(client) == []
    promo = client.credit(ACCT, 20, source="promo", priority=80)
    lots = check(client)
    assert [(g.grant_id, g.amount, g.remaining) for g in lots] == [(promo.entry.id, 20, 13)]


def test_replay_of_a_grant_opens_one_lot(client: Any) -> None:
    client.initialize_user(ACCT)
    expires = datetime.now(timezone.utc) + timedelta(days=1)
    one = client.credit(ACCT, 7, expires_at=expires, idempotency_key="g1")
    two = client.credit(ACCT, 7, expires_at=expires, idempotency_key="g1")
    assert two.replayed
    assert two.entry.id == one.entry.id
    assert [g.remaining for g in check(client)] == [7, 100]


def test_account_from_before_lots_is_the_implicit_lot(raw_redis: redis.Redis) -> None:
    """Balance and ledger written before lots (or by the TypeScript SDK) stay spendable."""
    url = raw_redis.connection_pool.connection_kwargs
    client = CreditsClient(f"redis://127.0.0.1:{url['port']}", app="app.sparked.world")
    raw_redis.xadd(
        "txs:old_user",
        {"type": "credit", "delta": "40", "balance": "40", "action": "signup", "app": "ts",
         "reason": "", "ref": "", "idem": "", "meta": ""},
    )
    raw_redis.set("balance:old_user", 40)
    lots = check(client, "old_user")
    assert [(g.grant_id, g.remaining, g.source) for g in lots] == [(IMPLICIT, 40, "untracked")]
    promo = client.credit("old_user", 10, source="promo", priority=90)
    spent = client.debit("old_user", 15, action="chat_message")
    assert decode_draws(spent.entry.lots) == [(promo.entry.id, 10), (IMPLICIT, 5)]
    assert [g.remaining for g in client.grants("old_user")] == [35]
    client.close()


LEGACY_DEBIT = (Path(__file__).parent / "support" / "legacy" / "debit_before_lots.lua").read_text()


@pytest.mark.parametrize("hash_tags", [False, True])
def test_mixed_fleet_old_debit_between_new_calls(raw_redis: redis.Redis, hash_tags: bool) -> None:
    """An older SDK process's debit (today's script, without lots) lands between new-format
    calls: the lots catch up in consumption order and every invariant still holds."""
    port = raw_redis.connection_pool.connection_kwargs["port"]
    client = CreditsClient(f"redis://127.0.0.1:{port}", app="new", hash_tags=hash_tags)
    keys = KeySpace(hash_tags=hash_tags).account(ACCT)
    legacy = raw_redis.register_script(LEGACY_DEBIT)
    counter = iter(range(1000))

    def old_debit(amount: int) -> None:
        reply = legacy(
            keys=list(keys.script_keys[:7]),
            args=[f"old-{next(counter)}", "fp", 60_000, "0", 100, "old", amount, "chat", "", ""],
        )
        assert reply[0] == b"ok", reply

    client.initialize_user(ACCT)
    promo = client.credit(ACCT, 30, source="promo", priority=10)
    old_debit(20)  # lots untouched: 30 promo + 100 init tracked, balance 110
    lots = check(client)  # grants() shows the catch-up: the 20 came off the promo lot
    assert [g.remaining for g in lots] == [10, 100]
    assert lots[0].grant_id == promo.entry.id
    client.debit(ACCT, 15, action="chat")  # catches up, then draws: promo 10, init 5
    assert [g.remaining for g in check(client)] == [95]
    old_debit(50)
    hold = client.reserve(ACCT, 10, action="video", ttl=600)
    assert [g.remaining for g in check(client)] == [35]
    client.release(ACCT, hold.hold_id)
    old_debit(45)
    assert [g.remaining for g in check(client)] == []
    client.credit(ACCT, 5)
    assert [g.remaining for g in check(client)] == [5]
    assert client.reconcile(ACCT).matched
    full = client.reconcile(ACCT, full=True)  # a full pass replays the lots too
    assert (full.matched, full.lots_matched, full.lots_rebuilt) == (True, True, 0)
    client.close()


def test_full_reconcile_checks_and_rebuilds_lots(raw_redis: redis.Redis) -> None:
    port = raw_redis.connection_pool.connection_kwargs["port"]
    client = CreditsClient(f"redis://127.0.0.1:{port}", app="app.sparked.world")
    client.initialize_user(ACCT)
    tomorrow = datetime.now(timezone.utc) + timedelta(days=1)
    client.credit(ACCT, 50, source="promo", expires_at=tomorrow, priority=20)
    spent = client.debit(ACCT, 70, action="video")
    client.refund(ACCT, spent.entry.id, amount=30)
    hold = client.reserve(ACCT, 25, action="video", ttl=600)
    client.settle(ACCT, hold.hold_id, 10)
    before = check(client)
    clean = client.reconcile(ACCT, full=True)
    assert (clean.lots_matched, clean.lots_rebuilt) == (True, 0)

    keys = KeySpace().account(ACCT)
    raw_redis.delete(keys.lots, keys.lot_order)  # derived state lost
    found = client.reconcile(ACCT, full=True)
    assert (found.matched, found.lots_matched, found.repaired) == (True, False, False)
    fixed = client.reconcile(ACCT, full=True, repair=True)
    assert (fixed.lots_matched, fixed.lots_rebuilt, fixed.repaired) == (False, 2, True)
    assert check(client) == before
    assert client.reconcile(ACCT, full=True).lots_matched is True
    client.close()


def test_cli_grant_with_expiry_and_grants(redis_url: str) -> None:
    import json
    import subprocess
    import sys

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "sparked_credits", "--url", redis_url, *args],
            capture_output=True, text=True, timeout=60, check=False, env={"COLUMNS": "200"},
        )

    with CreditsClient(redis_url, app="app.sparked.world") as client:
        client.initialize_user(ACCT)
    out = run("grant", ACCT, "50", "--source", "promo", "--priority", "10",
              "--expires-at", "2999-01-01T00:00:00+0000")
    assert out.returncode == 0, out.stderr
    out = run("grants", ACCT)
    assert out.returncode == 0, out.stderr
    assert "promo" in out.stdout
    assert "2999-01-01 00:00:00" in out.stdout
    assert "total: 150 credits" in out.stdout
    rows = json.loads(run("grants", ACCT, "--json").stdout)
    assert [(r["source"], r["remaining"], r["priority"]) for r in rows] == [
        ("promo", 50, 10),
        ("init", 100, 50),
    ]
    assert rows[0]["expires_at"].startswith("2999-01-01T00:00:00")
    bad = run("grant", ACCT, "5", "--expires-at", "2000-01-01T00:00:00+0000")
    assert bad.returncode == 2
    assert "expires_at" in bad.stderr
