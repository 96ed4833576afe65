"""The money routes through the Flask integration (examples/flask_money.py) on a real
Redis: a Checkout Session through the stripe library against the local Stripe stand-in,
and Stripe's signed webhooks, each applied once."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

import stripe_events as se
from clerk_keys import ORIGIN, KeyPair
from sparked_credits import CreditsClient
from sparked_credits.integrations.flask import ClerkAuth, setup_credits
from sparked_credits.pricing import load_price_table
from stripe_standin import API_KEY, StripeStandIn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
from flask_money import add_money_routes

KEYS = KeyPair("ins_flask_money")
USER = "user_flaskbuyer"


@pytest.fixture
def flask_app(redis_url: str, tmp_path: Path) -> Iterator[tuple[Any, StripeStandIn, Any]]:
    pricing = tmp_path / "pricing.toml"
    pricing.write_text(se.CATALOG_TOML)
    catalog = load_price_table(pricing).catalog
    standin = StripeStandIn({se.PRICE_STARTER: (500, "usd")})
    credits = CreditsClient(redis_url, app="flask.sparked.world")
    app = Flask(__name__)
    setup_credits(
        app, credits, auth=ClerkAuth(jwt_key=KEYS.public_pem, authorized_parties=[ORIGIN])
    )
    add_money_routes(
        app, credits, catalog, webhook_secret=se.SECRET, api_key=API_KEY, api_base=standin.url
    )
    yield app.test_client(), standin, credits
    credits.close()
    standin.close()


def test_flask_sells_a_pack_once(flask_app: tuple[Any, StripeStandIn, Any]) -> None:
    http, standin, credits = flask_app
    auth = {"Authorization": f"Bearer {KEYS.token(sub=USER)}"}
    assert http.post("/api/credits/checkout", json={"pack": "starter"}).status_code == 401
    unknown = http.post("/api/credits/checkout", json={"pack": "nope"}, headers=auth)
    assert unknown.status_code == 422
    assert unknown.get_json()["error"] == "validation_error"
    created = http.post("/api/credits/checkout", json={"pack": "starter"}, headers=auth)
    assert created.status_code == 200, created.get_data(as_text=True)
    session = created.get_json()
    assert session["url"].startswith("https://checkout.stripe.com/")
    assert standin.requests[-1]["form"]["client_reference_id"] == USER

    body = json.dumps(standin.pay(session["id"])).encode()
    for _ in range(3):
        done = http.post(
            "/api/webhooks/stripe", data=body, headers={"Stripe-Signature": se.sign(body)}
        )
        assert done.status_code == 200, done.get_data(as_text=True)
    assert credits.get_balance(USER) == 500
    pi = standin.sessions[session["id"]]["payment_intent"]
    early = se.refunded("pi_unseen", amount=500, refunded=500, before=0)
    assert (
        http.post(
            "/api/webhooks/stripe", data=early, headers={"Stripe-Signature": se.sign(early)}
        ).status_code
        == 409
    )
    refund = se.refunded(pi, amount=500, refunded=500, before=0)
    for _ in range(2):
        answer = http.post(
            "/api/webhooks/stripe", data=refund, headers={"Stripe-Signature": se.sign(refund)}
        )
        assert answer.get_json()["outcome"] == "revoked"
    assert credits.get_balance(USER) == 0
    forged = http.post(
        "/api/webhooks/stripe", data=body, headers={"Stripe-Signature": se.sign(body, "whsec_x")}
    )
    assert forged.status_code == 400
    assert forged.get_json()["reason"] == "bad_signature"
    malformed = se.envelope("charge.refunded", {"id": 3})
    bad = http.post(
        "/api/webhooks/stripe", data=malformed, headers={"Stripe-Signature": se.sign(malformed)}
    )
    assert bad.status_code == 400
    assert credits.get_balance(USER) == 0
