"""Per-member spend limits inside an organization's account: the tiers' window mechanism
keyed by the member an entry's metadata names, enforced inside the same scripts, on every
backend, sync and async; give-backs (release, settle, refund, an expired hold) return the
member's window; threads and two processes racing at a member's limit end exactly at it."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import ledger_sum
from sparked_credits import CreditsClient, SpendLimitExceededError, ValidationError

ORG, ANA, BEN = "org_team", "user_ana", "user_ben"


def spend(client: Any, member: str | None, amount: int, **kw: Any) -> Any:
    meta = {"member": member} if member else None
    return client.debit(ORG, amount, action="chat_message", metadata=meta, **kw)


def state(client: Any) -> tuple[Any, ...]:
    return (
        client.get_balance(ORG),
        ledger_sum(client, ORG),
        client.get_member_controls(ORG, ANA),
        client.get_member_controls(ORG, BEN),
        client.get_controls(ORG),
    )


def test_a_members_limit_holds_inside_the_script(make_client: Any) -> None:
    client = make_client()
    client.initialize_user(ORG, 1000)
    spend(client, ANA, 30)  # before any limit: the fast path, nothing counted
    shared = client.set_member_limit(ORG, None, daily_limit=100, monthly_limit=150)
    assert (shared.member, shared.daily_limit, shared.monthly_limit) == (None, 100, 150)
    spend(client, ANA, 60)
    before = state(client)
    with pytest.raises(SpendLimitExceededError) as refused:
        spend(client, ANA, 41)
    assert state(client) == before
    error = refused.value
    assert (error.window, error.member, error.limit, error.spent) == ("member_daily", ANA, 100, 60)
    assert error.to_dict()["member"] == ANA
    assert error.resets_at.hour == 0
    with pytest.raises(SpendLimitExceededError):
        client.reserve(ORG, 41, action="video", metadata={"member": ANA})
    assert state(client) == before
    spend(client, ANA, 40)  # exactly the limit
    spend(client, BEN, 100)  # another member: a window of its own
    spend(client, None, 500)  # an entry that names no member: the account's rules only
    ana = client.get_member_controls(ORG, ANA)
    assert (ana.spent_today, ana.spent_this_month, ana.own) == (100, 100, False)
    # A member's own limits win over every member's; removed, the shared ones apply again.
    own = client.set_member_limit(ORG, ANA, daily_limit=120)
    assert (own.own, own.daily_limit, own.monthly_limit, own.spent_today) == (True, 120, None, 100)
    spend(client, ANA, 20)
    client.set_member_limit(ORG, ANA)
    with pytest.raises(SpendLimitExceededError) as again:
        spend(client, ANA, 1)
    assert again.value.window == "member_daily"
    # Off its tier, the organization keeps its members' limits.
    client.set_tier(ORG, None)
    with pytest.raises(SpendLimitExceededError):
        spend(client, ANA, 1)
    # Every limit removed: the account spends freely (the fast path comes back).
    client.set_member_limit(ORG, None)
    spend(client, ANA, 1)
    assert client.get_balance(ORG) == 1000 - 30 - 60 - 40 - 100 - 500 - 20 - 1
    assert client.get_balance(ORG) == ledger_sum(client, ORG)


def test_give_backs_return_the_members_window(make_client: Any) -> None:
    client = make_client()
    client.initialize_user(ORG, 1000)
    client.set_member_limit(ORG, None, daily_limit=100)
    meta = {"member": ANA}
    taken = spend(client, ANA, 30)
    hold = client.reserve(ORG, 40, action="video", metadata=meta)
    other = client.reserve(ORG, 20, action="video", metadata=meta)
    client.reserve(ORG, 10, action="video", metadata=meta, ttl=0.2)  # lapses below
    assert client.get_member_controls(ORG, ANA).spent_today == 100
    client.release(ORG, other.hold_id)  # 80
    client.settle(ORG, hold.hold_id, 25)  # keeps 25 of 40: 65
    client.refund(ORG, taken.entry.id, amount=10)  # 55
    time.sleep(0.3)
    client.sweep_expired(ORG)  # the lapsed hold's 10: 45
    assert client.get_member_controls(ORG, ANA).spent_today == 45
    spend(client, ANA, 55)
    with pytest.raises(SpendLimitExceededError):
        spend(client, ANA, 1)
    assert client.get_balance(ORG) == 1000 - 20 - 25 - 55 == ledger_sum(client, ORG)


def test_bad_member_limits_are_refused_and_change_nothing(make_client: Any) -> None:
    client = make_client()
    client.initialize_user(ORG, 1000)
    client.set_member_limit(ORG, ANA, daily_limit=50)
    before = state(client)
    for bad in (
        lambda: client.set_member_limit(ORG, "bad member", daily_limit=5),
        lambda: client.set_member_limit(ORG, ANA, daily_limit=0),
        lambda: client.set_member_limit(ORG, ANA, monthly_limit=True),
        lambda: client.set_member_limit("bad org", ANA, daily_limit=5),
        lambda: client.set_member_limit(ORG, 7, daily_limit=5),
    ):
        with pytest.raises(ValidationError):
            bad()
    assert state(client) == before


_WORKER = """
import sys
from sparked_credits import CreditsClient, SpendLimitExceededError

