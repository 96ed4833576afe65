"""Stripe events as Stripe sends them: the documented object shapes (only the fields the
handler reads, plus a few it must ignore), signed exactly as Stripe signs:
``Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">``, keyed with the
whole ``whsec_...`` secret."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import time
from typing import Any

SECRET = "whsec_test_c2VjcmV0LWZvci10aGUtdGVzdHM"
PRICE_STARTER, PRICE_PRO, PRICE_TEAM = "price_1Starter", "price_1Pro", "price_1Team"
CATALOG_TOML = f"""
[packs.starter]
credits = 500
price = "{PRICE_STARTER}"
amount = 500
currency = "usd"

[packs.big]
credits = 3000
price = "price_1Big"
amount = 2000
currency = "usd"
expires_in_days = 365

[plans.pro]
credits = 1000
price = "{PRICE_PRO}"
rollover_cap = 300

[plans.team]
credits = 5000
price = "{PRICE_TEAM}"
rollover_cap = 1000
"""

_ids = itertools.count(1)


def sign(body: bytes, secret: str = SECRET, at: int | None = None) -> str:
    t = int(time.time()) if at is None else at
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def envelope(kind: str, obj: dict[str, Any], previous: dict[str, Any] | None = None) -> bytes:
    data: dict[str, Any] = {"object": obj}
    if previous is not None:
        data["previous_attributes"] = previous
    event = {
        "id": f"evt_{next(_ids):08d}",
        "object": "event",
        "api_version": "2024-06-20",
        "created": int(time.time()),
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": kind,
        "data": data,
    }
    return json.dumps(event).encode()


def checkout(
    account: str,
    pi: str,
    *,
    pack: str = "starter",
    amount: int = 500,
    currency: str = "usd",
    paid: bool = True,
    kind: str = "checkout.session.completed",
    customer: str | None = None,
) -> bytes:
    return envelope(
        kind,
        {
            "id": f"cs_test_{pi}",
            "object": "checkout.session",
            "mode": "payment",
            "status": "complete",
            "payment_status": "paid" if paid else "unpaid",
            "client_reference_id": account,
            "metadata": {"pack": pack},
            "amount_total": amount,
            "currency": currency,
            "payment_intent": pi,
            "customer": customer,
            "created": int(time.time()),
            "url": None,
        },
    )


def refunded(pi: str, *, amount: int, refunded: int, before: int) -> bytes:
    return envelope(
        "charge.refunded",
        {
            "id": f"ch_{pi}",
            "object": "charge",
            "amount": amount,
            "amount_captured": amount,
            "amount_refunded": refunded,
            "currency": "usd",
            "payment_intent": pi,
            "refunded": refunded == amount,
            "paid": True,
        },
        {"amount_refunded": before, "refunded": False},
    )


def dispute(kind: str, pi: str, dispute_id: str, *, amount: int, status: str) -> bytes:
    return envelope(
        kind,
        {
            "id": dispute_id,
            "object": "dispute",
            "amount": amount,
            "charge": f"ch_{pi}",
            "payment_intent": pi,
            "currency": "usd",
            "reason": "fraudulent",
            "status": status,
        },
    )


def invoice_paid(
    sub: str,
    invoice: str,
    *,
    start: int,
    end: int,
    price: str = PRICE_PRO,
    customer: str = "cus_1",
    account: str | None = None,
    reason: str = "subscription_cycle",
) -> bytes:
    return envelope(
        "invoice.paid",
        {
            "id": invoice,
            "object": "invoice",
            "billing_reason": reason,
            "customer": customer,
            "status": "paid",
            "parent": {
                "type": "subscription_details",
                "subscription_details": {
                    "subscription": sub,
                    "metadata": {"account": account} if account else {},
                },
            },
            "lines": {
                "object": "list",
                "data": [
                    {
                        "id": f"il_{invoice}",
                        "object": "line_item",
                        "period": {"start": start, "end": end},
                        "pricing": {"type": "price_details", "price_details": {"price": price}},
                    }
                ],
            },
        },
    )


def subscription_checkout(account: str, customer: str, sub: str) -> bytes:
    return envelope(
        "checkout.session.completed",
        {
            "id": f"cs_test_{sub}",
            "object": "checkout.session",
            "mode": "subscription",
            "payment_status": "paid",
            "client_reference_id": account,
            "customer": customer,
            "subscription": sub,
            "metadata": {},
            "amount_total": 1500,
            "currency": "usd",
            "created": int(time.time()),
        },
    )


def subscription_deleted(sub: str, ended_at: int) -> bytes:
    return envelope(
        "customer.subscription.deleted",
        {"id": sub, "object": "subscription", "status": "canceled", "ended_at": ended_at},
    )
