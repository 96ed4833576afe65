"""The credits page's Buy credits button, in a real browser: it lists the price file's
packs, creates a Checkout Session (through the stripe library, against the local Stripe
stand-in) and sends the browser to its URL; Stripe's signed webhook then credits the pack,
once, and the page shows it. Stripe's checkout page itself is answered by the test."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, expect, sync_playwright

import credits_app
import stripe_events as se
from sparked_credits.backends.memory import reset_memory_store
from sparked_credits.pricing import load_price_table, set_price_table
from stripe_standin import API_KEY, StripeStandIn
from test_credits_page import CHROMIUM_ARGS, ThreadServer, chromium_binary, dev_settings


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ThreadServer, StripeStandIn]]:
    standin = StripeStandIn({se.PRICE_STARTER: (500, "usd"), "price_1Big": (2000, "usd")})
    pricing = tmp_path_factory.mktemp("shop") / "pricing.toml"
    pricing.write_text(se.CATALOG_TOML)
    previous = set_price_table(load_price_table(pricing))
    name = f"shop-{uuid.uuid4().hex[:8]}"
    settings = dev_settings(
        name,
        stripe_api_key=API_KEY,
        stripe_api_base=standin.url,
        stripe_webhook_secret=se.SECRET,
        rate_limit=None,
    )
    try:
        with ThreadServer(credits_app.create_app(settings)) as running:
            yield running, standin
    finally:
        set_price_table(previous)
        reset_memory_store(name)
        standin.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    binary = chromium_binary()
    if binary is None:
        pytest.skip("no chromium binary: apt-get install chromium (or set CHROMIUM_BIN)")
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=binary, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def test_buy_credits_sells_a_pack(
    browser: Browser, shop: tuple[ThreadServer, StripeStandIn], tmp_path: Path
) -> None:
    server, standin = shop
    user = f"user_shop_{uuid.uuid4().hex[:6]}"
    context = browser.new_context(viewport={"width": 1180, "height": 900})
    context.set_default_timeout(10_000)
    # Stripe's hosted checkout page cannot be reached: the test answers it.
    context.route(
        "https://checkout.stripe.com/**",
        lambda route: route.fulfill(status=200, content_type="text/html",
                                    body="<h1>Stripe Checkout (stand-in)</h1>"),
    )
    page = context.new_page()
    page.goto(f"{server.url}/credits?user={user}")
    expect(page.locator("#balance")).to_have_attribute("data-balance", "100")

    page.locator("#buy-credits-button").click()
    packs = page.locator(".buy-pack")
    expect(packs).to_have_count(2)
    expect(page.locator('.buy-pack[data-pack="starter"]')).to_contain_text("500 credits")
    page.locator('.buy-pack[data-pack="starter"]').click()
    page.wait_for_url("https://checkout.stripe.com/**")
    session_id = page.url.rsplit("/", 1)[1]
    assert standin.sessions[session_id]["client_reference_id"] == user

    # The buyer pays; Stripe delivers the event (twice: a redelivery).
    body = json.dumps(standin.pay(session_id)).encode()
    for _ in range(2):
        answer = httpx.post(f"{server.url}/api/webhooks/stripe", content=body,
                            headers={"Stripe-Signature": se.sign(body)})
        assert answer.status_code == 200, answer.text
    page.goto(f"{server.url}/credits?user={user}&checkout=success")
    expect(page.locator("#balance")).to_have_attribute("data-balance", "600")
    expect(page.locator("#status")).to_contain_text("Payment received")
    context.close()
