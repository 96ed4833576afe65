"""The ``sparked-credits`` command line (also ``python -m sparked_credits``).

Storage comes from ``--url`` (and ``--token`` for Upstash) or the same environment
variables as ``CreditsClient.from_env()``. Every read command takes ``--json`` for scripts.
Exit codes: 0 success, 1 a check failed (demo, unrepaired mismatches), 2 an error.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import datetime

import click
from rich.progress import Progress
from rich.table import Table

from .._core.lots import DEFAULT_PRIORITY
from .._core.options import DEFAULT_GRANT_SOURCE
from ..models import EntryType, LedgerEntry
from . import archive as archive_commands
from . import controls as controls_commands
from . import members as member_commands
from . import topup as topup_commands
from .common import Failed, _client, _errors_exit_2, _print_json, err, out
from .demo import DemoFailure, run_demo
from .dev import dev
from .doctor import doctor

__all__ = ["main"]


def _delta(delta: int) -> str:
    color = "green" if delta > 0 else "red" if delta < 0 else "white"
    return f"[{color}]{delta:+d}[/]"


def lots_table(account: str, entries: Sequence[LedgerEntry]) -> Table:
    """History with each entry's lot moves (``entry.draws``), grant ids whole: a debit
    traced to the grants it drew from, a refund to the grants it gave back to."""
    table = Table(title=f"{account}: ledger with credit lots, newest first")
    table.add_column("entry id", no_wrap=True)
    table.add_column("type", overflow="fold")
    table.add_column("delta", justify="right", no_wrap=True)
    table.add_column("balance", justify="right", overflow="fold")
    table.add_column("grant id: credits", no_wrap=True)
    for e in entries:
        sign = "-" if e.delta < 0 else "+"
        moves = "\n".join(f"{d.grant_id}: {sign}{d.credits}" for d in e.draws)
        if e.draws and e.lots and e.lots.startswith("+"):
            moves += " (opened)"
        table.add_row(e.id, e.type_name, _delta(e.delta), str(e.balance_after), moves or "-")
    return table


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--url", help="Storage URL (memory://, redis://host:6379/0, https://... for Upstash)."
)
@click.option("--token", help="Upstash REST token.")
@click.option("--app", default="cli", show_default=True, help="App tag on entries written.")
@click.version_option(package_name="sparked-credits")
@click.pass_context
def cli(ctx: click.Context, url: str | None, token: str | None, app: str) -> None:
    """Shared prepaid credit balances kept in Redis."""
    ctx.obj = {"url": url, "token": token, "app": app}


@cli.command()
@click.option("--url", "demo_url", help="Storage for the demo (default: memory://demo).")
@click.pass_context
@_errors_exit_2
def demo(ctx: click.Context, demo_url: str | None) -> None:
    """Run the setup guide's integration check (new user 100, chat 10, 402 on a video)."""
    try:
        run_demo(demo_url or ctx.obj["url"] or "memory://demo", echo=click.echo)
    except DemoFailure as exc:
        raise Failed(f"demo failed: {exc}") from None


@cli.command()
@click.argument("account")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
@_errors_exit_2
def balance(ctx: click.Context, account: str, as_json: bool) -> None:
    """Show an account's balance."""
    with _client(ctx) as credits:
        value = credits.get_balance(account)
    if as_json:
        _print_json({"account": account, "balance": value})
    else:
        out.print(f"{account}: [bold]{value}[/bold] credits", highlight=False)


