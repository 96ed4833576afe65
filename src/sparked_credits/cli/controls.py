"""The command line's account controls: tiers, low-balance alerts and transfers.

Registered on the ``sparked-credits`` group by :mod:`.commands`. Tiers come from the
active price file (``SPARKED_CREDITS_PRICING``).
"""

from __future__ import annotations

import click
from rich.table import Table

from .common import _client, _errors_exit_2, _print_json, out

__all__ = ["ack_alerts", "alerts", "tier", "transfer"]


@click.command()
@click.argument("account")
@click.argument("tier_name", metavar="[TIER]", required=False)
@click.option("--none", "clear", is_flag=True, help="Take the account off its tier.")
@click.option("--daily-limit", type=int, help="Override the tier's daily limit.")
@click.option("--monthly-limit", type=int, help="Override the tier's monthly limit.")
@click.option("--low-balance", type=int, help="Override the tier's alert threshold.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
@_errors_exit_2
def tier(
    ctx: click.Context,
    account: str,
    tier_name: str | None,
    clear: bool,
    daily_limit: int | None,
    monthly_limit: int | None,
    low_balance: int | None,
    as_json: bool,
) -> None:
    """Show ACCOUNT's tier, limits and spending; with TIER (or --none), set it first."""
    changing = clear or tier_name is not None
    with _client(ctx) as credits:
        if changing:
            controls = credits.set_tier(
                account,
                None if clear else tier_name,
                daily_limit=daily_limit,
                monthly_limit=monthly_limit,
                low_balance=low_balance,
            )
        else:
            controls = credits.get_controls(account)
    if as_json:
        _print_json(controls)
        return
    out.print(
        f"{account}: tier {controls.tier or '(none)'}; "
        f"today {controls.spent_today}/{controls.daily_limit or '-'}, "
        f"this month {controls.spent_this_month}/{controls.monthly_limit or '-'}, "
        f"low balance alert below {controls.low_balance or '-'}",
        highlight=False,
    )


@click.command()
@click.argument("consumer")
@click.option("--count", default=100, show_default=True)
@click.option("--ack", is_flag=True, help="Acknowledge what is listed.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
@_errors_exit_2
def alerts(ctx: click.Context, consumer: str, count: int, ack: bool, as_json: bool) -> None:
    """List the low-balance alerts CONSUMER has not acknowledged (oldest first)."""
    with _client(ctx) as credits:
        found = credits.alerts(consumer, count=count)
        if ack and found:
            credits.ack_alerts(consumer, [a.alert_id for a in found])
    if as_json:
        _print_json({"alerts": [a.model_dump(mode="json") for a in found]})
        return
    table = Table("alert id", "account", "balance", "threshold", "at")
    for a in found:
        table.add_row(a.alert_id, a.account, str(a.balance), str(a.threshold), a.at.isoformat())
    out.print(table)


@click.command("ack-alerts")
@click.argument("consumer")
@click.argument("alert_ids", nargs=-1, required=True)
@click.pass_context
@_errors_exit_2
def ack_alerts(ctx: click.Context, consumer: str, alert_ids: tuple[str, ...]) -> None:
    """Acknowledge delivered alerts of CONSUMER by id."""
    with _client(ctx) as credits:
        credits.ack_alerts(consumer, list(alert_ids))
    out.print(f"acknowledged {len(alert_ids)} alert(s) for {consumer}", highlight=False)


@click.command()
@click.argument("from_account")
@click.argument("to_account")
@click.argument("amount", type=int)
@click.option("--idempotency-key", required=True, help="Makes a repeat move nothing more.")
@click.option("--reason", help="Why (kept in both ledgers).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
@_errors_exit_2
def transfer(
    ctx: click.Context,
    from_account: str,
    to_account: str,
    amount: int,
    idempotency_key: str,
    reason: str | None,
    as_json: bool,
) -> None:
    """Move AMOUNT credits from FROM_ACCOUNT to TO_ACCOUNT, once per key."""
    with _client(ctx) as credits:
        result = credits.transfer(
            from_account, to_account, amount, idempotency_key=idempotency_key, reason=reason
        )
    if as_json:
        _print_json(result)
        return
    note = " (replayed: already applied)" if result.replayed else ""
    out.print(f"moved {amount} from {from_account} to {to_account}{note}", highlight=False)
