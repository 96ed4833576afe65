"""The example app's credit-lots route and the credits page's "expiring soon" line."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest

pytest.importorskip("jinja2")
from fastapi.testclient import TestClient

import credits_app
from sparked_credits import CreditsClient
from sparked_credits.backends.memory import reset_memory_store


@pytest.fixture
def app_and_store() -> Iterator[tuple[TestClient, str]]:
    name = f"lots-page-{uuid.uuid4().hex[:8]}"
    settings = credits_app.Settings(storage_url=f"memory://{name}", dev_signin=True)
    with TestClient(credits_app.create_app(settings)) as client:
        yield client, name
    reset_memory_store(name)


def test_grants_route_lists_lots_and_what_expires_within_7_days(
    app_and_store: tuple[TestClient, str],
) -> None:
    http, name = app_and_store
    session = http.post("/api/dev/signin").json()
    user = {"Authorization": f"Bearer {session['token']}"}
    now = datetime.now(timezone.utc)
    with CreditsClient(f"memory://{name}", app="app.sparked.world") as credits:
        credits.credit(session["user_id"], 50, source="promo", expires_at=now + timedelta(days=1))
        credits.credit(session["user_id"], 30, source="referral", expires_at=now + timedelta(3))
        credits.credit(session["user_id"], 20, source="subscription", expires_at=now + timedelta(9))
    body = http.get("/api/credits/grants", headers=user).json()
    assert [g["source"] for g in body["grants"]] == ["promo", "referral", "subscription", "init"]
    assert body["expiring"]["days"] == 7
    assert body["expiring"]["credits"] == 80
    assert body["expiring"]["first"].startswith((now + timedelta(days=1)).date().isoformat())
    assert http.get("/api/credits/grants?days=10", headers=user).json()["expiring"][
        "credits"
    ] == 100
    assert http.get("/api/credits/grants", headers={}).status_code == 401


def test_page_has_the_expiring_line(app_and_store: tuple[TestClient, str]) -> None:
    http, _ = app_and_store
    page = http.get("/credits").text
    assert 'id="expiring"' in page
    assert "credits expire in the next 7 days" in page
    assert "/api/credits/grants" in http.get("/static/credits/credits.js").text
