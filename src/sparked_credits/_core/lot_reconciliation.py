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
from .controls_repair import ReferralMarks, restore_referrals
from .decoding import text
from .lots import Lot, LotBook, order_key, parse_record
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
    lots_all: bool
    """The meta mark: the account had no credits before lots (prelude.lua, 'lots_all')."""
    opened: bool
    """The meta mark: credits reached the account before its init (prelude.lua)."""
    marks_readable: bool
    """Both marks are '1' or absent (any other value is a corrupted mark)."""
    opened_present: bool
    """'opened' has some value (the scripts read any value as set)."""
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
        want_head = min(open_lots, key=order_key).id if open_lots else ""
        return (
            tracked == str(sum(lot.remaining for lot in lots))
            and soonest == want_soonest
            and head == want_head
            and (not want_head or head_record == self.records.get(want_head))
        )


def _dump(ops: Operations, account: str) -> Operation[_Dump]:
    def decode(raw: Sequence[Any]) -> _Dump:
        flat = [text(x) for x in raw[7:]]
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
            text(raw[6]).split("|")[0] == "1",
            text(raw[6]).split("|")[-1] == "1",
            text(raw[6]) in ("|", "1|", "|1", "1|1"),
            not text(raw[6]).endswith("|"),
            records,
            tuple(members[:m]),
            frozenset(members[m:]),
        )

    return ops.maintenance("lots_dump", account, decode=decode)


def _restore(
    ops: Operations,
    account: str,
    last_id: str,
    records: dict[str, str],
    lots_all: bool,
    opened: bool | None,
) -> Operation[int | None]:
    def decode(raw: Sequence[Any]) -> int | None:
        return int(raw[1]) if text(raw[0]) == "restored" else None

    # One argument: 'id=record' pairs separated by spaces (neither holds '=' or ' '); the
    # script derives the zsets and the summary from them.
    packed = " ".join(
        f"{lot_id}={record}" for lot_id, record in sorted(records.items()) if lot_id
    )
    return ops.maintenance(
        "lots_restore",
        account,
        decode=decode,
        last_id=last_id,
        records=packed,
        marks=("1" if lots_all else "") + "|" + ("-" if opened is None else "1" if opened else ""),
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


class _OnceKeys:
    """The once-ever keys (lua/prelude.lua, once_lookup) the replayed entries imply: a
    purchase's and an allocation's key (their entry's ``idem``), a keyed revoke's, and
    what revokes took from each lot (``revoked:<lot id>``)."""

    def __init__(self) -> None:
        self.fields: dict[str, str] = {}
        self.revoked: dict[str, int] = {}
        self.complete = True
        self.referrals = ReferralMarks()  # the referral marks, derived the same way

    def reset(self) -> None:
        self.fields, self.revoked, self.complete = {}, {}, True
        self.referrals.reset()

    def see(self, entry: LedgerEntry) -> None:
        self.referrals.see(entry)
        typ, key = entry.type_name, entry.idempotency_key or ""
        if typ == "credit" and key.startswith(("purchase:", "allocate:")):
            self.fields[key] = entry.id
        elif typ == "revoke" and entry.ref:
            self.revoked[entry.ref] = self.revoked.get(entry.ref, 0) - entry.delta
            if key:
                self.fields[f"revoke:{key}"] = entry.id

    def packed(self) -> str:
        out = dict(self.fields)
        if self.complete:  # a trimmed ledger no longer holds every revoke of a lot
            out.update({f"revoked:{lot}": str(n) for lot, n in self.revoked.items()})
        return " ".join(f"{k}={v}" for k, v in sorted(out.items()) if " " not in k + v)


def _restore_once(ops: Operations, account: str, once: _OnceKeys) -> Operation[int]:
    return ops.maintenance(
        "once_restore", account, decode=lambda raw: int(raw[1]), records=once.packed()
    )


def check_lots(
    ops: Operations, account: str, repair: bool, force: bool = False
) -> Generator[Operation[Any], Any, LotsCheck]:
    """:func:`_check_lots`, and with ``repair`` the once-ever keys rebuilt from the same
    replay (they are derived state too)."""
    once = _OnceKeys()
    result: LotsCheck = yield from _check_lots(ops, account, repair, force, once)
    if repair and (once.fields or once.revoked):
        yield _restore_once(ops, account, once)
    if repair and once.referrals:
        yield restore_referrals(ops, account, once.referrals)
    return result


def _check_lots(
    ops: Operations, account: str, repair: bool, force: bool, once: _OnceKeys
) -> Generator[Operation[Any], Any, LotsCheck]:
    """Replay the ledger, compare the lots it implies with the stored ones, and (repair)
    replace the stored ones with them; ``force``: replace them even when they compare
    equal (the reconcile script's own check found them wrong)."""
    for _ in range(ATTEMPTS):
        once.reset()  # each attempt replays afresh
        dump: _Dump = yield _dump(ops, account)
        if dump.base == "1":
            return LotsCheck(matched=None)
        book, start = LotBook(), "-"
        # Every credit in a lot from the start: no entry moved credits without recording
        # lots (the meta mark 'lots_all', which lets the cheap pass find lots short).
        lots_all = True
        if dump.base == "2":
            # A trimmed ledger: from the lots its trim kept as of the base, after it.
            base = _stored(_unpacked(dump.base_lots), dump.base_sum)
            if base is None:
                return LotsCheck(matched=None)
            book, start = base, "(" + dump.base_id
            lots_all = base.implicit <= 0
            once.complete = False
        first_opening = None  # the type of the first entry that could open the account
        while dump.last_id:
            page: list[LedgerEntry] = yield ops.read_entries(account, start, "+", PAGE, False)
            for entry in page:
                if _later(entry.id, dump.last_id):
                    break
                book.replay(
                    entry.id, entry.type_name, entry.delta, entry.action or "", entry.lots or ""
                )
                lots_all = lots_all and not (entry.delta and not entry.lots)
                once.see(entry)
                if first_opening is None and entry.type_name in ("init", "credit", "adjust"):
                    first_opening = entry.type_name
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
        if not dump.last_id:
            lots_all = dump.lots_all  # an empty ledger says nothing either way
        # A mark the ledger does not bear out is wrong; a missing one (an account from
        # before the mark) is no fault, and a repair writes it.
        # 'opened' (credits before the init: a later init still grants the starting
        # credits) as this version writes it: on an account with every credit in a lot,
        # exactly when its first opening entry is not its init; elsewhere left alone.
        opened = None
        if lots_all and dump.base == "0" and first_opening is not None:
            opened = first_opening != "init"
        elif not dump.marks_readable and not dump.opened:
            opened = dump.opened_present  # a present mark stays, in its readable form
        mark_ok = (
            (lots_all or not dump.lots_all)
            and opened in (None, dump.opened)
            and dump.marks_readable
        )
        if want == have and dump.indexes_agree() and not force and mark_ok:
            if (lots_all == dump.lots_all and dump.marks_readable) or not repair:
                return LotsCheck(matched=True)
        elif not repair:
            return LotsCheck(matched=False)
        written = yield _restore(ops, account, dump.last_id, want, lots_all, opened)
        if written is not None:
            # Writing only the missing mark is no mismatch of the lots.
            agreed = want == have and dump.indexes_agree() and not force and mark_ok
            return LotsCheck(matched=agreed, rebuilt=0 if agreed else written)
    return LotsCheck(matched=False)
