"""Stripe: webhooks in, Checkout Sessions out, on the official ``stripe`` package.

Needs the ``stripe`` extra (``pip install 'sparked-credits[stripe]'``); it is imported on
first use and a missing one raises ConfigurationError naming the extra.

A thin adapter over :mod:`.payments` (the provider-agnostic part): it verifies a delivery
through the library (raw bytes, a timestamp tolerance), parses the event itself (pydantic,
only the fields it reads), and translates it into a :data:`~.payments.PaymentEvent`:

=====================================================  ========================================
``checkout.session.completed`` (``payment_status``     PaymentSucceeded (a ``purchase`` lot of
``paid``), ``checkout.session.async_payment_succeeded``  ``metadata.pack`` for
                                                       ``client_reference_id``); an unpaid
                                                       session waits for its async success
``checkout.session.completed`` in subscription mode    CustomerLinked (for the renewals)
``charge.refunded``                                    PaymentRefunded (the cumulative
                                                       ``amount_refunded``, and the one before
                                                       from ``previous_attributes``)
``charge.dispute.created``                             PaymentDisputed
``charge.dispute.closed`` with ``status`` ``won``      DisputeWon (``lost``: the credits stay
                                                       revoked)
``invoice.paid`` (``subscription_create``/``_cycle``)  PeriodPaid: ``allocate`` once per period
``invoice.paid`` for ``subscription_update``           ignored: a plan change mid-period
                                                       applies from the next period
``customer.subscription.deleted``                      SubscriptionEnded
``payment_intent.succeeded`` with ``metadata.topup``    PaymentSucceeded of an automatic top-up
                                                       (billing/topup.py); other intents:
                                                       ignored
anything else                                          Ignored (acknowledged, nothing written)
=====================================================  ========================================

The payment id is the Checkout Session's PaymentIntent (what charges and disputes name), so
a refund finds the lot its payment opened. A validly signed event of the wrong shape is a
:class:`~sparked_credits.errors.WebhookVerificationError` with ``reason="malformed_body"``
(HTTP 400), and nothing is written.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Annotated, Any

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from .._core import validation as v
from ..errors import ConfigurationError, CreditsError, ValidationError, WebhookVerificationError
from ..pricing import Catalog
from .payments import (
    CustomerLinked,
    DisputeWon,
    Ignored,
    PaymentDisputed,
    PaymentEvent,
    PaymentOutcome,
    PaymentRefunded,
    PaymentSucceeded,
    PeriodPaid,
    SubscriptionEnded,
    arun_payment_event,
    run_payment_event,
)

__all__ = [
    "DEFAULT_TOLERANCE",
    "MAX_WEBHOOK_BYTES",
    "CheckoutRequest",
    "PaymentProviderError",
    "StripeOutcome",
    "ahandle_stripe_webhook",
    "create_checkout_session",
    "handle_stripe_webhook",
    "make_stripe_client",
    "start_checkout",
    "stripe_payment_event",
    "verify_stripe_webhook",
    "webhook_answer",
]

PROVIDER = "stripe"
DEFAULT_TOLERANCE = 300
"""Seconds a signature's timestamp may be off (Stripe's libraries' default)."""
MAX_WEBHOOK_BYTES = 1024 * 1024


def _stripe() -> Any:
    try:
        import stripe
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ConfigurationError(
            "Stripe support needs the stripe extra: pip install 'sparked-credits[stripe]'"
        ) from exc
    return stripe


# -- verifying -------------------------------------------------------------------------------


def verify_stripe_webhook(
    body: bytes,
    signature: str | None,
    secret: str,
    *,
    tolerance: int = DEFAULT_TOLERANCE,
    max_bytes: int = MAX_WEBHOOK_BYTES,
) -> dict[str, Any]:
    """Check the ``Stripe-Signature`` header over the raw ``body`` with the ``stripe``
    library and return the parsed event (a dict). Every failure is a
    WebhookVerificationError (``missing_headers``, ``bad_signature``, ``stale_timestamp``,
    ``too_large``, ``malformed_body``); the message never holds the secret."""
    if not secret or not secret.strip():
        raise ConfigurationError("the Stripe webhook secret is empty: set STRIPE_WEBHOOK_SECRET")
    if not signature or not signature.strip():
        raise WebhookVerificationError("missing Stripe-Signature header", reason="missing_headers")
    if not isinstance(body, bytes | bytearray):
        raise TypeError("verify_stripe_webhook needs the raw body as bytes")
    if len(body) > max_bytes:
        raise WebhookVerificationError(
            f"the webhook body is over {max_bytes} bytes", reason="too_large"
        )
    try:
        text = bytes(body).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WebhookVerificationError("the body is not UTF-8", reason="malformed_body") from exc
    stripe = _stripe()
    failure = getattr(stripe, "SignatureVerificationError", None) or (
        stripe.error.SignatureVerificationError
    )
    try:
        stripe.WebhookSignature.verify_header(text, signature, secret.strip(), tolerance)
    except failure as exc:
        stale = "tolerance" in str(exc).lower()
        raise WebhookVerificationError(
            "the Stripe signature's timestamp is outside the tolerance"
            if stale
            else "the Stripe signature does not match the body",
            reason="stale_timestamp" if stale else "bad_signature",
        ) from None
    except (ValueError, TypeError, OverflowError) as exc:
        raise WebhookVerificationError(
            "malformed Stripe-Signature header", reason="malformed_headers"
        ) from exc
    try:
        event = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise WebhookVerificationError("the body is not JSON", reason="malformed_body") from exc
    if not isinstance(event, dict):
        raise WebhookVerificationError("the body is not an event", reason="malformed_body")
    return event


