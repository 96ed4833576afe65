"""The command line's per-member spend limits inside an organization's account.

    sparked-credits member-limit ORG [MEMBER] [--daily-limit N] [--monthly-limit N] [--clear]

Registered on the ``sparked-credits`` group by :mod:`.commands`.
"""

from __future__ import annotations

import click

from .common import _client, _errors_exit_2, _print_json, out

__all__ = ["member_limit"]


@click.command("member-limit")
@click.argument("account")
@click.argument("member", required=False)
@click.option("--daily-limit", type=int, help="Credits the member may spend per UTC day.")
@click.option("--monthly-limit", type=int, help="Per UTC calendar month.")
@click.option(
    "--clear", is_flag=True, help="Remove the limits (a member's own, or every member's)."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
@_errors_exit_2
def member_limit(
    ctx: click.Context,
    account: str,
    member: str | None,
    daily_limit: int | None,
    monthly_limit: int | None,
    clear: bool,
    as_json: bool,
) -> None:
    """Show MEMBER's spend limits in the organization ACCOUNT and what MEMBER spent (no
    MEMBER: every member's limits); with --daily-limit/--monthly-limit (or --clear), set
    them first. A member's own limits win over every member's."""
    changing = clear or daily_limit is not None or monthly_limit is not None
    if clear and (daily_limit is not None or monthly_limit is not None):
        raise click.UsageError("--clear takes no limits")
    with _client(ctx) as credits:
        if changing:
            found = credits.set_member_limit(
                account, member, daily_limit=daily_limit, monthly_limit=monthly_limit
            )
        else:
            found = credits.get_member_controls(account, member)
    if as_json:
        _print_json(found)
        return
    who = f"member {found.member}" if found.member else "every member"
    own = " (its own)" if found.own else ""
    out.print(
        f"{account}, {who}{own}: today {found.spent_today}/{found.daily_limit or '-'}, "
        f"this month {found.spent_this_month}/{found.monthly_limit or '-'}",
        highlight=False,
    )
