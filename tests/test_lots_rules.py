"""The credit lots rules a user can observe, each pinned on every backend, sync and async.

Found by tests written from the README alone (issue 23): lots opened in one millisecond,
a repair's compensation of a repeated credit, credits given back while an admin overdraft
is owed, generated idempotency keys before and after a repair, lots short of the balance
in the cheap reconcile, the year-3000 expiry bound; and the rules the README states for
overdrafts, overage settles, adjust lots, refused adjusts and full refunds after partial
ones.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from lots_support import account_keys, one_millisecond, raw, restore, snapshot
from sparked_credits._core.lots import decode_draws

ACCT = "user_lots"
TOMORROW = datetime.now(timezone.utc) + timedelta(days=1)


def id_key(entry_id: str) -> tuple[int, int]:
    """A stream id as numbers: ``<ms>-2`` before ``<ms>-10``."""
    ms, seq = entry_id.split("-")
    return int(ms), int(seq)


def open_lots(client: Any) -> list[tuple[str, int]]:
    """(source, remaining) of the open lots in spending order, after checking that the
    balance, the ledger and the lots agree (the full pass replays the ledger)."""
    lots = client.grants(ACCT)
    check = client.reconcile(ACCT, full=True)
    assert (check.matched, check.lots_matched, check.lots_problem) == (True, True, None)
    assert client.get_balance(ACCT) == check.ledger_sum
    assert max(check.ledger_sum, 0) == sum(g.remaining for g in lots)  # a debt is owed
    return [(g.source, g.remaining) for g in lots]


# -- 1. lots opened in the same millisecond ---------------------------------------------


def test_lots_opened_in_one_millisecond_are_spent_oldest_first(
    make_client: Callable[..., Any], backend_url: str
) -> None:
    client = make_client()
    last = client.credit(ACCT, 5, source="promo", priority=90).entry.id  # spent last
    with one_millisecond(client, backend_url, ACCT):
        ids = [client.credit(ACCT, 1).entry.id for _ in range(16)]
    assert len({i.split("-")[0] for i in ids}) == 1  # one millisecond, seq 1..16
    assert ids == sorted(ids, key=id_key)
    assert [g.grant_id for g in client.grants(ACCT)] == [*ids, last]
    debit = client.debit(ACCT, 4, action="chat")
    assert decode_draws(debit.entry.lots) == [(i, 1) for i in ids[:4]]
    assert [g.grant_id for g in client.grants(ACCT)] == [*ids[4:], last]
    # A reservation that spans the tie, and giving it back, keep the order too.
    hold = client.reserve(ACCT, 8, action="video", ttl=600)
    assert decode_draws(hold.entry.lots) == [(i, 1) for i in ids[4:12]]
    client.release(ACCT, hold.hold_id)
    assert [g.grant_id for g in client.grants(ACCT)] == [*ids[4:], last]
    client.debit(ACCT, 6, action="chat")
    assert [g.grant_id for g in client.grants(ACCT)] == [*ids[10:], last]
    assert open_lots(client) == [("grant", 1)] * 6 + [("promo", 5)]


# -- 2. a repair's compensation of a repeated credit ------------------------------------


def test_a_repeated_credit_is_taken_back_from_the_lot_it_repeated(
    make_client: Callable[..., Any],
) -> None:
    """A credit whose first attempt was torn after its entry (every derived key as before
    it) and whose retry applied again: the repair's compensation takes the repeat's own lot
    back, not the first lot in spending order."""
    client = make_client()
    client.initialize_user(ACCT, 100)
    client.credit(ACCT, 50, priority=10)
    saved = snapshot(client, ACCT)
    call = dict(source="promo", priority=90, idempotency_key="pay-1")
    first = client.credit(ACCT, 20, **call)
    restore(client, ACCT, saved)  # the torn first attempt: its entry alone survived
    again = client.credit(ACCT, 20, **call)
    assert again.replayed is False
    assert again.entry.id != first.entry.id
    fixed = client.reconcile(ACCT, full=True, repair=True)
    assert fixed.duplicates == 1  # (the repeat's lot record, lost with it, is rebuilt)
    (compensation,) = [
        e for e in client.history(ACCT, limit=50).entries if "repeats" in (e.reason or "")
    ]
    assert decode_draws(compensation.lots) == [(first.entry.id, 20)]
    assert client.get_balance(ACCT) == 170
    assert open_lots(client) == [("grant", 50), ("init", 100), ("promo", 20)]
    assert client.credit(ACCT, 20, **call).replayed is True
    assert client.reconcile(ACCT, full=True, repair=True).duplicates == 0


# -- 3. credits given back while an admin overdraft is owed ------------------------------


@pytest.mark.parametrize("give_back", ["refund", "release", "settle"])
def test_credits_given_back_pay_an_owed_overdraft_first(
    make_client: Callable[..., Any], give_back: str
) -> None:
    client = make_client()
    client.initialize_user(ACCT, 100)
    if give_back == "refund":
        taken = client.debit(ACCT, 5, action="chat")
    else:
        hold = client.reserve(ACCT, 5, action="video", ttl=600)
    client.adjust(ACCT, -150, allow_overdraft=True)  # -50 owed (-55 with the hold open)
    if give_back == "refund":
        back = client.refund(ACCT, taken.entry.id)
    elif give_back == "release":
        back = client.release(ACCT, hold.hold_id)
    else:
        back = client.settle(ACCT, hold.hold_id, 2)  # gives back 3
    owed = -back.balance
    assert owed == (52 if give_back == "settle" else 50)
    # The credits paid the debt: no lot holds anything while it is owed.
    assert decode_draws(back.entry.lots) == [("_", 3 if give_back == "settle" else 5)]
    assert client.grants(ACCT) == []
    cheap = client.reconcile(ACCT)
    assert (cheap.matched, cheap.lots_matched, cheap.lots_problem) == (True, True, None)
    assert open_lots(client) == []
    fixed = client.reconcile(ACCT, full=True, repair=True)
    assert (fixed.repaired, fixed.lots_rebuilt) == (False, 0)
    # The next lot pays off the rest first.
    client.credit(ACCT, owed + 10)
    assert open_lots(client) == [("grant", 10)]


# -- 4. idempotency keys: one rule before and after a repair -----------------------------


def _drop_records(client: Any) -> None:
    keys = account_keys(client, ACCT)
    raw(client, "DEL", keys.idempotency, keys.idempotency_previous)


def test_a_generated_key_replays_for_any_parameters_before_and_after_a_repair(
    make_client: Callable[..., Any],
) -> None:
    """A key the SDK made for one call stands for that call: a retry with it, from any
    app and with any parameters, returns the first outcome; a rebuilt record does the same."""
    client = make_client(app="app.sparked.world")
    other = make_client(app="canvas.sparked.world")
    client.initialize_user(ACCT, 100)
    first = client.debit(ACCT, 10, action="chat")
    key = first.entry.idempotency_key
    for rebuilt in (False, True):
        if rebuilt:
            _drop_records(client)
            assert client.reconcile(ACCT, full=True, repair=True).rebuilt >= 1
        for retry in (
            lambda: client.debit(ACCT, 10, action="chat", idempotency_key=key),
            lambda: other.debit(ACCT, 10, action="chat", idempotency_key=key),
            lambda: other.debit(ACCT, 99, action="video", idempotency_key=key),
        ):
            again = retry()
            assert (again.replayed, again.entry.id, again.balance) == (True, first.entry.id, 90)
        assert client.get_balance(ACCT) == 90


def test_a_callers_key_is_compared_by_what_the_call_is_before_and_after_a_repair(
    make_client: Callable[..., Any],
) -> None:
    from sparked_credits import IdempotencyConflictError

    client = make_client(app="app.sparked.world")
    other = make_client(app="canvas.sparked.world")
    client.initialize_user(ACCT, 100)
    first = client.debit(ACCT, 10, action="chat", idempotency_key="order-1")
    for rebuilt in (False, True):
        if rebuilt:
            _drop_records(client)
            assert client.reconcile(ACCT, full=True, repair=True).rebuilt >= 1
        again = other.debit(ACCT, 10, action="chat", idempotency_key="order-1")
        assert (again.replayed, again.entry.id) == (True, first.entry.id)
        with pytest.raises(IdempotencyConflictError):
            other.debit(ACCT, 99, action="chat", idempotency_key="order-1")
        assert client.get_balance(ACCT) == 90


# -- 5. lots short of the balance, in the cheap pass ---------------------------------------


def _lots_records(client: Any) -> dict[str, str]:
    flat = raw(client, "HGETALL", account_keys(client, ACCT).lots)
    from lots_support import text

    flat = text(flat)
    pairs = flat.items() if isinstance(flat, dict) else zip(flat[::2], flat[1::2], strict=False)
    return {text(k): text(v) for k, v in pairs}


def _lower_with_summary(client: Any, lot_id: str, by: int) -> None:
    """Lower one lot and the summary's tracked sum together (the records still agree)."""
    keys = account_keys(client, ACCT)
    records = _lots_records(client)
    r, rest = records[lot_id].split("|", 1)
    t, srest = records[""].split("|", 1)
    head_copy = srest.split("|", 2)
    summary = f"{int(t) - by}|{srest}"
    if len(head_copy) == 3 and head_copy[1] == lot_id:  # the summary's copy of the head
        summary = f"{int(t) - by}|{head_copy[0]}|{lot_id}|{int(r) - by}|{rest}"
    raw(client, "HSET", keys.lots, lot_id, f"{int(r) - by}|{rest}", "", summary)


