"""The example app's referral, organization and controls routes, and its alert worker, on
a real Redis; schemathesis over the new routes (no 5xx, no change on a refusal)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

import alert_worker
from clerk_keys import ORIGIN, KeyPair
from conftest import LINES, _flushed
from credits_app import Settings, create_app
from route_fuzz import fuzz_routes
from sparked_credits import CreditsClient
from test_fuzz_http import ledger_state

KEYS = KeyPair("ins_controls")
REFERRAL_SECRET = "referral-test-secret"
ORG, ADMIN, MEMBER = "org_acme", "user_orgadmin", "user_member"
NEW_ROUTES = (
    "/api/referrals/code",
    "/api/referrals/claim",
    "/api/org/credits",
    "/api/org/credits/grant",
    "/api/credits/controls",
)


@pytest.fixture
def url(server_pool: Any) -> str:
    # One server line: these are the example app's routes, not the scripts.
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
            referral_secret=REFERRAL_SECRET,
        )
    )
    with TestClient(app) as client:
        yield client


def auth(user: str, role: str | None = None) -> dict[str, str]:
    claims: dict[str, Any] = {"sub": user}
    if role:
        claims["o"] = {"id": ORG, "rol": role, "slg": "acme"}
    return {"Authorization": f"Bearer {KEYS.token(**claims)}"}


def test_members_spend_the_org_balance_and_see_who(http: TestClient, url: str) -> None:
    with CreditsClient(url) as credits:
        credits.initialize_user(ORG, 500)
        credits.initialize_user(MEMBER, 0)
    sent = http.post("/api/chat", json={"message": "hi"}, headers=auth(MEMBER, "member"))
    assert sent.status_code == 200, sent.text
    assert sent.json()["balance"] == 490
    http.post("/api/generate", json={"prompt": "p"}, headers=auth(ADMIN, "admin"))
    seen = http.get("/api/org/credits", headers=auth(MEMBER, "member")).json()
    assert (seen["balance"], seen["spent_by_me"], seen["spent_by_members"]) == (440, 10, 60)
    with CreditsClient(url) as credits:
        entries = credits.history(ORG).entries
        assert [e.metadata.get("member") for e in entries[:2]] == [ADMIN, MEMBER]
        assert credits.get_balance(MEMBER) == 0
    # Only an org admin grants within the org: credits of the org to a member, once.
    body = {"user_id": MEMBER, "amount": 40}
    refused = http.post("/api/org/credits/grant", json=body, headers=auth(MEMBER, "member"))
    assert refused.status_code == 403
    for _ in range(2):
        granted = http.post(
            "/api/org/credits/grant",
            json=body,
            headers={**auth(ADMIN, "admin"), "Idempotency-Key": "grant-1"},
        )
        assert granted.status_code == 200, granted.text
    with CreditsClient(url) as credits:
        assert (credits.get_balance(ORG), credits.get_balance(MEMBER)) == (400, 40)
    alone = http.get("/api/org/credits", headers=auth(MEMBER))
    assert alone.status_code == 404


def test_referral_claim_rewards_once(http: TestClient, url: str) -> None:
    code = http.get("/api/referrals/code", headers=auth("user_ref")).json()["code"]
    for n in range(3):
        claimed = http.post(
            "/api/referrals/claim",
            json={"code": code},
            headers={**auth("user_newbie"), "Idempotency-Key": f"claim-{n}"},
        )
        assert claimed.status_code == 200, claimed.text
        assert claimed.json()["balance"] == 20
    with CreditsClient(url) as credits:
        assert credits.get_balance("user_ref") == 50
        other = http.get("/api/referrals/code", headers=auth("user_other")).json()["code"]
        before = ledger_state(url)
        answers = [
            http.post("/api/referrals/claim", json={"code": other}, headers=auth("user_newbie")),
            http.post("/api/referrals/claim", json={"code": code}, headers=auth("user_ref")),
            http.post("/api/referrals/claim", json={"code": code + "x"}, headers=auth("user_x")),
            http.post(
                "/api/referrals/claim", json={"code": "dXNlcl9yZWY.0000"}, headers=auth("user_x")
            ),
        ]
        assert [a.status_code for a in answers] == [409, 422, 422, 422]
        assert ledger_state(url) == before


def test_low_balance_banner_and_alert_worker(http: TestClient, url: str) -> None:
    with CreditsClient(url) as credits:
        credits.initialize_user("user_low", 30)
        credits.set_tier("user_low", None, low_balance=25)
        credits.debit("user_low", 10, action="chat_message")
        shown = http.get("/api/credits/controls", headers=auth("user_low")).json()
        assert (shown["balance"], shown["low_balance_banner"]) == (20, True)
        received: dict[str, bytes] = {}
        calls: list[str] = []

        def flaky(url: str, body: bytes, headers: dict[str, str]) -> int:
            calls.append(headers["X-Alert-Id"])
            assert headers["X-Alert-Signature"] == alert_worker.sign("s", body)
            if len(calls) == 1:
                return 503  # retried with backoff
            received.setdefault(headers["X-Alert-Id"], body)  # the receiver dedupes by id
            if len(calls) == 2:
                raise KeyboardInterrupt  # the worker dies after delivery, before the ack
            return 200

        with pytest.raises(KeyboardInterrupt):
            alert_worker.run_once(credits, url="u", secret="s", post=flaky, sleep=lambda s: None)
        assert (
            alert_worker.run_once(credits, url="u", secret="s", post=flaky, sleep=lambda s: None)
            == 1
        )
        assert len(received) == 1
        assert len(set(calls)) == 1
        assert credits.alerts("webhook") == []
        assert alert_worker.run_once(credits, url="u", secret="s", post=flaky) == 0


def test_new_routes_no_5xx_and_no_change_on_refusal(http: TestClient, url: str) -> None:
    with CreditsClient(url) as credits:
        credits.initialize_user(ORG, 500)
    fuzz_routes(
        http.app,
        NEW_ROUTES,
        headers=auth(ADMIN, "admin"),
        state=lambda: ledger_state(url),
        operations=len(NEW_ROUTES),
    )
