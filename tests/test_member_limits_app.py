"""Per-member spend limits in the example app and on the command line: an org admin caps a
member, the member's spending through the org account stops at the cap with a 429, the
member sees the limits; schemathesis over the new routes (no 5xx, no change on a 4xx)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from click.testing import CliRunner
from starlette.testclient import TestClient

from clerk_keys import ORIGIN, KeyPair
from conftest import LINES, _flushed
from credits_app import Settings, create_app
from route_fuzz import fuzz_routes
from sparked_credits import CreditsClient
from sparked_credits.cli.commands import cli
from test_fuzz_http import ledger_state

KEYS = KeyPair("ins_members")
ORG, ADMIN, MEMBER = "org_acme", "user_orgadmin", "user_member"
ROUTE = "/api/org/credits/limits"


@pytest.fixture
def url(server_pool: Any) -> str:
    return _flushed(server_pool.server(LINES[-1]))


@pytest.fixture
def http(url: str) -> Iterator[TestClient]:
    app = create_app(
        Settings(
            storage_url=url,
            clerk_jwt_key=KEYS.public_pem,
            authorized_parties=(ORIGIN,),
            rate_limit=None,
            org_balances=True,
        )
    )
    with TestClient(app) as client:
        yield client


def auth(user: str, role: str | None = None, key: str | None = None) -> dict[str, str]:
    claims: dict[str, Any] = {"sub": user}
    if role:
        claims["o"] = {"id": ORG, "rol": role, "slg": "acme"}
    headers = {"Authorization": f"Bearer {KEYS.token(**claims)}"}
    if key:
        headers["Idempotency-Key"] = key
    return headers


def state(url: str) -> dict[bytes, Any]:
    found = ledger_state(url)
    raw = redis.Redis.from_url(url)
    try:
        for key in raw.scan_iter(match="ctl:*"):
            found[key] = raw.hgetall(key)
    finally:
        raw.close()
    return found


def test_an_admin_caps_a_member(http: TestClient, url: str) -> None:
    with CreditsClient(url) as credits:
        credits.initialize_user(ORG, 1000)
    body = {"user_id": MEMBER, "daily_limit": 25}
    refused = http.put(ROUTE, json=body, headers=auth(MEMBER, "member", key="m-1"))
    assert refused.status_code == 403
    for _ in range(2):
        done = http.put(ROUTE, json=body, headers=auth(ADMIN, "admin", key="a-1"))
        assert done.status_code == 200, done.text
    assert done.json()["daily_limit"] == 25
    chat = {"message": "hi"}
    for _ in range(2):  # 10 credits each
        sent = http.post("/api/chat", json=chat, headers=auth(MEMBER, "member"))
        assert sent.status_code == 200, sent.text
    before = state(url)
    over = http.post("/api/chat", json=chat, headers=auth(MEMBER, "member"))
    assert over.status_code == 429, over.text
    assert (over.json()["window"], over.json()["member"]) == ("member_daily", MEMBER)
    assert state(url) == before
    seen = http.get(ROUTE, headers=auth(MEMBER, "member")).json()
    assert (seen["member"], seen["daily_limit"], seen["spent_today"]) == (MEMBER, 25, 20)
    # The admin is not capped (no limit of its own, none for every member).
    assert http.post("/api/chat", json=chat, headers=auth(ADMIN, "admin")).status_code == 200
    assert http.get(ROUTE, headers=auth(MEMBER)).status_code == 404  # no organization


def test_the_operator_command(url: str) -> None:
    runner = CliRunner()

    def run(*args: str) -> Any:
        return runner.invoke(cli, ["--url", url, "member-limit", *args])

    with CreditsClient(url) as credits:
        credits.initialize_user(ORG, 1000)
    shown = run(ORG, MEMBER, "--daily-limit", "40", "--json")
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output)["own"] is True
    assert "every member" in run(ORG, "--monthly-limit", "500").output
    assert run(ORG, MEMBER, "--daily-limit", "0").exit_code == 2
    assert run(ORG, "bad member", "--daily-limit", "5").exit_code == 2
    assert run(ORG, MEMBER, "--clear", "--daily-limit", "5").exit_code == 2
    assert json.loads(run(ORG, MEMBER, "--json").output)["daily_limit"] == 40
    cleared = json.loads(run(ORG, MEMBER, "--clear", "--json").output)
    assert (cleared["own"], cleared["monthly_limit"]) == (False, 500)


def test_new_routes_no_5xx_and_no_change_on_refusal(http: TestClient, url: str) -> None:
    with CreditsClient(url) as credits:
        credits.initialize_user(ORG, 1000)
    fuzz_routes(
        http.app, {ROUTE}, headers=auth(ADMIN, "admin"), state=lambda: state(url), operations=2
    )
