"""Spend limits per tier, enforced inside the debit, charge and reserve scripts, on every
backend, sync and async; and the race at the limit: threads and processes together never
spend past it.

Windows are the UTC day and calendar month of Redis server time; a reservation counts when
it is made, a release, the unused part of a settle and a refund give the window back.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from conftest import LINES, _cluster_flushed, ledger_sum
from sparked_credits import (
    DEFAULT_TABLE,
    CreditsClient,
    SpendLimitExceededError,
    ValidationError,
)
from sparked_credits.integrations.http_errors import error_parts
from sparked_credits.pricing import PriceTable

TIERS = DEFAULT_TABLE.with_overrides(
    {},
    tiers={
        "free": {"daily_limit": 200, "monthly_limit": 3000, "low_balance": 20},
        "pro": {"monthly_limit": 100_000},
    },
)
ACCT = "user_tiered"


def unchanged(client: Any, account: str = ACCT) -> tuple[Any, ...]:
    return (
        client.get_balance(account),
        ledger_sum(client, account),
        client.grants(account),
        client.get_controls(account),
    )


def test_daily_limit_refuses_inside_the_script_and_changes_nothing(make_client: Any) -> None:
    client = make_client(pricing=TIERS)
    client.initialize_user(ACCT, 1000)
    controls = client.set_tier(ACCT, "free")
    assert (controls.tier, controls.daily_limit, controls.monthly_limit) == ("free", 200, 3000)
    assert controls.low_balance == 20
    client.debit(ACCT, 150, action="chat_message")
    client.charge(ACCT, "chat_message")
    hold = client.reserve(ACCT, 30, action="video_generation")
    assert client.get_controls(ACCT).spent_today == 190
    before = unchanged(client)
    for attempt in (
        lambda: client.debit(ACCT, 11, action="chat_message"),
        lambda: client.charge(ACCT, "canvas_simple"),
        lambda: client.reserve(ACCT, 20, action="video_generation"),
        lambda: client.settle(ACCT, hold.hold_id, 41, allow_overage=True),
    ):
        with pytest.raises(SpendLimitExceededError) as refused:
            attempt()
        assert unchanged(client) == before
    error = refused.value
    assert (error.window, error.limit, error.spent, error.requested) == ("daily", 200, 190, 11)
    assert error.http_status == 429
    body = error.to_dict()
    assert {"limit", "spent", "resets_at", "window"} <= body.keys()
    assert body["resets_at"].endswith("T00:00:00+00:00")
    status, _, headers = error_parts(error)
    assert status == 429
    assert 1 <= int(headers["Retry-After"]) <= 86_400
    # The rest of the day fits exactly.
    client.debit(ACCT, 10, action="chat_message")
    assert client.get_controls(ACCT).spent_today == 200


def test_release_settle_and_refund_give_the_window_back(make_client: Any) -> None:
    client = make_client(pricing=TIERS)
    client.initialize_user(ACCT, 1000)
    client.set_tier(ACCT, "free")
    spent = client.debit(ACCT, 100, action="chat_message")
    hold = client.reserve(ACCT, 60, action="video_generation")
    other = client.reserve(ACCT, 40, action="video_generation")
    assert client.get_controls(ACCT).spent_today == 200
    client.release(ACCT, other.hold_id)
    assert client.get_controls(ACCT).spent_today == 160
    settled = client.settle(ACCT, hold.hold_id, 25)
    assert client.get_controls(ACCT).spent_today == 125
    client.refund(ACCT, spent.entry.id, amount=30)
    client.refund(ACCT, settled.entry.id)
    now = client.get_controls(ACCT)
    assert (now.spent_today, now.spent_this_month) == (70, 70)
    assert client.get_balance(ACCT) == 930
    assert client.get_balance(ACCT) == ledger_sum(client, ACCT)


def test_monthly_limit_per_account_override_and_clearing(make_client: Any) -> None:
    client = make_client(pricing=TIERS)
    client.initialize_user(ACCT, 1000)
    client.set_tier(ACCT, "pro", monthly_limit=50)
    client.debit(ACCT, 50, action="chat_message")
    with pytest.raises(SpendLimitExceededError) as refused:
        client.debit(ACCT, 1, action="chat_message")
    assert (refused.value.window, refused.value.limit) == ("monthly", 50)
    assert refused.value.resets_at.day == 1
    cleared = client.set_tier(ACCT, None)
    assert (cleared.tier, cleared.monthly_limit) == (None, None)
    assert cleared.spent_this_month == 0  # the hash went: the debits take the fast block
    client.debit(ACCT, 100, action="chat_message")
    assert client.get_balance(ACCT) == 850


def test_bad_tiers_are_refused_and_change_nothing(make_client: Any) -> None:
    client = make_client(pricing=TIERS)
    client.initialize_user(ACCT, 1000)
    client.set_tier(ACCT, "free")
    before = unchanged(client)
    for bad in (
        lambda: client.set_tier(ACCT, "gold"),
        lambda: client.set_tier(ACCT, "free", daily_limit=0),
        lambda: client.set_tier(ACCT, "free", low_balance=True),
        lambda: client.set_tier(ACCT, 7),
        lambda: client.set_tier("bad account", "free"),
    ):
        with pytest.raises(ValidationError):
            bad()
    assert unchanged(client) == before


def test_price_file_tiers_load(tmp_path: Path) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(
        "[tiers.free]\n"
        "daily_limit = 200          # credits spent per UTC day (optional)\n"
        "monthly_limit = 3000       # per UTC calendar month (optional)\n"
        "low_balance = 20           # alert threshold (optional)\n"
    )
    from sparked_credits import load_price_table

    table = load_price_table(path)
    assert table.tier("free").daily_limit == 200
    assert table.calculate_cost("chat_message") == 10
    assert isinstance(table, PriceTable)


# -- the race at the limit --------------------------------------------------------------

_WORKER = """
import sys
from sparked_credits import CreditsClient, SpendLimitExceededError
c = CreditsClient(sys.argv[1], app="racer")
ok = refused = 0
for _ in range(int(sys.argv[2])):
    try:
        c.debit("user_tiered", 10, action="chat_message")
        ok += 1
    except SpendLimitExceededError:
        refused += 1
