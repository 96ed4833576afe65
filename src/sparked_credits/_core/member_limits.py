"""Per-member spend limits inside an organization's account: the window mechanism of the
tiers (lua/prelude.lua, ``controls``), keyed by member.

A member is the top-level ``"member"`` of an entry's metadata, which the example app's
organization balances write (``{"member": "user_..."}``). A debit, charge, reservation or
settle overage that would take the member's spending in the current UTC day or calendar
month past the member's limit is refused inside the same script
(``SpendLimitExceededError`` with window ``member_daily`` / ``member_monthly`` and
``member``); a release, the unused part of a settle, a refund and an expired hold give the
member's window back, like the account's. The limits are every member's
(``member=None``) or one member's own, which wins (lua/member_limit.lua).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..control_models import MemberControls
from . import validation as v
from .controls import _command, _int, _limit, _utc_month, this_months_entries
from .decoding import text
from .operations import Operations
from .steps import Steps

__all__ = [
    "count_member_windows",
    "get_member_controls",
    "rebuild_member_windows",
    "set_member_limit",
]

_DAY_MS = 86_400_000


def set_member_limit(
    ops: Operations,
    account: str,
    member: str | None,
    *,
    daily_limit: int | None,
    monthly_limit: int | None,
) -> Steps[MemberControls]:
    """Set (both None: remove) ``member``'s own limits in ``account``, or every member's
    (``member=None``); then read them back."""
    account = v.account(account)
    name = "" if member is None else v.account(member)
    daily = _limit(daily_limit, "daily_limit")
    monthly = _limit(monthly_limit, "monthly_limit")
    yield ops.maintenance(
        "member_limit",
        account,
        decode=lambda raw: raw,
        member=name,
        daily="" if daily is None else str(daily),
        monthly="" if monthly is None else str(monthly),
    )
    result = yield from get_member_controls(ops, account, member)
    return result


def get_member_controls(ops: Operations, account: str, member: str | None) -> Steps[MemberControls]:
    """``member``'s limits in ``account`` (its own, else every member's) and its spending
    in the current windows; ``member=None``: every member's limits."""
    account = v.account(account)
    name = None if member is None else v.account(member)
    fields = ("mdaily", "mmonthly", f"ml:{name}", f"mw:{name}") if name else ("mdaily", "mmonthly")
    raw: Sequence[Any] = yield _command(
        "get_member_controls", "HMGET", ops.keys.account(account).controls, *fields
    )
    daily, monthly, own = _int(raw[0]), _int(raw[1]), False
    spent_today = spent_month = 0
    if name:
        if raw[2] is not None:
            own = True
            parts = [*text(raw[2]).split("|"), "", ""][:2]
            daily, monthly = (int(p) if p.isdigit() else None for p in parts)
        window = text(raw[3]).split("|") if raw[3] is not None else []
        if len(window) == 4 and all(p.isdigit() for p in window):
            now: Sequence[Any] = yield _command("get_member_controls", "TIME")
            now_ms = int(text(now[0])) * 1000 + int(text(now[1])) // 1000
            if int(window[0]) == now_ms // _DAY_MS:
                spent_today = int(window[1])
            if int(window[2]) == _utc_month(now_ms):
                spent_month = int(window[3])
    return MemberControls(
        account=account,
        member=name,
        daily_limit=daily,
        monthly_limit=monthly,
        own=own,
        spent_today=spent_today,
        spent_this_month=spent_month,
    )


MemberEntry = tuple[str, str, int, str, str]
"""A ledger entry as the member count reads it: (id, type, delta, ref, member or '')."""


def count_member_windows(
    entries: Sequence[MemberEntry], day: int, month: int
) -> dict[str, tuple[int, int]]:
    """Each member's (spent in UTC ``day``, spent in UTC ``month``) from ledger entries in
    order, by the scripts' rules (prelude.lua, member_window): a debit, a reservation and a
    settle's overage spend for the member their metadata names (a settle: else its
    hold's); a release, a settle's unused part, an expired hold and a refund give back to
    the member and the windows of the entry they return to, never below 0."""
    spent: dict[str, list[int]] = {}
    seen: dict[str, tuple[str, str, str]] = {}  # id -> (type, ref, member)

    def add(member: str, amount: int, at: str) -> None:
        if not member or not at[:1].isdigit():
            return
        ms_at = int(at.split("-", 1)[0])
        window = spent.setdefault(member, [0, 0])
        if ms_at // _DAY_MS == day:
            window[0] = max(0, window[0] + amount)
        if _utc_month(ms_at) == month:
            window[1] = max(0, window[1] + amount)

    for entry_id, typ, delta, ref, member in entries:
        seen[entry_id] = (typ, ref, member)
        if typ in ("debit", "reserve") or (typ == "settle" and delta < 0):
            who = member or (seen.get(ref, ("", "", ""))[2] if typ == "settle" else "")
            add(who, -delta, entry_id)
        elif typ in ("release", "settle", "expire") and delta > 0:
            add(seen.get(ref, ("", "", ""))[2], -delta, ref)
        elif typ == "refund" and delta > 0:
            ref_type, ref_ref, ref_member = seen.get(ref, ("", "", ""))
            at = ref_ref if ref_type == "settle" else ref
            add(seen.get(at, ("", "", ref_member))[2] or ref_member, -delta, at)
    return {m: (w[0], w[1]) for m, w in spent.items()}


def rebuild_member_windows(ops: Operations, account: str, batch: int = 1000) -> Steps[bool]:
    """Count the members' current windows again from the ledger (the full repair runs this
    after fixing a torn script) and write them, never below the scripts' own count; True
    when written. Only for an account with a member limit."""
    keys = ops.keys.account(account)
    mark = yield _command("reconcile", "HGET", keys.controls, "mlim")
    if mark is None:
        return False
    for _ in range(5):
        now_ms, last, read = yield from this_months_entries(ops, account, batch)
        entries: list[MemberEntry] = []
        for entry in read:
            who = entry.metadata.get("member")
            member = who if isinstance(who, str) and _clean(who) else ""
            entries.append((entry.id, entry.type_name, entry.delta, entry.ref or "", member))
        day, month = now_ms // _DAY_MS, _utc_month(now_ms)
        counted = count_member_windows(entries, day, month)
        records = "\n".join(f"{m}\t{d}\t{mo}" for m, (d, mo) in sorted(counted.items()))
        outcome: Sequence[Any] = yield ops.maintenance(
            "member_windows_rebuild",
            account,
            decode=lambda raw: raw,
            last_id=last,
            day=str(day),
            month=str(month),
            records=records,
        )
        if text(outcome[0]) != "moved":
            return True
    return False


def _clean(member: str) -> bool:
    return bool(member) and not any(c.isspace() for c in member)
