"""Ledger trimming as a procedure: the pure core replays, a guarded script writes.

A trim removes entries older than a point (never past the last reconciliation checkpoint
nor an open hold's reserve entry) and folds them into the trim base (meta ``base_id``,
``base_sum``, ``base_count`` and ``base_lots``, the credit lots as of the base), so
reconcile still adds up and a full repair can rebuild lots opened before the base. The
lots at the base come from the one lots replay there is (:class:`.lots.LotBook`), run here
on the entries about to go; ``lua/trim.lua`` then writes the new base and trims only if
the ledger has not moved since they were read (as ``lots_restore`` does), so no replay is
written in Lua. At most :data:`CHUNK` entries go per script call: a large backlog is
trimmed in steps, each one short for Redis.

Drained lots leave: a lot with nothing left that no entry still in Redis names can never
get credits back, so its record goes from the base and from the lots hash (so an
account's lots do not grow with every grant it ever had, once archived and trimmed).
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import Any

from ..models import LedgerEntry
from ..reports import TrimResult
from . import validation as v
from .archived import id_parts, next_id
from .decoding import text
from .lot_reconciliation import _stored, _unpacked
from .lots import LotBook, decode_draws
from .operations import Operations
from .requests import CommandCall, Operation

__all__ = ["ATTEMPTS", "CHUNK", "base_after", "trim"]

CHUNK = 5000
"""Entries folded into the base per script call."""
SCAN_LIMIT = 20_000
"""Entries after the base read to find drained lots nothing names any more."""
ATTEMPTS = 20
"""Plans in a row the ledger may outdate (a concurrent trim) before the trim gives up."""

_Meta = tuple[str | None, str | None, int, int, str | None]


def _meta(ops: Operations, account: str) -> Operation[_Meta]:
    def decode(raw: Sequence[Any]) -> _Meta:
        ckpt, base, total, count, lots = (None if x is None else text(x) for x in raw)
        return ckpt, base, int(total or 0), int(count or 0), lots

    return Operation(
        name="trim_ledger",
        request=CommandCall(
            ("HMGET", ops.keys.account(account).meta, "ckpt_id", "base_id", "base_sum",
             "base_count", "base_lots")
        ),
        decode=decode,
    )


def _open_holds(ops: Operations, account: str) -> Operation[list[str]]:
    return Operation(
        name="trim_ledger",
        request=CommandCall(("ZRANGE", ops.keys.account(account).hold_expiry, "0", "-1")),
        decode=lambda raw: [text(x) for x in raw],
    )


def base_after(
    base_sum: int, base_lots: str | None, based: bool, entries: Sequence[LedgerEntry]
) -> tuple[int, LotBook | None]:
    """The base's sum and lots after ``entries`` (oldest first) join it: the lots replayed
    from those kept at the prior base. None for lots a base trimmed without them (``based``
    and none kept) leaves unknowable."""
    total = base_sum + sum(e.delta for e in entries)
    if based and base_lots is None:
        return total, None
    book = _stored(_unpacked(base_lots or ""), base_sum) or LotBook(base_sum)
    for e in entries:
        book.replay(e.id, e.type_name, e.delta, e.action or "", e.lots or "")
    return total, book


def _packed(book: LotBook | None, drop: set[str]) -> str:
    if book is None:
        return "-"
    return " ".join(f"{i}={book.lots[i].record()}" for i in sorted(book.lots) if i not in drop)


def _unreferenced(
    ops: Operations, account: str, drained: set[str], after: str
) -> Generator[Operation[Any], Any, set[str]]:
    """The drained lots that no entry after ``after`` names. Credits can go back to a lot
    only through an entry that names it (a refund, settle or release of a draw from it,
    and the draw itself is never trimmed while it can be given back), so such a lot's
    record is dead weight at the base and in the lots hash. None are found (and all stay)
    past :data:`SCAN_LIMIT` entries to read."""
    if not drained:
        return set()
    named: set[str] = set()
    start, read = "(" + after, 0
    while True:
        page: list[LedgerEntry] = yield ops.read_entries(account, start, "+", 1000, False)
        for e in page:
            named.update(lot_id for lot_id, _ in decode_draws(e.lots))
        read += len(page)
        if len(page) < 1000:
            return drained - named
        if read >= SCAN_LIMIT:
            return set()
        start = "(" + page[-1].id


def trim(
    ops: Operations, account: str, before: str
) -> Generator[Operation[Any], Any, TrimResult]:
    """Remove entries older than ``before``, never past the last checkpoint nor an open
    hold's reserve entry, folding them into the trim base."""
    account = v.account(account)
    minid = v.entry_id(before, "before")
    removed = 0
    attempts = 0
    while True:
        ckpt, base, base_sum, base_count, base_lots = yield _meta(ops, account)
        if ckpt is None:
            return TrimResult(account=account, removed=removed, kept_from=None)
        holds: list[str] = yield _open_holds(ops, account)
        target = min((minid, ckpt, *holds), key=id_parts)
        start = "-" if base is None else "(" + base
        entries: list[LedgerEntry] = yield ops.read_entries(
            account, start, "(" + target, CHUNK, False
        )
        last = entries[-1].id if entries else ""
        total, book = base_after(base_sum, base_lots, base is not None, entries)
        drop: set[str] = set()
        if book is not None and last and len(entries) < CHUNK:
            drained = {i for i, lot in book.lots.items() if lot.remaining == 0}
            drop = yield from _unreferenced(ops, account, drained, last)
        status, n = yield ops.maintenance(
            "trim",
            account,
            decode=lambda raw: (text(raw[0]), int(raw[1]) if len(raw) > 1 else 0),
            prior=base or "",
            last=last,
            sum=str(total),
            count=str(base_count + len(entries)),
            lots=_packed(book, drop),
            drop=" ".join(sorted(drop)),
            n=str(len(entries)),
            minid=next_id(*id_parts(last)) if last else target,
        )
        if status == "no_checkpoint":
            return TrimResult(account=account, removed=removed, kept_from=None)
        if status == "moved":
            attempts += 1
            if attempts >= ATTEMPTS:
                return TrimResult(account=account, removed=removed, kept_from=None)
            continue
        removed += n
        if len(entries) < CHUNK:
            return TrimResult(account=account, removed=removed, kept_from=target)