@cli.command()
@click.argument("account")
@click.argument("amount", type=int)
@click.option("--reason", help="Why (kept in the ledger).")
@click.option(
    "--source", default=DEFAULT_GRANT_SOURCE, show_default=True, help="Where the credits come from."
)
@click.option(
    "--priority", default=DEFAULT_PRIORITY, show_default=True, help="0-100, lower is spent first."
)
@click.option(
    "--expires-at",
    type=click.DateTime(["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M%z", "%Y-%m-%d %H:%M:%S%z"]),
    help="When what is left lapses, with its UTC offset (2026-12-31T00:00:00+0000).",
)
@click.option("--idempotency-key", help="Make a retried grant apply once.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
@_errors_exit_2
def grant(
    ctx: click.Context,
    account: str,
    amount: int,
    reason: str | None,
    source: str,
    priority: int,
    expires_at: datetime | None,
    idempotency_key: str | None,
    as_json: bool,
) -> None:
    """Add AMOUNT credits to ACCOUNT, as a lot of their own."""
    with _client(ctx) as credits:
        result = credits.credit(
            account,
            amount,
            source=source,
            expires_at=expires_at,
            priority=priority,
            reason=reason,
            idempotency_key=idempotency_key,
        )
    if as_json:
        _print_json(result)
    else:
        note = " (replayed: already applied)" if result.replayed else ""
        out.print(f"granted {amount} to {account}: balance {result.balance}{note}")


@cli.command()
@click.argument("account")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
@_errors_exit_2
def grants(ctx: click.Context, account: str, as_json: bool) -> None:
    """List ACCOUNT's open credit lots, in the order debits consume them."""
    with _client(ctx) as credits:
        lots = credits.grants(account)
    if as_json:
        click.echo(json.dumps([g.model_dump(mode="json") for g in lots], indent=2))
        return
    table = Table(title=f"{account}: credit lots, consumed top first")
    # The grant id is what `history --lots` and refunds name: never cut, the rest folds.
    table.add_column(
        "grant id", no_wrap=True, min_width=max((len(g.grant_id) for g in lots), default=8)
    )
    for name, justify in (
        ("source", "left"),
        ("priority", "right"),
        ("expires (UTC)", "left"),
        ("remaining", "right"),
        ("granted", "right"),
    ):
        table.add_column(name, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for g in lots:
        table.add_row(
            g.grant_id,
            g.source,
            str(g.priority),
            "never" if g.expires_at is None else f"{g.expires_at:%Y-%m-%d %H:%M:%S}",
            str(g.remaining),
            str(g.amount),
        )
    out.print(table)
    out.print(f"total: [bold]{sum(g.remaining for g in lots)}[/bold] credits", highlight=False)


@cli.command()
@click.argument("account")
@click.option("--limit", default=20, show_default=True)
@click.option("--cursor", help="next_cursor of the previous page.")
@click.option("--type", "types", multiple=True, type=click.Choice([t.value for t in EntryType]))
@click.option("--action")
@click.option("--from-app", "from_app", help="Only entries written by this app.")
@click.option(
    "--lots", "show_lots", is_flag=True, help="The grants each entry drew from or gave back to."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
@_errors_exit_2
def history(
    ctx: click.Context,
    account: str,
    limit: int,
    cursor: str | None,
    types: Sequence[str],
    action: str | None,
    from_app: str | None,
    show_lots: bool,
    as_json: bool,
) -> None:
    """List ledger entries, newest first (--lots: the grants each one moved)."""
    with _client(ctx) as credits:
        page = credits.history(
            account, limit, cursor, types=types or None, action=action, app=from_app
        )
    if as_json:
        _print_json(page)
        return
    if show_lots:
        out.print(lots_table(account, page.entries))
    else:
        table = Table(title=f"{account}: ledger, newest first")
        for name, justify in (
            ("time (UTC)", "left"),
            ("type", "left"),
            ("delta", "right"),
            ("balance", "right"),
            ("action", "left"),
            ("app", "left"),
            ("reason", "left"),
        ):
            table.add_column(name, justify=justify)  # type: ignore[arg-type]
        for e in page.entries:
            table.add_row(
                f"{e.timestamp:%Y-%m-%d %H:%M:%S}",
                e.type_name,
                _delta(e.delta),
                str(e.balance_after),
                e.action or "",
                e.app or "",
                e.reason or "",
            )
        out.print(table)
    if page.next_cursor:
        out.print(f"more: --cursor {page.next_cursor}", highlight=False)


@cli.command()
@click.argument("account")
@click.option("--days", default=7, show_default=True)
@click.option(
    "--by", "group_by", type=click.Choice(["action", "app"]), default="action", show_default=True
)
@click.option("--tz", help="IANA time zone for day boundaries (default UTC).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
@_errors_exit_2
def usage(
    ctx: click.Context, account: str, days: int, group_by: str, tz: str | None, as_json: bool
) -> None:
    """Credits used per day, as a bar chart."""
    with _client(ctx) as credits:
        report = credits.usage(account, days, group_by=group_by, tz=tz)  # type: ignore[arg-type]
    if as_json:
        _print_json(report)
        return
    peak = max((d.total for d in report.days), default=0) or 1
    # The bar takes what the terminal has left (day ~15, used ~8, the split ~30 columns),
    # between 8 and 40 characters, so the chart fits an 80-column terminal whole.
    bar_width = max(8, min(40, out.width - 60))
    table = Table(title=f"{account}: credits used per day ({report.time_zone})")
    table.add_column("day", no_wrap=True)
    table.add_column("used", justify="right", no_wrap=True)
    table.add_column("", no_wrap=True, min_width=bar_width)
    table.add_column(f"by {group_by}", overflow="fold")
    for d in report.days:
        bar = "█" * round(max(d.total, 0) / peak * bar_width)
        split = ", ".join(f"{k} {v}" for k, v in d.by.items() if v)
        table.add_row(f"{d.day:%a %Y-%m-%d}", str(d.total), f"[cyan]{bar}[/]", split)
    out.print(table)
    out.print(f"total: {report.total}", highlight=False)


@cli.command()
@click.argument("account", required=False)
@click.option("--all", "all_accounts", is_flag=True, help="Every account (SCAN).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
@_errors_exit_2
def sweep(ctx: click.Context, account: str | None, all_accounts: bool, as_json: bool) -> None:
    """Return holds past their ttl and lapse credit lots past their expiry, now."""
    if bool(account) == all_accounts:
        raise click.UsageError("give one ACCOUNT or --all")
    with _client(ctx) as credits:
        swept = credits.sweep_expired(account)
    if as_json:
        _print_json({"account": account, "swept": swept})
    else:
        where = account or "every account"
        out.print(f"swept {where}: {swept} expired hold(s) and lot(s) closed", highlight=False)


@cli.command()
@click.argument("account", required=False)
@click.option("--all", "all_accounts", is_flag=True, help="Every account with a ledger.")
@click.option("--repair", is_flag=True, help="Fix mismatches (the ledger wins).")
@click.option(
    "--full",
    is_flag=True,
    help="Sum every entry, not only those after the checkpoint (after a crash: with "
    "--repair, rebuilds balances, idempotency records and holds from the ledger).",
)
@click.option(
    "--allow-empty", is_flag=True, help="With --all: finding no account is not a failure."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
@_errors_exit_2
def reconcile(
    ctx: click.Context,
    account: str | None,
    all_accounts: bool,
    repair: bool,
    full: bool,
    allow_empty: bool,
    as_json: bool,
) -> None:
    """Prove balance == sum of ledger for ACCOUNT or --all; exit 1 on unrepaired mismatches."""
    if bool(account) == all_accounts:
        raise click.UsageError("give one ACCOUNT or --all")
    with _client(ctx) as credits:
        if account:
            report = credits.reconcile_all([account], repair=repair, full=full)
        else:
            with Progress(console=err, transient=True, disable=as_json) as progress:
                task = progress.add_task("reconciling", total=None)
                report = credits.reconcile_all(
                    repair=repair, full=full, on_progress=lambda _: progress.advance(task)
                )
    if as_json:
        _print_json({"clean": report.clean, **report.model_dump(mode="json")})
    else:
        table = Table(title="reconciliation")
        for col in ("account", "balance", "ledger sum", "entries read", "status"):
            table.add_column(col, justify="right" if col != "account" else "left")
        for r in report.results:
            status = (
                "[green]ok[/]"
                if r.matched
                else "[yellow]repaired[/]"
                if r.repaired
                else "[red]MISMATCH[/]"
            )
            table.add_row(r.account, str(r.balance), str(r.ledger_sum), str(r.entries_read), status)
        for acct, message in report.errors.items():
            table.add_row(acct, "", "", "", f"[red]error: {message}[/]")
        out.print(table)
        out.print(
            f"checked {report.checked}, mismatched {report.mismatched}, repaired "
            f"{report.repaired}, errors {len(report.errors)}, expired holds returned "
            f"{report.expired_holds}, {report.duration_seconds:.2f}s",
            highlight=False,
        )
    if report.errors:
        sys.exit(2)
    if report.unrepaired:
        raise Failed(f"{report.unrepaired} account(s) do not add up")
    if all_accounts and report.checked == 0 and not allow_empty:
        # A server restarted empty (a Redis 6.2 on a Redis 7 folder, the wrong database)
        # must not read as "clean".
        raise Failed(
            "no account found: is this the right server and database? "
            "(sparked-credits doctor --expect-accounts checks; --allow-empty if it is new)"
        )


cli.add_command(dev)
cli.add_command(doctor)


# The archive's commands (PostgreSQL; psycopg imported only when they run).
cli.add_command(archive_commands.archive)
cli.add_command(archive_commands.report)
for _command in (
    controls_commands.tier,
    controls_commands.alerts,
    controls_commands.ack_alerts,
    controls_commands.transfer,
):
    cli.add_command(_command)
cli.add_command(topup_commands.topup)  # automatic top-up (billing/topup.py)
cli.add_command(member_commands.member_limit)  # per-member limits in an org account


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    try:
        cli.main(
            args=list(argv) if argv is not None else None,
            prog_name="sparked-credits",
            standalone_mode=True,
        )
    except SystemExit as done:
        return int(done.code or 0) if not isinstance(done.code, str) else 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