def _remove_lot(client: Any, lot_id: str) -> None:
    """Remove an untouched lot entirely: record, indexes and its part of the summary."""
    keys = account_keys(client, ACCT)
    records = _lots_records(client)
    r = int(records[lot_id].split("|", 1)[0])
    t, srest = records[""].split("|", 1)
    raw(client, "HDEL", keys.lots, lot_id)
    raw(client, "ZREM", keys.lot_order, lot_id)
    raw(client, "ZREM", keys.lot_expiry, lot_id)
    raw(client, "HSET", keys.lots, "", f"{int(t) - r}|{srest}")


@pytest.mark.parametrize("corrupt", ["lowered", "removed"])
def test_the_cheap_pass_finds_lots_short_of_the_balance(
    make_client: Callable[..., Any], corrupt: str
) -> None:
    client = make_client()
    client.initialize_user(ACCT, 100)
    grant = client.credit(ACCT, 30, priority=60).entry.id
    client.debit(ACCT, 10, action="chat")
    assert client.reconcile(ACCT).lots_matched is True
    before = snapshot(client, ACCT)
    if corrupt == "lowered":
        _lower_with_summary(client, grant, 7)
    else:
        _remove_lot(client, grant)
    cheap = client.reconcile(ACCT)
    assert (cheap.matched, cheap.lots_matched, cheap.lots_problem) == (True, False, "untracked")
    fixed = client.reconcile(ACCT, repair=True)
    assert fixed.lots_rebuilt > 0
    assert open_lots(client) == [("init", 90), ("grant", 30)]
    after = snapshot(client, ACCT)
    assert after["lots"] == before["lots"]
    assert after["lot_order"] == before["lot_order"]


