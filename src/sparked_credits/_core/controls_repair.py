"""The full repair's rebuild of two kinds of account-controls state from the ledger: the
low-balance alert arming and the referral marks.

Both are derived state (the ledger is the commit record), written by the mutation
scripts after their entry and before their balance. A torn script (a prefix of its
writes replayed after a power loss, see lua/prelude.lua) can keep the entry and lose
them:

* the alert arming (the controls hash's ``fired``): a crossing whose alert was lost is
  never alerted, and one whose alert stayed but whose mark was lost is alerted again by
  the next spending script. :func:`rebuild_alerts` derives the arming from the ledger
  (the entries since the balance was last at or above the threshold) and the outbox,
  and writes it through ``lua/alerts_rebuild.lua`` only if the ledger did not move.
* the referral marks (``referral:{<acct>}``, lua/referral.lua): a referral whose mark
  was lost is replayed by its idempotency record, but only within that record's
  retention. :class:`ReferralMarks` collects the marks the entries imply during the
  repair's replay of the ledger (lot_reconciliation.py) and :func:`restore_referrals`
  puts back the missing ones (``lua/referral_restore.lua``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..models import LedgerEntry
from .decoding import text
from .operations import Operations
from .requests import CommandCall, Operation
from .steps import Steps

__all__ = [
    "SPENDING_TYPES",
    "Arming",
    "ReferralMarks",
    "alert_arming",
    "rebuild_alerts",
    "restore_referrals",
]

SPENDING_TYPES = frozenset({"debit", "reserve", "settle", "release", "refund", "adjust"})
"""Entry types whose scripts call the prelude's ``controls()`` (and so may alert)."""

_PAGE = 200
_ALERTS_READ = 200
_ATTEMPTS = 5


def _command(*args: str) -> Operation[Any]:
    return Operation(name="reconcile", request=CommandCall(args=args), decode=lambda raw: raw)


def _int(value: Any) -> int | None:
    if value is None:
        return None
    raw = text(value)
    return int(raw) if raw.lstrip("-").isdigit() else None


@dataclass(frozen=True, slots=True)
class Arming:
    """What the repair writes: ``action`` is '' (nothing), 'rearm', 'mark' or 'alert';
    ``entry`` the crossing's ledger entry and ``balance`` the balance after it."""

    action: str
    entry: str = ""
    balance: int = 0


def alert_arming(
    run: Sequence[tuple[str, str, int]],
    run_complete: bool,
    alerted: Sequence[str],
    balance: int,
    low: int,
    fired: str,
) -> Arming:
    """The arming the ledger implies (pure).

    ``run``: the entries ``(id, type, balance after)`` since the balance was last at or
    above ``low``, oldest first (empty when the balance is at or above it now);
    ``run_complete``: the entry before the run was read (or the run starts the ledger),
    so the run is known whole; ``alerted``: the ledger entries the outbox's low-balance
    alerts name; ``fired``: the controls hash's mark ('' for none).

    At or above the threshold: armed (a mark left is taken). Below it: the crossing is
    the run's first spending entry (the scripts alert in those); an alert naming an
    entry of the run means the crossing was alerted (its mark is put if lost); no alert
    and a crossing means a torn script lost it (the repair records it, once); no
    spending entry in the run: armed, so the next spending script alerts."""
    if balance >= low:
        return Arming("rearm") if fired else Arming("")
    ids = {entry_id for entry_id, _, _ in run}
    done = [entry_id for entry_id in alerted if entry_id in ids]
    if done:
        return Arming("") if fired in ids else Arming("mark", done[-1])
    if fired in ids or not run_complete:
        return Arming("")
    crossing = next((e for e in run if e[1] in SPENDING_TYPES), None)
    if crossing is None:
        return Arming("rearm") if fired else Arming("")
    return Arming("alert", crossing[0], crossing[2])