ok = refused = 0
with CreditsClient(sys.argv[1], app="t") as client:
    for _ in range(int(sys.argv[2])):
        try:
            client.debit("org_team", 10, action="chat_message", metadata={"member": "user_ana"})
            ok += 1
        except SpendLimitExceededError:
            refused += 1
print(ok, refused)
"""


def test_threads_and_processes_racing_end_exactly_at_the_members_limit(redis_url: str) -> None:
    with CreditsClient(redis_url, app="t") as client:
        client.initialize_user(ORG, 5000)
        client.set_member_limit(ORG, None, daily_limit=200)
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
                        spend(mine, ANA, 10)
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
        assert client.get_member_controls(ORG, ANA).spent_today == 200
        assert client.get_balance(ORG) == 4800 == ledger_sum(client, ORG)


def test_count_member_windows_follows_the_scripts_rules() -> None:
    from sparked_credits._core.member_limits import count_member_windows

    day0 = 20_000 * 86_400_000  # a UTC midnight (2024-10-04)
    d, month = day0 // 86_400_000, 2024 * 12 + 9
    ids = [f"{day0 + n}-0" for n in range(1, 9)]
    entries = [
        (ids[0], "debit", -50, "", ANA),
        (ids[1], "debit", -20, "", BEN),
        (ids[2], "reserve", -40, "", ANA),
        (ids[3], "settle", 10, ids[2], ""),  # keeps 30 of Ana's hold
        (ids[4], "refund", 5, ids[3], ""),  # a refund of the settle: the hold's window
        (ids[5], "debit", -70, "", ""),  # no member
        (ids[6], "refund", 20, ids[0], ""),
        (ids[7], "expire", 999, f"{day0 - 5}-0", ""),  # an unknown hold: nothing
    ]
    assert count_member_windows(entries, d, month) == {ANA: (55, 55), BEN: (20, 20)}


def test_a_lost_member_count_is_counted_again_by_the_repair(redis_url: str) -> None:
    import redis as redis_py

    with CreditsClient(redis_url, app="t") as client:
        client.initialize_user(ORG, 1000)
        client.set_member_limit(ORG, None, daily_limit=100)
        spend(client, ANA, 50)
        # A torn debit: its entry is in the ledger, its counts and its balance are not.
        raw = redis_py.Redis.from_url(redis_url)
        raw.xadd(
            f"txs:{ORG}",
            {"type": "debit", "delta": "-40", "balance": "910", "action": "chat_message",
             "app": "t", "reason": "", "ref": "", "idem": "torn",
             "meta": '{"member":"user_ana"}'},
        )
        raw.close()
        assert client.reconcile(ORG, repair=True).repaired
        assert client.get_member_controls(ORG, ANA).spent_today == 90
        with pytest.raises(SpendLimitExceededError):
            spend(client, ANA, 11)
        spend(client, ANA, 10)
        assert client.get_balance(ORG) == 900 == ledger_sum(client, ORG)
