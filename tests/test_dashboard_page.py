"""The admin dashboard of the example app, in Debian's Chromium at desktop and phone widths,
its figures checked against the report built straight from the archive; admins only."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from playwright.sync_api import Browser, expect, sync_playwright

import credits_app
from sparked_credits import CreditsClient
from sparked_credits.archive import Archiver
from sparked_credits.archive.report import build
from sparked_credits.backends.memory import reset_memory_store
from test_credits_page import CHROMIUM_ARGS, ThreadServer, chromium_binary

pytestmark = pytest.mark.timeout(120)
ADMIN = "user_admin"


@pytest.fixture
def store() -> Iterator[str]:
    name = f"dash-{uuid.uuid4().hex[:8]}"
    yield name
    reset_memory_store(name)


def settings(name: str, archive_url: str | None) -> credits_app.Settings:
    return credits_app.Settings(
        storage_url=f"memory://{name}",
        dev_signin=True,
        admin_user_ids=frozenset({ADMIN}),
        archive_url=archive_url,
        rate_limit=None,
    )


@pytest.fixture
def archived_store(store: str, archive_url: str) -> tuple[str, str]:
    with CreditsClient(f"memory://{store}", app="app.sparked.world") as client:
        for i in range(5):
            account = f"user_{i}"
            client.initialize_user(account, 40 + 30 * i)
            client.debit(account, 5 + i, action="chat_message")
            if i % 2:
                client.debit(account, 20, action="video_generation")
        client.credit("user_1", 300, source="purchase",
                      metadata={"amount": 1299, "currency": "usd"})
        with Archiver(client, archive_url, retain="0s") as archiver:
            assert archiver.run_once().trimmed > 0
    return store, archive_url


def test_report_route_is_admin_only_and_validated(archived_store: tuple[str, str]) -> None:
    name, archive_url = archived_store
    with TestClient(credits_app.create_app(settings(name, archive_url))) as http:
        def token(user: str) -> dict[str, str]:
            session = http.post("/api/dev/signin", json={"user": user}).json()
            return {"Authorization": f"Bearer {session['token']}"}

        assert http.get("/api/admin/report").status_code == 401
        assert http.get("/api/admin/report", headers=token("user_0")).status_code == 403
        admin = token(ADMIN)
        assert http.get("/api/admin/report?days=0", headers=admin).status_code == 422
        assert http.get("/api/admin/report?days=x", headers=admin).status_code == 422
        ok = http.get("/api/admin/report?days=7", headers=admin)
        assert ok.status_code == 200
        assert ok.json()["purchases"]["revenue"] == {"USD": 1299}
        # The history route reads on into the archive past what Redis still holds.
        user, cursor, seen = token("user_1"), None, []
        while True:
            page = http.get("/api/credits/history", headers=user,
                            params={"limit": 1, **({"cursor": cursor} if cursor else {})}).json()
            seen += [e["type"] for e in page["transactions"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == ["credit", "debit", "debit", "init"]
    with TestClient(credits_app.create_app(settings(name, None))) as http:
        session = http.post("/api/dev/signin", json={"user": ADMIN}).json()
        missing = http.get(
            "/api/admin/report", headers={"Authorization": f"Bearer {session['token']}"}
        )
        assert (missing.status_code, missing.json()["error"]) == (404, "no_archive")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    binary = chromium_binary()
    if binary is None:
        pytest.skip("no chromium binary: apt-get install chromium (or set CHROMIUM_BIN)")
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=binary, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.mark.parametrize(
    "viewport", [{"width": 1280, "height": 900}, {"width": 390, "height": 844}],
    ids=["desktop", "phone"],
)
def test_dashboard_draws_the_archive_figures(
    browser: Browser, archived_store: tuple[str, str], viewport: dict[str, int]
) -> None:
    name, archive_url = archived_store
    with psycopg.connect(archive_url) as conn:
        expected = build(conn, days=30)
    with ThreadServer(credits_app.create_app(settings(name, archive_url))) as server:
        context = browser.new_context(viewport=viewport)  # type: ignore[arg-type]
        context.set_default_timeout(15_000)
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        requests: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        page.goto(f"{server.url}/admin/dashboard?user={ADMIN}")
        expect(page.locator("#dashboard")).to_have_attribute("data-state", "ready")
        expect(page.locator("#fig-outstanding")).to_have_attribute(
            "data-value", str(expected.outstanding)
        )
        days = page.locator("#daily-chart g.day")
        expect(days).to_have_count(30)
        today = days.nth(29)
        assert today.get_attribute("data-day") == str(expected.days[-1].day)
        assert today.get_attribute("data-spent") == str(expected.days[-1].spent)
        assert today.get_attribute("data-granted") == str(expected.days[-1].granted)
        rows = page.locator("#spend-chart g.spend-row")
        expect(rows).to_have_count(len(expected.spend))
        assert [
            (row.get_attribute("data-action"), int(row.get_attribute("data-credits") or 0))
            for row in (rows.nth(i) for i in range(rows.count()))
        ] == [(r.action, r.credits) for r in expected.spend]
        top = page.locator("#top-accounts tbody tr[data-account]")
        assert [top.nth(i).get_attribute("data-account") for i in range(top.count())] == [
            a.account for a in expected.top_accounts
        ]
        expect(page.locator("#fig-revenue")).to_have_text("12.99 USD")
        # Nothing but the app itself is fetched (no CDN), and the page fits the screen.
        assert all(u.startswith(server.url) for u in requests), requests
        overflow: Any = page.evaluate(
            "document.scrollingElement.scrollWidth - window.innerWidth"
        )
        assert overflow <= 0, f"the page is {overflow}px wider than the screen"
        context.close()
        assert not errors, errors


def test_dashboard_tells_a_non_admin_it_is_for_admins(
    browser: Browser, archived_store: tuple[str, str]
) -> None:
    name, archive_url = archived_store
    with ThreadServer(credits_app.create_app(settings(name, archive_url))) as server:
        context = browser.new_context()
        page = context.new_page()
        page.goto(f"{server.url}/admin/dashboard?user=user_3")
        expect(page.locator("#dashboard")).to_have_attribute("data-state", "error-403")
        expect(page.locator("#status")).to_have_text("This page is for admins only.")
        context.close()
