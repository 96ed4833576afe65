"""Reconciliation, checkpoints and retention, on memory:// and a real redis-server."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from conftest import ledger_sum
from sparked_credits import AsyncCreditsClient, CreditsClient, EntryType

ACCT = "user_2abc"


@pytest.fixture
def credits(sync_credits: CreditsClient) -> CreditsClient:
    """A sync client on every backend (the async twin runs in test_async_reconcile_all)."""
    return sync_credits


def corrupt_balance(client: CreditsClient, account: str, value: str) -> None:
    """Write the balance behind the SDK's back, through whichever backend it uses."""
    from sparked_credits._core.requests import CommandCall

    key = client._ops.keys.balance(account)
    client._backend.execute(CommandCall(args=("SET", key, value)))


def meta(client: CreditsClient, account: str, *args: str) -> object:
    """Run one hash command on the account's meta hash (block sums, marks, checkpoint)."""
    from sparked_credits._core.requests import CommandCall

    key = client._ops.keys.account(account).meta
    return client._backend.execute(CommandCall(args=(args[0], key, *args[1:])))


def drop_blocks(client: CreditsClient, account: str) -> None:
    """Make the account look as if written before block sums (no 'n')."""
    meta(client, account, "HDEL", "n", "bo", "bf", "bfn")


def test_clean_account_matches_and_checkpoints(credits: CreditsClient) -> None:
    credits.initialize_user(ACCT)
    last = credits.debit(ACCT, 10, action="chat_message").entry
    result = credits.reconcile(ACCT)
    assert result.matched is True
    # The block sums agree with the balance and the entry count: no entry is read.
    assert (result.balance, result.ledger_sum, result.entries_read) == (90, 90, 0)
    assert result.checkpoint_id == last.id
    again = credits.reconcile(ACCT)
    assert again.matched is True
    assert again.entries_read == 0  # nothing new since the checkpoint


def test_unknown_account_is_clean(credits: CreditsClient) -> None:
    result = credits.reconcile("user_nobody")
    assert result.matched is True
    assert (result.balance, result.ledger_sum, result.checkpoint_id) == (0, 0, None)


def test_corrupted_balance_is_detected_then_repaired(credits: CreditsClient) -> None:
    credits.initialize_user(ACCT)
    credits.debit(ACCT, 10, action="chat_message")
    corrupt_balance(credits, ACCT, "5000")  # someone wrote the balance directly
    found = credits.reconcile(ACCT)
    assert found.matched is False
    assert (found.balance, found.ledger_sum, found.difference) == (5000, 90, 4910)
    assert credits.get_balance(ACCT) == 5000  # a check changes nothing
    fixed = credits.reconcile(ACCT, repair=True)
    assert fixed.repaired is True
    assert credits.get_balance(ACCT) == 90 == ledger_sum(credits, ACCT)
    entry = credits.history(ACCT, limit=1).entries[0]
    assert entry.type is EntryType.ADJUST
    assert entry.id == fixed.adjustment_id
    assert entry.delta == 0
    assert entry.metadata == {"found_balance": 5000, "ledger_sum": 90}
    assert credits.reconcile(ACCT).matched is True


def test_incremental_reconcile_reads_only_new_entries(credits: CreditsClient) -> None:
    """Without block sums (an account written before them) the cheap pass reads what
    came after the checkpoint, and a pass that agrees seeds the block sums."""
    credits.initialize_user(ACCT, 10_000)
    for _ in range(50):
        credits.debit(ACCT, 1, action="chat_message")
    drop_blocks(credits, ACCT)
    assert credits.reconcile(ACCT).entries_read == 51
    assert credits.reconcile(ACCT).entries_read == 0  # seeded by the pass before
    for _ in range(1000):
        credits.credit(ACCT, 1)
    drop_blocks(credits, ACCT)
    result = credits.reconcile(ACCT)
    assert result.entries_read == 1000
    assert result.matched is True
    assert result.ledger_sum == 10_000 - 50 + 1000
    for _ in range(1100):  # across a block boundary
        credits.credit(ACCT, 1)
    result = credits.reconcile(ACCT)
    assert (result.entries_read, result.matched) == (0, True)
    assert result.ledger_sum == credits.get_balance(ACCT) == 10_000 - 50 + 2100