# -- translating ---------------------------------------------------------------------------


_Unix = Annotated[int, Field(ge=0, le=2**35)]
"""Seconds since the epoch, up to the year 3058 (anything later is not a Stripe time)."""


class _Loose(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class _Envelope(_Loose):
    id: str
    type: str
    created: _Unix | None = None
    data: dict[str, Any]


class _Session(_Loose):
    id: str
    mode: str | None = None
    payment_status: str | None = None
    client_reference_id: str | None = None
    metadata: dict[str, str] | None = None
    amount_total: int | None = None
    currency: str | None = None
    payment_intent: str | dict[str, Any] | None = None
    customer: str | dict[str, Any] | None = None
    created: _Unix


class _Intent(_Loose):
    id: str
    amount: int
    currency: str
    metadata: dict[str, str] | None = None
    customer: str | dict[str, Any] | None = None
    created: _Unix


class _Refunds(_Loose):
    data: list[dict[str, Any]] = []


class _Charge(_Loose):
    id: str
    amount: int
    amount_refunded: int
    payment_intent: str | None = None
    refunds: _Refunds | None = None


class _Dispute(_Loose):
    id: str
    amount: int
    charge: str | None = None
    payment_intent: str | None = None
    status: str


class _Period(_Loose):
    start: _Unix
    end: _Unix


class _Line(_Loose):
    period: _Period
    price: dict[str, Any] | None = None
    pricing: dict[str, Any] | None = None


class _Lines(_Loose):
    data: list[_Line]


class _Invoice(_Loose):
    id: str
    billing_reason: str | None = None
    customer: str | None = None
    subscription: str | None = None
    subscription_details: dict[str, Any] | None = None
    parent: dict[str, Any] | None = None
    lines: _Lines


class _Subscription(_Loose):
    id: str
    ended_at: _Unix | None = None
    canceled_at: _Unix | None = None


def _time(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, tz=timezone.utc)


def _id_of(value: str | dict[str, Any] | None) -> str | None:
    if isinstance(value, dict):
        found = value.get("id")
        return found if isinstance(found, str) else None
    return value


def stripe_payment_event(event: Mapping[str, Any]) -> PaymentEvent:
    """The provider-agnostic event a verified Stripe event stands for (see the module)."""
    try:
        return _translate(event)
    except (
        pydantic.ValidationError,
        ValidationError,
        ValueError,
        KeyError,
        TypeError,
        OverflowError,
    ) as exc:
        detail = (
            exc.errors(include_url=False)[0] if isinstance(exc, pydantic.ValidationError) else exc
        )
        raise WebhookVerificationError(
            f"a signed event of an unexpected shape: {str(detail)[:300]}", reason="malformed_body"
        ) from None


def _translate(raw: Mapping[str, Any]) -> PaymentEvent:
    envelope = _Envelope.model_validate(raw)
    obj = envelope.data.get("object")
    if not isinstance(obj, dict):
        raise ValueError("data.object is not an object")
    kind = envelope.type
    if kind in ("checkout.session.completed", "checkout.session.async_payment_succeeded"):
        return _checkout(kind, _Session.model_validate(obj))
    if kind == "charge.refunded":
        return _refunded(_Charge.model_validate(obj), envelope.data.get("previous_attributes"))
    if kind in ("charge.dispute.created", "charge.dispute.closed"):
        dispute = _Dispute.model_validate(obj)
        payment = dispute.payment_intent or dispute.charge
        if payment is None:
            raise ValueError("a dispute without payment_intent or charge")
        if kind == "charge.dispute.created":
            return PaymentDisputed(
                provider=PROVIDER, payment_id=payment, dispute_id=dispute.id, amount=dispute.amount
            )
        if dispute.status == "won":
            return DisputeWon(
                provider=PROVIDER, payment_id=payment, dispute_id=dispute.id, amount=dispute.amount
            )
        return Ignored(reason=f"dispute {dispute.status}: the credits stay revoked")
    if kind == "payment_intent.succeeded":
        return _topup(_Intent.model_validate(obj))
    if kind == "invoice.paid":
        return _invoice(_Invoice.model_validate(obj))
    if kind == "customer.subscription.deleted":
        sub = _Subscription.model_validate(obj)
        when = sub.ended_at or sub.canceled_at or envelope.created
        if when is None:
            raise ValueError("a deleted subscription without ended_at")
        return SubscriptionEnded(provider=PROVIDER, subscription_id=sub.id, ended_at=_time(when))
    return Ignored(reason=f"{kind} changes no credits")


def _topup(intent: _Intent) -> PaymentEvent:
    """An automatic top-up's PaymentIntent (``metadata.topup``, billing/topup.py): the same
    purchase, keyed by the PaymentIntent, as the top-up worker's, so whichever comes first
    credits it and the other replays. Other PaymentIntents are a Checkout's: credited by
    the session's event."""
    metadata = intent.metadata or {}
    if "topup" not in metadata:
        return Ignored(reason="not an automatic top-up: its checkout session credits it")
    return PaymentSucceeded(
        provider=PROVIDER,
        payment_id=intent.id,
        account=metadata.get("account", ""),
        pack=metadata.get("pack", ""),
        amount=intent.amount,
        currency=intent.currency,
        paid_at=_time(intent.created),
        customer_id=_id_of(intent.customer),
    )


def _checkout(kind: str, session: _Session) -> PaymentEvent:
    metadata = session.metadata or {}
    if session.mode == "subscription":
        customer = _id_of(session.customer)
        if customer is None or session.client_reference_id is None:
            return Ignored(reason="a subscription checkout without customer or account")
        return CustomerLinked(
            provider=PROVIDER,
            customer_id=customer,
            account=v.account(session.client_reference_id),
        )
    if "pack" not in metadata:
        return Ignored(reason="not a credits checkout (no metadata.pack)")
    if kind == "checkout.session.completed" and session.payment_status != "paid":
        return Ignored(reason=f"payment_status {session.payment_status}: waiting for payment")
    if session.client_reference_id is None or session.amount_total is None or not session.currency:
        raise ValueError("a credits checkout without client_reference_id, amount or currency")
    return PaymentSucceeded(
        provider=PROVIDER,
        payment_id=_id_of(session.payment_intent) or session.id[:64],
        account=v.account(session.client_reference_id),
        pack=metadata["pack"],
        amount=session.amount_total,
        currency=session.currency,
        paid_at=_time(session.created),
        customer_id=_id_of(session.customer),
    )


def _refunded(charge: _Charge, previous: object) -> PaymentEvent:
    before: int | None = None
    if isinstance(previous, dict) and isinstance(previous.get("amount_refunded"), int):
        before = previous["amount_refunded"]
    elif charge.refunds is not None and charge.refunds.data:
        latest = max(charge.refunds.data, key=lambda r: (r.get("created", 0), r.get("id", "")))
        amount = latest.get("amount")
        if isinstance(amount, int):
            before = max(0, charge.amount_refunded - amount)
    if charge.amount_refunded <= 0:
        return Ignored(reason="nothing refunded")
    return PaymentRefunded(
        provider=PROVIDER,
        payment_id=charge.payment_intent or charge.id,
        refunded_total=charge.amount_refunded,
        refunded_before=before,
        amount_paid=charge.amount,
    )


def _invoice(invoice: _Invoice) -> PaymentEvent:
    parent = (invoice.parent or {}).get("subscription_details") or {}
    subscription = invoice.subscription or parent.get("subscription")
    if not subscription:
        return Ignored(reason="not a subscription invoice")
    if invoice.billing_reason not in ("subscription_create", "subscription_cycle", None):
        return Ignored(
            reason=f"{invoice.billing_reason}: a plan change applies from the next period"
        )
    if not invoice.lines.data:
        raise ValueError("a subscription invoice without lines")
    line = invoice.lines.data[-1]
    price = (line.price or {}).get("id") or (
        ((line.pricing or {}).get("price_details") or {}).get("price")
    )
    if not isinstance(price, str):
        raise ValueError("a subscription invoice line without a price")
    details = invoice.subscription_details or parent
    account = (details.get("metadata") or {}).get("account")
    return PeriodPaid(
        provider=PROVIDER,
        subscription_id=subscription,
        account=v.account(account) if account else None,
        customer_id=invoice.customer,
        price=price,
        period_start=_time(line.period.start),
        period_end=_time(line.period.end),
    )


# -- handling ------------------------------------------------------------------------------


class StripeOutcome(PaymentOutcome):
    """What one delivery did, with the event's id and type."""

    event_id: str
    type: str


def _prepare(
    body: bytes, signature: str | None, secret: str
) -> tuple[dict[str, Any], PaymentEvent]:
    event = verify_stripe_webhook(body, signature, secret)
    return event, stripe_payment_event(event)


def _outcome(event: Mapping[str, Any], outcome: PaymentOutcome) -> StripeOutcome:
    return StripeOutcome(
        **outcome.model_dump(), event_id=str(event.get("id")), type=str(event.get("type"))
    )


def handle_stripe_webhook(
    client: Any, body: bytes, signature: str | None, secret: str, catalog: Catalog
) -> StripeOutcome:
    """Verify one delivery and apply it with a CreditsClient, once per payment effect."""
    event, payment = _prepare(body, signature, secret)
    return _outcome(event, run_payment_event(client, payment, catalog))


async def ahandle_stripe_webhook(
    client: Any, body: bytes, signature: str | None, secret: str, catalog: Catalog
) -> StripeOutcome:
    """:func:`handle_stripe_webhook` with an AsyncCreditsClient."""
    event, payment = _prepare(body, signature, secret)
    return _outcome(event, await arun_payment_event(client, payment, catalog))


# -- Checkout --------------------------------------------------------------------------------


def make_stripe_client(api_key: str, *, api_base: str | None = None) -> Any:
    """A ``stripe.StripeClient``; ``api_base`` points it at another server (a test
    stand-in) instead of https://api.stripe.com."""
    if not api_key:
        raise ConfigurationError("the Stripe API key is empty: set STRIPE_API_KEY")
    stripe = _stripe()
    options: dict[str, Any] = {"max_network_retries": 0}
    if api_base:
        options["base_addresses"] = {"api": api_base}
    return stripe.StripeClient(api_key, **options)


def create_checkout_session(
    stripe_client: Any,
    catalog: Catalog,
    *,
    pack: str,
    account: str,
    success_url: str,
    cancel_url: str,
) -> tuple[str, str]:
    """Create a Checkout Session selling ``pack`` to ``account``; returns (id, url).

    The account goes in ``client_reference_id`` and the pack in ``metadata.pack`` (Checkout
    webhooks carry no line items), and both in the PaymentIntent's metadata too."""
    account = v.account(account)
    chosen = catalog.pack(pack)
    params = {
        "mode": "payment",
        "line_items": [{"price": chosen.price, "quantity": 1}],
        "client_reference_id": account,
        "metadata": {"pack": pack},
        "payment_intent_data": {"metadata": {"pack": pack, "account": account}},
        "success_url": success_url,
        "cancel_url": cancel_url,
    }
    sessions = (
        stripe_client.v1.checkout.sessions
        if hasattr(stripe_client, "v1")
        else stripe_client.checkout.sessions
    )
    session = sessions.create(params=params)
    return str(session.id), str(session.url)


# -- what an HTTP route answers (FastAPI and Flask share these) -----------------------------


class PaymentProviderError(CreditsError):
    """Stripe could not be reached or refused the request (HTTP 502): nothing was sold."""

    http_status = 502
    code = "payment_provider_unavailable"


class CheckoutRequest(BaseModel):
    """``POST /api/credits/checkout`` body: ``{"pack": "<id>"}``."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    pack: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,63}$", description="A pack id.")


def start_checkout(
    stripe_client: Any, catalog: Catalog, *, account: str, pack: str, origin: str
) -> dict[str, Any]:
    """Create the Checkout Session for the signed-in ``account`` and answer its URL; the
    buyer returns to ``<origin>/credits``. An unknown pack is a ValidationError (422)."""
    chosen = catalog.pack(pack)
    stripe = _stripe()
    failure: type[Exception] = getattr(stripe, "StripeError", None) or stripe.error.StripeError
    try:
        session_id, url = create_checkout_session(
            stripe_client,
            catalog,
            pack=pack,
            account=account,
            success_url=f"{origin}/credits?checkout=success&session={{CHECKOUT_SESSION_ID}}",
            cancel_url=f"{origin}/credits?checkout=cancelled",
        )
    except failure as exc:
        raise PaymentProviderError(f"Stripe refused the Checkout Session: {exc}") from exc
    return {
        "id": session_id,
        "url": url,
        "pack": pack,
        "credits": chosen.credits,
        "amount": chosen.amount,
        "currency": chosen.currency,
    }


def webhook_answer(outcome: StripeOutcome) -> tuple[int, dict[str, Any]]:
    """(status, body) for a handled delivery: 409 asks Stripe to deliver it again later
    (it refers to a payment not seen yet), 200 acknowledges everything else."""
    body = {"received": outcome.http_status == 200, **outcome.model_dump(mode="json")}
    return outcome.http_status, body
