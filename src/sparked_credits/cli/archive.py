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

__all__ = ["archive"]

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
    "--to", "to", envvar=ARCHIVE_ENV, required=True,
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
    from .commands import _client

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
        with _client(ctx) as credits, Archiver(
            credits, to, retain=retain, batch=batch
        ) as archiver:
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
