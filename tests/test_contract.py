"""The ledger contract, on every backend (memory, real Redis) and both clients (sync, async)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from conftest import ledger_sum
from sparked_credits import (
    EntryType,
    IdempotencyConflictError,
    InsufficientCreditsError,
    RefundError,
)

ACCT = "user_2abc"


def test_initialize_once(client: Any) -> None:
    first = client.initialize_user(ACCT)
    assert first.created is True
    assert first.balance == 100
    assert first.entry is not None
    assert first.entry.type is EntryType.INIT
    assert first.entry.delta == 100
    second = client.initialize_user(ACCT, 500)
    assert second.created is False
    assert second.balance == 100
    assert second.entry is None
    assert client.get_balance(ACCT) == 100
    assert len(client.history(ACCT).entries) == 1


def test_initialize_with_explicit_credits_and_zero(client: Any) -> None:
    assert client.initialize_user("user_a", 250).balance == 250
    zero = client.initialize_user("user_b", 0)
    assert zero.created is True
    assert zero.balance == 0
    assert ledger_sum(client, "user_b") == 0


def test_default_credits_option(make_client: Any) -> None:
    client = make_client(default_credits=7)
    assert client.initialize_user(ACCT).balance == 7


def test_unknown_account_reads_zero(client: Any) -> None:
    assert client.get_balance("user_never") == 0
    assert client.history("user_never").entries == []


def test_debit_writes_entry_and_balance(client: Any) -> None:
    client.initialize_user(ACCT)
    result = client.debit(
        ACCT, 10, action="chat_message", reason="hello", metadata={"message_id": "m1"}
    )
    assert result.balance == 90
    assert result.replayed is False
    entry = result.entry
    assert (entry.type, entry.delta, entry.balance_after) == (EntryType.DEBIT, -10, 90)
    assert entry.action == "chat_message"
    assert entry.app == "app.sparked.world"
    assert entry.reason == "hello"
    assert entry.metadata == {"message_id": "m1"}
    assert entry.idempotency_key  # generated per call
    assert client.get_balance(ACCT) == 90
    assert client.history(ACCT).entries[0] == entry


def test_insufficient_changes_nothing(client: Any) -> None:
    client.initialize_user(ACCT, 40)
    before = client.history(ACCT)
    with pytest.raises(InsufficientCreditsError) as info:
        client.debit(ACCT, 600, action="video_generation")
    err = info.value
    assert (err.account, err.balance, err.required, err.action) == (
        ACCT, 40, 600, "video_generation"
    )
    assert err.http_status == 402
    assert err.to_dict()["shortfall"] == 560
    assert client.get_balance(ACCT) == 40
    assert client.history(ACCT) == before


def test_debit_exact_balance_to_zero(client: Any) -> None:
    client.initialize_user(ACCT, 10)
    assert client.debit(ACCT, 10, action="chat_message").balance == 0
    with pytest.raises(InsufficientCreditsError):
        client.debit(ACCT, 1, action="chat_message")


def test_shared_balance_across_apps(make_client: Any) -> None:
    chat = make_client(app="app.sparked.world")
    canvas = make_client(app="canvas.sparked.world")
    chat.initialize_user(ACCT)
    chat.debit(ACCT, 10, action="chat_message")
    assert canvas.get_balance(ACCT) == 90
    entry = canvas.debit(ACCT, 50, action="canvas_simple").entry
    assert entry.app == "canvas.sparked.world"
    assert chat.get_balance(ACCT) == 40


def test_credit_and_source(client: Any) -> None:
    client.initialize_user(ACCT)
    result = client.credit(ACCT, 500, source="admin_grant", reason="support ticket 12")
    assert result.balance == 600
    assert result.entry.type is EntryType.CREDIT
    assert result.entry.action == "admin_grant"
    assert ledger_sum(client, ACCT) == 600


def test_credit_before_init_still_gets_starting_credits(client: Any) -> None:
    client.credit(ACCT, 30, source="referral")
    init = client.initialize_user(ACCT)
    assert init.created is True
    assert init.balance == 130
    assert client.initialize_user(ACCT).created is False
    assert ledger_sum(client, ACCT) == client.get_balance(ACCT) == 130


def test_auto_initialize(make_client: Any) -> None:
    client = make_client(auto_initialize=True, default_credits=100)
    assert client.get_balance(ACCT) == 100  # what it will have, nothing written yet
    assert client.history(ACCT).entries == []
    result = client.debit(ACCT, 10, action="chat_message")
    assert result.balance == 90
    types = [e.type for e in client.history(ACCT).entries]
    assert types == [EntryType.DEBIT, EntryType.INIT]
    assert client.initialize_user(ACCT).created is False
    assert ledger_sum(client, ACCT) == 90


def test_auto_initialize_refusal_writes_nothing(make_client: Any) -> None:
    client = make_client(auto_initialize=True, default_credits=100)
    with pytest.raises(InsufficientCreditsError) as info:
        client.debit(ACCT, 600, action="video_generation")
    assert info.value.balance == 100
    assert client.history(ACCT).entries == []
    assert client.initialize_user(ACCT).created is True


def test_without_auto_initialize_debit_of_unknown_is_refused(client: Any) -> None:
    with pytest.raises(InsufficientCreditsError) as info:
        client.debit(ACCT, 1, action="chat_message")
    assert info.value.balance == 0
    assert client.history(ACCT).entries == []


def test_idempotent_replay_returns_first_outcome(client: Any) -> None:
    client.initialize_user(ACCT)
    first = client.debit(ACCT, 10, action="chat_message", idempotency_key="msg-1")
    client.debit(ACCT, 10, action="chat_message")
    again = client.debit(ACCT, 10, action="chat_message", idempotency_key="msg-1")
    assert again.replayed is True
    assert again.entry == first.entry
    assert again.balance == 90  # the first call's outcome, not today's balance
    assert client.get_balance(ACCT) == 80
    assert len(client.history(ACCT).entries) == 3


def test_same_key_other_parameters_conflicts(client: Any) -> None:
    client.initialize_user(ACCT)
    client.debit(ACCT, 10, action="chat_message", idempotency_key="k")
    for call in (
        lambda: client.debit(ACCT, 11, action="chat_message", idempotency_key="k"),
        lambda: client.debit(ACCT, 10, action="canvas_simple", idempotency_key="k"),
        lambda: client.debit(ACCT, 10, action="chat_message", reason="x", idempotency_key="k"),
        lambda: client.credit(ACCT, 10, idempotency_key="k"),
    ):
        with pytest.raises(IdempotencyConflictError) as info:
            call()
        assert info.value.idempotency_key == "k"
    assert client.get_balance(ACCT) == 90


def test_idempotency_keys_are_per_account(client: Any) -> None:
    client.initialize_user("user_a")
    client.initialize_user("user_b")
    client.debit("user_a", 10, action="chat_message", idempotency_key="same")
    result = client.debit("user_b", 10, action="chat_message", idempotency_key="same")
    assert result.replayed is False
    assert client.get_balance("user_a") == client.get_balance("user_b") == 90


def test_failed_debit_does_not_burn_its_key(client: Any) -> None:
    client.initialize_user(ACCT, 5)
    with pytest.raises(InsufficientCreditsError):
        client.debit(ACCT, 10, action="chat_message", idempotency_key="k")
    client.credit(ACCT, 100)
    result = client.debit(ACCT, 10, action="chat_message", idempotency_key="k")
    assert result.replayed is False
    assert result.balance == 95


def test_refund_full_once(client: Any) -> None:
    client.initialize_user(ACCT)
    debit = client.debit(ACCT, 30, action="video_generation").entry
    refund = client.refund(ACCT, debit.id, reason="generation failed")
    assert refund.balance == 100
    assert refund.entry.type is EntryType.REFUND
    assert refund.entry.ref == debit.id
    assert refund.entry.action == "video_generation"
    assert refund.entry.app == debit.app
    again = client.refund(ACCT, debit.id, reason="generation failed")
    assert again.replayed is True
    assert again.entry == refund.entry
    with pytest.raises(RefundError):
        client.refund(ACCT, debit.id, amount=1)
    assert client.get_balance(ACCT) == 100
    assert ledger_sum(client, ACCT) == 100


def test_partial_refunds_never_exceed_debit(client: Any) -> None:
    client.initialize_user(ACCT)
    debit = client.debit(ACCT, 30, action="video_generation").entry
    client.refund(ACCT, debit.id, amount=10)
    client.refund(ACCT, debit.id, amount=15)
    with pytest.raises(RefundError) as info:
        client.refund(ACCT, debit.id, amount=6)
    assert info.value.refundable == 5
    assert client.refund(ACCT, debit.id).entry.delta == 5  # the rest
    with pytest.raises(RefundError):
        client.refund(ACCT, debit.id, amount=1)
    assert client.get_balance(ACCT) == 100 == ledger_sum(client, ACCT)


def test_adjust_and_overdraft(client: Any) -> None:
    client.initialize_user(ACCT)
    assert client.adjust(ACCT, 25, reason="goodwill").balance == 125
    with pytest.raises(InsufficientCreditsError):
        client.adjust(ACCT, -200, reason="chargeback")
    assert client.get_balance(ACCT) == 125
    result = client.adjust(ACCT, -200, allow_overdraft=True, reason="chargeback")
    assert result.balance == -75
    assert result.entry.type is EntryType.ADJUST
    with pytest.raises(InsufficientCreditsError):
        client.debit(ACCT, 1, action="chat_message")
    assert ledger_sum(client, ACCT) == -75


def test_history_pages_newest_first(client: Any) -> None:
    client.initialize_user(ACCT, 1000)
    ids = [client.debit(ACCT, i, action="chat_message").entry.id for i in range(1, 26)]
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = client.history(ACCT, limit=10, cursor=cursor)
        seen += [e.id for e in page.entries]
        pages += 1
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert pages == 3
    assert seen[:25] == list(reversed(ids))
    assert len(seen) == 26  # and the init entry last
    assert seen == sorted(seen, key=lambda i: tuple(map(int, i.split("-"))), reverse=True)


def test_history_exact_page_has_no_cursor(client: Any) -> None:
    client.initialize_user(ACCT)
    client.debit(ACCT, 1, action="chat_message")
    page = client.history(ACCT, limit=2)
    assert len(page.entries) == 2
    assert page.next_cursor is None


def test_entries_serialize_for_api(client: Any) -> None:
    client.initialize_user(ACCT)
    entry = client.debit(ACCT, 10, action="chat_message").entry
    body = entry.model_dump(mode="json")
    assert body["type"] == "debit"
    assert body["delta"] == -10
    assert body["timestamp"].endswith("Z") or "+00:00" in body["timestamp"]


def test_key_prefix_isolates_tenants(make_client: Any) -> None:
    a = make_client(key_prefix="tenant_a:")
    b = make_client(key_prefix="tenant_b:")
    a.initialize_user(ACCT, 10)
    assert b.get_balance(ACCT) == 0
    assert b.initialize_user(ACCT, 20).created is True
    assert a.get_balance(ACCT) == 10


def test_hash_tag_mode_works_end_to_end(make_client: Any) -> None:
    client = make_client(hash_tags=True)
    client.initialize_user(ACCT)
    debit = client.debit(ACCT, 10, action="chat_message").entry
    client.refund(ACCT, debit.id)
    assert client.get_balance(ACCT) == 100 == ledger_sum(client, ACCT)


def test_idempotency_retention_rotates(make_client: Any) -> None:
    """Keys survive at least one retention period and are forgotten after two."""
    client = make_client(idempotency_ttl=timedelta(seconds=1))
    client.initialize_user(ACCT)
    client.debit(ACCT, 1, action="chat_message", idempotency_key="old")
    import time

    time.sleep(1.1)
    # Rotation happens on this write; "old" moves to the previous generation.
    client.debit(ACCT, 1, action="chat_message", idempotency_key="mid")
    assert client.debit(ACCT, 1, action="chat_message", idempotency_key="old").replayed
    time.sleep(1.1)
    client.debit(ACCT, 1, action="chat_message", idempotency_key="new")
    # "old" is now past two periods: forgotten, so it applies again.
    assert not client.debit(ACCT, 1, action="chat_message", idempotency_key="old").replayed
    assert client.get_balance(ACCT) == ledger_sum(client, ACCT) == 96


def test_charge_prices_and_debits(client: Any) -> None:
    client.initialize_user(ACCT, 1000)
    assert client.charge(ACCT, "chat_message").entry.delta == -10
    assert client.charge(ACCT, "canvas_complex").entry.delta == -75
    video = client.charge(ACCT, "video_generation", seconds=2.3, reason="clip")
    assert video.entry.delta == -23
    assert video.entry.action == "video_generation"
    assert client.calculate_cost("model_training", gpu_hours=1) == 1000
    held = client.reserve(ACCT, action="model_training", usage={"gpu_hours": 0.5})
    assert held.amount == 500
    assert client.get_balance(ACCT) == 1000 - 10 - 75 - 23 - 500 == ledger_sum(client, ACCT)


def test_charge_with_a_custom_price_table(make_client: Any) -> None:
    from sparked_credits import DEFAULT_TABLE

    table = DEFAULT_TABLE.with_overrides({"chat_message": {"kind": "fixed", "credits": 3}})
    client = make_client(pricing=table)
    client.initialize_user(ACCT)
    assert client.charge(ACCT, "chat_message").balance == 97