print(ok, refused)
"""


def test_threads_and_processes_racing_end_exactly_at_the_limit(redis_url: str) -> None:
    _race(redis_url)


def test_racing_on_a_cluster(server_pool: Any) -> None:
    _race(_cluster_flushed(server_pool.cluster(LINES[-1])))


def _race(redis_url: str) -> None:
    with CreditsClient(redis_url, app="t", pricing=TIERS) as client:
        client.initialize_user(ACCT, 1000)
        client.set_tier(ACCT, "free")
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent / "support")}
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", _WORKER, redis_url, "12"],
                env=env,
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        taken: list[int] = []

        def racer() -> None:
            with CreditsClient(redis_url, app="t") as mine:
                for _ in range(5):
                    try:
                        mine.debit(ACCT, 10, action="chat_message")
                        taken.append(1)
                    except SpendLimitExceededError:
                        taken.append(0)

        threads = [threading.Thread(target=racer) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        counts = [p.communicate(timeout=60)[0].split() for p in procs]
        ok = sum(taken) + sum(int(c[0]) for c in counts)
        refused = taken.count(0) + sum(int(c[1]) for c in counts)
        assert (ok, refused) == (20, 64 - 20)
        assert client.get_controls(ACCT).spent_today == 200
        assert client.get_balance(ACCT) == 800 == ledger_sum(client, ACCT)


# -- the windows are derived state: the full repair counts them again ---------------------


def test_count_windows_follows_the_scripts_rules() -> None:
    from sparked_credits._core.controls import count_windows

    day0 = 20_000 * 86_400_000  # a UTC midnight
    old, d = f"{day0 - 5}-0", day0 // 86_400_000
    month = 2024 * 12 + 9  # 20000 days after the epoch is 2024-10-04
    ids = [f"{day0 + n}-0" for n in range(1, 8)]
    entries = [
        (ids[0], "debit", -100, ""),
        (ids[1], "reserve", -50, ""),
        (ids[2], "settle", 20, ids[1]),  # keeps 30, gives 20 back
        (ids[3], "refund", 10, ids[2]),  # a refund of the settle: the hold's window
        (ids[4], "refund", 40, old),  # a refund of yesterday's debit: not today's window
        (ids[5], "adjust", -70, ""),  # not spending
        (ids[6], "release", 500, ids[1]),  # more than was counted: never below 0
    ]
    assert count_windows(entries[:5], d, month) == (120, 80)
    assert count_windows(entries, d, month) == (0, 0)


def test_a_lost_count_is_counted_again_by_the_repair(redis_url: str) -> None:
    import redis as redis_py

    with CreditsClient(redis_url, app="t", pricing=TIERS) as client:
        client.initialize_user(ACCT, 1000)
        client.set_tier(ACCT, "free")
        client.debit(ACCT, 120, action="chat_message")
        hold = client.reserve(ACCT, 50, action="video_generation")
        client.settle(ACCT, hold.hold_id, 30)
        assert client.get_controls(ACCT).spent_today == 150
        # A torn debit: its entry is in the ledger, its count and its balance are not.
        raw = redis_py.Redis.from_url(redis_url)
        raw.xadd(
            f"txs:{ACCT}",
            {
                "type": "debit",
                "delta": "-40",
                "balance": "810",
                "action": "chat_message",
                "app": "t",
                "reason": "",
                "ref": "",
                "idem": "torn",
                "meta": "",
            },
        )
        raw.close()
        result = client.reconcile(ACCT, repair=True)
        assert result.repaired
        assert client.get_controls(ACCT).spent_today == 190
        assert client.get_balance(ACCT) == ledger_sum(client, ACCT) == 810
        with pytest.raises(SpendLimitExceededError):
            client.debit(ACCT, 11, action="chat_message")
