"""Account controls: a tier's spend limits and low-balance threshold on an account, and
the low-balance alert outbox.

The limits are enforced and the alerts recorded inside the mutation scripts
(lua/prelude.lua, ``controls``), from the account's controls hash ``ctl:{<acct>}``;
:func:`set_tier` copies the tier's numbers there (one HSET), so a script never needs the
price file. After a tier's numbers change in the price file, set the tier again.

The outbox of an account is the stream ``alerts:{<acct>}``, in the account's own slot
(a script touches one slot), one entry per crossing of the threshold. A consumer finds
every account's outbox by SCAN (once per primary on a cluster) and keeps, per account, the
last alert it acknowledged in the sorted set ``alertack:{<acct>}`` (consumer scored by the
alert's id, ``ms * 4096 + seq``: exact in a double), moved by ``ZADD GT`` so that two
workers acknowledging at once never move it back: what a consumer has not acknowledged
comes back on its next read, after a crash too.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from ..control_models import AccountControls, Alert
from ..errors import ValidationError
from ..models import LedgerEntry
from . import validation as v
from .decoding import entry_from_fields, text
from .operations import Operations
from .requests import CommandCall, Operation
from .steps import Steps

__all__ = [
    "MAX_ALERTS",
    "ack_alerts",
    "alerts",
    "count_windows",
    "get_controls",
    "rebuild_mark",
    "rebuild_windows",
    "set_tier",
    "tier_values",
]

MAX_ALERTS = 1000
"""Most alerts one read returns."""

_STREAM_ID = re.compile(r"([0-9]{1,20})-([0-9]{1,20})")
_DAY_MS = 86_400_000
_SEQ = 4096  # an id's sequence part within its ms, in the cursor's score (capped: see below)


def _score(sid: tuple[int, int]) -> int:
    """A cursor's score: ``ms * 4096 + seq``, exact in a double until the year 2248. A
    sequence past 4095 within one ms scores as 4095: the cursor then stays a little behind,
    so a few alerts come again (never one skipped)."""
    return sid[0] * _SEQ + min(sid[1], _SEQ - 1)


def _cursor(score: Any) -> str:
    value = int(float(text(score)))
    return f"{value // _SEQ}-{value % _SEQ}"


def _command(name: str, *args: str) -> Operation[Any]:
    return Operation(name=name, request=CommandCall(args=args), decode=lambda raw: raw)


def _limit(value: object, field: str) -> int | None:
    return None if value is None else v.amount(value, field)


def tier_values(
    ops: Operations,
    tier: str | None,
    daily_limit: int | None,
    monthly_limit: int | None,
    low_balance: int | None,
) -> tuple[str, list[str], bool]:
    """The controls hash's values for ``tier`` with the overrides given: (tier name, the
    daily and monthly limits and threshold as the scripts read them ('' for none), drop).
    Drop: off every tier with no override, so the hash goes (windows and arming with it);
    the script that writes the controls takes away the meta hash's 'noctl' mark too
    (lua/set_tier.lua), so a debit's fast block never runs beside controls it would skip."""
    overrides = (
        _limit(daily_limit, "daily_limit"),
        _limit(monthly_limit, "monthly_limit"),
        _limit(low_balance, "low_balance"),
    )
    name = ""
    limits: list[int | None] = [None, None, None]
    if tier is not None:
        found = ops.price_table().tier(tier)
        name = v.label(tier, "tier", required=True)
        limits = [found.daily_limit, found.monthly_limit, found.low_balance]
    for i, override in enumerate(overrides):
        if override is not None:
            limits[i] = override
    values = ["" if n is None else str(n) for n in limits]
    return name, values, tier is None and all(n is None for n in limits)


def set_tier(
    ops: Operations,
    account: str,
    tier: str | None,
    *,
    daily_limit: int | None,
    monthly_limit: int | None,
    low_balance: int | None,
) -> Steps[AccountControls]:
    """Put ``account`` on ``tier`` (None: no tier), each limit given here overriding the
    tier's; then read the controls back."""
    account = v.account(account)
    name, values, drop = tier_values(ops, tier, daily_limit, monthly_limit, low_balance)
    yield ops.maintenance(
        "set_tier",
        account,
        decode=lambda raw: raw,
        tier=name,
        daily=values[0],
        monthly=values[1],
        low=values[2],
        drop="1" if drop else "",
    )
    result = yield from get_controls(ops, account)
    return result


def _int(value: Any) -> int | None:
    if value is None:
        return None
    raw = text(value)
    return int(raw) if raw.lstrip("-").isdigit() else None


def _utc_month(ms: int) -> int:
    moment = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    return moment.year * 12 + moment.month - 1


