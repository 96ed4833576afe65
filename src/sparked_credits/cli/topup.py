"""The command line's automatic top-up: an operator's view of an account's settings, a
way to set or remove them, and one pass of the worker.

    sparked-credits topup show ACCOUNT
    sparked-credits topup set ACCOUNT --customer cus_... --payment-method pm_... --pack starter
    sparked-credits topup off ACCOUNT
    sparked-credits topup run [--consumer topup] [--cooloff 600]

Packs come from the active price file (``SPARKED_CREDITS_PRICING``); ``run`` needs
``STRIPE_API_KEY`` (``STRIPE_API_BASE`` points it at another server). Registered on the
``sparked-credits`` group by :mod:`.commands`.
"""

from __future__ import annotations

import os

import click
from pydantic import ValidationError as ModelError
from rich.table import Table

from ..billing.topup import TopUpSettings, configure_topup, get_topup, run_topups
from ..errors import ConfigurationError, ValidationError
from ..pricing import active_price_table
from .common import _client, _errors_exit_2, _print_json, out

__all__ = ["topup"]


@click.group()
def topup() -> None:
    """Automatic top-up: show, set or remove an account's settings; run one pass."""


@topup.command("show")
@click.argument("account")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
@_errors_exit_2
def show(ctx: click.Context, account: str, as_json: bool) -> None:
    """ACCOUNT's top-up settings and low-balance threshold."""
    with _client(ctx) as credits:
        settings = get_topup(credits, account)
        low = credits.get_controls(account).low_balance
    _report(account, settings, low, as_json)


@topup.command("set")
@click.argument("account")
@click.option("--customer", required=True, help="The Stripe customer (cus_...).")
@click.option("--payment-method", required=True, help="Its saved payment method (pm_...).")
@click.option("--pack", required=True, help="A pack of the price file.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
@_errors_exit_2
def set_(
    ctx: click.Context,
    account: str,
    customer: str,
    payment_method: str,
    pack: str,
    as_json: bool,
) -> None:
    """Save ACCOUNT's top-up settings (an unknown pack or a bad id saves nothing)."""
    try:
        settings = TopUpSettings(customer=customer, payment_method=payment_method, pack=pack)
    except ModelError as exc:
        bad = ".".join(str(p) for p in exc.errors()[0]["loc"])
        raise ValidationError(bad or "settings", exc.errors()[0]["msg"]) from None
    with _client(ctx) as credits:
        configure_topup(credits, active_price_table().catalog, account, settings)
        low = credits.get_controls(account).low_balance
    _report(account, settings, low, as_json)


@topup.command("off")
@click.argument("account")
@click.pass_context
@_errors_exit_2
def off(ctx: click.Context, account: str) -> None:
    """Remove ACCOUNT's top-up settings: no more automatic payments."""
    with _client(ctx) as credits:
        configure_topup(credits, active_price_table().catalog, account, None)
    out.print(f"{account}: automatic top-up off", highlight=False)


@topup.command("run")
@click.option("--consumer", default="topup", show_default=True, help="The alert cursor.")
@click.option("--cooloff", default=600.0, show_default=True, help="Seconds between payments.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
@_errors_exit_2
def run(ctx: click.Context, consumer: str, cooloff: float, as_json: bool) -> None:
    """One pass of the worker: a payment for each new crossing of an account with
    settings (the rest acknowledged)."""
    from ..billing.stripe import make_stripe_client

    key = os.environ.get("STRIPE_API_KEY", "")
    if not key:
        raise ConfigurationError("topup run needs STRIPE_API_KEY")
    stripe_client = make_stripe_client(key, api_base=os.environ.get("STRIPE_API_BASE") or None)
    with _client(ctx) as credits:
        done = run_topups(
            credits,
            stripe_client,
            active_price_table().catalog,
            consumer=consumer,
            cooloff_seconds=cooloff,
        )
    if as_json:
        _print_json({"outcomes": [o.model_dump(mode="json") for o in done]})
        return
    table = Table("alert id", "account", "result", "payment", "credits", "detail")
    for o in done:
        table.add_row(
            o.alert_id, o.account, o.result, o.payment_id or "-", str(o.credits), o.detail
        )
    out.print(table)


def _report(account: str, settings: TopUpSettings | None, low: int | None, as_json: bool) -> None:
    if as_json:
        body = None if settings is None else settings.model_dump(mode="json")
        _print_json({"account": account, "settings": body, "low_balance": low})
        return
    if settings is None:
        out.print(f"{account}: no automatic top-up", highlight=False)
        return
    out.print(
        f"{account}: buys pack {settings.pack} for customer {settings.customer} "
        f"({settings.payment_method}) when the balance falls below {low or '- (no threshold)'}",
        highlight=False,
    )
