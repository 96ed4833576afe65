"""Credit lots as a pure model: the consumption order, and the lots a ledger implies.

The scripts (``lua/lots.lua``) keep lots in Redis; this module states the same rules in
Python, I/O-free, for three users: ``grants()`` decoding (records to :class:`Grant`, in
consumption order), the full reconcile (lots rebuilt by replaying the ledger, the commit
record), and the tests' model. Replay is driven by the entries alone, never by a clock: an
expiry happened when its ``lot_expire`` entry was written.

The lots record of an entry (``LedgerEntry.lots``; stored in the entry's meta as
``_sc.l``, written by the scripts):

* an entry that opens a lot (``init``, ``credit``, a positive ``adjust``):
  ``+<priority>`` or ``+<priority>:<expires ms>``;
* an entry that draws or gives back credits: ``<lot id>:<n>[,<lot id>:<n>...]`` where
  ``_`` is the implicit lot (credits that no lot tracks);
* ``''`` (or none): an entry written before lots, or by an older SDK: its delta goes to
  the implicit lot, and a shortfall is taken from the lots in order by the next script.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

from ..models import Grant, split_lots_record

__all__ = [
    "IMPLICIT",
    "Lot",
    "LotBook",
    "decode_draws",
    "grants_from_records",
    "id_key",
    "order_key",
    "parse_record",
]

IMPLICIT = "_"
"""Id of the implicit lot: balance not tracked by any lot (never expires, consumed last)."""

SPAN = 2**45
"""The expiry part of a lot's order score (ms); never-expiring lots score SPAN - 1."""

DEFAULT_PRIORITY = 50


@dataclass
class Lot:
    """One lot's state; ``id`` is the id of the entry that opened it."""

    id: str
    source: str
    amount: int
    remaining: int
    expires_ms: int | None
    priority: int

    def record(self) -> str:
        """The lot's record as the lots hash stores it."""
        expires = "" if self.expires_ms is None else str(self.expires_ms)
        return f"{self.remaining}|{self.amount}|{expires}|{self.priority}|{self.source}"


