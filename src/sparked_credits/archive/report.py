"""The cross-account report (``sparked-credits report``, the example app's dashboard):
queries on the PostgreSQL archive, never on Redis.

Figures over a window of whole UTC days (today included):

* per day: credits granted (init, credit, positive adjust), spent (minus the deltas of
  debits, holds, settles, releases, expiries and refunds: what ``usage()`` counts, so a
  refund nets out), expired (lapsed lots) and refunded;
* spend by app and action;
* purchases (credit entries whose source is ``purchase``) and revenue: the purchase
  entries' metadata ``amount`` (an integer in the currency's minor unit) by
  ``currency``, as the billing adapters write it (``billing/payments.py``);
* outstanding credits (the liability: every account's balance after its last archived
  entry), the credits of lots expiring in the next 30 days (their remainders, replayed from
  the archived entries with the one lots model), the top accounts by spend, and the
  accounts whose balance is below a threshold.

The archive is as fresh as the archiver's last run (``--follow`` keeps it seconds behind).
"""

from __future__ import annotations

import time
from datetime import date, datetime, timedelta, timezone
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .._core.analytics import USAGE_TYPES
from .._core.archived import ENTRIES, PROGRESS
from .._core.decoding import stored_lots
from .._core.lots import LotBook
from ..errors import ValidationError

__all__ = ["AccountFigure", "AnalyticsReport", "DayFigures", "Purchases", "SpendRow", "build"]

_SPENT = sorted(t.value for t in USAGE_TYPES)
_GRANTED = ("init", "credit")


class DayFigures(BaseModel):
    model_config = ConfigDict(frozen=True)

    day: date
    granted: int
    spent: int
    expired: int
    refunded: int


class SpendRow(BaseModel):
    model_config = ConfigDict(frozen=True)

    app: str
    action: str
    credits: int


class Purchases(BaseModel):
    model_config = ConfigDict(frozen=True)

    count: int = 0
    credits: int = 0
    revenue: dict[str, int] = Field(
        default_factory=dict, description="Currency -> amount in its minor unit (cents)."
    )


class AccountFigure(BaseModel):
    model_config = ConfigDict(frozen=True)

    account: str
    credits: int


class AnalyticsReport(BaseModel):
    """Everything the dashboard shows, as of ``generated_at``."""

    model_config = ConfigDict(frozen=True)

    generated_at: datetime
    first_day: date
    last_day: date
    days: list[DayFigures]
    spend: list[SpendRow]
    purchases: Purchases
    accounts: int
    outstanding: int = Field(description="Credits held by all accounts (the liability).")
    expiring_30d: int = Field(description="Credits in lots that lapse in the next 30 days.")
    top_accounts: list[AccountFigure]
    low_balance_threshold: int
    low_balance: list[AccountFigure]
    archived_entries: int
    seconds: float = Field(description="How long the queries took.")


def _window(days: int, today: date | None) -> tuple[date, date, int, int]:
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= 3660:
        raise ValidationError("days", "must be an int between 1 and 3660")
    last = today or datetime.now(timezone.utc).date()
    first = last - timedelta(days=days - 1)
    start = datetime.combine(first, datetime.min.time(), tzinfo=timezone.utc)
    end = start + timedelta(days=days)
    return first, last, int(start.timestamp() * 1000), int(end.timestamp() * 1000)


def _expiring(conn: Any, now_ms: int, horizon_ms: int) -> int:
    """Remainders of lots that lapse in (now, horizon], replayed per account that opened
    one (the archive's entries, oldest first, through the same LotBook as reconcile).
    Only accounts with a lot expiring in the window are replayed: the opening entries'
    lots record (``+priority:expires``) is read in SQL, on the partial index of them."""
    accounts = [
        r[0]
        for r in conn.execute(
            f"SELECT DISTINCT account FROM {ENTRIES} "
            "WHERE type IN ('credit', 'init', 'adjust') AND meta LIKE '%%\"l\":\"+%%:%%' "
            "AND substring(meta from '\"l\":\"\\+[0-9]+:([0-9]+)\"')::bigint "
            "BETWEEN %s AND %s",
            (now_ms + 1, horizon_ms),
        ).fetchall()
    ]
    total = 0
    for account in accounts:
        rows = conn.execute(
            f"SELECT ms, seq, type, delta, action, meta FROM {ENTRIES} "
            "WHERE account = %s ORDER BY ms, seq",
            (account,),
        ).fetchall()
        book = LotBook()
        for ms, seq, typ, delta, action, meta in rows:
            book.replay(f"{ms}-{seq}", typ, int(delta), action or "", stored_lots(meta) or "")
        book.catch_up()
        total += sum(
            lot.remaining
            for lot in book.lots.values()
            if lot.expires_ms is not None and now_ms < lot.expires_ms <= horizon_ms
        )
    return total


