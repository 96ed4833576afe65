"""Automatic top-up against the local Stripe stand-in, through the real ``stripe`` library:
one off-session PaymentIntent per crossing of the threshold, never two for a burst, the
credits once per payment through the purchase path, a decline as an alert of its own."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pydantic
import pytest

import stripe_events as se
from conftest import ledger_sum
from sparked_credits import CreditsClient, ValidationError
from sparked_credits.billing import Outcome, PaymentSucceeded, run_payment_event
from sparked_credits.billing.stripe import handle_stripe_webhook, make_stripe_client
from sparked_credits.billing.topup import (
    TOPUP_FAILED,
    TopUpCustomerError,
    TopUpSettings,
    configure_topup,
    get_topup,
    run_topups,
)
from sparked_credits.pricing import Catalog, load_price_table
from stripe_standin import API_KEY, StripeStandIn

ACCT = "user_topped"
MISSING_STRIPE = object()  # a pass that must not reach Stripe
CARD = TopUpSettings(customer="cus_T1", payment_method="pm_card_visa", pack="starter")


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Catalog:
    path: Path = tmp_path_factory.mktemp("topup") / "pricing.toml"
    path.write_text(se.CATALOG_TOML)
    return load_price_table(path).catalog


@pytest.fixture
def standin() -> Iterator[StripeStandIn]:
    server = StripeStandIn({se.PRICE_STARTER: (500, "usd")})
    yield server
    server.close()


@pytest.fixture
def stripe_client(standin: StripeStandIn) -> Any:
    return make_stripe_client(API_KEY, api_base=standin.url)


def intents(standin: StripeStandIn, account: str = ACCT) -> list[dict[str, Any]]:
    return [p for p in standin.payment_intents.values() if p["metadata"]["account"] == account]


class AckCrash:
    """A client whose first ``ack_alerts`` dies: a worker killed after the payment and
    before it acknowledged the alert."""

    def __init__(self, client: Any) -> None:
        self.client, self.crashed = client, False

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.client, name)
        if name == "ack_alerts" and not self.crashed:

            def crash(*args: Any, **kwargs: Any) -> Any:
                self.crashed = True
                raise RuntimeError("worker killed")

            return crash
        return attr


def test_one_payment_per_crossing_credited_once(
    client: Any, catalog: Catalog, standin: StripeStandIn, stripe_client: Any
) -> None:
    client.initialize_user(ACCT, 100)
    client.set_tier(ACCT, None, low_balance=50)
    configure_topup(client, catalog, ACCT, CARD)
    assert get_topup(client, ACCT) == CARD
    for _ in range(3):  # 70, 40 (the crossing), 10
        client.debit(ACCT, 30, action="chat_message")
    # The worker dies after paying, before acknowledging: the next pass finishes it.
    with pytest.raises(RuntimeError):
        run_topups(AckCrash(client), stripe_client, catalog)
    again = run_topups(client, stripe_client, catalog)
    assert [(o.result, o.replayed) for o in again] == [("credited", True)]
    assert len(intents(standin)) == 1
    paid = intents(standin)[0]
    assert (paid["amount"], paid["currency"], paid["customer"]) == (500, "usd", "cus_T1")
    assert client.get_balance(ACCT) == 510 == ledger_sum(client, ACCT)
    assert run_topups(client, stripe_client, catalog) == []
    # Below again within the cool-off: no second payment.
    client.debit(ACCT, 480, action="chat_message")
    skipped = run_topups(client, stripe_client, catalog)
    assert [o.result for o in skipped] == ["skipped"]
    assert len(intents(standin)) == 1
    assert client.get_balance(ACCT) == 30
    purchases = client.history(ACCT, types=["credit"]).entries
    assert [(e.delta, e.reason) for e in purchases] == [(500, "pack starter")]


def test_a_declined_card_is_an_alert_of_its_own(
    client: Any, catalog: Catalog, standin: StripeStandIn, stripe_client: Any
) -> None:
    client.initialize_user(ACCT, 60)
    client.set_tier(ACCT, None, low_balance=50)
    declined = CARD.model_copy(update={"payment_method": "pm_card_chargeDeclined"})
    configure_topup(client, catalog, ACCT, declined)
    client.debit(ACCT, 20, action="chat_message")
    # Killed after recording the failure, before acknowledging: recorded once all the same.
    with pytest.raises(RuntimeError):
        run_topups(AckCrash(client), stripe_client, catalog)
    # The next pass: the crossing again (the same PaymentIntent back, no second alert), and
    # the failure's own alert, which starts nothing.
    outcome, own = run_topups(client, stripe_client, catalog)
    assert (outcome.result, outcome.detail) == ("failed", "card_declined")
    assert own.result == "other_kind"
    assert outcome.payment_id == intents(standin)[0]["id"]
    assert client.get_balance(ACCT) == 40
    kinds = [(a.kind, a.entry_id) for a in client.alerts("mailer")]
    assert len(kinds) == 2
    assert kinds[0][0] == "low_balance"
    assert kinds[1] == (TOPUP_FAILED, outcome.payment_id)
    assert run_topups(client, stripe_client, catalog) == []
    assert len(intents(standin)) == 1


def test_bad_settings_are_refused_and_change_nothing(client: Any, catalog: Catalog) -> None:
    client.initialize_user(ACCT, 10)
    configure_topup(client, catalog, ACCT, CARD)
    with pytest.raises(ValidationError):
        configure_topup(client, catalog, ACCT, CARD.model_copy(update={"pack": "unknown"}))
    with pytest.raises(ValidationError):
        configure_topup(client, catalog, "not an account!", CARD)
    with pytest.raises(pydantic.ValidationError):
        TopUpSettings(customer="cus 1", payment_method="pm_card_visa", pack="starter")
    assert get_topup(client, ACCT) == CARD
    # A pack gone from the price file since: the crossing starts nothing, and passes.
    client.set_tier(ACCT, None, low_balance=5)
    client.debit(ACCT, 6, action="chat_message")
    [gone] = run_topups(client, MISSING_STRIPE, Catalog())
    assert (gone.result, gone.detail) == ("not_configured", "pack 'starter' is not for sale")
    assert run_topups(client, MISSING_STRIPE, Catalog()) == []
    configure_topup(client, catalog, ACCT, None)
    assert get_topup(client, ACCT) is None


def test_a_customer_is_one_accounts(client: Any, catalog: Catalog) -> None:
    """A pack bought with a customer links it to the buyer (first link wins); top-up
    settings naming another account's customer, or with ``require_linked_customer`` one
    linked to nobody, are refused and save nothing."""
    other = "user_someone_else"
    for n, account in enumerate((ACCT, other)):
        bought = run_payment_event(
            client,
            PaymentSucceeded(
                provider="stripe",
                payment_id=f"pi_link{n}",
                account=account,
                pack="starter",
                amount=500,
                currency="usd",
                paid_at=datetime.now(timezone.utc),
                customer_id="cus_A",
            ),
            catalog,
        )
        assert bought.outcome is Outcome.credited
    mine = CARD.model_copy(update={"customer": "cus_A"})
    configure_topup(client, catalog, ACCT, mine, require_linked_customer=True)
    assert get_topup(client, ACCT) == mine
    with pytest.raises(TopUpCustomerError) as theirs:
        configure_topup(client, catalog, other, mine)
    assert (theirs.value.reason, theirs.value.http_status) == ("other_account", 409)
    unlinked = CARD.model_copy(update={"customer": "cus_nobody"})
    with pytest.raises(TopUpCustomerError) as nobody:
        configure_topup(client, catalog, other, unlinked, require_linked_customer=True)
    assert nobody.value.to_dict()["reason"] == "not_linked"
    assert get_topup(client, other) is None
    configure_topup(client, catalog, other, unlinked)  # an operator's call: no link needed
    assert get_topup(client, other) == unlinked


def test_a_signed_checkout_with_a_customer_links_it(client: Any, catalog: Catalog) -> None:
    """Stripe's word links a customer: a paid Checkout Session that saved the card (its
    ``customer``) lets the buyer's settings name that customer."""
    body = se.checkout(ACCT, "pi_linkcheckout", customer="cus_checkout")
    paid = handle_stripe_webhook(client, body, se.sign(body), se.SECRET, catalog)
    assert paid.outcome is Outcome.credited
    mine = CARD.model_copy(update={"customer": "cus_checkout"})
    configure_topup(client, catalog, ACCT, mine, require_linked_customer=True)
    assert get_topup(client, ACCT) == mine
    with pytest.raises(TopUpCustomerError):
        configure_topup(client, catalog, "user_someone_else", mine)


