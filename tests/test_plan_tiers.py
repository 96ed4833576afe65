"""A plan's tier (``tier = "<name>"`` in ``[plans.<id>]``): a paid period puts the account
on it, once per invoice, through the Stripe adapter with events signed as Stripe signs; a
plan naming an unknown tier is refused at load with its key named."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

import stripe_events as se
from sparked_credits import ConfigurationError
from sparked_credits.billing import Outcome
from sparked_credits.billing.stripe import handle_stripe_webhook
from sparked_credits.pricing import PriceTable, load_price_table

DAY = 86400
ACCT = "user_planned"
PRICE_FILE = f"""
[tiers.free]
daily_limit = 200
low_balance = 20

[tiers.pro]
monthly_limit = 100000
low_balance = 50

[plans.pro]
credits = 1000
price = "{se.PRICE_PRO}"
tier = "pro"

[plans.team]
credits = 5000
price = "{se.PRICE_TEAM}"
"""


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> PriceTable:
    path = tmp_path_factory.mktemp("plan_tiers") / "pricing.toml"
    path.write_text(PRICE_FILE)
    return load_price_table(path)


class Counting:
    """A client that counts the tier changes a paid period makes (``set_plan_tier``
    answering 'set'), and can die in the first call before it reaches Redis (a worker
    killed between the allocation and the tier)."""

    def __init__(self, client: Any, crash: bool = False) -> None:
        self.client, self.crash, self.calls = client, crash, 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.client, name)
        if name != "set_plan_tier":
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            if self.crash:
                self.crash = False
                raise RuntimeError("worker killed")
            result = attr(*args, **kwargs)
            self.calls += result.outcome == "set"
            return result

        return counted


def deliver(client: Any, table: PriceTable, body: bytes, times: int = 1) -> Any:
    outcome = None
    for _ in range(times):
        outcome = handle_stripe_webhook(client, body, se.sign(body), se.SECRET, table.catalog)
    return outcome


def test_a_paid_period_sets_the_plans_tier_once_per_invoice(
    make_client: Any, table: PriceTable
) -> None:
    raw = make_client(pricing=table)
    client = Counting(raw)
    raw.initialize_user(ACCT, 0)
    deliver(client, table, se.subscription_checkout(ACCT, "cus_t", "sub_t"))
    now = int(time.time())
    p1, p2, p3 = now - DAY, now + 30 * DAY, now + 60 * DAY
    first_invoice = se.invoice_paid("sub_t", "in_t1", start=p1, end=p2, customer="cus_t")
    first = deliver(client, table, first_invoice)
    assert (first.outcome, first.credits, first.tier) == (Outcome.allocated, 1000, "pro")
    controls = raw.get_controls(ACCT)
    assert (controls.tier, controls.monthly_limit, controls.low_balance) == ("pro", 100000, 50)
    # Redelivered: neither the credits nor the tier again.
    again = deliver(client, table, first_invoice, times=3)
    assert (again.replayed, again.tier) == (True, None)
    assert client.calls == 1
    # An operator moves the account; a late redelivery of that invoice leaves it there.
    raw.set_tier(ACCT, "free")
    deliver(client, table, first_invoice)
    assert raw.get_controls(ACCT).tier == "free"
    assert client.calls == 1
    # The next invoice of the plan applies its tier again (once).
    second_invoice = se.invoice_paid("sub_t", "in_t2", start=p2, end=p3, customer="cus_t")
    assert deliver(client, table, second_invoice, times=2).replayed
    assert client.calls == 2
    assert raw.get_controls(ACCT).tier == "pro"
    assert raw.get_balance(ACCT) == 1000  # no rollover cap: the first period lapsed


def test_a_plan_without_a_tier_leaves_the_account_alone(
    make_client: Any, table: PriceTable
) -> None:
    raw = make_client(pricing=table)
    client = Counting(raw)
    raw.initialize_user(ACCT, 0)
    raw.set_tier(ACCT, "free")
    now = int(time.time())
    body = se.invoice_paid(
        "sub_n",
        "in_n1",
        start=now - DAY,
        end=now + 30 * DAY,
        price=se.PRICE_TEAM,
        customer="cus_n",
        account=ACCT,
    )
    outcome = deliver(client, table, body)
    assert (outcome.outcome, outcome.credits, outcome.tier) == (Outcome.allocated, 5000, None)
    assert client.calls == 0
    assert raw.get_controls(ACCT).tier == "free"


def test_a_crash_before_the_tier_is_finished_by_the_redelivery(
    make_client: Any, table: PriceTable
) -> None:
    raw = make_client(pricing=table)
    client = Counting(raw, crash=True)
    raw.initialize_user(ACCT, 0)
    now = int(time.time())
    body = se.invoice_paid(
        "sub_c", "in_c1", start=now - DAY, end=now + 30 * DAY, customer="cus_c", account=ACCT
    )
    with pytest.raises(RuntimeError):
        deliver(client, table, body)  # allocated, then killed: Stripe delivers again
    assert raw.get_balance(ACCT) == 1000
    assert raw.get_controls(ACCT).tier is None
    redelivered = deliver(client, table, body, times=2)
    assert redelivered.replayed
    assert raw.get_controls(ACCT).tier == "pro"
    assert client.calls == 1
    assert raw.get_balance(ACCT) == 1000


def test_a_plan_naming_an_unknown_tier_is_refused_at_load(tmp_path: Path) -> None:
    path = tmp_path / "pricing.toml"
    path.write_text(PRICE_FILE.replace('tier = "pro"', 'tier = "gold"'))
    with pytest.raises(ConfigurationError) as err:
        load_price_table(path)
    message = str(err.value)
    assert "[plans.pro].tier: unknown tier 'gold'" in message
    assert "known tiers: free, pro" in message
    path.write_text(PRICE_FILE.replace('tier = "pro"', "tier = 7"))
    with pytest.raises(ConfigurationError, match=r"\[plans\.pro\]\.tier"):
        load_price_table(path)
    path.write_text(PRICE_FILE)
    assert load_price_table(path).catalog.plans["pro"].tier == "pro"


def test_a_client_without_the_tier_allocates_and_says_so(
    make_client: Any, table: PriceTable
) -> None:
    raw = make_client()  # the default table: no tiers
    raw.initialize_user(ACCT, 0)
    now = int(time.time())
    body = se.invoice_paid(
        "sub_u", "in_u1", start=now - DAY, end=now + 30 * DAY, customer="cus_u", account=ACCT
    )
    outcome = deliver(raw, table, body)
    assert (outcome.outcome, outcome.credits, outcome.tier) == (Outcome.allocated, 1000, None)
    assert "tier 'pro' not set" in outcome.detail
    assert raw.get_controls(ACCT).tier is None
    # With the table that has it, the redelivery sets it (no marker was written).
    fixed = make_client(pricing=table)
    assert deliver(fixed, table, body).tier == "pro"
    assert fixed.get_controls(ACCT).tier == "pro"
    assert fixed.get_balance(ACCT) == 1000
