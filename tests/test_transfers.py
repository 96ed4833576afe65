"""Transfers and referral rewards: operations on two accounts, as keyed one-slot steps,
on every backend, sync and async.

After every call: each account's balance equals its ledger sum and its lots, and the two
accounts together hold what they held before (a transfer moves, never makes, credits).
A crash between the two steps of a transfer is finished by a repeat of the call or by
``reconcile_all``; one before the first step leaves nothing to finish.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from conftest import ledger_sum
from sparked_credits import (
    EntryType,
    IdempotencyConflictError,
    InsufficientCreditsError,
    ReferralError,
    ValidationError,
)
from sparked_credits._client_base import now_ms
from sparked_credits._core import transfers
from sparked_credits._core.lots import decode_draws

A, B = "user_from", "user_to"


def check(client: Any, *accounts: str) -> int:
    """The invariants on each account; returns their total balance."""
    total = 0
    for account in accounts:
        balance = client.get_balance(account)
        assert balance == ledger_sum(client, account)
        assert max(balance, 0) == sum(g.remaining for g in client.grants(account))
        total += balance
    return total


def state(client: Any, *accounts: str) -> list[Any]:
    return [(client.get_balance(a), ledger_sum(client, a), client.grants(a)) for a in accounts]


def start(client: Any) -> datetime:
    client.initialize_user(A)
    client.initialize_user(B, 10)
    expires = datetime.now(timezone.utc) + timedelta(hours=2)
    client.credit(A, 40, source="promo", expires_at=expires)
    return expires


def test_transfer_moves_once_and_credits_keep_their_expiry(client: Any) -> None:
    expires = start(client)
    before = check(client, A, B)
    moved = client.transfer(A, B, 70, idempotency_key="t-1", reason="team budget")
    assert (moved.replayed, moved.lapsed, client.get_balance(A), client.get_balance(B)) == (
        False,
        0,
        70,
        80,
    )
    assert check(client, A, B) == before
    # The out entry draws the promo lot first (it expires), then the starting credits.
    assert [n for _, n in decode_draws(moved.out.entry.lots)] == [40, 30]
    assert moved.out.entry.metadata == {"transfer": {"to": B, "key": "t-1"}}
    lots = {g.grant_id: g for g in client.grants(B)}
    arrived = [(e.entry.delta, lots[e.entry.id].expires_at) for e in moved.arrived]
    assert arrived[1] == (30, None)
    assert arrived[0][0] == 40
    assert arrived[0][1] is not None
    assert abs((arrived[0][1] - expires).total_seconds()) < 0.002
    for entry in moved.arrived:
        assert entry.entry.action == "transfer"
        assert entry.entry.metadata == {
            "transfer": {"from": A, "entry": moved.out.entry.id, "key": "t-1"}
        }
        assert lots[entry.entry.id].source == "transfer"
    # A repeat replays every step and moves nothing.
    again = client.transfer(A, B, 70, idempotency_key="t-1", reason="team budget")
    assert again.replayed
    assert [e.entry.id for e in again.arrived] == [e.entry.id for e in moved.arrived]
    assert (client.get_balance(A), client.get_balance(B)) == (70, 80)
    assert client.usage(A, days=1).total == 0  # a transfer is not usage


def test_bad_transfers_change_nothing(client: Any) -> None:
    start(client)
    client.transfer(A, B, 5, idempotency_key="used")
    before = state(client, A, B)
    bad: list[tuple[tuple[Any, ...], dict[str, Any], type[Exception]]] = [
        ((A, A, 5), {"idempotency_key": "k1"}, ValidationError),
        ((A, B, 0), {"idempotency_key": "k2"}, ValidationError),
        ((A, B, True), {"idempotency_key": "k3"}, ValidationError),
        ((A, B, 5), {"idempotency_key": "has space"}, ValidationError),
        ((A, B, 5), {"idempotency_key": "x" * 120}, ValidationError),
        ((A, "bad{id}", 5), {"idempotency_key": "k4"}, ValidationError),
        ((A, B, 10_000), {"idempotency_key": "k5"}, InsufficientCreditsError),
        ((A, B, 6), {"idempotency_key": "used"}, IdempotencyConflictError),
    ]
    for args, kwargs, error in bad:
        with pytest.raises(error):
            client.transfer(*args, **kwargs)
    assert state(client, A, B) == before
    assert client.recover_transfers(older_than=0) == 0  # no intent was left behind


def _run_until_taken(client: Any, key: str, *, backdate: bool = True) -> None:
    """Run a transfer's steps up to and including the taking one, then stop (a crash)."""
    when = now_ms() - (120_000 if backdate else 0)
    steps = transfers.transfer(client._ops, A, B, 30, idempotency_key=key, reason=None, now_ms=when)
    step = next(steps)
    reply = client._run(step)  # the intent
    step = steps.send(reply)
    client._run(step)  # the out entry; the process dies here
    steps.close()