def build(
    conn: Any,
    *,
    days: int = 30,
    top: int = 10,
    low_balance: int = 20,
    today: date | None = None,
    now: datetime | None = None,
) -> AnalyticsReport:
    """The report over the last ``days`` UTC days, from a psycopg connection."""
    started = time.monotonic()
    first, last, start_ms, end_ms = _window(days, today)
    if isinstance(top, bool) or not isinstance(top, int) or not 1 <= top <= 1000:
        raise ValidationError("top", "must be an int between 1 and 1000")
    if isinstance(low_balance, bool) or not isinstance(low_balance, int):
        raise ValidationError("low_balance", "must be an int")
    window = (start_ms, end_ms)
    per_day = {
        row[0]: row[1:]
        for row in conn.execute(
            "SELECT (at AT TIME ZONE 'UTC')::date AS day, "
            "coalesce(sum(delta) FILTER (WHERE type = ANY(%s) "
            "  OR (type = 'adjust' AND delta > 0)), 0), "
            "coalesce(-sum(delta) FILTER (WHERE type = ANY(%s)), 0), "
            "coalesce(-sum(delta) FILTER (WHERE type = 'lot_expire'), 0), "
            "coalesce(sum(delta) FILTER (WHERE type = 'refund'), 0) "
            f"FROM {ENTRIES} WHERE ms >= %s AND ms < %s GROUP BY 1",
            (list(_GRANTED), _SPENT, *window),
        ).fetchall()
    }
    day_rows = []
    for i in range(days):
        day = first + timedelta(days=i)
        granted, spent, expired, refunded = per_day.get(day, (0, 0, 0, 0))
        day_rows.append(
            DayFigures(
                day=day,
                granted=int(granted),
                spent=int(spent),
                expired=int(expired),
                refunded=int(refunded),
            )
        )
    spend = [
        SpendRow(app=app or "(none)", action=action or "(none)", credits=int(credits))
        for app, action, credits in conn.execute(
            "SELECT app, action, -sum(delta) AS credits "
            f"FROM {ENTRIES} WHERE ms >= %s AND ms < %s AND type = ANY(%s) "
            "GROUP BY app, action HAVING sum(delta) <> 0 ORDER BY credits DESC, app, action",
            (*window, _SPENT),
        ).fetchall()
    ]
    count, credits = conn.execute(
        f"SELECT count(*), coalesce(sum(delta), 0) FROM {ENTRIES} "
        "WHERE ms >= %s AND ms < %s AND type = 'credit' AND action = 'purchase'",
        window,
    ).fetchone()
    revenue = {
        str(currency): int(amount)
        for currency, amount in conn.execute(
            "SELECT upper(m->>'currency'), sum((m->>'amount')::bigint) FROM ("
            f"  SELECT meta::jsonb AS m FROM {ENTRIES} WHERE ms >= %s AND ms < %s "
            "  AND type = 'credit' AND action = 'purchase' AND meta LIKE '{%%'"
            ") p WHERE jsonb_typeof(m->'amount') = 'number' "
            "AND jsonb_typeof(m->'currency') = 'string' GROUP BY 1 ORDER BY 1",
            window,
        ).fetchall()
    }
    accounts, outstanding, archived_entries = conn.execute(
        f"SELECT count(*), coalesce(sum(balance), 0), coalesce(sum(entries), 0) FROM {PROGRESS} "
        "WHERE balance IS NOT NULL"
    ).fetchone()
    top_accounts = [
        AccountFigure(account=a, credits=int(c))
        for a, c in conn.execute(
            "SELECT account, -sum(delta) AS credits "
            f"FROM {ENTRIES} WHERE ms >= %s AND ms < %s AND type = ANY(%s) "
            f"GROUP BY account HAVING -sum(delta) > 0 ORDER BY credits DESC, account LIMIT {top}",
            (*window, _SPENT),
        ).fetchall()
    ]
    low = [
        AccountFigure(account=a, credits=int(b))
        for a, b in conn.execute(
            f"SELECT account, balance FROM {PROGRESS} WHERE balance < %s "
            "ORDER BY balance, account LIMIT 1000",
            (low_balance,),
        ).fetchall()
    ]
    moment = now or datetime.now(timezone.utc)
    now_ms = int(moment.timestamp() * 1000)
    expiring = _expiring(conn, now_ms, now_ms + 30 * 86_400_000)
    return AnalyticsReport(
        generated_at=moment,
        first_day=first,
        last_day=last,
        days=day_rows,
        spend=spend,
        purchases=Purchases(count=int(count), credits=int(credits), revenue=revenue),
        accounts=int(accounts),
        outstanding=int(outstanding),
        expiring_30d=expiring,
        top_accounts=top_accounts,
        low_balance_threshold=low_balance,
        low_balance=low,
        archived_entries=int(archived_entries),
        seconds=time.monotonic() - started,
    )
