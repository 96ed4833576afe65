"""Credit lots against the pure model (``_core.lots.LotBook``), hypothesis-stateful.

Grants with and without expiry and priorities interleave with debits, partial refunds,
holds (settled under, at and over their amount, released) and admin adjustments. The model
predicts every draw (which lots, how much) and, after each step, ``grants()`` and the
balance must equal the model's.

The clock: lots expire by Redis server time. The model's clock is advanced explicitly
(``tick`` sleeps past the next expiry) and every step first makes sure no expiry falls
within a safety margin of it (sleeping past one that is about to), so each call sees
exactly the expiries the model has applied. Runs on both real server lines (Redis 6 and 7)
and on memory://.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone

import pytest
import redis
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from sparked_credits import CreditsClient, InsufficientCreditsError
from sparked_credits._core.lots import LotBook, decode_draws
from sparked_credits.backends.memory import reset_memory_store

ACCT = "user_lotmachine"
MARGIN_MS = 400  # no expiry may fall this close to a call
LIVES_MS = (700, 1100)

SETTINGS = settings(max_examples=20, stateful_step_count=25, deadline=None)


@dataclass
class Taken:
    """What a debit (or a settle) took, and how much of it was refunded."""

    draws: list[tuple[str, int]]
    refunded: int = 0

    @property
    def total(self) -> int:
        return sum(n for _, n in self.draws)


@dataclass
class Model:
    book: LotBook = field(default_factory=LotBook)
    taken: dict[str, Taken] = field(default_factory=dict)
    holds: dict[str, list[tuple[str, int]]] = field(default_factory=dict)


class LotMachine(RuleBasedStateMachine):
    def __init__(self, url: str, now_ms: Callable[[], int], wipe: Callable[[], None]) -> None:
        super().__init__()
        wipe()
        self.client = CreditsClient(url, app="app.lots")
        self.now_ms = now_ms
        self.m = Model()

    def teardown(self) -> None:
        self.client.close()

    # -- the clock ----------------------------------------------------------------------

    def _pending(self) -> list[int]:
        return sorted(
            lot.expires_ms
            for lot in self.m.book.lots.values()
            if lot.remaining > 0 and lot.expires_ms is not None
        )

    def _guard(self) -> None:
        """Step clear of any expiry near now, then apply the ones that are due."""
        now = self.now_ms()
        for expires in self._pending():
            if now < expires <= now + MARGIN_MS:
                time.sleep((expires - now + 50) / 1000)
                now = self.now_ms()
        if self.m.book.expire_due(now):
            event("a lot lapsed")
        self._now = now

    def _give_back(self, draws: list[tuple[str, int]], amount: int, skip: int = 0) -> None:
        _, lapsed = self.m.book.give_back(draws, amount, skip, self._now)
        for lot in lapsed:
            event("credits given back to an expired lot lapsed at once")
            self.m.book.lapse(lot)

    # -- rules --------------------------------------------------------------------------

    @initialize(credits=st.integers(0, 60))
    def start(self, credits: int) -> None:
        self._guard()
        result = self.client.initialize_user(ACCT, credits)
        assert result.entry is not None
        self.m.book.open(result.entry.id, credits, 50, None, "init")

    @rule(
        amount=st.integers(1, 50),
        priority=st.sampled_from([0, 0, 50, 100]),
        life=st.sampled_from([None, LIVES_MS[0], LIVES_MS[1]]),
    )
    def credit(self, amount: int, priority: int, life: int | None) -> None:
        self._guard()
        expires = None
        if life is not None:
            expires_ms = self._now + life
            expires = datetime.fromtimestamp(expires_ms / 1000, tz=timezone.utc)
        result = self.client.credit(
            ACCT, amount, source="promo", expires_at=expires, priority=priority
        )
        exp_ms = None if expires is None else int(expires.timestamp() * 1000)
        self.m.book.open(result.entry.id, amount, priority, exp_ms, "promo")

    @rule(amount=st.integers(1, 70))
    def debit(self, amount: int) -> None:
        self._guard()
        if self.m.book.balance < amount:
            with pytest.raises(InsufficientCreditsError):
                self.client.debit(ACCT, amount, action="chat")
            return
        result = self.client.debit(ACCT, amount, action="chat")
        expected = self.m.book.draw(amount)
        assert decode_draws(result.entry.lots) == expected
        self.m.taken[result.entry.id] = Taken(expected)

    @precondition(lambda self: any(t.refunded < t.total for t in self.m.taken.values()))
    @rule(data=st.data(), partial=st.booleans())
    def refund(self, data: st.DataObject, partial: bool) -> None:
        open_ids = sorted(k for k, t in self.m.taken.items() if t.refunded < t.total)
        eid = data.draw(st.sampled_from(open_ids))
        taken = self.m.taken[eid]
        left = taken.total - taken.refunded
        amount = data.draw(st.integers(1, left)) if partial else None
        self._guard()
        self.client.refund(ACCT, eid, amount=amount)
        n = left if amount is None else amount
        self._give_back(taken.draws, n, taken.refunded)
        taken.refunded += n

    @rule(amount=st.integers(1, 40))
    def reserve(self, amount: int) -> None:
        self._guard()
        if self.m.book.balance < amount:
            with pytest.raises(InsufficientCreditsError):
                self.client.reserve(ACCT, amount, action="video", ttl=3600)
            return
        hold = self.client.reserve(ACCT, amount, action="video", ttl=3600)
        expected = self.m.book.draw(amount)
        assert decode_draws(hold.entry.lots) == expected
        self.m.holds[hold.hold_id] = expected

    @precondition(lambda self: bool(self.m.holds))
    @rule(data=st.data(), over=st.integers(-40, 10))
    def settle(self, data: st.DataObject, over: int) -> None:
        hid = data.draw(st.sampled_from(sorted(self.m.holds)))
        draws = self.m.holds[hid]
        reserved = sum(n for _, n in draws)
        actual = max(0, reserved + over)
        self._guard()
        if actual > reserved and self.m.book.balance < actual - reserved:
            with pytest.raises(InsufficientCreditsError):
                self.client.settle(ACCT, hid, actual, allow_overage=True)
            return
        result = self.client.settle(ACCT, hid, actual, allow_overage=True)
        del self.m.holds[hid]
        if actual <= reserved:
            kept, left = [], actual
            for lot_id, n in draws:
                if left == 0:
                    break
                kept.append((lot_id, min(n, left)))
                left -= min(n, left)
            self._give_back(draws, reserved - actual)
        else:
            kept = draws + self.m.book.draw(actual - reserved)
        if actual > 0:
            self.m.taken[result.entry.id] = Taken(kept)

    @precondition(lambda self: bool(self.m.holds))
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        hid = data.draw(st.sampled_from(sorted(self.m.holds)))
        self._guard()
        self.client.release(ACCT, hid)
        draws = self.m.holds.pop(hid)
        self._give_back(draws, sum(n for _, n in draws))

    @rule(delta=st.integers(-40, 30).filter(bool), overdraft=st.booleans())
    def adjust(self, delta: int, overdraft: bool) -> None:
        self._guard()
        if delta < 0 and self.m.book.balance + delta < 0 and not overdraft:
            with pytest.raises(InsufficientCreditsError):
                self.client.adjust(ACCT, delta)
            return
        result = self.client.adjust(ACCT, delta, allow_overdraft=overdraft)
        if delta > 0:
            self.m.book.open(result.entry.id, delta, 50, None, "adjust")
        else:
            self.m.book.draw(-delta)

    @precondition(lambda self: any(e > self.now_ms() for e in self._pending()))
    @rule()
    def tick(self) -> None:
        """Advance the clock past the next expiry."""
        now = self.now_ms()
        upcoming = [e for e in self._pending() if e > now]
        time.sleep((upcoming[0] - now + 50) / 1000)

    # -- the check ----------------------------------------------------------------------

    @invariant()
    def store_matches_model(self) -> None:
        if not self.m.book.lots:
            return
        self._guard()
        got = [
            (g.grant_id, g.source, g.amount, g.remaining, g.priority, g.expires_at)
            for g in self.client.grants(ACCT)
        ]
        want = [
            (g.grant_id, g.source, g.amount, g.remaining, g.priority, g.expires_at)
            for g in self.m.book.grants()
        ]
        assert got == want
        assert self.client.get_balance(ACCT) == self.m.book.balance
        assert all(g[3] > 0 for g in got)


@pytest.mark.parametrize("backend", ["memory", "redis6", "redis7"])
def test_lots_match_model(backend: str, request: pytest.FixtureRequest) -> None:
    if backend == "memory":
        url = "memory://lot-machine"

        def now_ms() -> int:
            return int(time.time() * 1000)

        def wipe() -> None:
            reset_memory_store("lot-machine")

        run_state_machine_as_test(lambda: LotMachine(url, now_ms, wipe), settings=SETTINGS)
        reset_memory_store("lot-machine")
        return
    url = request.getfixturevalue("server_pool").server(backend).url
    raw = redis.Redis.from_url(url)

    def server_ms() -> int:
        seconds, micros = raw.time()
        return int(seconds) * 1000 + int(micros) // 1000

    def flush() -> None:
        raw.flushall()

    try:
        run_state_machine_as_test(lambda: LotMachine(url, server_ms, flush), settings=SETTINGS)
    finally:
        raw.close()
