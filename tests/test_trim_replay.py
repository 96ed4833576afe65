"""The one lots replay: the base a trim writes (sum, count, lots as of it) is what a
replay of the full ledger up to the base gives, on every backend and both clients, trimmed
in one step and in several, and the drained lots that leave."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from sparked_credits._core import trimming
from sparked_credits._core.decoding import text
from sparked_credits._core.lots import LotBook, decode_draws
from sparked_credits._core.requests import CommandCall, Operation

ACCT = "user_trim"


def meta(client: Any) -> dict[str, str]:
    key = client._ops.keys.account(ACCT).meta
    raw = client.run_request_step(
        Operation("test", CommandCall(("HGETALL", key)), lambda r: r)
    )
    if isinstance(raw, dict):
        return {text(k): text(v) for k, v in raw.items()}
    flat = [text(x) for x in raw]
    return dict(zip(flat[::2], flat[1::2], strict=True))


def full_ledger(client: Any) -> list[Any]:
    out, cursor = [], None
    while True:
        page = client.history(ACCT, 1000, cursor)
        out.extend(page.entries)
        if page.next_cursor is None:
            return out[::-1]
        cursor = page.next_cursor


def expected_base(entries: list[Any], base_id: str) -> tuple[int, int, str]:
    """The full ledger's replay up to the base, less the drained lots that no entry after
    the base names (nothing can give credits back to them)."""
    upto = [e for e in entries if trimming.id_parts(e.id) <= trimming.id_parts(base_id)]
    after = entries[len(upto):]
    book = LotBook.from_ledger(
        (e.id, e.type_name, e.delta, e.action or "", e.lots or "") for e in upto
    )
    named = {lot_id for e in after for lot_id, _ in decode_draws(e.lots)}
    kept = sorted(i for i, lot in book.lots.items() if lot.remaining or i in named)
    lots = " ".join(f"{i}={book.lots[i].record()}" for i in kept)
    return sum(e.delta for e in upto), len(upto), lots


def busy(client: Any) -> None:
    later = datetime.now(timezone.utc) + timedelta(days=3)
    client.initialize_user(ACCT, 30)
    client.credit(ACCT, 40, source="promo", priority=10, expires_at=later)
    client.credit(ACCT, 25, source="purchase", priority=60)
    spent = [client.debit(ACCT, 20 + i, action="chat") for i in range(3)]
    client.refund(ACCT, spent[1].entry.id, amount=7)
    client.adjust(ACCT, 15, reason="goodwill")
    hold = client.reserve(ACCT, 9, action="video")
    client.settle(ACCT, hold.hold_id, 4)
    client.credit(ACCT, 5, source="grant")
    client.debit(ACCT, 30, action="chat")


def test_trim_base_is_the_full_ledgers_replay(
    make_client: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two entries per step: each trim below runs as several guarded steps (the other
    # tests here trim in one).
    monkeypatch.setattr(trimming, "CHUNK", 2)
    client = make_client()
    busy(client)
    entries = full_ledger(client)
    # Two trims: the second replays on from the lots the first kept at its base.
    for cut in (5, 9):
        client.reconcile(ACCT)
        result = client.trim_ledger(ACCT, before=entries[cut].id)
        assert result.kept_from == entries[cut].id
        stored = meta(client)
        assert stored["base_id"] == entries[cut - 1].id
        total, count, lots = expected_base(entries, stored["base_id"])
        assert (int(stored["base_sum"]), int(stored["base_count"])) == (total, count)
        assert stored["base_lots"] == lots
    assert len(full_ledger(client)) == len(entries) - 9
    checked = client.reconcile(ACCT, full=True)
    assert checked.matched
    assert checked.lots_matched


def test_a_trim_outdated_by_another_trim_plans_again(make_client: Callable[..., Any]) -> None:
    """The guard: a trim whose plan another trim outdated writes nothing and plans again
    from the new base (no entry folded twice)."""
    client = make_client()
    busy(client)
    entries = full_ledger(client)
    client.reconcile(ACCT)
    procedure = trimming.trim(client._ops, ACCT, entries[8].id)
    step = next(procedure)
    replies = []
    # Run the plan's reads, then let another trim land before the guarded write.
    while step.name != "trim":
        replies.append(client.run_request_step(step))
        step = procedure.send(replies[-1])
    client.trim_ledger(ACCT, before=entries[4].id)
    try:
        step = procedure.send(client.run_request_step(step))
        while True:
            step = procedure.send(client.run_request_step(step))
    except StopIteration as done:
        result = done.value
    assert result.kept_from == entries[8].id
    stored = meta(client)
    assert (int(stored["base_sum"]), int(stored["base_count"]), stored["base_lots"]) == (
        expected_base(entries, entries[7].id)
    )


def lot_record(client: Any, lot_id: str) -> Any:
    key = client._ops.keys.account(ACCT).lots
    return client.run_request_step(
        Operation("test", CommandCall(("HGET", key, lot_id)), lambda r: r)
    )


def test_drained_lots_leave_once_nothing_names_them(make_client: Callable[..., Any]) -> None:
    client = make_client()
    client.initialize_user(ACCT, 100)
    promo = client.credit(ACCT, 20, source="promo", priority=10).entry.id
    gift = client.credit(ACCT, 10, source="gift", priority=20).entry.id
    client.debit(ACCT, 20, action="chat")  # drains the promo
    kept = client.debit(ACCT, 10, action="chat")  # drains the gift: refundable after the trim
    for _ in range(3):
        client.debit(ACCT, 1, action="chat")
    entries = full_ledger(client)
    client.reconcile(ACCT)
    client.trim_ledger(ACCT, before=kept.entry.id)
    stored = meta(client)
    # The promo is drained and nothing left names it: gone from the base and the lots hash.
    # The gift is drained too, but the debit that drew it stays (it can be refunded).
    assert promo not in stored["base_lots"]
    assert gift in stored["base_lots"]
    assert lot_record(client, promo) is None
    assert lot_record(client, gift) is not None
    assert stored["base_lots"] == expected_base(entries, stored["base_id"])[2]
    refund = client.refund(ACCT, kept.entry.id)
    assert refund.entry.lots == f"{gift}:10"
    checked = client.reconcile(ACCT, full=True)
    assert (checked.matched, checked.lots_matched) == (True, True)
    assert sum(g.remaining for g in client.grants(ACCT)) == client.get_balance(ACCT)
