"""Block sums: the cheap reconcile adds them instead of reading entries, falls back to
reading entries whenever they do not account for every entry, and a pass that agrees (or
a repair) seeds them again. On every backend (memory, redis, cluster, Upstash) and both
server lines."""

from __future__ import annotations

from typing import Any

import pytest

from block_sums import check_blocks
from conftest import UPSTASH_TOKEN, ledger_sum
from sparked_credits import CreditsClient

ACCT = "user_2abc"


@pytest.fixture
def credits(sync_credits: CreditsClient) -> CreditsClient:
    return sync_credits


def command(client: CreditsClient, *args: Any) -> Any:
    from sparked_credits._core.requests import CommandCall

    return client._backend.execute(CommandCall(args=tuple(args)))


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def meta(client: CreditsClient, account: str = ACCT) -> dict[str, str]:
    raw = command(client, "HGETALL", client._ops.keys.account(account).meta)
    if isinstance(raw, dict):
        return {_text(k): _text(v) for k, v in raw.items()}
    return {_text(raw[i]): _text(raw[i + 1]) for i in range(0, len(raw), 2)}


def deltas(client: CreditsClient, account: str = ACCT) -> list[int]:
    out: list[int] = []
    cursor = None
    while True:
        page = client.history(account, limit=1000, cursor=cursor)
        out.extend(e.delta for e in page.entries)
        if page.next_cursor is None:
            return list(reversed(out))
        cursor = page.next_cursor


def assert_blocks(client: CreditsClient, account: str = ACCT) -> None:
    check_blocks(meta(client, account), deltas(client, account))


def ts_append(client: CreditsClient, account: str, delta: int, balance_too: bool) -> None:
    """An entry as the TypeScript SDK writes it: XADD (and INCRBY of the balance), no blocks."""
    keys = client._ops.keys
    after = client.get_balance(account) + delta
    command(client, "XADD", keys.ledger(account), "*", "type", "credit", "delta", str(delta),
            "balance", str(after), "action", "signup", "app", "ts", "reason", "", "ref", "",
            "idem", "", "meta", "")
    if balance_too:
        command(client, "INCRBY", keys.balance(account), str(delta))


def test_blocks_follow_every_entry_across_a_block_boundary(credits: CreditsClient) -> None:
    credits.initialize_user(ACCT, 5000)
    hold = credits.reserve(ACCT, 40, action="model_training")
    credits.settle(ACCT, hold.hold_id, 25)
    spent = credits.debit(ACCT, 7, action="chat_message").entry.id
    credits.refund(ACCT, spent, amount=3)
    for i in range(1030):
        if i % 2:
            credits.debit(ACCT, 2, action="chat_message")
        else:
            credits.credit(ACCT, 1, source="grant")
    assert_blocks(credits, ACCT)
    m = meta(credits)
    assert int(m["n"]) == 1035
    # The closed block folded into the base as it closed: no per-block field stays.
    assert m["bfn"] == "1024"
    assert not [name for name in m if name.startswith("b:")]
    result = credits.reconcile(ACCT)
    assert (result.matched, result.entries_read) == (True, 0)
    assert result.ledger_sum == credits.get_balance(ACCT) == ledger_sum(credits, ACCT)
    assert result.checkpoint_id == credits.history(ACCT, limit=1).entries[0].id


def test_typescript_entries_fall_back_then_seed(credits: CreditsClient) -> None:
    credits.initialize_user(ACCT, 100)
    credits.debit(ACCT, 10, action="chat_message")
    assert credits.reconcile(ACCT).entries_read == 0
    ts_append(credits, ACCT, 40, balance_too=True)  # the TypeScript SDK's credit
    found = credits.reconcile(ACCT)
    assert (found.matched, found.entries_read, found.ledger_sum) == (True, 1, 130)
    assert_blocks(credits, ACCT)  # seeded by the pass that agreed
    again = credits.reconcile(ACCT)
    assert (again.matched, again.entries_read) == (True, 0)
    credits.debit(ACCT, 5, action="chat_message")
    assert_blocks(credits, ACCT)
    assert credits.reconcile(ACCT).entries_read == 0


def test_an_entry_without_its_balance_is_caught_and_repaired(credits: CreditsClient) -> None:
    """A prefix that kept only the XADD, buried under later calls."""
    credits.initialize_user(ACCT, 100)
    credits.reconcile(ACCT)
    ts_append(credits, ACCT, -30, balance_too=False)
    credits.debit(ACCT, 10, action="chat_message")
    found = credits.reconcile(ACCT)
    assert found.matched is False
    assert (found.balance, found.ledger_sum) == (90, 60)
    assert credits.reconcile(ACCT, repair=True).repaired is True
    assert credits.get_balance(ACCT) == 60 == ledger_sum(credits, ACCT)
    assert_blocks(credits, ACCT)
    assert (credits.reconcile(ACCT).entries_read, credits.reconcile(ACCT).matched) == (0, True)


