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
from .controls import _command, _int, _limit, _utc_month
from .decoding import text
from .operations import Operations
from .steps import Steps

__all__ = ["get_member_controls", "set_member_limit"]

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
