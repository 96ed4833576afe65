"""The credits page of the example app, in a real browser, and its dev-only sign-in.

The browser tests serve the example app with uvicorn (in a thread, on a free loopback port,
``memory://`` with the dev sign-in) and drive Debian's Chromium through Playwright
(``apt-get install chromium``; ``CHROMIUM_BIN`` names another binary). They skip only when
no Chromium binary exists at all. A failing browser test leaves a screenshot and the page's
HTML in ``$CREDITS_PAGE_ARTIFACTS`` (default: the test's tmp_path) and names it in the report.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import jwt
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from playwright.sync_api import Browser, Page, Playwright, expect, sync_playwright

import credits_app
from clerk_keys import KeyPair
from conftest import PHASE_REPORTS
from redis_servers import free_port
from sparked_credits import ConfigurationError
from sparked_credits.backends.memory import reset_memory_store

CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
# A zone far from UTC: "today" on the page is the browser's day, not the server's.
BROWSER_TZ = "Pacific/Kiritimati"


def chromium_binary() -> str | None:
    given = os.environ.get("CHROMIUM_BIN")
    if given:
        return given
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


def dev_settings(name: str, **overrides: Any) -> credits_app.Settings:
    return credits_app.Settings(storage_url=f"memory://{name}", dev_signin=True, **overrides)


# -- dev sign-in, without a browser -----------------------------------------------------


@pytest.fixture
def dev_app() -> Iterator[TestClient]:
    name = f"dev-{uuid.uuid4().hex[:8]}"
    with TestClient(credits_app.create_app(dev_settings(name))) as client:
        yield client
    reset_memory_store(name)


def test_dev_signin_gives_a_demo_user_100_once(dev_app: TestClient) -> None:
    first = dev_app.post("/api/dev/signin")
    assert first.status_code == 200, first.text
    session = first.json()
    assert (session["user_id"], session["balance"], session["expires_in"]) == (
        "user_demo", 100, 60
    )
    header = jwt.get_unverified_header(session["token"])
    claims = jwt.decode(session["token"], options={"verify_signature": False})
    assert header["alg"] == "RS256"
    assert claims["sub"] == "user_demo"
    assert claims["exp"] - claims["iat"] == 60
    user = {"Authorization": f"Bearer {session['token']}"}
    assert dev_app.post("/api/chat", json={"message": "hi"}, headers=user).json()["balance"] == 90
    again = dev_app.post("/api/dev/signin").json()  # signing in again grants nothing more
    assert again["balance"] == 90
    other = dev_app.post("/api/dev/signin", json={"user": "user_alice"}).json()
    assert (other["user_id"], other["balance"]) == ("user_alice", 100)
    assert dev_app.post("/api/dev/signin", json={"user": "admin"}).status_code == 422


def test_dev_tokens_are_verified_like_clerk_tokens(dev_app: TestClient) -> None:
    # Signed by another key (another process, a restart, a forger): refused.
    forged = KeyPair("dev-forged").token(sub="user_demo")
    response = dev_app.get("/api/credits/balance", headers={"Authorization": f"Bearer {forged}"})
    assert response.status_code == 401
    assert response.json()["reason"] == "bad_signature"
    assert dev_app.get("/api/credits/balance").status_code == 401


def test_dev_signin_only_on_memory_and_never_next_to_clerk(redis_url: str) -> None:
    with pytest.raises(ConfigurationError, match="memory://"):
        credits_app.create_app(credits_app.Settings(storage_url=redis_url, dev_signin=True))
    with pytest.raises(ConfigurationError, match="unset one"):
        credits_app.create_app(
            dev_settings("dev-and-clerk", clerk_jwt_key=KeyPair("k").public_pem)
        )
    with pytest.raises(ConfigurationError, match="CREDITS_DEV_USER"):
        credits_app.create_app(dev_settings("dev-bad-user", dev_user="root"))
    env = credits_app.Settings.from_env({"CREDITS_DEV_SIGNIN": "1", "CREDITS_DEV_USER": "user_x"})
    assert (env.dev_signin, env.dev_user) == (True, "user_x")
    assert credits_app.Settings.from_env({}).dev_signin is False


def test_with_clerk_there_is_no_dev_signin_and_the_page_still_works() -> None:
    keys = KeyPair("ins_page")
    settings = credits_app.Settings(
        storage_url="memory://clerk-page", clerk_jwt_key=keys.public_pem
    )
    with TestClient(credits_app.create_app(settings)) as http:
        assert http.post("/api/dev/signin").status_code == 404
        page = http.get("/credits")
        assert page.status_code == 200
        assert '"devSignin": false' in page.text
        assert "Development sign-in" not in page.text
        # The page's routes take Clerk's tokens, as header or __session cookie.
        token = keys.token(sub="user_clerk")
        bearer = http.get("/api/credits/balance", headers={"Authorization": f"Bearer {token}"})
        assert bearer.json() == {"balance": 0}
        usage = http.get("/api/credits/usage", headers={"Cookie": f"__session={token}"})
        assert (usage.status_code, usage.json()["total"]) == (200, 0)
    reset_memory_store("clerk-page")


def test_page_is_served_offline_with_prices(dev_app: TestClient) -> None:
    assert dev_app.get("/", follow_redirects=False).headers["location"] == "/credits"
    page = dev_app.get("/credits")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    html = page.text
    for text in ("Send message · 10", "Simple · 50", "Complex · 75", "Generate · <span"):
        assert text in html
    assert "<dialog" in html
    assert 'href="/credits/buy"' in html
    # Everything it loads comes from the app itself: no CDN.
    assert 'src="http' not in html
    assert 'href="http' not in html
    script = dev_app.get("/static/credits/credits.js")
    assert script.status_code == 200
    assert "javascript" in script.headers["content-type"]
    assert dev_app.get("/static/credits/credits.css").status_code == 200
    assert "buy credits" in dev_app.get("/credits/buy").text.lower()


# -- the page in a browser --------------------------------------------------------------


class ThreadServer:
    """The example app under uvicorn in a daemon thread, on a free loopback port."""

    def __init__(self, app: FastAPI) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, name="credits-page", daemon=True)

    def __enter__(self) -> ThreadServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the example app did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        assert not self.thread.is_alive(), "uvicorn did not stop"


@pytest.fixture(scope="module")
def server() -> Iterator[ThreadServer]:
    name = f"page-{uuid.uuid4().hex[:8]}"
    with ThreadServer(credits_app.create_app(dev_settings(name))) as running:
        yield running
    reset_memory_store(name)


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    if chromium_binary() is None:
        pytest.skip("no chromium binary: apt-get install chromium (or set CHROMIUM_BIN)")
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    binary = chromium_binary()
    assert binary is not None
    launched = playwright.chromium.launch(executable_path=binary, args=CHROMIUM_ARGS)
    yield launched
    launched.close()


@pytest.fixture
def user(request: pytest.FixtureRequest) -> str:
    """A fresh demo user per test (the dev sign-in gives each 100 credits)."""
    return f"user_{request.node.name[5:25]}_{uuid.uuid4().hex[:6]}".replace("-", "_")


@pytest.fixture
def page(
    browser: Browser, server: ThreadServer, user: str, request: pytest.FixtureRequest,
    tmp_path: Path,
) -> Iterator[Page]:
    context = browser.new_context(
        viewport={"width": 1180, "height": 900}, timezone_id=BROWSER_TZ, locale="en-GB"
    )
    context.set_default_timeout(10_000)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    tab.goto(f"{server.url}/credits?user={user}")
    yield tab
    reports = request.node.stash.get(PHASE_REPORTS, {})
    if any(r.failed for r in reports.values()):
        folder = Path(os.environ.get("CREDITS_PAGE_ARTIFACTS") or tmp_path)
        folder.mkdir(parents=True, exist_ok=True)
        shot = folder / f"{request.node.name}.png"
        tab.screenshot(path=str(shot), full_page=True)
        (folder / f"{request.node.name}.html").write_text(tab.content())
        request.node.add_report_section("teardown", "screenshot", f"{shot}\nJS errors: {errors}")
        print(f"screenshot of the failed page: {shot}")
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def api(server: ThreadServer, user: str) -> httpx.Client:
    """The same user, through the JSON API (what the page reads, checked behind its back)."""
    token = httpx.post(f"{server.url}/api/dev/signin", json={"user": user}).json()["token"]
    return httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=10
    )


def history_rows(page: Page) -> list[list[str]]:
    rows = page.locator("#history-rows tr[data-entry-id]")
    return [
        [c.strip() for c in rows.nth(i).locator("td").all_inner_texts()[:5]]
        for i in range(rows.count())
    ]


def test_page_loads_with_100_credits(page: Page, user: str) -> None:
    expect(page.locator("#balance")).to_have_attribute("data-balance", "100")
    expect(page.locator("#balance-badge")).to_contain_text("100 credits")
    expect(page.locator("#user")).to_have_text(user)
    expect(page.locator("#history-rows tr[data-entry-id]")).to_have_count(1)
    assert history_rows(page) == [["init", "initialize", "app.sparked.world", "+100", "100"]]
    bars = page.locator("#usage-chart g.day")
    expect(bars).to_have_count(7)
    assert [bars.nth(i).get_attribute("data-total") for i in range(7)] == ["0"] * 7


def test_chat_message_shows_90_and_a_new_history_row(
    page: Page, server: ThreadServer, user: str
) -> None:
    expect(page.locator("#balance")).to_have_attribute("data-balance", "100")
    page.fill("#chat-message", "Hello from the browser")
    page.click("#chat-send")
    expect(page.locator("#balance")).to_have_attribute("data-balance", "90")
    expect(page.locator("#balance-badge")).to_contain_text("90 credits")
    expect(page.locator("#output")).to_have_text("echo: Hello from the browser")
    expect(page.locator("#history-rows tr[data-entry-id]")).to_have_count(2)
    assert history_rows(page)[0] == ["debit", "chat_message", "app.sparked.world", "-10", "90"]
    with api(server, user) as http:  # the store agrees with the page
        assert http.get("/api/credits/balance").json() == {"balance": 90}
        newest = http.get("/api/credits/history", params={"limit": 1}).json()["transactions"][0]
    assert page.locator("#history-rows tr").first.get_attribute("data-entry-id") == newest["id"]


def test_spending_down_opens_the_402_dialog_with_the_numbers(
    page: Page, server: ThreadServer, user: str
) -> None:
    expect(page.locator("#balance")).to_have_attribute("data-balance", "100")
    page.click("#canvas-complex")  # 75
    expect(page.locator("#balance")).to_have_attribute("data-balance", "25")
    dialog = page.locator("#insufficient-dialog")
    expect(dialog).not_to_be_visible()
    page.fill("#video-seconds", "3")  # 30 > 25
    expect(page.locator("#video-cost")).to_have_text("30")
    page.click("#video-generate")
    expect(dialog).to_be_visible()
    expect(dialog).to_have_attribute("open", "")
    expect(page.locator("#dialog-balance")).to_have_text("25")
    expect(page.locator("#dialog-required")).to_have_text("30")
    expect(page.locator("#dialog-shortfall")).to_have_text("5")
    expect(page.locator("#dialog-action")).to_have_text("This video")
    expect(page.locator("#buy-credits")).to_have_attribute("href", "/credits/buy")
    # Nothing was charged or written by the refused video.
    expect(page.locator("#balance")).to_have_attribute("data-balance", "25")
    expect(page.locator("#history-rows tr[data-entry-id]")).to_have_count(2)
    with api(server, user) as http:
        assert http.get("/api/credits/balance").json() == {"balance": 25}
    page.click("#dialog-close")
    expect(dialog).not_to_be_visible()
    page.click("#video-generate")  # again: the dialog comes back
    expect(dialog).to_be_visible()
    page.click("#buy-credits")
    expect(page).to_have_url(f"{server.url}/credits/buy")
    expect(page.locator("h1")).to_have_text("Buy credits")


def test_chart_shows_todays_usage_by_action_and_by_app(page: Page) -> None:
    expect(page.locator("#balance")).to_have_attribute("data-balance", "100")
    page.click("#chat-send")
    expect(page.locator("#balance")).to_have_attribute("data-balance", "90")
    page.click("#canvas-simple")
    expect(page.locator("#balance")).to_have_attribute("data-balance", "40")
    today = datetime.now(ZoneInfo(BROWSER_TZ)).date().isoformat()
    bar = page.locator("#usage-chart g.day[data-today='true']")
    expect(bar).to_have_attribute("data-total", "60")
    expect(bar).to_have_attribute("data-day", today)
    expect(bar.locator("title")).to_contain_text("60 credits")
    segments = {
        s.get_attribute("data-key"): s.get_attribute("data-value")
        for s in bar.locator("rect.segment").all()
    }
    assert segments == {"chat_message": "10", "canvas_simple": "50"}
    others = page.locator("#usage-chart g.day[data-today='false']")
    expect(others).to_have_count(6)
    assert {others.nth(i).get_attribute("data-total") for i in range(6)} == {"0"}
    assert [others.nth(i).locator("text.value").text_content() for i in range(6)] == ["0"] * 6
    page.check("input[name='group_by'][value='app']")
    expect(page.locator("#usage-chart svg")).to_have_attribute("data-group-by", "app")
    segment = page.locator("#usage-chart g.day[data-today='true'] rect.segment")
    expect(segment).to_have_count(1)
    expect(segment).to_have_attribute("data-key", "app.sparked.world")
    expect(segment).to_have_attribute("data-value", "60")


def test_history_is_paged_newest_first(page: Page, server: ThreadServer, user: str) -> None:
    expect(page.locator("#balance")).to_have_attribute("data-balance", "100")
    with api(server, user) as http:  # 10 messages through the API: 11 entries in all
        for i in range(10):
            assert http.post("/api/chat", json={"message": f"m{i}"}).status_code == 200
    page.reload()
    expect(page.locator("#balance")).to_have_attribute("data-balance", "0")
    rows = page.locator("#history-rows tr[data-entry-id]")
    expect(rows).to_have_count(10)
    after = [int(r[4]) for r in history_rows(page)]
    assert after == list(range(0, 100, 10))  # newest (balance 0) first
    expect(page.locator("#history-newer")).to_be_disabled()
    page.click("#history-older")
    expect(page.locator("#history-page")).to_have_text("Page 2")
    expect(rows).to_have_count(1)
    assert history_rows(page) == [["init", "initialize", "app.sparked.world", "+100", "100"]]
    expect(page.locator("#history-older")).to_be_disabled()
    page.click("#history-newer")
    expect(rows).to_have_count(10)
    expect(page.locator("#history-newer")).to_be_disabled()


def test_phone_width_no_sideways_scroll_and_one_signin(
    browser: Browser, server: ThreadServer, user: str
) -> None:
    """At 390 px (a phone) the page fits its width (only the history table scrolls, inside
    its wrapper), every control is usable, and one page load signs in once."""
    context = browser.new_context(
        viewport={"width": 390, "height": 844}, timezone_id=BROWSER_TZ, locale="en-GB",
        device_scale_factor=2, is_mobile=True, has_touch=True,
    )
    context.set_default_timeout(10_000)
    tab = context.new_page()
    signins: list[str] = []
    tab.on("request", lambda r: signins.append(r.url) if "/api/dev/signin" in r.url else None)
    try:
        tab.goto(f"{server.url}/credits?user={user}")
        expect(tab.locator("#balance")).to_have_attribute("data-balance", "100")
        expect(tab.locator("#history-rows tr[data-entry-id]")).to_have_count(1)
        expect(tab.locator("#usage-chart g.day")).to_have_count(7)
        assert len(signins) == 1, signins
        width = tab.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"the page is {width} px wide at a 390 px viewport"
        for selector in ("#balance-badge", "#usage-chart", "main button"):
            box = tab.locator(selector).first.bounding_box()
            assert box is not None
            assert box["x"] >= 0
            assert box["x"] + box["width"] <= 390, (selector, box)
    finally:
        context.close()


def test_low_balance_banner_shows_below_the_threshold(
    page: Page, server: ThreadServer, user: str
) -> None:
    expect(page.locator("#balance")).to_have_attribute("data-balance", "100")
    expect(page.locator("#low-balance")).to_be_hidden()
    store = get_credits_of(server)
    store.set_tier(user, None, low_balance=95)
    page.fill("#chat-message", "Hello")
    page.click("#chat-send")
    expect(page.locator("#balance")).to_have_attribute("data-balance", "90")
    expect(page.locator("#low-balance")).to_be_visible()
    expect(page.locator("#low-threshold")).to_have_text("95")


def get_credits_of(server: ThreadServer) -> Any:
    """The app's own client (the in-process store the page's server uses)."""
    from sparked_credits.integrations.fastapi import _STATE_CLIENT

    return getattr(server.server.config.app.state, _STATE_CLIENT)
