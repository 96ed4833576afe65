"""Reconciliation and ledger retention, as I/O-free procedures both clients drive.

A procedure is a generator that yields operations and receives their results, so the
multi-step logic (chunked sums, sweeps across accounts) is written once for both clients.
Sums run inside Redis (block sums first, then entries in bounded chunks): entries never
travel to Python, and no single script call holds Redis for long.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import Any

from ..errors import ValidationError
from ..reports import ReconcileReport, ReconcileResult
from . import archived, controls, controls_repair, member_limits
from . import validation as v
from .decoding import text
from .lot_reconciliation import LotsCheck, check_lots
from .operations import Operations
from .requests import CommandCall, Operation
from .trimming import trim

__all__ = [
    "DEFAULT_CHUNK",
    "build_report",
    "check_account",
    "find_accounts",
    "reconcile",
    "trim",
]

DEFAULT_CHUNK = 1000
"""Entries summed per script call: about a millisecond of Redis time each."""

Procedure = Generator[Operation[Any], Any, Any]


_Chunk = tuple[str, str, int, int, int, int, int, int | None, str | None]


def _chunk(
    ops: Operations,
    account: str,
    start: str,
    total: int,
    count: int,
    chunk: int,
    repair: bool,
    full: bool,
) -> Operation[_Chunk]:
    def decode(raw: Sequence[Any]) -> _Chunk:
        status = text(raw[0])
        balance = int(raw[7]) if len(raw) > 7 else None
        # The last chunk's lots check: '' (they agree) or what is wrong with them.
        lots = (text(raw[8]) or None) if len(raw) > 8 else None
        return (
            status,
            text(raw[1]),
            int(raw[2]),
            int(raw[3]),
            int(raw[4]),
            int(raw[5]),
            int(raw[6]),
            balance,
            lots,
        )

    return ops.maintenance(
        "reconcile",
        account,
        decode=decode,
        start=start,
        sum=str(total),
        count=str(count),
        chunk=str(chunk),
        mode="repair" if repair else "check",
        scope="full" if full else "ckpt",
    )


def _pass(
    ops: Operations, account: str, repair: bool, full: bool, chunk: int
) -> Generator[Operation[Any], Any, tuple[ReconcileResult, str]]:
    """One pass, chunk by chunk; returns the result and the last chunk's status."""
    start, total, count, read, rebuilt, dups = "", 0, 0, 0, 0, 0
    while True:
        status, last, total, count, n, r, d, balance, lots = yield _chunk(
            ops, account, start, total, count, chunk, repair, full
        )
        read, rebuilt, dups = read + n, rebuilt + r, dups + d
        if status == "more":
            start = last
            continue
        assert balance is not None
        fixed = status == "repaired"
        result = ReconcileResult(
            account=account,
            balance=balance,
            ledger_sum=total,
            # A compensated repeat means the ledger did not add up before the repair.
            matched=status == "ok" and dups == 0,
            repaired=fixed or rebuilt > 0 or dups > 0,
            entries_read=read,
            checkpoint_id=last or None,
            adjustment_id=last if fixed else None,
            full=full,
            rebuilt=rebuilt,
            duplicates=dups,
            lots_matched=lots is None,
            lots_problem=lots,
        )
        return result, status


