"""close_account: a deleted user's account takes no new charges; its ledger stays and adds up.

Runs on memory:// and a real redis-server, sync and async (the ``client`` fixture).
"""

from __future__ import annotations

from typing import Any

import pytest

from conftest import ledger_sum
from sparked_credits import AccountClosedError, EntryType, InsufficientCreditsError

ACCT = "user_closed"


def test_close_refuses_new_debits_and_keeps_ledger(client: Any) -> None:
    client.initialize_user(ACCT)
    spent = client.charge(ACCT, "chat_message")
    closed = client.close_account(ACCT, reason="user.deleted")
    assert closed.replayed is False
    assert closed.balance == 90
    assert (closed.entry.type, closed.entry.delta, closed.entry.balance_after) == (
        EntryType.CLOSE, 0, 90
    )
    assert closed.entry.reason == "user.deleted"
    assert closed.entry.app == "app.sparked.world"

    with pytest.raises(AccountClosedError) as info:
        client.debit(ACCT, 10, action="chat_message")
    assert info.value.http_status == 403
    assert info.value.to_dict()["error"] == "account_closed"
    assert info.value.to_dict()["action"] == "chat_message"
    with pytest.raises(AccountClosedError):
        client.charge(ACCT, "video_generation", seconds=1)
    with pytest.raises(AccountClosedError):
        client.reserve(ACCT, 10, action="model_training")

    # Nothing was written by the refusals; the ledger is intact and still adds up.
    assert client.get_balance(ACCT) == 90
    types = [e.type for e in client.history(ACCT).entries]
    assert types == [EntryType.CLOSE, EntryType.DEBIT, EntryType.INIT]
    assert ledger_sum(client, ACCT) == 90
    # Refunds of earlier charges still go through.
    assert client.refund(ACCT, spent.entry.id).balance == 100


def test_close_is_once_per_account(client: Any) -> None:
    client.initialize_user(ACCT)
    first = client.close_account(ACCT, reason="user.deleted")
    again = client.close_account(ACCT, reason="another reason")
    assert again.replayed is True
    assert again.entry == first.entry
    assert len(client.history(ACCT).entries) == 2


def test_closed_account_is_never_initialized(client: Any) -> None:
    # user.deleted delivered before a late user.created: no credits for a deleted user.
    client.close_account("user_gone")
    late = client.initialize_user("user_gone")
    assert late.created is False
    assert client.get_balance("user_gone") == 0
    assert ledger_sum(client, "user_gone") == 0


def test_auto_initialize_does_not_revive_closed_account(make_client: Any) -> None:
    client = make_client(auto_initialize=True)
    client.close_account("user_auto")
    # A credit (a refund, a goodwill grant) still lands, without the starting credits.
    assert client.credit("user_auto", 5, source="admin_grant").balance == 5
    with pytest.raises(AccountClosedError):
        client.debit("user_auto", 1, action="chat_message")
    assert ledger_sum(client, "user_auto") == 5


def test_open_hold_can_still_settle_after_close(client: Any) -> None:
    client.initialize_user(ACCT, 1000)
    hold = client.reserve(ACCT, 500, action="model_training")
    client.close_account(ACCT)
    settled = client.settle(ACCT, hold.hold_id, 300)
    assert settled.balance == 700
    assert ledger_sum(client, ACCT) == 700


def test_replayed_debit_from_before_close_still_replays(client: Any) -> None:
    client.initialize_user(ACCT)
    first = client.debit(ACCT, 10, action="chat_message", idempotency_key="m1")
    client.close_account(ACCT)
    again = client.debit(ACCT, 10, action="chat_message", idempotency_key="m1")
    assert again.replayed is True
    assert again.entry == first.entry


def test_insufficient_is_not_masked_on_open_account(client: Any) -> None:
    client.initialize_user(ACCT, 5)
    with pytest.raises(InsufficientCreditsError):
        client.debit(ACCT, 10, action="chat_message")


def test_typescript_account_closed_gets_no_auto_init(make_client: Any, backend_url: str) -> None:
    """A balance written by the TypeScript SDK (no meta hash) stays initialized once closed."""
    if backend_url.startswith(("redis+cluster://", "http://", "https://")):
        pytest.skip("the TypeScript key layout (no hash tags) is shared on one Redis only")
    client = make_client(auto_initialize=True)
    if backend_url.startswith("memory://"):
        import fakeredis

        from sparked_credits.backends.memory import _server

        raw: Any = fakeredis.FakeRedis(server=_server(backend_url.split("://", 1)[1]))
    else:
        import redis

        raw = redis.Redis.from_url(backend_url)
    raw.set("balance:user_ts", "40")
    client.close_account("user_ts")
    assert client.initialize_user("user_ts").created is False
    assert client.credit("user_ts", 1, source="admin_grant").balance == 41
    raw.close()


def test_closed_account_reconciles_and_survives_trim(client: Any) -> None:
    """The 0-delta close entry keeps balance == ledger sum; trimming it away (past a
    checkpoint) neither reopens the account nor lets a second close append again."""
    client.initialize_user(ACCT)
    client.charge(ACCT, "chat_message")
    first = client.close_account(ACCT)
    assert client.reconcile(ACCT).matched is True
    client.credit(ACCT, 5, source="admin_grant")
    assert client.reconcile(ACCT).matched is True  # checkpoint after the credit
    last = client.history(ACCT).entries[0].id
    assert client.trim_ledger(ACCT, before=last).removed == 3
    again = client.close_account(ACCT)
    assert (again.replayed, again.entry.id, again.balance) == (True, first.entry.id, 95)
    assert len(client.history(ACCT).entries) == 1
    with pytest.raises(AccountClosedError):
        client.charge(ACCT, "chat_message")
    assert client.reconcile(ACCT).matched is True