def test_a_burst_from_threads_starts_exactly_one_payment(
    sync_credits: Any, catalog: Catalog, standin: StripeStandIn, stripe_client: Any
) -> None:
    client = sync_credits
    client.initialize_user(ACCT, 400)
    client.set_tier(ACCT, None, low_balance=200)
    configure_topup(client, catalog, ACCT, CARD)
    errors: list[BaseException] = []

    def spend() -> None:
        try:
            for _ in range(5):
                client.debit(ACCT, 10, action="chat_message")
                run_topups(client, stripe_client, catalog)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=spend) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    run_topups(client, stripe_client, catalog)
    assert len(intents(standin)) == 1
    assert client.get_balance(ACCT) == 400 - 300 + 500 == ledger_sum(client, ACCT)


class PurchaseCrash(AckCrash):
    """A client whose first ``purchase`` dies: a worker killed after Stripe took the
    payment and before it credited it."""

    def __getattr__(self, name: str) -> Any:
        if name == "purchase" and not self.crashed:
            self.crashed = True
            raise RuntimeError("worker killed")
        return getattr(self.client, name)


def test_the_payment_intent_webhook_and_the_worker_credit_once(
    client: Any, catalog: Catalog, standin: StripeStandIn, stripe_client: Any
) -> None:
    client.initialize_user(ACCT, 60)
    client.set_tier(ACCT, None, low_balance=50)
    configure_topup(client, catalog, ACCT, CARD)
    client.debit(ACCT, 20, action="chat_message")
    with pytest.raises(RuntimeError):
        run_topups(PurchaseCrash(client), stripe_client, catalog)
    assert client.get_balance(ACCT) == 40
    # Stripe's payment_intent.succeeded credits it (once, however often delivered)...
    [intent] = intents(standin)
    body = se.envelope("payment_intent.succeeded", intent)
    first = handle_stripe_webhook(client, body, se.sign(body), se.SECRET, catalog)
    assert (first.outcome, first.replayed, first.balance) == (Outcome.credited, False, 540)
    again = handle_stripe_webhook(client, body, se.sign(body), se.SECRET, catalog)
    assert again.replayed
    # ...and the worker's next pass gets the same PaymentIntent back: nothing more.
    [finished] = run_topups(client, stripe_client, catalog)
    assert (finished.result, finished.replayed, finished.payment_id) == (
        "credited",
        True,
        intent["id"],
    )
    assert len(intents(standin)) == 1
    assert client.get_balance(ACCT) == 540 == ledger_sum(client, ACCT)
    # A Checkout's PaymentIntent is credited by its session's event, not this one.
    checkout_intent = {**intent, "id": "pi_checkout", "metadata": {"pack": "starter"}}
    other = se.envelope("payment_intent.succeeded", checkout_intent)
    answer = handle_stripe_webhook(client, other, se.sign(other), se.SECRET, catalog)
    assert answer.outcome is Outcome.ignored
    assert client.get_balance(ACCT) == 540


