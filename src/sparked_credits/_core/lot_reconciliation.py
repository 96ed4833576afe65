"""Checking an account's credit lots against its ledger, and rebuilding them from it.

The lots (``lots:{acct}`` and its two sorted sets) are derived state: every entry that moves
credits records, in its ``_sc.l`` member, the lot it opened or the lots it drew from or gave
back to. Replaying the ledger with the pure model (:class:`~sparked_credits._core.lots.LotBook`)
gives the lots it implies; a full reconcile compares them with the stored ones and, with
``repair=True``, replaces the stored ones in one script that first checks the ledger has not
moved on since the replay (else it replays again).

A ledger trimmed behind a checkpoint is replayed from the lots its trim kept as of the
base (meta ``base_lots``, replayed by ``_core/trimming.py`` with the same LotBook and
written with ``base_sum``). Only a ledger trimmed by an earlier version, which kept
none, cannot be replayed: its lots are then reported as not replayed (``None``), never
rebuilt from a partial history.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any

from ..models import LedgerEntry
from .decoding import text
from .lots import Lot, LotBook, parse_record
from .operations import Operations
from .requests import Operation

__all__ = ["LotsCheck", "check_lots"]

PAGE = 1000
ATTEMPTS = 5


@dataclass(frozen=True)
class LotsCheck:
    matched: bool | None
    """The stored lots equal those the ledger implies; None: not checked (trimmed ledger)."""
    rebuilt: int = 0
    """Lots written by a repair."""


@dataclass(frozen=True)
class _Dump:
    last_id: str
    base: str
    """'0' not trimmed; '1' trimmed without the lots at its base; '2' trimmed, with them."""
    base_id: str
    base_sum: int
    base_lots: str
    records: dict[str, str]
    order: tuple[str, ...]
    expiry: frozenset[str]

    def indexes_agree(self) -> bool:
        """The two sorted sets hold exactly the lots the records say have credits left, and
        the summary (tracked sum, soonest expiry, first lot and its record) says what the
        records say: a torn write can leave them apart."""
        lots = _parsed(self.records)
        if lots is None:
            return False
        open_lots = [lot for lot in lots if lot.remaining > 0]
        expiring = [lot for lot in open_lots if lot.expires_ms is not None]
        if set(self.order) != {lot.id for lot in open_lots}:
            return False
        if self.expiry != {lot.id for lot in expiring}:
            return False
        summary = self.records.get("")
        if not lots or summary is None:
            return not lots and summary is None
        parts = summary.split("|", 3)
        if len(parts) < 3:
            return False
        tracked, soonest, head = parts[:3]
        head_record = parts[3] if len(parts) > 3 else ""
        want_soonest = ""
        if expiring:
            want_soonest = str(min(lot.expires_ms or 0 for lot in expiring))
        want_head = self.order[0] if self.order else ""
        return (
            tracked == str(sum(lot.remaining for lot in lots))
            and soonest == want_soonest
            and head == want_head
            and (not want_head or head_record == self.records.get(want_head))
        )


def _dump(ops: Operations, account: str) -> Operation[_Dump]:
    def decode(raw: Sequence[Any]) -> _Dump:
        flat = [text(x) for x in raw[6:]]
        n = int(flat[0])
        records = dict(zip(flat[1 : 1 + 2 * n : 2], flat[2 : 2 + 2 * n : 2], strict=True))
        m = int(flat[1 + 2 * n])
        members = flat[2 + 2 * n :]
        return _Dump(
            text(raw[1]),
            text(raw[2]),
            text(raw[3]),
            int(raw[4]),
            text(raw[5]),
            records,
            tuple(members[:m]),
            frozenset(members[m:]),
        )

    return ops.maintenance("lots_dump", account, decode=decode)


def _restore(
    ops: Operations, account: str, last_id: str, records: dict[str, str]
) -> Operation[int | None]:
    def decode(raw: Sequence[Any]) -> int | None:
        return int(raw[1]) if text(raw[0]) == "restored" else None

    # One argument: 'id=record' pairs separated by spaces (neither holds '=' or ' '); the
    # script derives the zsets and the summary from them.
    packed = " ".join(
        f"{lot_id}={record}" for lot_id, record in sorted(records.items()) if lot_id
    )
    return ops.maintenance(
        "lots_restore", account, decode=decode, last_id=last_id, records=packed
    )


def _unpacked(packed: str) -> dict[str, str]:
    """'id=record id=record ...' (as _restore packs them and trim.lua keeps them)."""
    return dict(part.split("=", 1) for part in packed.split(" ") if part)


def _normalized(book: LotBook) -> dict[str, str]:
    """Records after charging any pending shortfall to the lots (a script may or may not
    have done so yet: both states stand for the same lots)."""
    book.catch_up()
    return _records(book)


def _records(book: LotBook) -> dict[str, str]:
    out = {lot.id: lot.record() for lot in book.lots.values()}
    out[""] = str(book.tracked)
    return out


def _parsed(records: dict[str, str]) -> list[Lot] | None:
    """The lots of stored records; None when one does not parse (a corrupted record)."""
    try:
        return [parse_record(i, r) for i, r in records.items() if i]
    except ValueError:
        return None


def _stored(records: dict[str, str], balance: int) -> LotBook | None:
    lots = _parsed(records)
    if lots is None:
        return None
    return LotBook(balance, {lot.id: lot for lot in lots})


def _later(a: str, b: str) -> bool:
    """Stream id a > b."""
    am, _, aseq = a.partition("-")
    bm, _, bseq = b.partition("-")
    return (int(am), int(aseq)) > (int(bm), int(bseq))


def check_lots(
    ops: Operations, account: str, repair: bool, force: bool = False
) -> Generator[Operation[Any], Any, LotsCheck]:
    """Replay the ledger, compare the lots it implies with the stored ones, and (repair)
    replace the stored ones with them; ``force``: replace them even when they compare
    equal (the reconcile script's own check found them wrong)."""
    for _ in range(ATTEMPTS):
        dump: _Dump = yield _dump(ops, account)
        if dump.base == "1":
            return LotsCheck(matched=None)
        book, start = LotBook(), "-"
        if dump.base == "2":
            # A trimmed ledger: from the lots its trim kept as of the base, after it.
            base = _stored(_unpacked(dump.base_lots), dump.base_sum)
            if base is None:
                return LotsCheck(matched=None)
            book, start = base, "(" + dump.base_id
        while dump.last_id:
            page: list[LedgerEntry] = yield ops.read_entries(account, start, "+", PAGE, False)
            for entry in page:
                if _later(entry.id, dump.last_id):
                    break
                book.replay(
                    entry.id, entry.type_name, entry.delta, entry.action or "", entry.lots or ""
                )
            if len(page) < PAGE or _later(page[-1].id, dump.last_id):
                break
            start = "(" + page[-1].id
        # Stored lots that hold more than the balance stand for the same lots as those
        # charged for it only where the ledger says credits were taken without them.
        pending = book.tracked > max(book.balance, 0)
        want = _normalized(book)
        stored = _stored(dump.records, book.balance)
        have = None
        if stored is not None:
            have = _normalized(stored) if pending else _records(stored)
        if want == have and dump.indexes_agree() and not force:
            return LotsCheck(matched=True)
        if not repair:
            return LotsCheck(matched=False)
        written = yield _restore(ops, account, dump.last_id, want)
        if written is not None:
            return LotsCheck(matched=False, rebuilt=written)
    return LotsCheck(matched=False)