def get_controls(ops: Operations, account: str) -> Steps[AccountControls]:
    """The account's tier, limits, threshold and spending in the current windows (by the
    server's clock)."""
    account = v.account(account)
    raw: Sequence[Any] = yield _command(
        "get_controls",
        "HMGET",
        ops.keys.account(account).controls,
        "tier",
        "daily",
        "monthly",
        "low",
        "d",
        "ds",
        "m",
        "ms",
    )
    now: Sequence[Any] = yield _command("get_controls", "TIME")
    now_ms = int(text(now[0])) * 1000 + int(text(now[1])) // 1000
    tier = text(raw[0]) if raw[0] is not None else ""
    today = _int(raw[4]) == now_ms // _DAY_MS
    this_month = _int(raw[6]) == _utc_month(now_ms)
    return AccountControls(
        account=account,
        tier=tier or None,
        daily_limit=_int(raw[1]),
        monthly_limit=_int(raw[2]),
        low_balance=_int(raw[3]),
        spent_today=(_int(raw[5]) or 0) if today else 0,
        spent_this_month=(_int(raw[7]) or 0) if this_month else 0,
    )


def _consumer(consumer: object) -> str:
    return v.label(consumer, "consumer", required=True)


def _stream_id(value: str) -> tuple[int, int]:
    found = _STREAM_ID.fullmatch(value)
    if found is None:
        raise ValidationError("alert_ids", f"not an alert id: {value[:80]!r}")
    return int(found.group(1)), int(found.group(2))


def alerts(ops: Operations, consumer: str, count: int) -> Steps[list[Alert]]:
    """Up to ``count`` alerts ``consumer`` has not acknowledged, oldest first."""
    name = _consumer(consumer)
    if type(count) is not int or not 1 <= count <= MAX_ALERTS:
        raise ValidationError("count", f"must be an int from 1 to {MAX_ALERTS}")
    accounts: list[str] = yield ops.scan_accounts("alerts", "alerts")
    found: list[Alert] = []
    for account in accounts:
        keys = ops.keys.account(account)
        cursor = yield _command("alerts", "ZSCORE", keys.alert_acks, name)
        start = "-" if cursor is None else "(" + _cursor(cursor)
        entries: Sequence[Any] = yield _command(
            "alerts", "XRANGE", keys.alerts, start, "+", "COUNT", str(count)
        )
        for entry_id, fields in entries:
            found.append(_alert(account, text(entry_id), fields))
    # By time, then per account in outbox order (ids compared as numbers): a cut at
    # ``count`` keeps a prefix of each account's alerts, so acknowledging what was
    # returned never skips one.
    found.sort(key=lambda a: (a.at, a.account, _stream_id(a.alert_id.rpartition("/")[2])))
    return found[:count]


def _alert(account: str, entry_id: str, fields: Any) -> Alert:
    if isinstance(fields, dict):
        values = {text(k): text(x) for k, x in fields.items()}
    else:
        flat = [text(x) for x in fields]
        values = dict(zip(flat[::2], flat[1::2], strict=True))
    ms = int(entry_id.split("-", 1)[0])
    return Alert(
        alert_id=f"{account}/{entry_id}",
        account=account,
        balance=int(values.get("balance", "0")),
        threshold=int(values.get("threshold", "0")),
        at=datetime.fromtimestamp(ms / 1000, tz=timezone.utc),
        entry_id=values.get("entry", ""),
        kind=values.get("kind", "low_balance"),
    )


def ack_alerts(ops: Operations, consumer: str, alert_ids: Sequence[str]) -> Steps[int]:
    """Acknowledge delivered alerts: per account, ``consumer``'s cursor moves forward to the
    newest id given (never back: ``ZADD GT``, atomic). Returns how many ids were given."""
    name = _consumer(consumer)
    if isinstance(alert_ids, str) or not isinstance(alert_ids, Sequence):
        raise ValidationError("alert_ids", "must be a list of alert ids")
    newest: dict[str, tuple[int, int]] = {}
    for alert_id in alert_ids:
        if not isinstance(alert_id, str):
            raise ValidationError("alert_ids", "every alert id must be a str")
        account, _, entry_id = alert_id.rpartition("/")
        account = v.account(account)
        sid = _stream_id(entry_id)
        newest[account] = max(newest.get(account, sid), sid)
    for account, sid in sorted(newest.items()):
        keys = ops.keys.account(account)
        yield _command("ack_alerts", "ZADD", keys.alert_acks, "GT", str(_score(sid)), name)
    return len(alert_ids)


def _month_start_ms(now_ms: int) -> int:
    moment = datetime.fromtimestamp(now_ms / 1000, tz=timezone.utc)
    start = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return int(start.timestamp() * 1000)


