"""The Stripe adapter and the provider-agnostic core, through the SDK on every backend.

Events are signed exactly as Stripe signs them (tests/stripe_events.py) and verified by the
``stripe`` library. Each payment effect happens once, whatever is redelivered and in
whatever order; after every step the lots invariants hold.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import pytest

import stripe_events as se
from conftest import ledger_sum
from sparked_credits import AsyncCreditsClient, ValidationError, WebhookVerificationError
from sparked_credits.billing import (
    Ignored,
    Outcome,
    PaymentEvent,
    PaymentRefunded,
    PaymentSucceeded,
    purchase_ref,
    run_payment_event,
)
from sparked_credits.billing.stripe import ahandle_stripe_webhook, handle_stripe_webhook
from sparked_credits.pricing import Catalog, load_price_table

DAY = 86400
ACCT = "user_buyer"


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Catalog:
    path = tmp_path_factory.mktemp("catalog") / "pricing.toml"
    path.write_text(se.CATALOG_TOML)
    return load_price_table(path).catalog


def deliver(client: Any, catalog: Catalog, body: bytes, times: int = 1) -> Any:
    outcome = None
    for _ in range(times):
        outcome = handle_stripe_webhook(client, body, se.sign(body), se.SECRET, catalog)
    return outcome


def check(client: Any, account: str = ACCT) -> int:
    lots = client.grants(account)
    balance = client.get_balance(account)
    assert balance >= 0
    assert balance == ledger_sum(client, account)
    assert balance == sum(g.remaining for g in lots)
    result = client.reconcile(account, full=True)
    assert result.matched, result
    assert result.lots_matched, result
    return int(balance)


def test_purchase_refunds_and_disputes_once_per_payment(client: Any, catalog: Catalog) -> None:
    client.initialize_user(ACCT, 0)
    # An unpaid session (a bank debit) does nothing until its async success arrives.
    unpaid = deliver(client, catalog, se.checkout(ACCT, "pi_1", paid=False))
    assert unpaid.outcome is Outcome.ignored
    assert check(client) == 0
    done = deliver(
        client, catalog, se.checkout(ACCT, "pi_1", kind="checkout.session.async_payment_succeeded")
    )
    assert (done.outcome, done.credits, done.balance, done.replayed) == (
        Outcome.credited,
        500,
        500,
        False,
    )
    # The same payment as another event type, three more times: never credited again.
    again = deliver(client, catalog, se.checkout(ACCT, "pi_1"), times=3)
    assert again.replayed
    assert check(client) == 500

    client.debit(ACCT, 200, action="chat_message")
    # Partial refunds after partial spending: credits for the refunded share, rounded down.
    first = deliver(client, catalog, se.refunded("pi_1", amount=500, refunded=100, before=0), 2)
    assert (first.credits, first.unrecoverable) == (100, 0)
    second = deliver(client, catalog, se.refunded("pi_1", amount=500, refunded=400, before=100))
    assert (second.credits, second.unrecoverable, second.balance) == (200, 100, 0)
    full = deliver(client, catalog, se.refunded("pi_1", amount=500, refunded=500, before=400), 3)
    assert (full.credits, full.unrecoverable) == (0, 100)
    assert check(client) == 0
    revokes = client.history(ACCT, types=["revoke"]).entries
    assert [e.delta for e in revokes] == [-200, -100]
    assert all(e.reason and e.reason.startswith("refund") for e in revokes)

    # A dispute lost: the credits go and stay gone.
    deliver(client, catalog, se.checkout(ACCT, "pi_2"))
    created = se.dispute(
        "charge.dispute.created", "pi_2", "du_2", amount=500, status="needs_response"
    )
    lost = se.dispute("charge.dispute.closed", "pi_2", "du_2", amount=500, status="lost")
    assert deliver(client, catalog, created, 2).credits == 500
    assert deliver(client, catalog, lost, 2).outcome is Outcome.ignored
    assert check(client) == 0
    # A dispute won, its close delivered BEFORE its opening: taken once, restored once.
    deliver(client, catalog, se.checkout(ACCT, "pi_3"))
    client.debit(ACCT, 50, action="chat_message")
    won = se.dispute("charge.dispute.closed", "pi_3", "du_3", amount=500, status="won")
    opened = se.dispute(
        "charge.dispute.created", "pi_3", "du_3", amount=500, status="needs_response"
    )
    restored = deliver(client, catalog, won)
    assert (restored.outcome, restored.credits) == (Outcome.restored, 450)
    assert deliver(client, catalog, opened).replayed
    assert deliver(client, catalog, won).replayed
    assert check(client) == 450


def test_subscription_renewals_roll_over_once_per_period(client: Any, catalog: Catalog) -> None:
    now = int(time.time())
    p1, p2, p3 = now - DAY, now + 30 * DAY, now + 60 * DAY
    p4, p5 = now + 90 * DAY, now + 120 * DAY
    # A renewal before its checkout: the customer is unknown, so it waits (409).
    early = deliver(client, catalog, se.invoice_paid("sub_1", "in_1", start=p1, end=p2))
    assert early.outcome is Outcome.pending
    assert early.http_status == 409
    deliver(client, catalog, se.subscription_checkout(ACCT, "cus_1", "sub_1"))
    first = deliver(client, catalog, se.invoice_paid("sub_1", "in_1", start=p1, end=p2), 3)
    assert (first.outcome, first.credits, first.balance) == (Outcome.allocated, 1000, 1000)
    client.debit(ACCT, 700, action="chat_message")  # 300 left: at the cap

    second = deliver(client, catalog, se.invoice_paid("sub_1", "in_2", start=p2, end=p3))
    assert (second.rolled_over, second.expired, second.balance) == (300, 0, 1300)
    client.debit(ACCT, 100, action="chat_message")  # 1200 left: over the cap
    # A plan change mid-period: its proration invoice allocates nothing now...
    change = se.invoice_paid(
        "sub_1", "in_2b", start=p2, end=p3, price=se.PRICE_TEAM, reason="subscription_update"
    )
    assert deliver(client, catalog, change).outcome is Outcome.ignored
    # ...and another invoice for a period already allocated never allocates it again.
    other = deliver(
        client, catalog, se.invoice_paid("sub_1", "in_2c", start=p2, end=p3, price=se.PRICE_TEAM)
    )
    assert other.replayed
    assert check(client) == 1200

    third = deliver(client, catalog, se.invoice_paid("sub_1", "in_3", start=p3, end=p4))
    assert (third.credits, third.rolled_over, third.expired) == (1000, 300, 900)
    assert check(client) == 1300
    # The plan changed during p3: from p4 on, the new plan's credits and rollover cap.
    team = se.invoice_paid("sub_1", "in_4", start=p4, end=p5, price=se.PRICE_TEAM)
    fourth = deliver(client, catalog, team)
    assert (fourth.credits, fourth.rolled_over, fourth.expired) == (5000, 1000, 300)
    assert check(client) == 6000
    # Deleted: the current allocation runs to its end, no later period is allocated.
    deliver(client, catalog, se.subscription_deleted("sub_1", p5), 2)
    late = deliver(client, catalog, se.invoice_paid("sub_1", "in_5", start=p5, end=p5 + 30 * DAY))
    assert late.outcome is Outcome.ignored
    assert deliver(client, catalog, team).replayed
    assert check(client) == 6000


def state(client: Any) -> tuple[Any, ...]:
    return client.get_balance(ACCT), [e.id for e in client.history(ACCT, limit=200).entries]


def test_bad_deliveries_write_nothing(sync_credits: Any, catalog: Catalog) -> None:
    client = sync_credits
    client.initialize_user(ACCT, 0)
    deliver(client, catalog, se.checkout(ACCT, "pi_ok"))
    before = state(client)
    body = se.checkout(ACCT, "pi_x")
    refusals = [
        (se.sign(body, "whsec_other"), "bad_signature"),
        (se.sign(body, at=int(time.time()) - 3600), "stale_timestamp"),
        ("", "missing_headers"),
        ("t=abc,v1=zz", "bad_signature"),
    ]
    for header, reason in refusals:
        with pytest.raises(WebhookVerificationError) as err:
            handle_stripe_webhook(client, body, header, se.SECRET, catalog)
        assert err.value.reason == reason
    malformed = [
        b"[1, 2]",
        b"not json",
        json.dumps(
            {"id": "evt_1", "type": "charge.refunded", "data": {"object": {"id": 1}}}
        ).encode(),
        se.envelope("checkout.session.completed", {"id": "cs_1", "metadata": {"pack": "starter"}}),
        se.checkout("not an account!", "pi_y"),
        se.envelope("invoice.paid", {"id": "in_9", "subscription": "sub_9", "lines": {"data": []}}),
    ]
    for bad in malformed:
        with pytest.raises(WebhookVerificationError) as err:
            deliver(client, catalog, bad)
        assert err.value.reason == "malformed_body"
        assert err.value.http_status == 400
    # A partial refund that does not say what came before it: refused, nothing taken.
    vague = se.envelope(
        "charge.refunded",
        {"id": "ch_1", "amount": 500, "amount_refunded": 100, "payment_intent": "pi_ok"},
    )
    with pytest.raises(ValidationError):
        deliver(client, catalog, vague)
    # Validly signed and well formed, but nothing to do or not matching the catalog.
    answered = [
        (se.envelope("customer.created", {"id": "cus_9"}), Outcome.ignored),
        (se.checkout(ACCT, "pi_m", amount=499), Outcome.mismatch),
        (se.checkout(ACCT, "pi_c", currency="eur"), Outcome.mismatch),
        (se.checkout(ACCT, "pi_u", pack="unknown"), Outcome.mismatch),
        (se.refunded("pi_unseen", amount=500, refunded=500, before=0), Outcome.pending),
        (
            se.dispute("charge.dispute.created", "pi_unseen", "du_9", amount=5, status="x"),
            Outcome.pending,
        ),
    ]
    for good, outcome in answered:
        assert deliver(client, catalog, good).outcome is outcome
    assert state(client) == before
    check(client)


# -- a second provider, through the same core ----------------------------------------------


class FakePay:
    """A minimal provider adapter, the contract a second provider (PayPal) implements:
    verify the delivery, translate each event to a PaymentEvent; nothing else."""

    name = "fakepay"

    def __init__(self, secret: bytes) -> None:
        self.secret = secret

    def verify(self, body: bytes, signature: str) -> dict[str, Any]:
        want = hmac.new(self.secret, body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(want, signature):
            raise WebhookVerificationError("bad fakepay signature", reason="bad_signature")
        parsed: dict[str, Any] = json.loads(body)
        return parsed

    def translate(self, event: dict[str, Any]) -> PaymentEvent:
        if event["type"] == "order.paid":
            return PaymentSucceeded(
                provider=self.name,
                payment_id=event["order"],
                account=event["buyer"],
                pack=event["sku"],
                amount=event["cents"],
                currency=event["currency"],
                paid_at=event["at"],
            )
        if event["type"] == "order.refunded":
            return PaymentRefunded(
                provider=self.name,
                payment_id=event["order"],
                refunded_total=event["total_refunded"],
                refunded_before=event["refunded_before"],
                amount_paid=event["cents"],
            )
        return Ignored(reason=event["type"])


def test_a_second_provider_implements_the_same_contract(
    sync_credits: Any, catalog: Catalog
) -> None:
    client, pay = sync_credits, FakePay(b"fake-secret")

    def send(event: dict[str, Any]) -> Any:
        body = json.dumps(event).encode()
        signature = hmac.new(pay.secret, body, hashlib.sha256).hexdigest()
        return run_payment_event(client, pay.translate(pay.verify(body, signature)), catalog)

    paid = {
        "type": "order.paid",
        "order": "O-1",
        "buyer": ACCT,
        "sku": "big",
        "cents": 2000,
        "currency": "usd",
        "at": "2026-12-01T10:00:00Z",
    }
    assert send(paid).credits == 3000
    assert send(paid).replayed
    refund = {
        "type": "order.refunded",
        "order": "O-1",
        "cents": 2000,
        "total_refunded": 999,
        "refunded_before": 0,
    }
    assert send(refund).credits == 1498  # 3000 * 999 / 2000 = 1498.5, rounded down
    assert send(refund).replayed
    grants = client.grants(ACCT)
    assert [g.remaining for g in grants if g.source == "purchase"] == [1502]
    # The lot is found by the provider's payment id; the same id at Stripe is another lot.
    taken = client.revoke(ACCT, purchase_ref("fakepay", "O-1"), 2, idempotency_key="manual")
    assert taken.revoked == 2
    assert send({"type": "order.shipped"}).outcome is Outcome.ignored
    check(client)


def test_the_async_handler(catalog: Catalog, tmp_path: Path) -> None:
    async def run() -> None:
        client = AsyncCreditsClient("memory://billing-async")
        body = se.checkout(ACCT, "pi_async")
        outcome = await ahandle_stripe_webhook(client, body, se.sign(body), se.SECRET, catalog)
        assert (outcome.outcome, outcome.balance) == (Outcome.credited, 500)
        again = await ahandle_stripe_webhook(client, body, se.sign(body), se.SECRET, catalog)
        assert again.replayed
        refund = se.refunded("pi_async", amount=500, refunded=250, before=0)
        taken = await ahandle_stripe_webhook(client, refund, se.sign(refund), se.SECRET, catalog)
        assert taken.credits == 250
        await client.aclose()

    asyncio.run(run())


class CrashOnce:
    """A client whose first ``purchase`` dies before reaching Redis (a crash between the
    directory write and the purchase): what a worker killed mid-delivery leaves."""

    def __init__(self, client: Any) -> None:
        self.client, self.crashed = client, False

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.client, name)
        if name == "purchase" and not self.crashed:

            def crash(*args: Any, **kwargs: Any) -> Any:
                self.crashed = True
                raise RuntimeError("worker killed")

            return crash
        return attr


def test_a_crash_between_the_steps_is_finished_by_the_redelivery(
    sync_credits: Any, catalog: Catalog
) -> None:
    flaky = CrashOnce(sync_credits)
    body = se.checkout(ACCT, "pi_crash")
    with pytest.raises(RuntimeError):
        deliver(flaky, catalog, body)  # Stripe sees a failure and delivers again later
    refund = se.refunded("pi_crash", amount=500, refunded=500, before=0)
    assert deliver(flaky, catalog, refund).outcome is Outcome.pending  # the lot is not there
    assert sync_credits.get_balance(ACCT) == 0
    assert deliver(flaky, catalog, body).credits == 500
    assert deliver(flaky, catalog, refund).credits == 500
    assert deliver(flaky, catalog, body).replayed
    assert check(sync_credits) == 0
