"""Property tests of the example app's HTTP edge, on a real Redis.

* schemathesis generates requests for every operation of the app's OpenAPI schema, with
  a valid session token (an admin's, so the admin route is exercised past its check):
  no answer may be a 5xx, and a refusal (4xx) may not change any balance or ledger.
* hypothesis generates payloads for the three webhooks, validly signed: Svix-signed Clerk
  events (signed exactly as Svix signs), training reports signed with the app's
  ``X-Train-Signature: sha256=<HMAC>`` scheme, and Stripe events signed as Stripe signs:
  again no 5xx, no change on a refusal. The checkout route creates its sessions on the
  local Stripe stand-in (tests/stripe_standin.py).

Examples are bounded so that this file runs in seconds.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import pytest
import redis
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from starlette.testclient import TestClient
from svix.webhooks import Webhook

import stripe_events as se
from clerk_keys import ORIGIN, KeyPair
from credits_app import Settings, create_app
from sparked_credits.pricing import load_price_table, set_price_table
from stripe_standin import API_KEY, StripeStandIn

KEYS = KeyPair("ins_fuzz")
ADMIN = "user_fuzzadmin"
WEBHOOK_SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
TRAIN_SECRET = "train-fuzz-secret"
CRON_SECRET = "cron-fuzz-secret"


def _settings(url: str, stripe_base: str | None = None) -> Settings:
    return Settings(
        stripe_api_key=API_KEY,
        stripe_api_base=stripe_base,
        stripe_webhook_secret=se.SECRET,
        storage_url=url,
        clerk_jwt_key=KEYS.public_pem,
        authorized_parties=(ORIGIN,),
        clerk_webhook_secret=WEBHOOK_SECRET,
        cron_secret=CRON_SECRET,
        admin_user_ids=frozenset({ADMIN}),
        train_webhook_secret=TRAIN_SECRET,
        rate_limit=None,
    )


@pytest.fixture(scope="module")
def standin() -> Iterator[StripeStandIn]:
    server = StripeStandIn({se.PRICE_STARTER: (500, "usd"), "price_1Big": (2000, "usd")})
    yield server
    server.close()


@pytest.fixture
def fuzz_app(redis_url: str, standin: StripeStandIn, tmp_path_factory: Any) -> Iterator[Any]:
    pricing = tmp_path_factory.mktemp("fuzz") / "pricing.toml"
    pricing.write_text(se.CATALOG_TOML)
    previous = set_price_table(load_price_table(pricing))  # the app's packs and plans
    try:
        app = create_app(_settings(redis_url, standin.url))
        with TestClient(app):  # runs the lifespan: the store is closed at the end
            yield app
    finally:
        set_price_table(previous)


def ledger_state(url: str) -> dict[bytes, Any]:
    """Every balance and the length of every ledger: what a refusal must leave alone."""
    raw = redis.Redis.from_url(url)
    try:
        state: dict[bytes, Any] = {}
        for key in raw.scan_iter(match="balance:*"):
            state[key] = raw.get(key)
        for key in raw.scan_iter(match="txs:*"):
            state[key] = raw.xlen(key)
        return state
    finally:
        raw.close()


def token() -> str:
    return KEYS.token(sub=ADMIN)


def test_every_operation_no_5xx_and_no_change_on_refusal(fuzz_app: Any, redis_url: str) -> None:
    """Every operation of the schema, with generated parameters and bodies (valid and
    not), signed in as an admin who has credits."""
    with TestClient(fuzz_app) as http:
        http.post("/api/admin/credits/grant", json={"user_id": ADMIN, "amount": 5000},
                  headers={"Authorization": f"Bearer {token()}"})
    api = schemathesis.openapi.from_asgi("/openapi.json", fuzz_app)
    operations = [result.ok() for result in api.get_all_operations()]
    assert len(operations) >= 13  # every API route of the app is in the schema
    for operation in operations:
        _fuzz(operation, GenerationMode.POSITIVE, redis_url)()
        with contextlib.suppress(Unsatisfiable):  # invalid inputs, where there are any
            _fuzz(operation, GenerationMode.NEGATIVE, redis_url)()


def _fuzz(operation: Any, mode: Any, redis_url: str) -> Any:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck),
              database=None)
    def check(case: Any) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {token()}"}
        before = ledger_state(redis_url)
        response = case.call()
        where = (case.method, case.path, case.body, response.text[:300])
        assert response.status_code < 500, where
        if 400 <= response.status_code < 500:
            assert isinstance(response.json().get("error"), str), where
            assert ledger_state(redis_url) == before, where

    return check


# -- webhooks ---------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
clerk_events = st.fixed_dictionaries(
    {"type": st.sampled_from(["user.created", "user.deleted", "organization.created", "x"])
     | st.text(max_size=10),
     "data": st.fixed_dictionaries({}, optional={"id": json_values | st.text(max_size=140)})
     | json_values},
    optional={"object": json_values, "timestamp": json_values},
) | json_values


def _raw(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


def svix_headers(body: bytes, msg_id: str) -> dict[str, str]:
    now = datetime.now(timezone.utc)
    return {
        "svix-id": msg_id,
        "svix-timestamp": str(int(now.timestamp())),
        "svix-signature": Webhook(WEBHOOK_SECRET).sign(msg_id, now, body.decode()),
        "content-type": "application/json",
    }


@given(event=clerk_events, msg_id=st.text(alphabet="abcdefghij_0123456789", min_size=1,
                                          max_size=30))
@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_signed_clerk_webhooks_never_5xx(fuzz_app: Any, redis_url: str, event: Any,
                                         msg_id: str) -> None:
    body = _raw(event)
    before = ledger_state(redis_url)
    with TestClient(fuzz_app, raise_server_exceptions=False) as http:
        response = http.post("/api/webhooks/clerk", content=body,
                             headers=svix_headers(body, msg_id))
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert ledger_state(redis_url) == before


train_reports = st.fixed_dictionaries(
    {},
    optional={
        "job_id": json_values | st.text(max_size=20),
        "user_id": json_values | st.just("user_fuzz"),
        "hold_id": json_values | st.just("1-1"),
        "reserved": json_values | st.integers(),
        "status": st.sampled_from(["succeeded", "failed"]) | json_values,
        "gpu_hours": st.floats() | json_values,
    },
) | json_values


@given(report=train_reports)
@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_signed_training_reports_never_5xx(fuzz_app: Any, redis_url: str, report: Any) -> None:
    body = _raw(report)
    signature = "sha256=" + hmac.new(TRAIN_SECRET.encode(), body, hashlib.sha256).hexdigest()
    before = ledger_state(redis_url)
    with TestClient(fuzz_app, raise_server_exceptions=False) as http:
        response = http.post("/api/train/webhook", content=body, headers={
            "X-Train-Signature": signature, "content-type": "application/json"})
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert ledger_state(redis_url) == before


stripe_objects = st.fixed_dictionaries(
    {},
    optional={
        "id": st.text(max_size=30) | json_values,
        "mode": st.sampled_from(["payment", "subscription"]) | json_values,
        "payment_status": st.sampled_from(["paid", "unpaid"]) | json_values,
        "client_reference_id": st.just("user_fuzz") | json_values,
        "metadata": st.just({"pack": "starter"}) | json_values,
        "amount_total": st.just(500) | json_values,
        "currency": st.just("usd") | json_values,
        "payment_intent": st.just("pi_fuzz") | json_values,
        "created": st.integers(min_value=0, max_value=2**40) | json_values,
        "amount": st.integers() | json_values,
        "amount_refunded": st.integers() | json_values,
        "status": st.sampled_from(["won", "lost"]) | json_values,
        "lines": json_values,
    },
)
stripe_payloads = st.fixed_dictionaries(
    {
        "id": st.text(max_size=20),
        "type": st.sampled_from([
            "checkout.session.completed", "checkout.session.async_payment_succeeded",
            "charge.refunded", "charge.dispute.created", "charge.dispute.closed",
            "invoice.paid", "customer.subscription.deleted",
        ]) | st.text(max_size=20),
        "data": st.fixed_dictionaries({"object": stripe_objects}) | json_values,
    },
) | json_values


@given(event=stripe_payloads)
@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_signed_stripe_webhooks_never_5xx(fuzz_app: Any, redis_url: str, event: Any) -> None:
    body = _raw(event)
    before = ledger_state(redis_url)
    with TestClient(fuzz_app, raise_server_exceptions=False) as http:
        response = http.post("/api/webhooks/stripe", content=body, headers={
            "Stripe-Signature": se.sign(body), "content-type": "application/json"})
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert ledger_state(redis_url) == before