def _ms_of(entry_id: str) -> int:
    return int(entry_id.split("-", 1)[0])


def count_windows(
    entries: Sequence[tuple[str, str, int, str]], day: int, month: int
) -> tuple[int, int]:
    """(spent in UTC ``day``, spent in UTC ``month``) from ledger entries ``(id, type,
    delta, ref)`` in order, by the scripts' rules: a debit, a reservation and a settle's
    overage spend when written; a release, a settle's unused part, a hold's expiry and a
    refund give back to the windows their entry (a settle: its hold) counted in, never
    below 0."""
    ds = ms = 0
    refs: dict[str, tuple[str, str]] = {}

    def give_back(amount: int, counted_at: str) -> None:
        nonlocal ds, ms
        if not counted_at or not _STREAM_ID.fullmatch(counted_at):
            return
        t = _ms_of(counted_at)
        if t // _DAY_MS == day:
            ds = max(0, ds - amount)
        if _utc_month(t) == month:
            ms = max(0, ms - amount)

    for entry_id, typ, delta, ref in entries:
        refs[entry_id] = (typ, ref)
        t = _ms_of(entry_id)
        spent = 0
        if typ in ("debit", "reserve") or (typ == "settle" and delta < 0):
            spent = -delta
        if spent > 0:
            if t // _DAY_MS == day:
                ds += spent
            if _utc_month(t) == month:
                ms += spent
        elif typ in ("release", "settle", "expire") and delta > 0:
            give_back(delta, ref)
        elif typ == "refund" and delta > 0:
            ref_type, ref_ref = refs.get(ref, ("", ""))
            give_back(delta, ref_ref if ref_type == "settle" else ref)
    return ds, ms


def rebuild_mark(ops: Operations, account: str) -> Steps[bool]:
    """Rebuild the meta hash's 'noctl' mark (lua/controls_mark.lua), which lets a debit's
    fast block skip the controls: taken where the account has controls (left beside them by
    a writer that does not know it: an earlier SDK's set_tier, a hand edit), put where it
    has none. The full repair runs it; True when the account ends up marked."""
    raw: Sequence[Any] = yield ops.maintenance("controls_mark", account, decode=lambda r: r)
    return text(raw[1]) == "1"


def this_months_entries(
    ops: Operations, account: str, batch: int = 1000
) -> Steps[tuple[int, str, list[LedgerEntry]]]:
    """(server time in ms, the newest entry's id, the entries of the current UTC month up
    to it, oldest first): what the windows' rebuilds count from. The id goes to the
    rebuild's script, which writes only if the ledger has not moved on since."""
    keys = ops.keys.account(account)
    now: Sequence[Any] = yield _command("reconcile", "TIME")
    now_ms = int(text(now[0])) * 1000 + int(text(now[1])) // 1000
    newest: Sequence[Any] = yield _command(
        "reconcile", "XREVRANGE", keys.ledger, "+", "-", "COUNT", "1"
    )
    last = text(newest[0][0]) if newest else ""
    entries: list[LedgerEntry] = []
    start = str(_month_start_ms(now_ms))
    while last:
        page: Sequence[Any] = yield _command(
            "reconcile", "XRANGE", keys.ledger, start, last, "COUNT", str(batch)
        )
        entries.extend(entry_from_fields(raw_id, fields) for raw_id, fields in page)
        if len(page) < batch:
            break
        start = "(" + text(page[-1][0])
    return now_ms, last, entries


def rebuild_windows(ops: Operations, account: str, batch: int = 1000) -> Steps[bool]:
    """Count the current spend windows again from the ledger (the full repair runs this
    after fixing a torn script, which may have lost a count) and write them, never below
    the scripts' own count; True when written. Only for an account with a limit."""
    keys = ops.keys.account(account)
    limits: Sequence[Any] = yield _command("reconcile", "HMGET", keys.controls, "daily", "monthly")
    if not any(_int(x) is not None for x in limits):
        return False
    for _ in range(5):
        now_ms, last, read = yield from this_months_entries(ops, account, batch)
        entries = [(e.id, e.type_name, e.delta, e.ref or "") for e in read]
        day, month = now_ms // _DAY_MS, _utc_month(now_ms)
        ds, ms = count_windows(entries, day, month)
        outcome: Sequence[Any] = yield ops.maintenance(
            "controls_rebuild",
            account,
            decode=lambda raw: raw,
            last_id=last,
            day=str(day),
            spent_day=str(ds),
            month=str(month),
            spent_month=str(ms),
        )
        status = text(outcome[0])
        if status != "moved":
            return status == "rebuilt"
    return False