def test_crash_between_the_steps_is_finished_by_reconcile_all(client: Any) -> None:
    start(client)
    before = check(client, A, B)
    _run_until_taken(client, "crash-1")
    assert (client.get_balance(A), client.get_balance(B)) == (110, 10)
    report = client.reconcile_all()
    assert report.transfers_recovered == 1
    assert report.mismatched == 0
    assert (client.get_balance(A), client.get_balance(B)) == (110, 40)
    assert check(client, A, B) == before
    assert client.reconcile_all().transfers_recovered == 0
    # A later repeat of the call finds it done.
    assert client.transfer(A, B, 30, idempotency_key="crash-1").replayed
    assert (client.get_balance(A), client.get_balance(B)) == (110, 40)


def test_crash_between_the_steps_is_finished_by_a_repeat(client: Any) -> None:
    start(client)
    _run_until_taken(client, "crash-2", backdate=False)
    assert client.recover_transfers(A) == 0  # too young: the call may still be running
    moved = client.transfer(A, B, 30, idempotency_key="crash-2")
    assert moved.replayed
    assert [e.entry.delta for e in moved.arrived] == [30]
    assert (client.get_balance(A), client.get_balance(B)) == (110, 40)
    assert client.recover_transfers(older_than=0) == 0


def test_crash_before_the_first_step_is_dropped(client: Any) -> None:
    start(client)
    before = state(client, A, B)
    steps = transfers.transfer(
        client._ops, A, B, 30, idempotency_key="early", reason=None, now_ms=now_ms() - 120_000
    )
    client._run(next(steps))  # only the intent was written
    steps.close()
    assert client.recover_transfers() == 1
    assert state(client, A, B) == before
    assert client.recover_transfers(older_than=0) == 0


def test_concurrent_repeats_move_once(make_client: Callable[..., Any]) -> None:
    first = make_client()
    start(first)
    clients = [make_client() for _ in range(4)]
    results: list[Any] = []
    errors: list[BaseException] = []

    def go(c: Any) -> None:
        try:
            results.append(c.transfer(A, B, 25, idempotency_key="race"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=go, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert (first.get_balance(A), first.get_balance(B)) == (115, 35)
    assert len({r.out.entry.id for r in results}) == 1
    assert check(first, A, B) == 150


_CRASHING_WORKER = """
import os, sys
from sparked_credits import CreditsClient
from sparked_credits._core import transfers
from sparked_credits._client_base import now_ms
c = CreditsClient(sys.argv[1], app="worker")
steps = transfers.transfer(c._ops, "user_from", "user_to", 30, idempotency_key="killed",
                           reason=None, now_ms=now_ms() - 120_000)
step = next(steps)
while True:
    reply = c._run(step)
    if step.name == "adjust":
        os._exit(17)  # the process dies between the two steps
    step = steps.send(reply)
"""


def test_a_killed_process_between_the_steps(redis_url: str) -> None:
    from sparked_credits import CreditsClient

    with CreditsClient(redis_url, app="t") as client:
        start(client)
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent / "support")}
        done = subprocess.run(
            [sys.executable, "-c", _CRASHING_WORKER, redis_url],
            env=env,
            timeout=60,
            check=False,
            capture_output=True,
        )
        assert done.returncode == 17, done.stderr
        assert (client.get_balance(A), client.get_balance(B)) == (110, 10)
        assert client.reconcile_all().transfers_recovered == 1
        assert (client.get_balance(A), client.get_balance(B)) == (110, 40)
        assert check(client, A, B) == 150