def id_key(entry_id: str) -> tuple[int, int]:
    """A stream id ``<ms>-<seq>`` as numbers, so ``<ms>-2`` sorts before ``<ms>-10``."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def order_key(lot: Lot) -> tuple[int, tuple[int, int]]:
    """Consumption order: lowest priority number, soonest expiry (never last), oldest.

    The same order as the scripts' zset score; ties break on the id, compared as numbers
    on both parts (the scripts sort ZRANGE's text order of tied ids the same way).
    """
    expires = SPAN - 1 if lot.expires_ms is None else lot.expires_ms
    return (lot.priority * SPAN + expires, id_key(lot.id))


def parse_record(lot_id: str, record: str) -> Lot:
    remaining, amount, expires, priority, source = record.split("|", 4)
    return Lot(
        id=lot_id,
        source=source,
        amount=int(amount),
        remaining=int(remaining),
        expires_ms=int(expires) if expires else None,
        priority=int(priority),
    )


def decode_draws(value: str | None) -> list[tuple[str, int]]:
    """An entry's draws or returns, ``[(lot id, n), ...]`` (empty for an opening record);
    the parsing is :func:`split_lots_record`'s, the one place that reads the record."""
    return split_lots_record(value)


def _ms_datetime(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, tz=timezone.utc)


def _grant(lot: Lot) -> Grant:
    return Grant(
        grant_id=lot.id,
        source=lot.source,
        amount=lot.amount,
        remaining=lot.remaining,
        expires_at=_ms_datetime(lot.expires_ms),
        priority=lot.priority,
    )


def shortfall_total(balance: int, tracked: int) -> int:
    """Credits taken without touching lots that the next script charges to them."""
    return min(max(0, tracked - balance), tracked)


def grants_from_records(
    balance: int, tracked: int, records: Sequence[tuple[str, str]]
) -> list[Grant]:
    """The open lots in consumption order, then the implicit lot when it holds credits.

    ``records`` are the open lots in order as the script returns them. A balance below the
    tracked sum (credits an older SDK took, not yet charged to lots) is charged here the
    way the next script will, so the grants always add up to the balance.
    """
    lots = [parse_record(lot_id, rec) for lot_id, rec in records]
    shortfall = shortfall_total(balance, tracked)
    for lot in lots:
        if shortfall == 0:
            break
        n = min(shortfall, lot.remaining)
        lot.remaining -= n
        shortfall -= n
    out = [_grant(lot) for lot in lots if lot.remaining > 0]
    implicit = balance - (tracked - shortfall_total(balance, tracked))
    if implicit > 0:
        out.append(
            Grant(
                grant_id=IMPLICIT,
                source="untracked",
                amount=implicit,
                remaining=implicit,
                expires_at=None,
                priority=100,
            )
        )
    return out


@dataclass
class LotBook:
    """One account's lots and balance, changed by the same rules as the scripts."""

    balance: int = 0
    lots: dict[str, Lot] = field(default_factory=dict)

    @property
    def tracked(self) -> int:
        return sum(lot.remaining for lot in self.lots.values())

    @property
    def implicit(self) -> int:
        return self.balance - self.tracked

    def ordered(self) -> list[Lot]:
        return sorted((lot for lot in self.lots.values() if lot.remaining > 0), key=order_key)

    def grants(self) -> list[Grant]:
        """What ``grants()`` returns for this state."""
        book = self.copy()
        book.catch_up()
        out = [_grant(lot) for lot in book.ordered()]
        if book.implicit > 0:
            out.append(
                Grant(
                    grant_id=IMPLICIT,
                    source="untracked",
                    amount=book.implicit,
                    remaining=book.implicit,
                    expires_at=None,
                    priority=100,
                )
            )
        return out

    def copy(self) -> LotBook:
        return LotBook(
            self.balance,
            {k: Lot(**vars(lot)) for k, lot in self.lots.items()},
        )

    # -- the rules ----------------------------------------------------------------------

    def _take(self, amount: int) -> list[tuple[str, int]]:
        draws: list[tuple[str, int]] = []
        left = amount
        for lot in self.ordered():
            if left == 0:
                break
            n = min(left, lot.remaining)
            lot.remaining -= n
            draws.append((lot.id, n))
            left -= n
        if left > 0:
            draws.append((IMPLICIT, left))
        return draws

    def catch_up(self) -> None:
        """Charge credits taken without touching lots to the lots, in order."""
        tracked = self.tracked
        if tracked > self.balance:
            self._take(min(tracked - self.balance, tracked))

    def draw(self, amount: int) -> list[tuple[str, int]]:
        """Take ``amount`` in consumption order (implicit lot last, then overdraft)."""
        self.catch_up()
        draws = self._take(amount)
        self.balance -= amount
        return draws

    def open(
        self, lot_id: str, amount: int, priority: int, expires_ms: int | None, source: str
    ) -> Lot:
        """A new lot; an overdraft owed is paid off from it first."""
        self.catch_up()
        owed = max(0, self.tracked - self.balance)
        lot = Lot(lot_id, source, amount, amount - min(owed, amount), expires_ms, priority)
        self.lots[lot_id] = lot
        self.balance += amount
        return lot

    def give_back(
        self, draws: Sequence[tuple[str, int]], amount: int, skip: int = 0, now_ms: int = 0
    ) -> tuple[list[tuple[str, int]], list[Lot]]:
        """Return ``amount`` to the lots ``draws`` came from, last drawn first, after
        ``skip`` credits already returned; lots past expiry at ``now_ms`` are returned to
        the caller to lapse at once. While an admin overdraft is owed, the first credits
        returned pay it off (the implicit lot's), the rest go on along the same walk."""
        self.catch_up()
        back: list[tuple[str, int]] = []
        lapsed: list[Lot] = []
        paid = min(max(0, self.tracked - self.balance), amount)
        if paid > 0:
            back.append((IMPLICIT, paid))
            amount, skip = amount - paid, skip + paid
        for lot_id, drawn in reversed(draws):
            if amount == 0:
                break
            skipped = min(skip, drawn)
            skip -= skipped
            n = min(drawn - skipped, amount)
            if n <= 0:
                continue
            lot = self.lots.get(lot_id) if lot_id != IMPLICIT else None
            if lot is not None:
                lot.remaining += n
                back.append((lot.id, n))
                if lot.expires_ms is not None and lot.expires_ms <= now_ms and lot not in lapsed:
                    lapsed.append(lot)
            else:
                back.append((IMPLICIT, n))
            amount -= n
        if amount > 0:
            back.append((IMPLICIT, amount))
        self.balance += sum(n for _, n in back)
        return back, lapsed

    def lapse(self, lot: Lot) -> int:
        """Expire what is left of ``lot``; returns how much."""
        n = lot.remaining
        lot.remaining = 0
        self.balance -= n
        return n

    def expire_due(self, now_ms: int) -> list[tuple[str, int]]:
        """Expire every lot past its expiry at ``now_ms``; returns (lot id, credits)."""
        self.catch_up()
        due = sorted(
            (
                lot
                for lot in self.lots.values()
                if lot.remaining > 0 and lot.expires_ms is not None and lot.expires_ms <= now_ms
            ),
            key=lambda lot: (lot.expires_ms, id_key(lot.id)),
        )
        return [(lot.id, self.lapse(lot)) for lot in due]

    # -- replay -------------------------------------------------------------------------

    def replay(self, entry_id: str, typ: str, delta: int, action: str, lots: str) -> None:
        """Apply one ledger entry as the script that wrote it did.

        Entries that record no lots (older SDKs, or before lots) only move the balance:
        the implicit lot absorbs them, and the next entry that does record lots first
        charges any shortfall to the lots, as the next script did.
        """
        if lots.startswith("+"):
            priority, _, expires = lots[1:].partition(":")
            # The scripts' sources: 'init' and 'adjust' lots by type, a credit's its own.
            source = typ if typ in ("init", "adjust") else action
            self.open(entry_id, delta, int(priority), int(expires) if expires else None, source)
            return
        moves = decode_draws(lots)
        if not moves:
            self.balance += delta
            return
        self.catch_up()
        sign = 1 if delta > 0 else -1
        for lot_id, n in moves:
            lot = self.lots.get(lot_id) if lot_id != IMPLICIT else None
            if lot is not None:
                lot.remaining += sign * n
        self.balance += delta

    @classmethod
    def from_ledger(cls, entries: Iterable[tuple[str, str, int, str, str]]) -> LotBook:
        """Replay (id, type, delta, action, lots) tuples, oldest first."""
        book = cls()
        for entry_id, typ, delta, action, lots in entries:
            book.replay(entry_id, typ, delta, action, lots)
        return book
