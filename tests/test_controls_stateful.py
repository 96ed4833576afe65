"""Spend limits, low-balance alerts and transfers against a small model, hypothesis-stateful.

Debits, reservations (settled under, at and over, released, left to expire), refunds,
credits and transfers both ways interleave with changes of the daily limit, the alert
threshold and every member's daily limit (debits naming one of two members). The model
predicts every refusal (insufficient first, then the limit), the spending counted in the
current UTC day, and every alert (one per crossing, re-armed when a spending script finds
the balance back at or above the threshold); after each step the store must agree.
Runs on memory:// and a real Redis 7 (both lines run the same scripts elsewhere).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import redis
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    rule,
)
from hypothesis.stateful import run_state_machine_as_test as run_machine

from conftest import ledger_sum
from sparked_credits import CreditsClient, InsufficientCreditsError, SpendLimitExceededError
from sparked_credits.backends.memory import reset_memory_store

A, B = "user_ctl_a", "user_ctl_b"
MEMBERS = ("user_ctl_m1", "user_ctl_m2")
SETTINGS = settings(max_examples=12, stateful_step_count=20, deadline=None)
DAY_MS = 86_400_000


@dataclass
class Model:
    balance: dict[str, int] = field(default_factory=lambda: {A: 300, B: 100})
    daily: int | None = None
    low: int | None = None
    spent: int = 0
    fired: bool = False
    alerts: int = 0
    debits: dict[str, int] = field(default_factory=dict)  # entry id -> refundable
    member_limit: int | None = None  # every member's daily limit in A
    member_spent: dict[str, int] = field(default_factory=dict)
    member_of: dict[str, str] = field(default_factory=dict)  # entry id -> member

    def spend(self, amount: int) -> str | None:
        """The refusal a spending call of ``amount`` on A meets, or None."""
        if self.balance[A] < amount:
            return "insufficient"
        if self.daily is not None and self.spent + amount > self.daily:
            return "limit"
        return None

    def after(self, before: int, delta: int, spent: int) -> None:
        """A's balance moved by ``delta`` in a script that counts ``spent`` (its controls()
        call: windows, then the alert)."""
        if spent > 0 and self.daily is not None:
            self.spent += spent
        elif spent < 0:
            self.spent = max(0, self.spent + spent)
        now = before + delta
        self.balance[A] = now
        if self.low is not None:
            if (not self.fired or before >= self.low) and now < self.low:
                self.alerts += 1
                self.fired = True
            elif self.fired and now >= self.low:
                self.fired = False


class ControlsMachine(RuleBasedStateMachine):
    holds = Bundle("holds")

    def __init__(self, url: str, wipe: Callable[[], None]) -> None:
        super().__init__()
        wipe()
        self.client = CreditsClient(url, app="app.controls")
        self.client.initialize_user(A, 300)
        self.client.initialize_user(B, 100)
        self.m = Model()
        self.n = 0

    def teardown(self) -> None:
        self.client.close()

    def _key(self) -> str:
        self.n += 1
        return f"k{self.n}"

    @rule(daily=st.none() | st.integers(50, 400), low=st.none() | st.integers(20, 250))
    def set_limits(self, daily: int | None, low: int | None) -> None:
        self.client.set_tier(A, None, daily_limit=daily, low_balance=low)
        self.m.daily, self.m.low = daily, low
        if daily is None and low is None:  # off every tier: the tier's part of the hash goes
            self.m.spent, self.m.fired = 0, False
            if self.m.member_limit is None:  # and with no member limit, the whole hash
                self.m.member_spent = {}

    @rule(daily=st.none() | st.integers(20, 150))
    def set_member_limit(self, daily: int | None) -> None:
        self.client.set_member_limit(A, None, daily_limit=daily)
        self.m.member_limit = daily

    @rule(member=st.sampled_from(MEMBERS), amount=st.integers(1, 60))
    def member_debit(self, member: str, amount: int) -> None:
        refusal, before = self.m.spend(amount), self.m.balance[A]
        spent = self.m.member_spent.get(member, 0)
        limit = self.m.member_limit
        if refusal is None and limit is not None and spent + amount > limit:
            refusal = "member"
        try:
            done = self.client.debit(A, amount, action="chat_message", metadata={"member": member})
        except InsufficientCreditsError:
            assert refusal == "insufficient"
            return
        except SpendLimitExceededError as exc:
            found = (exc.window, exc.member, exc.spent, exc.limit)
            if refusal == "member":
                assert found == ("member_daily", member, spent, limit)
            else:
                assert refusal == "limit"
                assert found[:2] == ("daily", None)
            return
        assert refusal is None
        self.m.debits[done.entry.id] = amount
        self.m.member_of[done.entry.id] = member
        if limit is not None:
            self.m.member_spent[member] = spent + amount
        self.m.after(before, -amount, amount)

    @rule(amount=st.integers(1, 60))
    def lapse(self, amount: int) -> None:
        """A reservation left to expire: its credits and its window come back (no alert
        check: the expiry runs no controls() call)."""
        refusal, before = self.m.spend(amount), self.m.balance[A]
        try:
            self.client.reserve(A, amount, action="video_generation", ttl=0.03)
        except (InsufficientCreditsError, SpendLimitExceededError) as exc:
            kind = "insufficient" if isinstance(exc, InsufficientCreditsError) else "limit"
            assert refusal == kind
            return
        assert refusal is None
        self.m.after(before, -amount, amount)
        time.sleep(0.05)
        assert self.client.sweep_expired(A) == 1
        self.m.balance[A] += amount
        self.m.spent = max(0, self.m.spent - amount)

    @rule(amount=st.integers(1, 80))
    def debit(self, amount: int) -> None:
        refusal, before = self.m.spend(amount), self.m.balance[A]
        try:
            done = self.client.debit(A, amount, action="chat_message")
        except InsufficientCreditsError:
            assert refusal == "insufficient"
            return
        except SpendLimitExceededError as exc:
            found = (exc.spent, exc.limit)
            assert refusal == "limit"
            assert found == (self.m.spent, self.m.daily)
            return
        assert refusal is None
        self.m.debits[done.entry.id] = amount
        self.m.after(before, -amount, amount)

    @rule(target=holds, amount=st.integers(1, 60))
    def reserve(self, amount: int) -> tuple[str, int] | None:
        refusal, before = self.m.spend(amount), self.m.balance[A]
        try:
            hold = self.client.reserve(A, amount, action="video_generation")
        except (InsufficientCreditsError, SpendLimitExceededError) as exc:
            kind = "insufficient" if isinstance(exc, InsufficientCreditsError) else "limit"
            assert refusal == kind
            return None
        assert refusal is None
        self.m.after(before, -amount, amount)
        return hold.hold_id, amount

    @rule(hold=consumes(holds), extra=st.integers(-60, 30))
    def settle(self, hold: tuple[str, int] | None, extra: int) -> None:
        if hold is None:
            return
        hold_id, amount = hold
        actual = max(0, amount + extra)
        delta, before = amount - actual, self.m.balance[A]
        expected = None
        if delta < 0:
            if before + delta < 0:
                expected = "insufficient"
            elif self.m.daily is not None and self.m.spent - delta > self.m.daily:
                expected = "limit"
        try:
            self.client.settle(A, hold_id, actual, allow_overage=True)
        except InsufficientCreditsError:
            assert expected == "insufficient"
            self.release_hold(hold)
            return
        except SpendLimitExceededError:
            assert expected == "limit"
            self.release_hold(hold)
            return
        assert expected is None
        self.m.after(before, delta, -delta)

    def release_hold(self, hold: tuple[str, int]) -> None:
        before = self.m.balance[A]
        self.client.release(A, hold[0])
        self.m.after(before, hold[1], -hold[1])

    @rule(hold=consumes(holds))
    def release(self, hold: tuple[str, int] | None) -> None:
        if hold is not None:
            self.release_hold(hold)

    @rule(data=st.data())
    def refund(self, data: st.DataObject) -> None:
        open_ = sorted(k for k, v in self.m.debits.items() if v > 0)
        if not open_:
            return
        entry = data.draw(st.sampled_from(open_))
        amount = data.draw(st.integers(1, self.m.debits[entry]))
        before = self.m.balance[A]
        self.client.refund(A, entry, amount=amount)
        self.m.debits[entry] -= amount
        member = self.m.member_of.get(entry)
        if member and self.m.member_limit is not None:
            self.m.member_spent[member] = max(0, self.m.member_spent.get(member, 0) - amount)
        self.m.after(before, amount, -amount)

    @rule(amount=st.integers(1, 120))
    def credit(self, amount: int) -> None:
        self.client.credit(A, amount)
        self.m.balance[A] += amount  # not a spending script: no window, no alert check

    @rule(amount=st.integers(1, 120), out=st.booleans())
    def transfer(self, amount: int, out: bool) -> None:
        src, dst = (A, B) if out else (B, A)
        if self.m.balance[src] < amount:
            with pytest.raises(InsufficientCreditsError):
                self.client.transfer(src, dst, amount, idempotency_key=self._key())
            return
        self.client.transfer(src, dst, amount, idempotency_key=self._key())
        if out:
            self.m.balance[B] += amount
            self.m.after(self.m.balance[A], -amount, 0)  # an adjust: alert check, no window
        else:
            self.m.balance[B] -= amount
            self.m.balance[A] += amount

    @invariant()
    def agrees(self) -> None:
        for account in (A, B):
            balance = self.client.get_balance(account)
            assert balance == self.m.balance[account] == ledger_sum(self.client, account)
        assert self.client.get_controls(A).spent_today == self.m.spent
        for member in MEMBERS:
            found = self.client.get_member_controls(A, member).spent_today
            assert found == self.m.member_spent.get(member, 0), member
        assert len(self.client.alerts("machine", count=1000)) == self.m.alerts


def _clear_of_midnight(now_ms: int) -> None:
    """The model has one day: keep the run clear of a UTC midnight."""
    left = DAY_MS - now_ms % DAY_MS
    if left < 120_000:
        time.sleep(left / 1000 + 1)


@pytest.mark.parametrize("backend", ["memory", "redis7"])
def test_controls_match_model(backend: str, request: pytest.FixtureRequest) -> None:
    if backend == "memory":
        _clear_of_midnight(int(time.time() * 1000))
        url = "memory://controls-machine"
        try:
            run_machine(
                lambda: ControlsMachine(url, lambda: reset_memory_store("controls-machine")),
                settings=SETTINGS,
            )
        finally:
            reset_memory_store("controls-machine")
        return
    url = request.getfixturevalue("server_pool").server(backend).url
    raw = redis.Redis.from_url(url)
    try:
        seconds, _ = raw.time()
        _clear_of_midnight(int(seconds) * 1000)
        run_machine(lambda: ControlsMachine(url, raw.flushall), settings=SETTINGS)
    finally:
        raw.close()