def test_credits_from_before_lots_stay_untracked_without_a_finding(
    make_client: Callable[..., Any],
) -> None:
    """An account whose balance a writer without lots made (the TypeScript SDK, an earlier
    version): its untracked credits are no finding, before and after a full repair."""
    client = make_client()
    keys = account_keys(client, ACCT)
    raw(client, "SET", keys.balance, "40")
    raw(client, "XADD", keys.ledger, "*", "type", "init", "delta", "40", "balance", "40",
        "action", "initialize", "app", "ts", "reason", "", "ref", "", "idem", "", "meta", "")
    client.credit(ACCT, 10)
    client.debit(ACCT, 15, action="chat")
    assert open_lots(client) == [("untracked", 35)]
    assert client.reconcile(ACCT).lots_problem is None
    assert client.reconcile(ACCT, full=True, repair=True).lots_problem is None
    assert client.reconcile(ACCT).lots_problem is None


# -- 6. expires_at before the year 3000 ---------------------------------------------------


def test_expiry_bound_is_the_year_3000_in_the_pure_core() -> None:
    from sparked_credits import ValidationError
    from sparked_credits._core import validation as v

    last = datetime(2999, 12, 31, 23, 59, 59, 999000, tzinfo=timezone.utc)
    assert v.expires_at(last) == int(last.timestamp() * 1000)
    for refused in (datetime(3000, 1, 1, tzinfo=timezone.utc),
                    datetime(3083, 6, 1, tzinfo=timezone.utc)):
        with pytest.raises(ValidationError, match="before the year 3000"):
            v.expires_at(refused)


