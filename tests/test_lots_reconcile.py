"""Credit lots in reconciliation, on real Redis (both server lines).

* The cheap checkpointed ``reconcile()`` checks the lots in the script that compares the
  balance: the summary adds up, no lot is negative, the lots hold no more than the ledger
  (an admin overdraft aside), the order and expiry indexes agree with the records. A
  corruption is reported (``lots_matched=False``, ``lots_problem``) and changes nothing
  without ``repair``; ``repair=True`` rebuilds the lots from the ledger.
* A trim keeps the lots as of its base beside base_sum/base_count, so the full repair
  rebuilds lots opened before the trim.
* Compensation entries of the full repair (a key applied twice, a hold closed twice) give
  back to, or take from, the lots the duplicate moved, and record it like any entry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import redis

from sparked_credits import CreditsClient
from sparked_credits._core.keys import AccountKeys, KeySpace
from sparked_credits._core.lots import SPAN, parse_record

ACCT = "user_recon"
KEYS = KeySpace().account(ACCT)
TOMORROW = datetime.now(timezone.utc) + timedelta(days=1)


@pytest.fixture
def client(raw_redis: redis.Redis) -> Iterator[CreditsClient]:
    port = raw_redis.connection_pool.connection_kwargs["port"]
    with CreditsClient(f"redis://127.0.0.1:{port}", app="app.sparked.world") as c:
        yield c


def grants(client: CreditsClient) -> list[tuple[str, int, int, str]]:
    """The open lots (id, remaining, amount, source), and the invariants."""
    lots = client.grants(ACCT)
    balance = client.get_balance(ACCT)
    assert balance == client.reconcile(ACCT, full=True).ledger_sum  # from the trim base on
    assert max(balance, 0) == sum(g.remaining for g in lots)
    return [(g.grant_id, g.remaining, g.amount, g.source) for g in lots]


def lots_state(raw: redis.Redis, keys: AccountKeys = KEYS) -> tuple[Any, ...]:
    """Every key a check-only pass must leave alone."""
    return (
        raw.hgetall(keys.lots),
        raw.zrange(keys.lot_order, 0, -1, withscores=True),
        raw.zrange(keys.lot_expiry, 0, -1, withscores=True),
        raw.get(keys.balance),
        raw.xrange(keys.ledger),
        raw.hgetall(keys.holds),
    )


def _setup(client: CreditsClient) -> dict[str, str]:
    """Four lots: promo (priority 10, expires tomorrow) drained, init partly spent, a
    never-expiring grant untouched, a referral (expires) untouched; a hold open."""
    client.initialize_user(ACCT)
    promo = client.credit(ACCT, 50, source="promo", priority=10, expires_at=TOMORROW)
    grant = client.credit(ACCT, 20, source="grant")
    referral = client.credit(ACCT, 15, source="referral", expires_at=TOMORROW, priority=60)
    client.debit(ACCT, 60, action="chat_message")  # promo 50, init 10
    client.reserve(ACCT, 5, action="video", ttl=600)  # init 5
    assert client.reconcile(ACCT).matched is True  # a checkpoint
    init = next(g.grant_id for g in client.grants(ACCT) if g.source == "init")
    return {"promo": promo.entry.id, "grant": grant.entry.id, "referral": referral.entry.id,
            "init": init}


def _rewrite_summary(raw: redis.Redis, tracked_delta: int = 0) -> None:
    """A summary consistent with the records (as lots_restore writes it), shifted by
    ``tracked_delta``."""
    records = {k.decode(): v.decode() for k, v in raw.hgetall(KEYS.lots).items() if k}
    lots = [parse_record(i, r) for i, r in records.items()]
    first = raw.zrange(KEYS.lot_order, 0, 0)
    soonest = raw.zrange(KEYS.lot_expiry, 0, 0, withscores=True)
    tracked = sum(lot.remaining for lot in lots) + tracked_delta
    head = first[0].decode() if first else ""
    summary = f"{tracked}|{int(soonest[0][1]) if soonest else ''}|"
    if head:
        summary += f"{head}|{records[head]}"
    raw.hset(KEYS.lots, "", summary)


def _set_remaining(raw: redis.Redis, lot_id: str, remaining: int) -> None:
    rec = raw.hget(KEYS.lots, lot_id)
    assert rec is not None
    raw.hset(KEYS.lots, lot_id, f"{remaining}|" + rec.decode().split("|", 1)[1])


def _order_score(raw: redis.Redis, lot_id: str) -> int:
    lot = parse_record(lot_id, (raw.hget(KEYS.lots, lot_id) or b"").decode())
    return lot.priority * SPAN + (SPAN - 1 if lot.expires_ms is None else lot.expires_ms)


Corruption = Callable[[redis.Redis, dict[str, str]], None]


def _tracked_off(raw: redis.Redis, ids: dict[str, str]) -> None:
    _rewrite_summary(raw, tracked_delta=7)


def _negative(raw: redis.Redis, ids: dict[str, str]) -> None:
    _set_remaining(raw, ids["promo"], -5)  # a drained lot below zero
    _rewrite_summary(raw)


def _over_balance(raw: redis.Redis, ids: dict[str, str]) -> None:
    _set_remaining(raw, ids["grant"], 80)  # 60 credits no entry brought
    _rewrite_summary(raw)


def _missing_from_order(raw: redis.Redis, ids: dict[str, str]) -> None:
    raw.zrem(KEYS.lot_order, ids["grant"])


def _drained_in_order(raw: redis.Redis, ids: dict[str, str]) -> None:
    raw.zadd(KEYS.lot_order, {ids["promo"]: _order_score(raw, ids["promo"])})


def _wrong_order_score(raw: redis.Redis, ids: dict[str, str]) -> None:
    raw.zadd(KEYS.lot_order, {ids["grant"]: 0})


def _missing_from_expiry(raw: redis.Redis, ids: dict[str, str]) -> None:
    raw.zrem(KEYS.lot_expiry, ids["referral"])


def _never_expiring_in_expiry(raw: redis.Redis, ids: dict[str, str]) -> None:
    raw.zadd(KEYS.lot_expiry, {ids["grant"]: 1})


def _wrong_head(raw: redis.Redis, ids: dict[str, str]) -> None:
    summary = (raw.hget(KEYS.lots, "") or b"").decode().split("|")
    rec = (raw.hget(KEYS.lots, ids["grant"]) or b"").decode()
    raw.hset(KEYS.lots, "", f"{summary[0]}|{summary[1]}|{ids['grant']}|{rec}")


def _unreadable(raw: redis.Redis, ids: dict[str, str]) -> None:
    raw.hset(KEYS.lots, ids["grant"], "twenty")


CORRUPTIONS: list[tuple[str, Corruption, str]] = [
    ("tracked_sum", _tracked_off, "tracked"),
    ("negative_lot", _negative, "negative"),
    ("more_than_the_balance", _over_balance, "over_balance"),
    ("open_lot_missing_from_order", _missing_from_order, "order"),
    ("drained_lot_in_order", _drained_in_order, "order"),
    ("order_score", _wrong_order_score, "order"),
    ("expiring_lot_missing_from_expiry", _missing_from_expiry, "expiry"),
    ("never_expiring_lot_in_expiry", _never_expiring_in_expiry, "expiry"),
    ("summary_head", _wrong_head, "summary"),
    ("unreadable_record", _unreadable, "record"),
]


@pytest.mark.parametrize(
    ("corrupt", "problem"), [(c, p) for _, c, p in CORRUPTIONS], ids=[n for n, _, _ in CORRUPTIONS]
)
def test_cheap_reconcile_checks_the_lots_and_repair_rebuilds_them(
    client: CreditsClient, raw_redis: redis.Redis, corrupt: Corruption, problem: str
) -> None:
    ids = _setup(client)
    before = grants(client)
    clean = client.reconcile(ACCT)
    assert (clean.matched, clean.lots_matched, clean.lots_problem) == (True, True, None)

    corrupt(raw_redis, ids)
    state = lots_state(raw_redis)
    cheap = client.reconcile(ACCT)
    assert (cheap.matched, cheap.full) == (True, False)  # the balance adds up
    assert (cheap.lots_matched, cheap.lots_problem, cheap.repaired) == (False, problem, False)
    assert lots_state(raw_redis) == state  # a check changes nothing
    full = client.reconcile(ACCT, full=True)
    assert (full.lots_matched, full.lots_problem, full.repaired) == (False, problem, False)
    assert lots_state(raw_redis) == state

    fixed = client.reconcile(ACCT, repair=True)
    assert (fixed.full, fixed.repaired, fixed.lots_matched) == (True, True, False)
    assert fixed.lots_rebuilt > 0
    assert grants(client) == before
    again = client.reconcile(ACCT)
    assert (again.matched, again.lots_matched, again.lots_problem) == (True, True, None)
    assert client.reconcile(ACCT, full=True).lots_matched is True


def test_reconcile_all_counts_lots_that_disagree(
    client: CreditsClient, raw_redis: redis.Redis
) -> None:
    ids = _setup(client)
    _missing_from_order(raw_redis, ids)
    report = client.reconcile_all([ACCT])
    assert (report.mismatched, report.lots_mismatched, report.unrepaired) == (0, 1, 1)
    assert report.clean is False
    fixed = client.reconcile_all([ACCT], repair=True)
    assert (fixed.repaired, fixed.unrepaired, fixed.clean) == (1, 0, True)
    assert client.reconcile_all([ACCT], full=True).clean is True


LEGACY_DEBIT = (Path(__file__).parent / "support" / "legacy" / "debit_before_lots.lua").read_text()


def test_credits_an_older_sdk_took_are_no_fault_and_an_overdraft_is_owed(
    client: CreditsClient, raw_redis: redis.Redis
) -> None:
    """Lots above the balance are a pending catch-up after an older SDK's debit (the latest
    entry that moved credits records no lots), and an admin overdraft leaves none."""
    _setup(client)
    legacy = raw_redis.register_script(LEGACY_DEBIT)
    reply = legacy(
        keys=list(KEYS.script_keys[:7]),
        args=["old-1", "fp", 60_000, "0", 100, "old", 40, "chat", "", ""],
    )
    assert reply[0] == b"ok", reply
    tracked = int((raw_redis.hget(KEYS.lots, "") or b"0").split(b"|")[0])
    assert tracked > int(raw_redis.get(KEYS.balance) or 0)  # not caught up yet
    for full in (False, True):
        result = client.reconcile(ACCT, full=full)
        assert (result.matched, result.lots_matched, result.lots_problem) == (True, True, None)

    client.adjust(ACCT, -500, allow_overdraft=True, reason="chargeback")
    assert client.get_balance(ACCT) < 0
    assert grants(client) == []
    for full in (False, True):
        result = client.reconcile(ACCT, full=full)
        assert (result.matched, result.lots_matched, result.lots_problem) == (True, True, None)
    client.credit(ACCT, 1000)  # pays the debt first
    assert client.reconcile(ACCT).lots_matched is True


def test_lots_deleted_are_found_by_the_full_pass(
    client: CreditsClient, raw_redis: redis.Redis
) -> None:
    """Without its lots an account that had no credits before lots holds credits no lot
    tracks: the cheap check finds it ('untracked'), and the full pass too."""
    _setup(client)
    before = grants(client)
    raw_redis.delete(KEYS.lots, KEYS.lot_order, KEYS.lot_expiry)
    assert client.reconcile(ACCT).lots_problem == "untracked"
    assert client.reconcile(ACCT, full=True).lots_problem == "untracked"
    fixed = client.reconcile(ACCT, full=True, repair=True)
    assert (fixed.lots_matched, fixed.repaired) == (False, True)
    assert grants(client) == before


def _old_debit(raw: redis.Redis, key: str, amount: int) -> None:
    """A debit by an SDK from before lots (it leaves the lots to catch up)."""
    reply = raw.register_script(LEGACY_DEBIT)(
        keys=list(KEYS.script_keys[:7]),
        args=[key, "fp", 60_000, "0", 100, "old", amount, "chat", "", ""],
    )
    assert reply[0] == b"ok", reply


def _trim_at_checkpoint(client: CreditsClient, raw: redis.Redis) -> int:
    assert client.reconcile(ACCT).matched is True
    ckpt = (raw.hget(KEYS.meta, "ckpt_id") or b"").decode()
    client.debit(ACCT, 1, action="chat_message")  # one entry after the checkpoint
    return client.trim_ledger(ACCT, before=ckpt).removed


def test_trim_keeps_the_lots_at_its_base_and_a_repair_rebuilds_them(
    client: CreditsClient, raw_redis: redis.Redis
) -> None:
    client.initialize_user(ACCT)
    promo = client.credit(ACCT, 50, source="promo", priority=10, expires_at=TOMORROW)
    client.credit(ACCT, 20, source="grant")
    spent = client.debit(ACCT, 60, action="video")  # promo 50, init 10
    client.refund(ACCT, spent.entry.id, amount=5)  # back to init (the last drawn)
    hold = client.reserve(ACCT, 8, action="video", ttl=600)
    client.settle(ACCT, hold.hold_id, 3)
    _old_debit(raw_redis, "old-1", 4)  # credits taken without lots: replay catches up
    later = client.debit(ACCT, 30, action="video")
    assert _trim_at_checkpoint(client, raw_redis) > 5
    assert raw_redis.xrange(KEYS.ledger, "-", promo.entry.id) == []  # the lot's entry is gone
    assert raw_redis.hget(KEYS.meta, "base_lots") is not None
    before = grants(client)
    clean = client.reconcile(ACCT, full=True)
    assert (clean.lots_matched, clean.lots_replayed, clean.lots_rebuilt) == (True, True, 0)

    for keys in ([KEYS.lots, KEYS.lot_order, KEYS.lot_expiry], [KEYS.lot_order]):
        raw_redis.delete(*keys)
        found = client.reconcile(ACCT, full=True)
        assert (found.lots_matched, found.lots_replayed, found.repaired) == (False, True, False)
        fixed = client.reconcile(ACCT, full=True, repair=True)
        assert (fixed.lots_matched, fixed.repaired) == (False, True)
        assert fixed.lots_rebuilt > 0
        assert grants(client) == before
        assert client.reconcile(ACCT, full=True).lots_matched is True

    # Credits given back after the trim to a lot opened before it, a second trim on top
    # of the first base, and a repair again.
    client.refund(ACCT, later.entry.id)
    client.credit(ACCT, 40, source="referral", expires_at=TOMORROW, priority=60)
    client.debit(ACCT, 45, action="video")
    assert _trim_at_checkpoint(client, raw_redis) > 0
    before = grants(client)
    assert client.reconcile(ACCT, full=True).lots_matched is True
    raw_redis.delete(KEYS.lots, KEYS.lot_order, KEYS.lot_expiry)
    client.reconcile(ACCT, repair=True, full=True)
    assert grants(client) == before
    again = client.reconcile(ACCT, full=True)
    assert (again.matched, again.lots_matched, again.lots_replayed) == (True, True, True)


def test_a_base_trimmed_without_lots_stays_unreplayed(
    client: CreditsClient, raw_redis: redis.Redis
) -> None:
    """A trim by an earlier version kept no lots at its base: the full pass cannot replay
    them (it checks what it can without the ledger), and later trims keep it so."""
    client.initialize_user(ACCT)
    client.credit(ACCT, 50, source="promo", priority=10)
    client.debit(ACCT, 20, action="video")
    _trim_at_checkpoint(client, raw_redis)
    raw_redis.hdel(KEYS.meta, "base_lots")
    result = client.reconcile(ACCT, full=True)
    assert (result.matched, result.lots_matched, result.lots_replayed) == (True, True, False)
    client.debit(ACCT, 5, action="video")
    _trim_at_checkpoint(client, raw_redis)
    assert raw_redis.hget(KEYS.meta, "base_lots") is None
    assert client.reconcile(ACCT, full=True).lots_replayed is False
    raw_redis.zrem(KEYS.lot_order, *raw_redis.zrange(KEYS.lot_order, 0, -1))
    assert client.reconcile(ACCT).lots_problem == "order"  # the cheap check still sees it


def test_trimmed_lots_replay_on_every_backend(make_client: Callable[..., Any]) -> None:
    """The trim script's replay of the lots (Lua) and the full pass's (Python) agree on
    every backend, sync and async."""
    c = make_client()
    c.initialize_user(ACCT)
    c.credit(ACCT, 50, source="promo", priority=10, expires_at=TOMORROW)
    spent = c.debit(ACCT, 70, action="video")
    c.refund(ACCT, spent.entry.id, amount=30)
    c.debit(ACCT, 5, action="video")
    first = c.reconcile(ACCT)
    assert (first.matched, first.lots_matched) == (True, True)
    c.debit(ACCT, 1, action="video")
    assert c.trim_ledger(ACCT, before=first.checkpoint_id).removed == 4
    full = c.reconcile(ACCT, full=True, repair=True)
    assert (full.matched, full.lots_matched, full.lots_replayed) == (True, True, True)
    assert full.lots_rebuilt == 0
    # promo 50 + init 100; -70 (promo 50, init 20); +30 (init 20, promo 10); -5; -1
    assert [(g.source, g.remaining) for g in c.grants(ACCT)] == [("promo", 4), ("init", 100)]


def test_a_trim_after_a_torn_trim_counts_nothing_twice(
    client: CreditsClient, raw_redis: redis.Redis
) -> None:
    """A trim whose XTRIM was lost (its base written): the next trim finishes it first, so
    neither the base sum nor the lots at the base count the entries twice."""
    client.initialize_user(ACCT)
    client.credit(ACCT, 50, source="promo", priority=10)
    client.debit(ACCT, 70, action="video")
    ledger = raw_redis.dump(KEYS.ledger)
    assert ledger is not None
    assert _trim_at_checkpoint(client, raw_redis) > 0
    # the torn prefix: the base is written, the entries are still there
    entries_after = raw_redis.xrange(KEYS.ledger)
    raw_redis.restore(KEYS.ledger, 0, ledger, replace=True)
    for eid, fields in entries_after:
        if not raw_redis.xrange(KEYS.ledger, eid, eid):
            raw_redis.xadd(KEYS.ledger, fields, id=eid)  # type: ignore[arg-type]
    ckpt = (raw_redis.hget(KEYS.meta, "ckpt_id") or b"").decode()
    client.trim_ledger(ACCT, before=ckpt)  # finishes the torn one
    assert raw_redis.xrange(KEYS.ledger, "-", "(" + ckpt) == []
    result = client.reconcile(ACCT, full=True)
    assert (result.matched, result.lots_matched, result.lots_replayed) == (True, True, True)
    assert result.ledger_sum == client.get_balance(ACCT) == 79  # 150 - 70 - 1


def test_an_account_with_many_drained_lots_reads_only_its_open_ones(
    client: CreditsClient, raw_redis: redis.Redis
) -> None:
    """Past 32 lots the cheap check reads the open lots and the summary only (drained lots
    keep their records forever); what goes wrong still shows."""
    ids = _setup(client)
    for _ in range(40):
        client.credit(ACCT, 1, source="promo", priority=0)
        client.debit(ACCT, 1, action="chat_message")
    assert raw_redis.hlen(KEYS.lots) > 40
    before = grants(client)
    assert client.reconcile(ACCT).lots_matched is True
    for corrupt, problem in ((_missing_from_order, "tracked"), (_wrong_order_score, "order"),
                             (_missing_from_expiry, "expiry"), (_wrong_head, "summary"),
                             (_tracked_off, "tracked"), (_over_balance, "over_balance")):
        corrupt(raw_redis, ids)
        state = lots_state(raw_redis)
        cheap = client.reconcile(ACCT)
        assert (cheap.lots_matched, cheap.lots_problem) == (False, problem)
        assert lots_state(raw_redis) == state
        fixed = client.reconcile(ACCT, repair=True)
        assert (fixed.repaired, fixed.lots_matched) == (True, False)
        assert grants(client) == before
        assert client.reconcile(ACCT).lots_matched is True