_WORKER = """
import sys
from sparked_credits import CreditsClient
from sparked_credits.billing.stripe import make_stripe_client
from sparked_credits.billing.topup import run_topups
from sparked_credits.pricing import load_price_table
url, api_base, key, price_file = sys.argv[1:5]
catalog = load_price_table(price_file).catalog
stripe_client = make_stripe_client(key, api_base=api_base)
with CreditsClient(url, app="t") as c:
    for _ in range(5):
        c.debit("user_topped", 10, action="chat_message")
        run_topups(c, stripe_client, catalog)
"""


def test_processes_and_threads_racing_start_one_payment(
    redis_url: str, catalog: Catalog, standin: StripeStandIn, tmp_path: Path
) -> None:
    price_file = tmp_path / "pricing.toml"
    price_file.write_text(se.CATALOG_TOML)
    stripe_client = make_stripe_client(API_KEY, api_base=standin.url)
    with CreditsClient(redis_url, app="t") as client:
        client.initialize_user(ACCT, 400)
        client.set_tier(ACCT, None, low_balance=200)
        configure_topup(client, catalog, ACCT, CARD)
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent / "support")}
        argv = [redis_url, standin.url, API_KEY, str(price_file)]
        procs = [
            subprocess.Popen([sys.executable, "-c", _WORKER, *argv], env=env) for _ in range(2)
        ]

        def spend() -> None:
            with CreditsClient(redis_url, app="t") as mine:
                for _ in range(5):
                    mine.debit(ACCT, 10, action="chat_message")
                    run_topups(mine, stripe_client, catalog)

        threads = [threading.Thread(target=spend) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert [p.wait(timeout=60) for p in procs] == [0, 0]
        run_topups(client, stripe_client, catalog)
        assert len(intents(standin)) == 1
        assert client.get_balance(ACCT) == 400 - 300 + 500 == ledger_sum(client, ACCT)


def test_the_async_worker(catalog: Catalog, standin: StripeStandIn) -> None:
    from sparked_credits import AsyncCreditsClient
    from sparked_credits.billing.topup import aconfigure_topup, aget_topup, arun_topups

    stripe_client = make_stripe_client(API_KEY, api_base=standin.url)

    async def run() -> None:
        client = AsyncCreditsClient("memory://topup-async")
        await client.initialize_user(ACCT, 60)
        await client.set_tier(ACCT, None, low_balance=50)
        await aconfigure_topup(client, catalog, ACCT, CARD)
        assert await aget_topup(client, ACCT) == CARD
        await client.debit(ACCT, 20, action="chat_message")
        [outcome] = await arun_topups(client, stripe_client, catalog)
        assert (outcome.result, outcome.credits, outcome.replayed) == ("credited", 500, False)
        assert await arun_topups(client, stripe_client, catalog) == []
        assert await client.get_balance(ACCT) == 540
        await client.aclose()

    asyncio.run(run())
    assert len(intents(standin)) == 1