@pytest.mark.parametrize("blocks", [True, False], ids=["blocks", "no_blocks"])
def test_reconcile_during_concurrent_debits_never_reports_a_false_mismatch(
    credits: CreditsClient, blocks: bool
) -> None:
    from sparked_credits._core import reconciliation

    credits.initialize_user(ACCT, 1_000_000)
    stop = threading.Event()
    debited = 0

    def spend() -> None:
        nonlocal debited
        while not stop.is_set():
            credits.debit(ACCT, 3, action="chat_message")
            debited += 3

    workers = [threading.Thread(target=spend) for _ in range(3)]
    for w in workers:
        w.start()
    try:
        results = []
        for _ in range(15):
            if not blocks:
                drop_blocks(credits, ACCT)  # the next debit's n no longer counts them all
                seen = credits.get_balance(ACCT)
                while credits.get_balance(ACCT) == seen:  # a debit since (a loaded machine)
                    time.sleep(0.001)
            results.append(
                credits._drive(reconciliation.reconcile(credits._ops, ACCT, False, chunk=20))
            )
    finally:
        stop.set()
        for w in workers:
            w.join()
    assert all(r.matched for r in results), [r for r in results if not r.matched]
    if not blocks:
        assert sum(r.entries_read for r in results) >= 15  # it really chased new entries
    assert credits.get_balance(ACCT) == 1_000_000 - debited == ledger_sum(credits, ACCT)
    assert credits.reconcile(ACCT).matched is True


def test_trim_keeps_everything_after_the_checkpoint(credits: CreditsClient) -> None:
    credits.initialize_user(ACCT, 1000)
    ids = [credits.debit(ACCT, 1, action="chat_message").entry.id for _ in range(30)]
    # Without a checkpoint nothing may go.
    assert credits.trim_ledger(ACCT, before=ids[-1]).removed == 0
    credits.reconcile(ACCT)  # checkpoint at ids[-1]
    later = [credits.debit(ACCT, 1, action="chat_message").entry.id for _ in range(5)]
    # Ask for more than allowed: the trim stops at the checkpoint.
    trimmed = credits.trim_ledger(ACCT, before=later[-1])
    assert trimmed.kept_from == ids[-1]
    assert trimmed.removed == 30  # the init entry and 29 debits
    kept = [e.id for e in credits.history(ACCT, limit=100).entries]
    assert kept == list(reversed([ids[-1], *later]))
    result = credits.reconcile(ACCT)
    assert result.matched is True
    assert result.ledger_sum == credits.get_balance(ACCT) == 1000 - 35


def test_trim_to_an_earlier_point(credits: CreditsClient) -> None:
    credits.initialize_user(ACCT, 1000)
    ids = [credits.debit(ACCT, 1, action="chat_message").entry.id for _ in range(10)]
    credits.reconcile(ACCT)
    assert credits.trim_ledger(ACCT, before=ids[4]).removed == 5  # init and ids[0..3]
    assert len(credits.history(ACCT, limit=100).entries) == 6
    assert credits.reconcile(ACCT).matched is True


def test_reconcile_all_by_scan_with_repairs_and_holds(credits: CreditsClient) -> None:
    for acct in ("user_a", "user_b", "user_c"):
        credits.initialize_user(acct)
    credits.reserve("user_c", 40, action="model_training", ttl=0.05)
    corrupt_balance(credits, "user_b", "7")
    import time

    time.sleep(0.1)
    seen: list[str] = []
    report = credits.reconcile_all(on_progress=seen.append)
    assert report.checked == 3
    assert report.mismatched == 1
    assert report.repaired == 0
    assert report.expired_holds == 1
    assert report.clean is False
    assert sorted(seen) == ["user_a", "user_b", "user_c"]
    assert credits.get_balance("user_c") == 100
    repaired = credits.reconcile_all(["user_b", "user_a"], repair=True)
    assert (repaired.checked, repaired.mismatched, repaired.repaired) == (2, 1, 1)
    assert repaired.clean is True
    assert credits.get_balance("user_b") == 100


def test_reconcile_all_reports_errors_per_account(credits: CreditsClient) -> None:
    credits.initialize_user("user_a")
    credits.initialize_user("user_b")
    corrupt_balance(credits, "user_b", "not-a-number")
    report = credits.reconcile_all()
    assert report.checked == 1
    assert list(report.errors) == ["user_b"]
    assert report.clean is False


def test_async_reconcile_all(redis_url: str) -> None:
    async def main() -> None:
        async with AsyncCreditsClient(redis_url) as client:
            for i in range(20):
                await client.initialize_user(f"user_{i}")
                await client.debit(f"user_{i}", i + 1, action="chat_message")
            report = await client.reconcile_all(concurrency=4)
            assert report.checked == 20
            assert report.clean is True
            one = await client.reconcile("user_3")
            assert one.entries_read == 0

    asyncio.run(main())
