"""Selling credits over real HTTP: the example app in two uvicorn processes on one real
Redis, Checkout Sessions created through the real ``stripe`` library against a local
stand-in for the Stripe API (tests/stripe_standin.py: the real API cannot be reached here),
and Stripe's webhooks signed as Stripe signs them, each delivered three times, concurrently,
out of order, to both processes. Every payment is credited or clawed back exactly once.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

import stripe_events as se
from clerk_keys import ORIGIN, KeyPair
from redis_servers import RedisServer
from sparked_credits import CreditsClient
from stripe_standin import API_KEY, StripeStandIn
from uvicorn_process import UvicornProcess

ROOT = Path(__file__).resolve().parent.parent
USER = "user_buyer"


@pytest.fixture(scope="module")
def keys() -> KeyPair:
    return KeyPair("ins_money")


@pytest.fixture(scope="module")
def standin() -> Iterator[StripeStandIn]:
    server = StripeStandIn({se.PRICE_STARTER: (500, "usd"), "price_1Big": (2000, "usd")})
    yield server
    server.close()


@pytest.fixture(scope="module")
def apps(
    server_pool: Any, keys: KeyPair, standin: StripeStandIn, tmp_path_factory: Any
) -> Iterator[list[UvicornProcess]]:
    redis_server: RedisServer = server_pool.server("redis7")
    pricing = tmp_path_factory.mktemp("money") / "pricing.toml"
    pricing.write_text(se.CATALOG_TOML)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
        "REDIS_URL": redis_server.url,
        "CLERK_JWT_KEY": keys.public_pem.strip().replace("\n", "\\n"),
        "CLERK_AUTHORIZED_PARTIES": ORIGIN,
        "SPARKED_CREDITS_PRICING": str(pricing),
        "STRIPE_API_KEY": API_KEY,
        "STRIPE_API_BASE": standin.url,
        "STRIPE_WEBHOOK_SECRET": se.SECRET,
        "CREDITS_RATE_LIMIT": "off",
    }
    for name in ("UPSTASH_REDIS_URL", "UPSTASH_REDIS_REST_URL"):
        env.pop(name, None)
    servers = [
        UvicornProcess("credits_app:create_app", ROOT / "examples", {**env, "SPARKED_APP": n}, n)
        for n in ("app.sparked.world", "canvas.sparked.world")
    ]
    try:
        for server in servers:
            server.wait_ready()
        yield servers
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def http(apps: list[UvicornProcess]) -> Iterator[list[httpx.Client]]:
    clients = [httpx.Client(base_url=a.url, timeout=20) for a in apps]
    yield clients
    for client in clients:
        client.close()


@pytest.fixture(autouse=True)
def _empty_redis(server_pool: Any) -> None:
    import redis

    r = redis.Redis.from_url(server_pool.server("redis7").url)
    r.flushall()
    r.close()


def auth(keys: KeyPair, user: str = USER) -> dict[str, str]:
    return {"Authorization": f"Bearer {keys.token(sub=user)}"}


def post_event(client: httpx.Client, body: bytes) -> httpx.Response:
    headers = {"Stripe-Signature": se.sign(body), "Content-Type": "application/json"}
    return client.post("/api/webhooks/stripe", content=body, headers=headers)


def storm(clients: list[httpx.Client], bodies: list[bytes], seed: int) -> list[httpx.Response]:
    """Each body three times, shuffled, to both processes at once; a 409 (an event before
    the payment it refers to) is delivered again, as Stripe would."""
    deliveries = [(i % 2, body) for i, body in enumerate(bodies * 3)]
    random.Random(seed).shuffle(deliveries)

    def send(item: tuple[int, bytes]) -> httpx.Response:
        which, body = item
        for _ in range(50):
            response = post_event(clients[which], body)
            if response.status_code != 409:
                return response
        return response

    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(send, deliveries))


def balance(client: httpx.Client, keys: KeyPair) -> int:
    response = client.get("/api/credits/balance", headers=auth(keys))
    assert response.status_code == 200, response.text
    return int(response.json()["balance"])


def history(client: httpx.Client, keys: KeyPair) -> list[dict[str, Any]]:
    response = client.get("/api/credits/history?limit=100", headers=auth(keys))
    assert response.status_code == 200, response.text
    entries: list[dict[str, Any]] = response.json()["transactions"]
    return entries


def test_the_page_sells_a_pack_end_to_end(
    http: list[httpx.Client], keys: KeyPair, standin: StripeStandIn
) -> None:
    page = http[0].get("/credits")
    assert page.status_code == 200
    assert 'id="buy-credits-button"' in page.text
    assert 'data-pack="starter"' in page.text
    assert 'data-pack="big"' in page.text

    created = http[0].post("/api/credits/checkout", json={"pack": "starter"}, headers=auth(keys))
    assert created.status_code == 200, created.text
    session = created.json()
    assert session["url"].startswith("https://checkout.stripe.com/")
    sent = standin.requests[-1]["form"]
    assert sent["client_reference_id"] == USER
    assert sent["metadata"] == {"pack": "starter"}
    assert sent["line_items"] == [{"price": se.PRICE_STARTER, "quantity": "1"}]

    paid = json.dumps(standin.pay(session["id"])).encode()
    pi = standin.sessions[session["id"]]["payment_intent"]
    refund = se.refunded(pi, amount=500, refunded=200, before=0)
    responses = storm(http, [paid, refund], seed=1)
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    # 500 credited once, 200 of them (the refunded share) revoked once.
    assert balance(http[1], keys) == 300
    entries = (
        http[0].get("/api/credits/history?limit=50", headers=auth(keys)).json()["transactions"]
    )
    assert sorted((e["type"], e["delta"]) for e in entries) == [("credit", 500), ("revoke", -200)]


def test_every_payment_event_sequence_applies_once(
    http: list[httpx.Client], keys: KeyPair, server_pool: Any
) -> None:
    now = int(time.time())
    day = 86400
    setup = [se.subscription_checkout(USER, "cus_9", "sub_9")]
    assert all(r.status_code == 200 for r in storm(http, setup, seed=2))
    events = [
        se.checkout(USER, "pi_a"),
        se.checkout(USER, "pi_b", kind="checkout.session.async_payment_succeeded"),
        se.refunded("pi_a", amount=500, refunded=100, before=0),
        se.refunded("pi_a", amount=500, refunded=500, before=100),
        se.dispute("charge.dispute.created", "pi_b", "du_b", amount=500, status="open"),
        se.dispute("charge.dispute.closed", "pi_b", "du_b", amount=500, status="won"),
        se.invoice_paid("sub_9", "in_1", start=now - day, end=now + 30 * day, customer="cus_9"),
        se.envelope("payment_method.attached", {"id": "pm_1"}),
    ]
    responses = storm(http, events, seed=3)
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    # pi_a: credited, fully refunded; pi_b: credited, disputed, won back; a period of pro.
    assert balance(http[0], keys) == 500 + 1000
    entries = (
        http[0].get("/api/credits/history?limit=100", headers=auth(keys)).json()["transactions"]
    )
    kinds = sorted((e["type"], e["delta"]) for e in entries)
    assert kinds == [
        ("credit", 500),
        ("credit", 500),
        ("credit", 500),
        ("credit", 1000),
        ("revoke", -500),
        ("revoke", -400),
        ("revoke", -100),
    ]
    # The ledger adds up and the stored lots are those it implies.
    with CreditsClient(server_pool.server("redis7").url) as direct:
        result = direct.reconcile(USER, full=True)
        assert result.matched, result
        assert result.lots_matched, result


def test_bad_requests_are_4xx_and_write_nothing(http: list[httpx.Client], keys: KeyPair) -> None:
    body = se.checkout(USER, "pi_z")
    forged = http[0].post(
        "/api/webhooks/stripe",
        content=body,
        headers={"Stripe-Signature": se.sign(body, "whsec_wrong")},
    )
    assert forged.status_code == 400
    assert forged.json()["reason"] == "bad_signature"
    unsigned = http[0].post("/api/webhooks/stripe", content=body)
    assert unsigned.status_code == 400
    malformed = post_event(http[1], se.envelope("charge.refunded", {"id": "ch_1"}))
    assert malformed.status_code == 400
    assert malformed.json()["reason"] == "malformed_body"
    unknown = http[0].post("/api/credits/checkout", json={"pack": "nope"}, headers=auth(keys))
    assert unknown.status_code == 422
    assert http[0].post("/api/credits/checkout", json={"pack": "starter"}).status_code == 401
    bad_shape = http[0].post("/api/credits/checkout", json={"pack": 5}, headers=auth(keys))
    assert bad_shape.status_code == 422
    assert balance(http[0], keys) == 0
    entries = http[0].get("/api/credits/history", headers=auth(keys)).json()["transactions"]
    assert entries == []
