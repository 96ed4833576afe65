"""The SDK against a model of the lots rules written from README.md (tests/lots_model.py),
driven by seeded random steps on every backend, sync and async.

After every step: the balance, the lots a call moved (``entry.lots``, per lot), every
refusal, and ``grants()`` (the open lots, their fields, their order) are what the model
says; every few steps the cheap ``reconcile()`` finds nothing, and at the end neither does
the full one. Steps include bursts of credits opened in one millisecond, overdrafts owed
and paid back, overage settles, and partial then full refunds. Bounded: a few seconds per
run.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

from lots_model import LotsModel, totals
from lots_support import one_millisecond
from sparked_credits import InsufficientCreditsError, RefundError
from sparked_credits._core.lots import decode_draws

ACCT = "user_model"
STEPS = int(os.environ.get("LOTS_MODEL_STEPS", "70"))
"""Steps per run (a longer local run: LOTS_MODEL_STEPS=5000, LOTS_MODEL_SEED=...)."""
SOURCES = ("grant", "promo", "purchase", "referral")


def _seed(backend_url: str, mode: str) -> int:
    extra = int(os.environ.get("LOTS_MODEL_SEED", "0"))
    return sum(map(ord, backend_url.split(":")[0] + mode)) * 7919 + extra


class Run:
    def __init__(self, client: Any, backend_url: str, rng: random.Random) -> None:
        self.client, self.url, self.rng = client, backend_url, rng
        self.model = LotsModel()
        now = datetime.now(timezone.utc).replace(microsecond=0)
        # Whole seconds (exact in ms both ways), hours ahead: nothing lapses during a run.
        self.expiries = [now + timedelta(hours=2, seconds=s) for s in (0, 0, 5, 60)]
        self.log: list[str] = []

    # -- steps ---------------------------------------------------------------------------

    def credit(self) -> None:
        amount = self.rng.randint(1, 30)
        priority = self.rng.choice((10, 50, 50, 90))
        expires = self.rng.choice((None, None, *self.expiries))
        source = self.rng.choice(SOURCES)
        got = self.client.credit(ACCT, amount, source=source, priority=priority,
                                 expires_at=expires)
        ms = None if expires is None else int(expires.timestamp()) * 1000
        record = self.model.open_lot(got.entry.id, amount, source, priority, ms)
        assert got.entry.lots == record
        assert got.balance == self.model.balance

    def burst(self) -> None:
        """Several lots opened in one millisecond, tied on priority and expiry."""
        priority, expires = self.rng.choice((10, 50)), self.rng.choice((None, self.expiries[0]))
        ms = None if expires is None else int(expires.timestamp()) * 1000
        with one_millisecond(self.client, self.url, ACCT):
            for _ in range(self.rng.randint(3, 12)):
                got = self.client.credit(ACCT, self.rng.randint(1, 3), priority=priority,
                                         expires_at=expires)
                self.model.open_lot(got.entry.id, got.entry.delta, "grant", priority, ms)
        assert got.balance == self.model.balance

    def debit(self) -> None:
        amount = self.rng.randint(1, 40)
        if self.model.balance < amount:
            try:
                self.client.debit(ACCT, amount, action="chat")
            except InsufficientCreditsError:
                return
            raise AssertionError("a debit beyond the balance was not refused")
        got = self.client.debit(ACCT, amount, action="chat")
        want = self.model.debit(got.entry.id, amount)
        assert want is not None
        assert totals(decode_draws(got.entry.lots)) == totals(want)

    def reserve(self) -> None:
        amount = self.rng.randint(1, 25)
        if self.model.balance < amount:
            return
        hold = self.client.reserve(ACCT, amount, action="video", ttl=3600)
        want = self.model.reserve(hold.hold_id, amount)
        assert want is not None
        assert totals(decode_draws(hold.entry.lots)) == totals(want)

    def close_hold(self) -> None:
        open_holds = [h for h, x in self.model.holds.items() if x.open]
        if not open_holds:
            return
        hold_id = self.rng.choice(open_holds)
        reserved = self.model.holds[hold_id].amount
        if self.rng.random() < 0.3:
            got = self.client.release(ACCT, hold_id)
            want = self.model.release(hold_id)
        else:
            actual = self.rng.randint(0, reserved + 10)
            overage = actual > reserved
            if not self.model.can_settle(hold_id, actual):
                try:
                    self.client.settle(ACCT, hold_id, actual, allow_overage=True)
                except InsufficientCreditsError:
                    return
                raise AssertionError("an overage beyond the balance was not refused")
            got = self.client.settle(ACCT, hold_id, actual, allow_overage=overage)
            want = self.model.settle(got.entry.id, hold_id, actual)
        assert totals(decode_draws(got.entry.lots)) == totals(want)

    def refund(self) -> None:
        ids = list(self.model.taken)
        if not ids:
            return
        entry_id = self.rng.choice(ids)
        left = self.model.refund_left(entry_id)
        full = self.rng.random() < 0.4
        taken = self.model.taken[entry_id]
        if full and taken.full_refund is not None:
            again = self.client.refund(ACCT, entry_id)  # its derived key: replayed
            assert (again.replayed, again.entry.id) == (True, taken.full_refund)
            return
        if left == 0:
            try:
                self.client.refund(ACCT, entry_id, amount=None if full else 1)
            except RefundError:
                return
            raise AssertionError("a refund of nothing left was not refused")
        amount = left if full else self.rng.randint(1, left)
        got = self.client.refund(ACCT, entry_id, amount=None if full else amount)
        assert got.entry.delta == amount
        if full:
            taken.full_refund = got.entry.id
        assert totals(decode_draws(got.entry.lots)) == totals(self.model.refund(entry_id, amount))

    def adjust(self) -> None:
        delta = self.rng.choice((-1, 1)) * self.rng.randint(1, 60)
        overdraft = self.rng.random() < 0.5
        if delta < 0 and self.model.balance + delta < 0 and not overdraft:
            try:
                self.client.adjust(ACCT, delta)
            except InsufficientCreditsError:
                return
            raise AssertionError("an adjust below zero was not refused")
        got = self.client.adjust(ACCT, delta, allow_overdraft=overdraft)
        want = self.model.adjust(got.entry.id, delta, overdraft)
        assert want is not None
        if isinstance(want, str):
            assert got.entry.lots == want
        else:
            assert totals(decode_draws(got.entry.lots)) == totals(want)

    # -- checks --------------------------------------------------------------------------

    def check(self, step: int) -> None:
        got = [
            (g.grant_id, g.source, g.amount, g.remaining, g.priority,
             None if g.expires_at is None else int(g.expires_at.timestamp() * 1000 + 0.5))
            for g in self.client.grants(ACCT)
        ]
        assert got == self.model.grants(), f"step {step}: {self.log[-3:]}"
        assert self.client.get_balance(ACCT) == self.model.balance
        if step % 10 == 0:
            cheap = self.client.reconcile(ACCT)
            assert (cheap.matched, cheap.lots_problem) == (True, None), f"step {step}"

    def run(self, steps: int) -> None:
        start = self.rng.randint(0, 60)
        self.client.initialize_user(ACCT, start)
        self.model.open_lot(self.client.history(ACCT, limit=1).entries[0].id, start, "init",
                            50, None)
        choices = [self.credit] * 4 + [self.debit] * 5 + [self.reserve] * 2 + [
            self.close_hold] * 2 + [self.refund] * 3 + [self.adjust] * 2 + [self.burst]
        for step in range(steps):
            op = self.rng.choice(choices)
            self.log.append(op.__name__)
            op()
            self.check(step)
        full = self.client.reconcile(ACCT, full=True)
        assert (full.matched, full.lots_matched, full.lots_replayed) == (True, True, True)


def test_the_sdk_follows_the_readme_lots_model(
    make_client: Callable[..., Any], backend_url: str, mode: str
) -> None:
    Run(make_client(), backend_url, random.Random(_seed(backend_url, mode))).run(STEPS)
