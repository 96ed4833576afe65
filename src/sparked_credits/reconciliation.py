"""Reconciliation and ledger retention, as I/O-free procedures both clients drive.

A procedure is a generator that yields operations and receives their results, so the
multi-step logic (chunked sums, sweeps across accounts) is written once for both clients.
Sums run inside Redis in bounded chunks: entries never travel to Python, and no single
script call holds Redis for long.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import Any

from . import validation as v
from .decoding import text
from .errors import ValidationError
from .operations import Operations
from .reports import ReconcileReport, ReconcileResult, TrimResult
from .requests import Operation
from .scripts import SCRIPTS

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


def _chunk(
    ops: Operations, account: str, start: str, total: int, chunk: int, repair: bool
) -> Operation[tuple[str, str, int, int, int | None]]:
    def decode(raw: Sequence[Any]) -> tuple[str, str, int, int, int | None]:
        status = text(raw[0])
        balance = int(raw[4]) if len(raw) > 4 else None
        return status, text(raw[1]), int(raw[2]), int(raw[3]), balance

    params = (start, str(total), str(chunk), "repair" if repair else "check")
    return ops.maintenance("reconcile", SCRIPTS.reconcile, account, params, decode)


def reconcile(
    ops: Operations, account: str, repair: bool, chunk: int = DEFAULT_CHUNK
) -> Generator[Operation[Any], Any, ReconcileResult]:
    """Sum the ledger after the last checkpoint, chunk by chunk; the last chunk compares
    with the balance atomically and moves the checkpoint (or repairs)."""
    account = v.account(account)
    v.flag(repair, "repair")
    if isinstance(chunk, bool) or not isinstance(chunk, int) or not 1 <= chunk <= 100_000:
        raise ValidationError("chunk", "must be an int between 1 and 100000")
    start, total, read = "", 0, 0
    while True:
        status, last, total, n, balance = yield _chunk(ops, account, start, total, chunk, repair)
        read += n
        if status == "more":
            start = last
            continue
        assert balance is not None
        return ReconcileResult(
            account=account,
            balance=balance,
            ledger_sum=total,
            matched=status == "ok",
            repaired=status == "repaired",
            entries_read=read,
            checkpoint_id=last or None,
            adjustment_id=last if status == "repaired" else None,
        )


def trim(ops: Operations, account: str, before: str) -> Generator[Operation[Any], Any, TrimResult]:
    """Remove entries older than ``before`` but never past the last checkpoint."""
    account = v.account(account)
    minid = v.entry_id(before, "before")

    def decode(raw: Sequence[Any]) -> TrimResult:
        if text(raw[0]) == "no_checkpoint":
            return TrimResult(account=account, removed=0, kept_from=None)
        return TrimResult(account=account, removed=int(raw[1]), kept_from=text(raw[2]))

    result: TrimResult = yield ops.maintenance("trim", SCRIPTS.trim, account, (minid,), decode)
    return result


def find_accounts(ops: Operations) -> Generator[Operation[Any], Any, list[str]]:
    """Every account with a ledger: a SCAN over ``txs:*`` of the whole keyspace, which on
    a cluster means every primary."""
    accounts: list[str] = yield ops.scan_accounts("txs", "find_accounts")
    return accounts


def check_account(
    ops: Operations, account: str, repair: bool
) -> Generator[Operation[Any], Any, tuple[int, ReconcileResult]]:
    """One account of a reconcile_all run: return its expired holds, then reconcile it."""
    expired: int = yield from ops.sweep_expired_holds(account)
    result: ReconcileResult = yield from reconcile(ops, account, repair)
    return expired, result


def build_report(
    outcomes: dict[str, tuple[int, ReconcileResult] | BaseException], duration: float
) -> ReconcileReport:
    """The summary of a run; an account whose check failed is listed under errors."""
    results = [o[1] for o in outcomes.values() if not isinstance(o, BaseException)]
    return ReconcileReport(
        checked=len(results),
        mismatched=sum(not r.matched for r in results),
        repaired=sum(r.repaired for r in results),
        errors={a: str(o) for a, o in outcomes.items() if isinstance(o, BaseException)},
        expired_holds=sum(o[0] for o in outcomes.values() if not isinstance(o, BaseException)),
        duration_seconds=duration,
        results=sorted(results, key=lambda r: r.account),
    )