def test_an_expiry_in_or_after_3000_is_refused_and_changes_nothing(
    make_client: Callable[..., Any],
) -> None:
    from sparked_credits import ValidationError

    client = make_client()
    client.initialize_user(ACCT, 100)
    before = (snapshot(client, ACCT), client.history(ACCT).entries)
    with pytest.raises(ValidationError) as refused:
        client.credit(ACCT, 10, expires_at=datetime(3083, 1, 1, tzinfo=timezone.utc))
    assert 400 <= refused.value.http_status < 500
    assert (snapshot(client, ACCT), client.history(ACCT).entries) == before
    last = datetime(2999, 12, 31, 23, 59, tzinfo=timezone.utc)
    assert client.credit(ACCT, 10, expires_at=last).balance == 110


# -- 7. the rules the README states ---------------------------------------------------------


def test_an_overage_settle_keeps_the_hold_and_draws_the_rest_in_spending_order(
    make_client: Callable[..., Any],
) -> None:
    client = make_client()
    init = client.initialize_user(ACCT, 100).entry.id
    promo = client.credit(ACCT, 10, source="promo", priority=10).entry.id
    hold = client.reserve(ACCT, 8, action="video", ttl=600)
    assert decode_draws(hold.entry.lots) == [(promo, 8)]
    settled = client.settle(ACCT, hold.hold_id, 15, allow_overage=True)
    # The hold's 8 stay where they were drawn; the 7 more come in spending order.
    assert decode_draws(settled.entry.lots) == [(promo, 2), (init, 5)]
    assert open_lots(client) == [("init", 95)]
    # A refund of the settle gives back what the settle drew first, then the hold's.
    part = client.refund(ACCT, settled.entry.id, amount=6)
    assert decode_draws(part.entry.lots) == [(init, 5), (promo, 1)]
    rest = client.refund(ACCT, settled.entry.id)  # a full refund after a partial one
    assert rest.entry.delta == 9
    assert decode_draws(rest.entry.lots) == [(promo, 1), (promo, 8)]
    assert open_lots(client) == [("promo", 10), ("init", 100)]


