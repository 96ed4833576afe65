"""An expired hold gives its spend window back, like a release does.

A reservation counts against the daily and monthly windows when it is made; when it
lapses (returned by the next script that touches the account, by a sweep, or by a grant
listing) its credits come back and, if the reservation's window is still the current one,
so does the count (lua/prelude.lua, ``expire_hold``). Once: the hold's record closes in the
same script, so a second expiry path finds nothing to give back.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from conftest import ledger_sum
from sparked_credits import DEFAULT_TABLE, CreditsClient, EntryType, SpendLimitExceededError
from sparked_credits._core.controls import count_windows

TIERS = DEFAULT_TABLE.with_overrides(
    {}, tiers={"free": {"daily_limit": 200, "monthly_limit": 3000, "low_balance": 20}}
)
ACCT = "user_expiring"


def _at_the_limit(client: Any) -> str:
    client.initialize_user(ACCT, 1000)
    client.set_tier(ACCT, "free")
    client.debit(ACCT, 170, action="chat_message")
    hold = client.reserve(ACCT, 30, action="video_generation", ttl=0.2)
    assert client.get_controls(ACCT).spent_today == 200
    with pytest.raises(SpendLimitExceededError):
        client.debit(ACCT, 1, action="chat_message")
    return str(hold.hold_id)


@pytest.mark.parametrize("path", ["debit", "sweep", "grants", "credit"])
def test_an_expired_hold_gives_its_window_back(make_client: Any, mode: str, path: str) -> None:
    if path != "debit" and mode == "async":
        pytest.skip("the same scripts: the async client is covered by the debit path")
    client = make_client(pricing=TIERS)
    _at_the_limit(client)
    time.sleep(0.35)
    if path == "sweep":
        assert client.sweep_expired(ACCT) == 1
    elif path == "grants":
        client.grants(ACCT)
    elif path == "credit":
        client.credit(ACCT, 5, reason="goodwill")
    if path != "debit":
        # Returned by a script that spends nothing: the count is back already.
        assert client.get_controls(ACCT).spent_today == 170
    # The debit's own script returns the hold first (when still due), then counts.
    client.debit(ACCT, 30, action="chat_message")
    controls = client.get_controls(ACCT)
    assert (controls.spent_today, controls.spent_this_month) == (200, 200)
    with pytest.raises(SpendLimitExceededError):
        client.debit(ACCT, 1, action="chat_message")
    extra = 5 if path == "credit" else 0
    assert client.get_balance(ACCT) == 800 + extra == ledger_sum(client, ACCT)
    # Nothing gives it back twice: a sweep now finds nothing, the count stays.
    assert client.sweep_expired(ACCT) == 0
    assert client.get_controls(ACCT).spent_today == 200


def test_untiered_account_expiry_writes_no_controls(make_client: Any) -> None:
    client = make_client()
    client.initialize_user(ACCT, 100)
    client.reserve(ACCT, 30, action="video_generation", ttl=0.1)
    time.sleep(0.25)
    assert client.sweep_expired(ACCT) == 1
    controls = client.get_controls(ACCT)
    assert (controls.tier, controls.spent_today) == (None, 0)
    assert client.get_balance(ACCT) == 100 == ledger_sum(client, ACCT)


def test_racing_expiry_paths_give_back_once(redis_url: str) -> None:
    """Threads sweeping, listing and debiting at the moment the hold lapses: one expiry
    entry, the window given back once."""
    with CreditsClient(redis_url, app="t", pricing=TIERS) as client:
        _at_the_limit(client)
        time.sleep(0.35)
        barrier = threading.Barrier(6)
        errors: list[BaseException] = []

        def racer(n: int) -> None:
            try:
                barrier.wait()
                if n % 3 == 0:
                    client.sweep_expired(ACCT)
                elif n % 3 == 1:
                    client.grants(ACCT)
                else:
                    client.get_controls(ACCT)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=racer, args=(n,)) for n in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        expired = [e for e in client.history(ACCT, limit=50).entries if e.type is EntryType.EXPIRE]
        assert len(expired) == 1
        assert client.get_controls(ACCT).spent_today == 170
        # The full repair counts the same from the ledger (the expiry is a give-back).
        assert client.reconcile(ACCT, full=True, repair=True).balance == 830
        assert client.get_controls(ACCT).spent_today == 170


def test_count_windows_gives_an_expiry_back_to_its_reservations_window() -> None:
    day0 = 20_000 * 86_400_000
    d, month = day0 // 86_400_000, 2024 * 12 + 9
    yesterday = f"{day0 - 5}-0"
    entries = [
        (f"{day0 + 1}-0", "reserve", -50, ""),
        (f"{day0 + 2}-0", "expire", 40, yesterday),  # yesterday's hold: this month only
        (f"{day0 + 3}-0", "expire", 50, f"{day0 + 1}-0"),
    ]
    assert count_windows(entries[:2], d, month) == (50, 10)
    assert count_windows(entries, d, month) == (0, 0)
