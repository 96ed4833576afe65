"""The credit lots rules as README.md states them ("Credit lots: every rule, in one place"),
written from that text alone: no code of ``sparked_credits._core.lots`` is used, so a rule
the code and its own model share by mistake shows up as a difference here.

The model knows what a user can see: the balance, the lots ``grants()`` lists (in order),
what each entry records in ``entry.lots``, and which calls are refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field

IMPLICIT = "_"


def entry_order(entry_id: str) -> tuple[int, int]:
    """"The oldest: the smaller entry id, compared as numbers on both parts"."""
    ms, seq = entry_id.split("-")
    return int(ms), int(seq)


@dataclass
class ModelLot:
    grant_id: str
    source: str
    amount: int
    remaining: int
    priority: int
    expires_ms: int | None

    def spending_key(self) -> tuple[int, int, int, tuple[int, int]]:
        """Lowest priority number, then soonest expiry (never-expiring last), then oldest."""
        never = 1 if self.expires_ms is None else 0
        return (self.priority, never, self.expires_ms or 0, entry_order(self.grant_id))


@dataclass
class Taken:
    """A debit, or a settle: what it took and from where, and what refunds gave back."""

    taken: int
    draws: list[tuple[str, int]]
    refunded: int = 0
    full_refund: str | None = None  # the entry id of a refund with no amount


@dataclass
class ModelHold:
    amount: int
    draws: list[tuple[str, int]]
    open: bool = True


@dataclass
class LotsModel:
    balance: int = 0
    lots: dict[str, ModelLot] = field(default_factory=dict)
    taken: dict[str, Taken] = field(default_factory=dict)
    holds: dict[str, ModelHold] = field(default_factory=dict)

    # -- what a user sees ----------------------------------------------------------------

    def owed(self) -> int:
        return max(0, -self.balance)

    def untracked(self) -> int:
        return self.balance - sum(lot.remaining for lot in self.lots.values())

    def grants(self) -> list[tuple[str, str, int, int, int, int | None]]:
        """The lots with credits left in spending order, then '_' when it holds credits."""
        open_lots = sorted(
            (lot for lot in self.lots.values() if lot.remaining > 0),
            key=ModelLot.spending_key,
        )
        out = [
            (lot.grant_id, lot.source, lot.amount, lot.remaining, lot.priority, lot.expires_ms)
            for lot in open_lots
        ]
        if self.untracked() > 0:
            out.append((IMPLICIT, "untracked", self.untracked(), self.untracked(), 100, None))
        return out

    # -- the rules -------------------------------------------------------------------------

    def _draw(self, amount: int) -> list[tuple[str, int]]:
        """Take ``amount`` in the spending order; beyond the lots it is owed ('_')."""
        draws: list[tuple[str, int]] = []
        left = amount
        for lot in sorted(self.lots.values(), key=ModelLot.spending_key):
            if left == 0:
                break
            n = min(left, lot.remaining)
            if n > 0:
                lot.remaining -= n
                draws.append((lot.grant_id, n))
                left -= n
        if left > 0:
            draws.append((IMPLICIT, left))
        self.balance -= amount
        return draws

    def _give_back(
        self, draws: list[tuple[str, int]], amount: int, skip: int = 0
    ) -> list[tuple[str, int]]:
        """Credits back: an owed overdraft first, then to the lots drawn from, last drawn
        first, continuing after ``skip`` credits earlier partial refunds gave back."""
        back: list[tuple[str, int]] = []
        paid = min(self.owed(), amount)
        if paid:
            back.append((IMPLICIT, paid))
        rest, skip = amount - paid, skip + paid
        for lot_id, drawn in reversed(draws):
            if rest == 0:
                break
            skipped = min(skip, drawn)
            skip -= skipped
            n = min(drawn - skipped, rest)
            if n <= 0:
                continue
            if lot_id in self.lots:
                self.lots[lot_id].remaining += n
            back.append((lot_id, n))
            rest -= n
        if rest:
            back.append((IMPLICIT, rest))
        self.balance += amount
        return back

    def open_lot(
        self, grant_id: str, amount: int, source: str, priority: int, expires_ms: int | None
    ) -> str:
        """A new lot; an owed overdraft is paid off from it first. Returns its record."""
        paid = min(self.owed(), amount)
        self.lots[grant_id] = ModelLot(
            grant_id, source, amount, amount - paid, priority, expires_ms
        )
        self.balance += amount
        return f"+{priority}" if expires_ms is None else f"+{priority}:{expires_ms}"

    def debit(self, entry_id: str, amount: int) -> list[tuple[str, int]] | None:
        """None: refused (InsufficientCreditsError), nothing changes."""
        if self.balance < amount:
            return None
        draws = self._draw(amount)
        self.taken[entry_id] = Taken(amount, draws)
        return draws

    def reserve(self, hold_id: str, amount: int) -> list[tuple[str, int]] | None:
        if self.balance < amount:
            return None
        draws = self._draw(amount)
        self.holds[hold_id] = ModelHold(amount, draws)
        return draws

    def can_settle(self, hold_id: str, actual: int) -> bool:
        hold = self.holds[hold_id]
        return actual <= hold.amount or self.balance >= actual - hold.amount

    def settle(self, entry_id: str, hold_id: str, actual: int) -> list[tuple[str, int]]:
        """Keep ``actual``: the rest back to the hold's lots, or (overage) the difference
        drawn in the spending order."""
        hold = self.holds[hold_id]
        hold.open = False
        if actual < hold.amount:
            moved = self._give_back(hold.draws, hold.amount - actual)
            kept = _head(hold.draws, actual)
        elif actual > hold.amount:
            moved = self._draw(actual - hold.amount)
            kept = hold.draws + moved
        else:
            moved, kept = [], list(hold.draws)
        self.taken[entry_id] = Taken(actual, kept)
        return moved

    def release(self, hold_id: str) -> list[tuple[str, int]]:
        hold = self.holds[hold_id]
        hold.open = False
        return self._give_back(hold.draws, hold.amount)

    def refund_left(self, entry_id: str) -> int:
        t = self.taken[entry_id]
        return t.taken - t.refunded

    def refund(self, entry_id: str, amount: int) -> list[tuple[str, int]]:
        t = self.taken[entry_id]
        back = self._give_back(t.draws, amount, t.refunded)
        t.refunded += amount
        return back

    def adjust(self, entry_id: str, delta: int, allow_overdraft: bool) -> str | list[
        tuple[str, int]
    ] | None:
        """A positive delta opens an 'adjust' lot (priority 50, never expires); a negative
        one draws in the spending order, below zero only with ``allow_overdraft``."""
        if delta > 0:
            return self.open_lot(entry_id, delta, "adjust", 50, None)
        if self.balance + delta < 0 and not allow_overdraft:
            return None
        return self._draw(-delta)


def _head(draws: list[tuple[str, int]], amount: int) -> list[tuple[str, int]]:
    """The first ``amount`` credits of ``draws``."""
    out = []
    for lot_id, n in draws:
        if amount <= 0:
            break
        out.append((lot_id, min(n, amount)))
        amount -= min(n, amount)
    return out


def totals(moves: list[tuple[str, int]]) -> dict[str, int]:
    """Credits per lot in an entry's record (the README fixes what moves, not how the
    record groups it)."""
    out: dict[str, int] = {}
    for lot_id, n in moves:
        out[lot_id] = out.get(lot_id, 0) + n
    return out