def reconcile(
    ops: Operations,
    account: str,
    repair: bool,
    chunk: int = DEFAULT_CHUNK,
    full: bool = False,
    archive: bool = False,
) -> Generator[Operation[Any], Any, ReconcileResult]:
    """Check that the balance equals the ledger's sum, summing inside Redis.

    The cheap pass first adds the block sums every script keeps beside the ledger (one
    number per 1,024 entries): when they equal the balance and their entry count is the
    ledger's, no entry is read. Otherwise (entries appended without block sums: the
    TypeScript SDK, an earlier version, a torn script) it sums from the last checkpoint
    on, and checks the entry count against the checkpoint's, so an entry that appeared at
    or below the checkpoint (a torn transaction replayed after a restart) is noticed: it
    then falls back to a full pass. A pass that agrees seeds the block sums again.
    ``full=True`` sums every entry. ``repair=True`` fixes a mismatch by a full pass that
    rebuilds every derived record (balance, idempotency records, holds, refunds, marks,
    credit lots) from the ledger, the commit record, and compensates a key applied twice.
    Every pass checks the credit lots in its last script call (``lots_problem``); a full
    pass also replays the ledger (from the lots kept at the trim base) to compare them.
    With an ``archive``, a full pass also proves the trim base against it: the archived
    entries up to the base add up to its sum and count (``archive_matched``).
    """
    account = v.account(account)
    v.flag(repair, "repair")
    v.flag(full, "full")
    if isinstance(chunk, bool) or not isinstance(chunk, int) or not 1 <= chunk <= 100_000:
        raise ValidationError("chunk", "must be an int between 1 and 100000")
    if not full:
        result, status = yield from _pass(ops, account, False, False, chunk)
        # The cheap pass checks the lots too (lots_problem); a repair of either runs the
        # full pass, which rebuilds them from the ledger.
        found = status == "mismatch" or result.lots_matched is False
        if status != "stale" and not (found and repair):
            return result
    result, _ = yield from _pass(ops, account, repair, True, chunk)
    if archive:
        result = result.model_copy(
            update={"archive_matched": (yield from _against_archive(ops, account))}
        )
    # A full pass checks the credit lots against the ledger too (replaying it, from the
    # lots kept at the trim base on a trimmed ledger), and a repair rebuilds them from it,
    # after the balance (which the replay's total must then equal). The script's own check
    # (result.lots_problem) may find what the replay does not compare: a repair then
    # rewrites the lots from the replay all the same.
    lots: LotsCheck = yield from check_lots(
        ops, account, repair, force=result.lots_problem is not None
    )
    if repair:
        # Credits a torn script gave back to a lot past its expiry (its lapse unit lost)
        # lapse now, as the next script touching the account would have done.
        yield from ops.sweep_expired(account)
    if repair:
        # The debit fast block's 'noctl' mark, derived from the controls (controls.py).
        yield from controls.rebuild_mark(ops, account)
        # The low-balance alert arming, derived from the ledger and the outbox: a torn
        # script never loses a crossing's alert nor lets the next one repeat it.
        yield from controls_repair.rebuild_alerts(ops, account)
    if repair and result.repaired:
        # A torn script may have lost its spend-window count: count the windows again.
        yield from controls.rebuild_windows(ops, account)
        yield from member_limits.rebuild_member_windows(ops, account)
    if lots.matched is None:
        return result
    problem = result.lots_problem or (None if lots.matched else "ledger")
    return result.model_copy(
        update={
            "lots_matched": problem is None,
            "lots_problem": problem,
            "lots_replayed": True,
            "lots_rebuilt": lots.rebuilt,
            "repaired": result.repaired or lots.rebuilt > 0,
        }
    )


def _against_archive(ops: Operations, account: str) -> Generator[Operation[Any], Any, bool | None]:
    """The trim base (what Redis no longer holds) against the archive's entries up to it."""
    meta: list[Any] = yield Operation(
        name="reconcile",
        request=CommandCall(
            ("HMGET", ops.keys.account(account).meta, "base_id", "base_sum", "base_count")
        ),
        decode=list,
    )
    if meta[0] is None:
        return None
    count, total = yield archived.totals_upto(account, text(meta[0]))
    return (count, total) == (int(meta[2] or 0), int(meta[1] or 0))


def find_accounts(ops: Operations) -> Generator[Operation[Any], Any, list[str]]:
    """Every account with a ledger: a SCAN over ``txs:*`` of the whole keyspace, which on
    a cluster means every primary."""
    accounts: list[str] = yield ops.scan_accounts("txs", "find_accounts")
    return accounts


def check_account(
    ops: Operations, account: str, repair: bool, full: bool = False
) -> Generator[Operation[Any], Any, tuple[int, ReconcileResult]]:
    """One account of a reconcile_all run: return its expired holds, then reconcile it."""
    expired: int = yield from ops.sweep_expired(account)
    result: ReconcileResult = yield from reconcile(ops, account, repair, full=full)
    return expired, result


def build_report(
    outcomes: dict[str, tuple[int, ReconcileResult] | BaseException], duration: float
) -> ReconcileReport:
    """The summary of a run; an account whose check failed is listed under errors."""
    results = [o[1] for o in outcomes.values() if not isinstance(o, BaseException)]
    return ReconcileReport(
        checked=len(results),
        mismatched=sum(not r.matched for r in results),
        lots_mismatched=sum(r.lots_matched is False for r in results),
        repaired=sum(r.repaired for r in results),
        errors={a: str(o) for a, o in outcomes.items() if isinstance(o, BaseException)},
        expired_holds=sum(o[0] for o in outcomes.values() if not isinstance(o, BaseException)),
        duration_seconds=duration,
        results=sorted(results, key=lambda r: r.account),
    )
