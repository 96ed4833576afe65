"""History pages with filters, and per-day usage for the chart, as I/O-free procedures.

An unfiltered history page is one XREVRANGE. A filtered page reads on in batches until it
has ``limit`` matches or the ledger ends; usage reads the window's entries in pages and
adds them up by day in the requested time zone (days without usage are present, as 0).
"""

from __future__ import annotations

from collections.abc import Collection, Generator
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..errors import ValidationError
from ..models import EntryType, HistoryPage, LedgerEntry
from ..reports import DailyUsage, UsageReport
from . import archived
from . import validation as v
from .operations import Operations
from .requests import Operation

__all__ = ["USAGE_TYPES", "history", "usage"]

GroupBy = Literal["action", "app"]

USAGE_TYPES = frozenset(
    {
        EntryType.DEBIT,
        EntryType.REFUND,
        EntryType.RESERVE,
        EntryType.SETTLE,
        EntryType.RELEASE,
        EntryType.EXPIRE,
    }
)
"""Entries that spend or give back spent credits; usage is minus the sum of their deltas,
so a refunded or released charge nets out. Grants, init and adjustments are not usage, and
neither are entry types this version does not know (a newer version's lot expiry is not
usage either): they count in reconciliation by their delta, not here."""

_BATCH = 500


def _types(value: Collection[EntryType | str] | None) -> frozenset[EntryType] | None:
    """The entry types to keep: names this version knows (a typo is an error, not an
    empty page). Entries of newer types are still listed by an unfiltered page."""
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    try:
        return frozenset(EntryType(t) for t in value)
    except ValueError:
        known = ", ".join(t.value for t in EntryType)
        raise ValidationError("types", f"must be entry types ({known})") from None


def history(
    ops: Operations,
    account: str,
    limit: int,
    cursor: str | None,
    types: Collection[EntryType | str] | None = None,
    action: str | None = None,
    app: str | None = None,
    archive: bool = False,
) -> Generator[Operation[Any], Any, HistoryPage]:
    """A page of entries, newest first, optionally only of some types/action/app.

    With an ``archive``, a page that reaches the oldest entry Redis holds continues in
    PostgreSQL below it: the cursor is an entry id in both, so a reader paging back
    cannot tell where Redis ends (entries in both are read from Redis only)."""
    account = v.account(account)
    limit = v.history_limit(limit)
    start = "+" if cursor is None else "(" + v.entry_id(cursor, "cursor")
    wanted_types = _types(types)
    wanted_action = v.label(action, "action") or None
    wanted_app = v.label(app, "app") or None

    def matches(e: LedgerEntry) -> bool:
        return (
            (wanted_types is None or e.type in wanted_types)
            and (wanted_action is None or e.action == wanted_action)
            and (wanted_app is None or e.app == wanted_app)
        )

    filtered = wanted_types is not None or wanted_action is not None or wanted_app is not None
    batch = max(limit + 1, _BATCH) if filtered else limit + 1
    found: list[LedgerEntry] = []
    oldest = cursor  # below this id, the archive takes over
    while True:
        entries: list[LedgerEntry] = yield ops.read_entries(account, "-", start, batch, True)
        for entry in entries:
            if matches(entry):
                if len(found) == limit:
                    # One more match exists: the page is full and there is a next one.
                    return HistoryPage(account=account, entries=found, next_cursor=found[-1].id)
                found.append(entry)
        if entries:
            oldest = entries[-1].id
        if len(entries) < batch:
            break
        start = "(" + entries[-1].id
    if archive:
        kinds = None if wanted_types is None else sorted(t.value for t in wanted_types)
        while True:
            want = limit + 1 - len(found)
            older: list[LedgerEntry] = yield archived.history_page(
                account, oldest, want, kinds, wanted_action, wanted_app
            )
            if len(older) == want:
                found.extend(older[:-1])
                return HistoryPage(account=account, entries=found, next_cursor=found[-1].id)
            found.extend(older)
            break
    return HistoryPage(account=account, entries=found, next_cursor=None)


def _zone(tz: str | tzinfo | None) -> tzinfo:
    if tz is None:
        return timezone.utc
    if isinstance(tz, tzinfo):
        return tz
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # "America": a directory
        raise ValidationError("tz", f"unknown time zone {tz!r}") from None


def usage(
    ops: Operations,
    account: str,
    days: int,
    group_by: GroupBy,
    tz: str | tzinfo | None,
    today: date | None = None,
    archive: bool = False,
) -> Generator[Operation[Any], Any, UsageReport]:
    """Credits used per day over the last ``days`` days (today included), by action or app.

    With an ``archive``, the days older than what Redis still holds (trimmed by a
    retention) are read from PostgreSQL: the entries of the window below the first one
    Redis returns."""
    account = v.account(account)
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= 366:
        raise ValidationError("days", "must be an int between 1 and 366")
    if group_by not in ("action", "app"):
        raise ValidationError("group_by", "must be 'action' or 'app'")
    zone = _zone(tz)
    last = today or datetime.now(zone).date()
    first = last - timedelta(days=days - 1)
    since = datetime.combine(first, time.min, tzinfo=zone)
    start = f"{int(since.timestamp() * 1000)}-0"
    totals: dict[date, dict[str, int]] = {first + timedelta(d): {} for d in range(days)}

    def add(entries: list[LedgerEntry]) -> None:
        for entry in entries:
            if entry.type not in USAGE_TYPES:
                continue
            day = entry.timestamp.astimezone(zone).date()
            if day not in totals:
                continue
            group = (entry.action if group_by == "action" else entry.app) or "(none)"
            totals[day][group] = totals[day].get(group, 0) - entry.delta

    first_in_redis: str | None = None
    while True:
        entries: list[LedgerEntry] = yield ops.read_entries(account, start, "+", _BATCH, False)
        if entries and first_in_redis is None:
            first_in_redis = entries[0].id
        add(entries)
        if len(entries) < _BATCH:
            break
        start = "(" + entries[-1].id
    after: str | None = None
    while archive:
        older: list[LedgerEntry] = yield archived.entries_between(
            account, int(since.timestamp() * 1000), first_in_redis, _BATCH, after
        )
        add(older)
        if len(older) < _BATCH:
            break
        after = older[-1].id
    return UsageReport(
        account=account,
        group_by=group_by,
        time_zone=str(zone),
        days=[
            DailyUsage(day=d, total=sum(groups.values()), by=dict(sorted(groups.items())))
            for d, groups in totals.items()
        ],
    )
