"""``sparked-credits archive`` (copy the ledgers into PostgreSQL, trim Redis behind it) and
``sparked-credits report`` (the cross-account figures, from PostgreSQL only).

The archive URL comes from ``--to`` or ``SPARKED_CREDITS_ARCHIVE_URL``. ``--follow`` runs
until SIGTERM or Ctrl-C: the signal sets a flag the archiver checks between transactions,
so a stop never leaves half a batch (a kill -9 does not either: the transaction is lost,
and the next run copies those entries again, once).
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from typing import Any

import click
from rich.console import Console

__all__ = ["archive", "report"]

ARCHIVE_ENV = "SPARKED_CREDITS_ARCHIVE_URL"
err = Console(stderr=True)


def _stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT (a sidecar's stop, or Ctrl-C)."""
    stop = threading.Event()

    def handler(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


@click.command()
@click.option(
    "--to",
    "to",
    envvar=ARCHIVE_ENV,
    required=True,
    help=f"The archive: postgresql://user@host/db (default: ${ARCHIVE_ENV}).",
)
@click.option("--follow", is_flag=True, help="Keep archiving until SIGTERM (a sidecar).")
@click.option(
    "--retain",
    help="Trim from Redis what is archived and older than this (90d, 12h; never past the "
    "reconciliation checkpoint or an open hold).",
)
@click.option("--interval", default=1.0, show_default=True, help="Seconds between idle rounds.")
@click.option("--batch", default=20_000, show_default=True, help="Entries per transaction.")
@click.option("--json", "as_json", is_flag=True, help="Print the totals as JSON.")
@click.pass_context
def archive(
    ctx: click.Context,
    to: str,
    follow: bool,
    retain: str | None,
    interval: float,
    batch: int,
    as_json: bool,
) -> None:
    """Copy every account's ledger entries into PostgreSQL, exactly once."""
    from ..archive import Archiver
    from ..errors import CreditsError
    from .common import _client

    stop = _stop_on_signals()
    started = time.monotonic()
    total = 0

    def progress(n: int) -> None:
        nonlocal total
        total += n
        if not as_json:
            rate = total / max(time.monotonic() - started, 1e-9)
            err.print(f"archived {total} entries ({rate:,.0f}/s)", highlight=False)

    try:
        with _client(ctx) as credits, Archiver(credits, to, retain=retain, batch=batch) as archiver:
            if follow:
                err.print(
                    "following the ledgers (SIGTERM or Ctrl-C stops after the current batch)",
                    highlight=False,
                )
                result = archiver.follow(stop=stop, interval=interval, on_progress=progress)
            else:
                result = archiver.run_once(stop=stop, on_progress=progress)
    except CreditsError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        sys.exit(2)
    if as_json:
        click.echo(json.dumps(result.model_dump(mode="json"), indent=2))
    else:
        click.echo(
            f"archived {result.entries} entries of {result.accounts_archived} account(s) "
            f"({result.accounts} seen), trimmed {result.trimmed} from Redis, "
            f"{result.duration_seconds:.2f}s" + (" (stopped)" if stop.is_set() else "")
        )
    if result.gaps:
        err.print(
            f"[red]warning:[/red] {len(result.gaps)} account(s) were trimmed from Redis "
            f"before their entries were archived: {', '.join(result.gaps[:20])}",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(1)


@click.command()
@click.option(
    "--from",
    "source",
    envvar=ARCHIVE_ENV,
    required=True,
    help=f"The archive: postgresql://user@host/db (default: ${ARCHIVE_ENV}).",
)
@click.option("--days", default=30, show_default=True, help="UTC days, today included.")
@click.option("--top", default=10, show_default=True, help="Top accounts by spend.")
@click.option(
    "--low-balance", default=20, show_default=True, help="List accounts below this balance."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def report(source: str, days: int, top: int, low_balance: int, as_json: bool) -> None:
    """Credits granted, spent, expired and refunded per day, spend by app and action,
    purchases, the liability, what expires soon, top and low-balance accounts: from the
    PostgreSQL archive, never from Redis."""
    from rich.table import Table

    from ..archive import connect
    from ..archive.report import build
    from ..errors import CreditsError

    out = Console()
    try:
        with connect(source, "sparked-credits report") as conn:
            figures = build(conn, days=days, top=top, low_balance=low_balance)
    except CreditsError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        sys.exit(2)
    if as_json:
        click.echo(json.dumps(figures.model_dump(mode="json"), indent=2))
        return
    table = Table(title=f"credits per day (UTC), {figures.first_day} to {figures.last_day}")
    for col in ("day", "granted", "spent", "expired", "refunded"):
        table.add_column(col, justify="left" if col == "day" else "right")
    for d in figures.days:
        if d.granted or d.spent or d.expired or d.refunded:
            table.add_row(str(d.day), str(d.granted), str(d.spent), str(d.expired), str(d.refunded))
    out.print(table)
    spend = Table(title="spend by app and action")
    for col in ("app", "action", "credits"):
        spend.add_column(col, justify="right" if col == "credits" else "left")
    for row in figures.spend:
        spend.add_row(row.app, row.action, str(row.credits))
    out.print(spend)
    revenue = ", ".join(f"{v / 100:.2f} {c}" for c, v in figures.purchases.revenue.items())
    out.print(
        f"purchases: {figures.purchases.count} ({figures.purchases.credits} credits)"
        + (f", revenue {revenue}" if revenue else ""),
        highlight=False,
    )
    out.print(
        f"accounts: {figures.accounts}; outstanding credits (liability): "
        f"{figures.outstanding}; expiring in the next 30 days: {figures.expiring_30d}",
        highlight=False,
    )
    tops = ", ".join(f"{a.account} {a.credits}" for a in figures.top_accounts) or "none"
    out.print(f"top accounts by spend: {tops}", highlight=False)
    lows = ", ".join(f"{a.account} {a.credits}" for a in figures.low_balance) or "none"
    out.print(f"below {figures.low_balance_threshold} credits: {lows}", highlight=False)