def test_referral_rewards_once_per_referred_account(client: Any) -> None:
    client.initialize_user("ref_1")
    first = client.reward_referral("ref_1", "new_1", referrer_credits=50, referred_credits=20)
    assert (first.capped, first.replayed) == (False, False)
    assert first.referrer_reward is not None
    assert (client.get_balance("ref_1"), client.get_balance("new_1")) == (150, 20)
    assert first.referred_reward.entry.metadata == {"referral": {"referrer": "ref_1"}}
    assert first.referrer_reward.entry.metadata == {
        "referral": {"referred": "new_1", "entry": first.referred_reward.entry.id}
    }
    for account in ("ref_1", "new_1"):
        assert "referral" in [g.source for g in client.grants(account)]
    # However often the claim is sent: the same outcome, nothing new.
    for _ in range(3):
        again = client.reward_referral("ref_1", "new_1", referrer_credits=50, referred_credits=20)
        assert again.replayed
        assert again.referred_reward.entry.id == first.referred_reward.entry.id
    before = state(client, "ref_1", "new_1", "ref_2")
    with pytest.raises(ReferralError) as refused:
        client.reward_referral("ref_2", "new_1", referrer_credits=50, referred_credits=20)
    assert refused.value.reason == "already_referred"
    assert refused.value.http_status == 409
    with pytest.raises(ValidationError):
        client.reward_referral("ref_1", "ref_1", referrer_credits=50, referred_credits=20)
    with pytest.raises(ValidationError):
        client.reward_referral("ref_1", "new_9", referrer_credits=0, referred_credits=20)
    past = datetime.now(timezone.utc) - timedelta(seconds=1)
    with pytest.raises(ValidationError):
        client.reward_referral(
            "ref_1", "new_9", referrer_credits=5, referred_credits=20, expires_at=past
        )
    assert state(client, "ref_1", "new_1", "ref_2") == before
    assert client.get_balance("new_9") == 0
    check(client, "ref_1", "new_1")


def test_referral_monthly_cap(client: Any) -> None:
    for n in range(3):
        got = client.reward_referral(
            "ref_c", f"new_{n}", referrer_credits=10, referred_credits=5, monthly_cap=2
        )
        assert got.capped == (n == 2)
    assert client.get_balance("ref_c") == 20
    assert [client.get_balance(f"new_{n}") for n in range(3)] == [5, 5, 5]
    history = client.history("ref_c").entries
    assert [e.type for e in history] == [EntryType.CREDIT, EntryType.CREDIT]
    check(client, "ref_c", "new_0", "new_2")


def test_racing_referrers_reward_once(make_client: Callable[..., Any]) -> None:
    first = make_client()
    clients = [make_client() for _ in range(4)]
    outcomes: list[Any] = []

    def claim(c: Any, referrer: str) -> None:
        try:
            outcomes.append(
                c.reward_referral(referrer, "new_r", referrer_credits=10, referred_credits=5)
            )
        except ReferralError as exc:
            outcomes.append(exc)

    # Two threads repeat one referrer, two others name another: one referrer wins.
    referrers = ["ref_a", "ref_a", "ref_b", "ref_b"]
    threads = [
        threading.Thread(target=claim, args=(c, r)) for c, r in zip(clients, referrers, strict=True)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    won = {o.referrer for o in outcomes if not isinstance(o, ReferralError)}
    assert len(won) == 1
    lost = ({"ref_a", "ref_b"} - won).pop()
    assert first.get_balance("new_r") == 5
    assert (first.get_balance(won.pop()), first.get_balance(lost)) == (10, 0)
    assert sum(isinstance(o, ReferralError) for o in outcomes) == 2


def test_crash_between_the_referral_sides_is_finished_by_a_repeat(client: Any) -> None:
    steps = transfers.reward_referral(
        client._ops,
        "ref_c",
        "new_c",
        referrer_credits=10,
        referred_credits=5,
        expires_at=None,
        monthly_cap=None,
    )
    client._run(next(steps))  # the referred side; the process dies here
    steps.close()
    assert (client.get_balance("new_c"), client.get_balance("ref_c")) == (5, 0)
    done = client.reward_referral("ref_c", "new_c", referrer_credits=10, referred_credits=5)
    assert done.referred_reward.replayed
    assert done.referrer_reward is not None
    assert not done.referrer_reward.replayed
    assert (client.get_balance("new_c"), client.get_balance("ref_c")) == (5, 10)