def test_a_full_refund_after_partial_ones_gives_back_the_rest_once(
    make_client: Callable[..., Any],
) -> None:
    from sparked_credits import RefundError

    client = make_client()
    client.initialize_user(ACCT, 100)
    taken = client.debit(ACCT, 30, action="chat")
    client.refund(ACCT, taken.entry.id, amount=10)
    client.refund(ACCT, taken.entry.id, amount=5)
    rest = client.refund(ACCT, taken.entry.id)
    assert (rest.entry.delta, rest.balance) == (15, 100)
    again = client.refund(ACCT, taken.entry.id)  # the same full refund: replayed
    assert (again.replayed, again.entry.id) == (True, rest.entry.id)
    with pytest.raises(RefundError):
        client.refund(ACCT, taken.entry.id, amount=1)
    other = client.debit(ACCT, 4, action="chat")
    client.refund(ACCT, other.entry.id, amount=4)
    with pytest.raises(RefundError):  # nothing left for a full refund
        client.refund(ACCT, other.entry.id)
    assert open_lots(client) == [("init", 100)]


def test_an_adjust_lot_is_priority_50_and_never_expires(
    make_client: Callable[..., Any],
) -> None:
    client = make_client()
    client.initialize_user(ACCT, 100)
    added = client.adjust(ACCT, 20)
    assert added.entry.lots == "+50"
    (_, lot) = client.grants(ACCT)
    assert (lot.grant_id, lot.source, lot.priority, lot.expires_at) == (
        added.entry.id, "adjust", 50, None)
    # A negative adjust draws in spending order: the init lot is older.
    taken = client.adjust(ACCT, -110)
    assert decode_draws(taken.entry.lots)[0][1] == 100
    assert open_lots(client) == [("adjust", 10)]


def test_a_refused_negative_adjust_raises_insufficient_credits_and_changes_nothing(
    make_client: Callable[..., Any],
) -> None:
    from sparked_credits import InsufficientCreditsError

    client = make_client()
    client.initialize_user(ACCT, 100)
    before = (snapshot(client, ACCT), client.history(ACCT).entries)
    with pytest.raises(InsufficientCreditsError) as refused:
        client.adjust(ACCT, -150)
    assert (refused.value.http_status, refused.value.balance, refused.value.required) == (
        402, 100, 150)
    assert (snapshot(client, ACCT), client.history(ACCT).entries) == before
    owed = client.adjust(ACCT, -150, allow_overdraft=True)
    assert owed.balance == -50
    assert client.grants(ACCT) == []
    assert client.adjust(ACCT, 30).balance == -20  # pays the debt, opens an empty lot
    assert open_lots(client) == []


def test_concurrent_credits_then_a_debit_draw_the_oldest_lots(backend_url: str) -> None:
    """The issue's repro as written: 16 concurrent credits (on Redis, many land in one
    millisecond), then a debit of 4 draws the four oldest lots."""
    import asyncio

    from conftest import token_for
    from sparked_credits import AsyncCreditsClient

    async def main() -> None:
        async with AsyncCreditsClient(backend_url, token=token_for(backend_url),
                                      app="app.sparked.world") as client:
            got = await asyncio.gather(*(client.credit(ACCT, 1) for _ in range(16)))
            ids = sorted((r.entry.id for r in got), key=id_key)
            debit = await client.debit(ACCT, 4, action="chat")
            assert decode_draws(debit.entry.lots) == [(i, 1) for i in ids[:4]]
            assert [g.grant_id for g in await client.grants(ACCT)] == ids[4:]

    asyncio.run(main())


def test_a_hold_that_expires_while_an_overdraft_is_owed_pays_it_first(
    make_client: Callable[..., Any],
) -> None:
    import time

    client = make_client()
    client.initialize_user(ACCT, 100)
    client.reserve(ACCT, 5, action="video", ttl=0.05)
    client.adjust(ACCT, -150, allow_overdraft=True)  # -55
    time.sleep(0.1)
    assert client.sweep_expired(ACCT) >= 1
    (expired,) = [e for e in client.history(ACCT).entries if e.type_name == "expire"]
    assert decode_draws(expired.lots) == [("_", 5)]
    assert client.get_balance(ACCT) == -50
    assert client.grants(ACCT) == []
    assert client.reconcile(ACCT).lots_problem is None