def test_a_balance_off_by_a_block_update_is_not_trusted(credits: CreditsClient) -> None:
    """Blocks that agree in count but not with the balance send the pass to the entries."""
    credits.initialize_user(ACCT, 100)
    credits.debit(ACCT, 10, action="chat_message")
    command(credits, "SET", credits._ops.keys.balance(ACCT), "75")
    found = credits.reconcile(ACCT)
    assert (found.matched, found.balance, found.ledger_sum) == (False, 75, 90)
    assert found.entries_read == 2


def test_account_from_before_block_sums(credits: CreditsClient) -> None:
    credits.initialize_user(ACCT, 100)
    for _ in range(5):
        credits.debit(ACCT, 1, action="chat_message")
    command(credits, "HDEL", credits._ops.keys.account(ACCT).meta, "n", "bo")
    credits.debit(ACCT, 1, action="chat_message")  # counts from 1: short of the ledger
    assert int(meta(credits)["n"]) == 1
    first = credits.reconcile(ACCT)
    assert (first.matched, first.entries_read) == (True, 7)
    assert_blocks(credits, ACCT)
    assert credits.reconcile(ACCT).entries_read == 0


def test_typescript_account_is_not_initialized_again(
    credits: CreditsClient, backend_url: str
) -> None:
    """A balance the TypeScript SDK wrote (no meta hash): the first entry writes block
    sums into the meta hash, which must not make the account look uninitialized."""
    keys = credits._ops.keys
    command(credits, "SET", keys.balance("ts_user"), "40")
    ts_append(credits, "ts_user", 40, balance_too=False)
    token = UPSTASH_TOKEN if backend_url.startswith("http") else None
    with CreditsClient(backend_url, token=token, auto_initialize=True) as auto:
        auto.debit("ts_user", 15, action="chat_message")
        auto.reconcile("ts_user")
        auto.debit("ts_user", 5, action="chat_message")
    assert credits.get_balance("ts_user") == 20 == ledger_sum(credits, "ts_user")
    assert credits.reconcile("ts_user").matched is True


def test_closed_blocks_fold_as_they_close_and_trim_keeps_them(credits: CreditsClient) -> None:
    credits.initialize_user(ACCT, 10_000)
    ids = [credits.debit(ACCT, 1, action="chat_message").entry.id for _ in range(2100)]
    m = meta(credits)
    assert (m["bfn"], m["bf"]) == ("2048", str(10_000 - 2047))  # blocks 0 and 1, whole
    assert not [name for name in m if name.startswith("b:")]
    assert credits.reconcile(ACCT).entries_read == 0
    m = meta(credits)
    assert (m["bfn"], m["bf"]) == ("2048", str(10_000 - 2047))
    assert not [name for name in m if name.startswith("b:")]
    assert_blocks(credits, ACCT)
    trimmed = credits.trim_ledger(ACCT, before=ids[2090])
    assert trimmed.removed == 2091
    assert_blocks(credits, ACCT)
    for _ in range(3):
        credits.debit(ACCT, 1, action="chat_message")
    result = credits.reconcile(ACCT)
    assert (result.matched, result.entries_read) == (True, 0)
    assert result.ledger_sum == credits.get_balance(ACCT) == 10_000 - 2103
    full = credits.reconcile(ACCT, full=True)
    assert (full.matched, full.entries_read) == (True, 13)
    command(credits, "SET", keys_balance(credits), "1")
    assert credits.reconcile(ACCT, repair=True).repaired is True
    assert_blocks(credits, ACCT)
    assert credits.reconcile(ACCT).entries_read == 0


def keys_balance(client: CreditsClient) -> str:
    return client._ops.keys.balance(ACCT)


def test_reconcile_all_mixes_blocks_and_fallbacks(credits: CreditsClient) -> None:
    for i in range(6):
        credits.initialize_user(f"user_{i}", 50)
        credits.debit(f"user_{i}", i + 1, action="chat_message")
    ts_append(credits, "user_2", 9, balance_too=True)
    ts_append(credits, "user_4", -9, balance_too=False)
    report = credits.reconcile_all()
    assert (report.checked, report.mismatched) == (6, 1)
    reads = {r.account: r.entries_read for r in report.results}
    assert reads["user_0"] == reads["user_1"] == 0
    assert reads["user_2"] == 3
    repaired = credits.reconcile_all(repair=True)
    assert (repaired.mismatched, repaired.repaired) == (1, 1)
    clean = credits.reconcile_all()
    assert clean.clean is True
    assert all(r.entries_read == 0 for r in clean.results)
    for i in range(6):
        assert_blocks(credits, f"user_{i}")