def rebuild_alerts(ops: Operations, account: str) -> Steps[str]:
    """Derive the account's alert arming from its ledger and outbox and write it where it
    differs (the full repair runs this); returns the action written ('' for none). Only
    for an account with a low-balance threshold."""
    keys = ops.keys.account(account)
    for _ in range(_ATTEMPTS):
        got: Sequence[Any] = yield _command("HMGET", keys.controls, "low", "fired")
        low = _int(got[0])
        if low is None:
            return ""
        fired = text(got[1]) if got[1] is not None else ""
        raw_balance = yield _command("GET", keys.balance)
        balance = _int(raw_balance) or 0
        run: list[tuple[str, str, int]] = []
        last, complete, end = "", True, "+"
        if balance < low:
            complete = False
            while True:
                page: list[LedgerEntry] = yield ops.read_entries(account, "-", end, _PAGE, True)
                if not last and page:
                    last = page[0].id
                for entry in page:
                    if entry.balance_after >= low:
                        complete = True
                        break
                    run.append((entry.id, entry.type_name, entry.balance_after))
                if complete or len(page) < _PAGE:
                    # The whole ledger read: complete unless trimmed (a base kept aside).
                    complete = complete or not (yield from _trimmed(ops, account))
                    break
                end = "(" + page[-1].id
            run.reverse()
        else:
            newest: list[LedgerEntry] = yield ops.read_entries(account, "-", "+", 1, True)
            last = newest[0].id if newest else ""
        outbox: Sequence[Any] = yield _command(
            "XREVRANGE", keys.alerts, "+", "-", "COUNT", str(_ALERTS_READ)
        )
        alerted = [e for e in (_alerted_entry(fields) for _, fields in outbox) if e]
        alerted.reverse()
        arming = alert_arming(run, complete, alerted, balance, low, fired)
        if not arming.action:
            return ""
        outcome: Sequence[Any] = yield ops.maintenance(
            "alerts_rebuild",
            account,
            decode=lambda raw: raw,
            last_id=last,
            low=str(low),
            action=arming.action,
            entry=arming.entry,
            balance=str(arming.balance),
        )
        if text(outcome[0]) == "rebuilt":
            return arming.action
    return ""


def _trimmed(ops: Operations, account: str) -> Steps[bool]:
    base = yield _command("HGET", ops.keys.account(account).meta, "base_id")
    return base is not None


def _alerted_entry(fields: Any) -> str:
    """The ledger entry a low-balance alert names ('' for another kind of alert)."""
    if isinstance(fields, dict):
        values = {text(k): text(x) for k, x in fields.items()}
    else:
        flat = [text(x) for x in fields]
        values = dict(zip(flat[::2], flat[1::2], strict=True))
    if values.get("kind", "low_balance") != "low_balance":
        return ""
    return values.get("entry", "")


class ReferralMarks:
    """The referral marks (lua/referral.lua) the replayed entries imply: a reward as the
    referred account ('referred_by' = '<referrer>|<entry>', the first one), each reward as
    referrer ('referral:<referred>' = '<referred>|<entry>') and their ids (for the month's
    count). Entries are told apart by their metadata, which reward_referral writes."""

    def __init__(self) -> None:
        self.fields: dict[str, str] = {}
        self.rewards: list[str] = []

    def reset(self) -> None:
        self.fields, self.rewards = {}, []

    def __bool__(self) -> bool:
        return bool(self.fields)

    def see(self, entry: LedgerEntry) -> None:
        if entry.type_name != "credit" or entry.action != "referral":
            return
        about = entry.metadata.get("referral")
        if not isinstance(about, dict):
            return
        referrer, referred = about.get("referrer"), about.get("referred")
        if isinstance(referrer, str) and _clean(referrer):
            self.fields.setdefault("referred_by", f"{referrer}|{entry.id}")
        elif isinstance(referred, str) and _clean(referred):
            field = f"referral:{referred}"
            if field not in self.fields:
                self.fields[field] = f"{referred}|{entry.id}"
                self.rewards.append(entry.id)

    def packed(self) -> tuple[str, str]:
        records = "\n".join(f"{k}\t{v}" for k, v in sorted(self.fields.items()))
        return records, " ".join(self.rewards)


def _clean(account: str) -> bool:
    return bool(account) and not any(c.isspace() for c in account)


def restore_referrals(ops: Operations, account: str, marks: ReferralMarks) -> Operation[int]:
    """Put back the referral marks ``marks`` found that the account's hash lacks."""
    records, rewards = marks.packed()
    return ops.maintenance(
        "referral_restore",
        account,
        decode=lambda raw: int(text(raw[1])),
        records=records,
        rewards=rewards,
    )
