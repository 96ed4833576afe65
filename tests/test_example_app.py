"""The setup guide's "Test the Integration" steps, over real HTTP, against the example app
(examples/credits_app.py) served by uvicorn in two separate processes on one real Redis:
``app.sparked.world`` and ``canvas.sparked.world``. Tokens, webhook signatures and secrets
are all made here.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from svix.webhooks import Webhook

from clerk_keys import ORIGIN, KeyPair
from redis_servers import RedisServer
from uvicorn_process import UvicornProcess

ROOT = Path(__file__).resolve().parent.parent
WEBHOOK_SECRET = "whsec_" + base64.b64encode(os.urandom(24)).decode()
CRON_SECRET = base64.b64encode(os.urandom(24)).decode()
TRAIN_SECRET = "train-" + os.urandom(8).hex()
ADMIN = "user_admin"


class Server(UvicornProcess):
    """One example-app process (uvicorn) on a free loopback port."""

    def __init__(self, env: dict[str, str]) -> None:
        super().__init__("credits_app:create_app", ROOT / "examples", env, "example app")


@pytest.fixture(scope="module")
def keys() -> KeyPair:
    return KeyPair("ins_example")


@pytest.fixture(scope="module")
def apps(server_pool: Any, server_line: str, keys: KeyPair) -> Iterator[dict[str, Server]]:
    # The session's server of this line (the function-scoped redis_server fixture cannot
    # serve a module-scoped one).
    redis_server: RedisServer = server_pool.server(server_line)
    base = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
        "REDIS_URL": redis_server.url,
        # One line with escaped newlines, as env files and dashboards often hold it.
        "CLERK_JWT_KEY": keys.public_pem.strip().replace("\n", "\\n"),
        "CLERK_AUTHORIZED_PARTIES": ORIGIN,
        "CLERK_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "CRON_SECRET": CRON_SECRET,
        "CREDITS_ADMIN_USER_IDS": ADMIN,
        "TRAIN_WEBHOOK_SECRET": TRAIN_SECRET,
        "CREDITS_RATE_LIMIT": "5/minute",
    }
    for name in ("UPSTASH_REDIS_URL", "UPSTASH_REDIS_REST_URL"):
        base.pop(name, None)
    servers = {
        name: Server({**base, "SPARKED_APP": name})
        for name in ("app.sparked.world", "canvas.sparked.world")
    }
    try:
        for server in servers.values():
            server.wait_ready()
        yield servers
    finally:
        for server in servers.values():
            server.stop()


@pytest.fixture
def app(apps: dict[str, Server], redis_url: str) -> Iterator[httpx.Client]:
    """app.sparked.world, on a freshly emptied Redis."""
    with httpx.Client(base_url=apps["app.sparked.world"].url, timeout=10) as client:
        yield client


@pytest.fixture
def canvas(apps: dict[str, Server]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=apps["canvas.sparked.world"].url, timeout=10) as client:
        yield client


def auth(keys: KeyPair, user: str, **claims: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {keys.token(sub=user, **claims)}"}


def clerk_webhook(
    http: httpx.Client, type_: str, id_: str, msg_id: str, secret: str = WEBHOOK_SECRET
) -> httpx.Response:
    body = json.dumps({"type": type_, "object": "event", "data": {"id": id_}})
    now = datetime.now(timezone.utc)
    headers = {
        "svix-id": msg_id,
        "svix-timestamp": str(int(now.timestamp())),
        "svix-signature": Webhook(secret).sign(msg_id, now, body),
        "content-type": "application/json",
    }
    return http.post("/api/webhooks/clerk", content=body, headers=headers)


def new_user(http: httpx.Client, user: str) -> None:
    response = clerk_webhook(http, "user.created", user, f"msg_{user}")
    assert response.status_code == 200, response.text


# -- 8.1 user initialization ------------------------------------------------------------


def test_new_user_gets_100_once(app: httpx.Client, keys: KeyPair) -> None:
    for _ in range(3):  # Svix redelivers: one grant
        response = clerk_webhook(app, "user.created", "user_new", "msg_new")
        assert response.status_code == 200
    assert response.json()["outcome"] == "already_initialized"
    balance = app.get("/api/credits/balance", headers=auth(keys, "user_new"))
    assert balance.status_code == 200
    assert balance.json() == {"balance": 100}


def test_forged_webhook_refused(app: httpx.Client, keys: KeyPair) -> None:
    forged_secret = "whsec_" + base64.b64encode(os.urandom(24)).decode()
    response = clerk_webhook(app, "user.created", "user_forged", "m_f", secret=forged_secret)
    assert response.status_code == 400
    assert response.json()["error"] == "webhook_verification_failed"
    assert app.get("/api/credits/balance", headers=auth(keys, "user_forged")).json() == {
        "balance": 0
    }


def test_no_or_bad_token_is_401(app: httpx.Client, keys: KeyPair) -> None:
    assert app.get("/api/credits/balance").status_code == 401
    now = int(time.time())
    expired = app.get(
        "/api/credits/balance", headers=auth(keys, "u", iat=now - 90, nbf=now - 90, exp=now - 30)
    )
    assert expired.status_code == 401
    assert expired.json()["reason"] == "expired"
    assert "Bearer" in expired.headers["www-authenticate"]
    wrong_party = app.get("/api/credits/balance", headers=auth(keys, "u", azp="https://evil.test"))
    assert wrong_party.json()["reason"] == "wrong_party"
    # The __session cookie works like the header (same-origin page requests).
    cookie = app.get(
        "/api/credits/balance", headers={"Cookie": f"__session={keys.token(sub='u')}"}
    )
    assert cookie.status_code == 200


# -- 8.2 deduction and 8.3 shared balance -----------------------------------------------


def test_chat_costs_10_and_balance_is_shared(
    app: httpx.Client, canvas: httpx.Client, keys: KeyPair
) -> None:
    new_user(app, "user_chat")
    headers = auth(keys, "user_chat")
    chat = app.post("/api/chat", json={"message": "Hello"}, headers=headers)
    assert chat.status_code == 200, chat.text
    assert chat.json()["credits_used"] == 10
    assert app.get("/api/credits/balance", headers=headers).json() == {"balance": 90}
    # Another app's process, same Redis: the same balance.
    assert canvas.get("/api/credits/balance", headers=headers).json() == {"balance": 90}
    drawn = canvas.post("/api/generate", json={"prompt": "a cat", "complex": True}, headers=headers)
    assert drawn.json()["balance"] == 15
    history = app.get("/api/credits/history", headers=headers).json()["transactions"]
    assert [(e["type"], e["app"]) for e in history] == [
        ("debit", "canvas.sparked.world"),
        ("debit", "app.sparked.world"),
        ("init", "app.sparked.world"),
    ]


def test_usage_route_by_action_and_app(
    app: httpx.Client, canvas: httpx.Client, keys: KeyPair
) -> None:
    new_user(app, "user_usage")
    headers = auth(keys, "user_usage")
    app.post("/api/chat", json={"message": "Hello"}, headers=headers)
    canvas.post("/api/generate", json={"prompt": "a cat"}, headers=headers)
    by_action = app.get("/api/credits/usage", headers=headers).json()
    assert (by_action["group_by"], by_action["time_zone"], by_action["total"]) == (
        "action", "UTC", 60
    )
    days = by_action["days"]
    assert len(days) == 7
    assert days[-1]["day"] == datetime.now(timezone.utc).date().isoformat()
    assert days[-1]["by"] == {"chat_message": 10, "canvas_simple": 50}
    assert [d["total"] for d in days[:-1]] == [0] * 6  # idle days are present, as zero
    by_app = canvas.get(
        "/api/credits/usage",
        params={"days": 3, "group_by": "app", "tz": "Pacific/Kiritimati"},
        headers=headers,
    ).json()
    assert len(by_app["days"]) == 3
    assert by_app["time_zone"] == "Pacific/Kiritimati"
    assert by_app["days"][-1]["by"] == {"app.sparked.world": 10, "canvas.sparked.world": 50}
    for tz in ("Mars/Base", "America", "../etc", "Europe/", ""):
        bad = app.get("/api/credits/usage", params={"tz": tz}, headers=headers)
        assert bad.status_code == 400, (tz, bad.text)
        assert bad.json()["error"] == "invalid_time_zone"
    assert app.get("/api/credits/usage").status_code == 401


def test_same_message_id_charged_once(app: httpx.Client, keys: KeyPair) -> None:
    new_user(app, "user_retry")
    headers = {**auth(keys, "user_retry"), "Idempotency-Key": "msg-42"}
    for _ in range(2):
        assert app.post("/api/chat", json={"message": "hi"}, headers=headers).status_code == 200
    assert app.get("/api/credits/balance", headers=headers).json() == {"balance": 90}


# -- 8.4 insufficient credits -----------------------------------------------------------


def test_video_past_balance_is_402_with_details(
    app: httpx.Client, canvas: httpx.Client, keys: KeyPair
) -> None:
    new_user(app, "user_40")
    headers = auth(keys, "user_40")
    canvas.post("/api/generate", json={"prompt": "x"}, headers=headers)  # 50
    app.post("/api/chat", json={"message": "x"}, headers=headers)  # 10
    assert app.get("/api/credits/balance", headers=headers).json() == {"balance": 40}
    response = canvas.post("/api/video/generate", json={"duration": 60}, headers=headers)
    assert response.status_code == 402
    body = response.json()
    assert (body["error"], body["balance"], body["required"], body["action"]) == (
        "insufficient_credits", 40, 600, "video_generation"
    )
    assert body["shortfall"] == 560
    assert app.get("/api/credits/balance", headers=headers).json() == {"balance": 40}
    ok = canvas.post("/api/video/generate", json={"duration": 3.2}, headers=headers)
    assert (ok.status_code, ok.json()["credits_used"], ok.json()["balance"]) == (200, 32, 8)


# -- admin, cron, rate limits -----------------------------------------------------------


def test_admin_grant_for_admins_only(app: httpx.Client, keys: KeyPair) -> None:
    new_user(app, "user_g")
    grant = {"user_id": "user_g", "amount": 250, "reason": "support"}
    refused = app.post("/api/admin/credits/grant", json=grant, headers=auth(keys, "user_g"))
    assert refused.status_code == 403
    granted = app.post("/api/admin/credits/grant", json=grant, headers=auth(keys, ADMIN))
    assert granted.status_code == 200, granted.text
    assert granted.json()["balance"] == 350
    assert app.get("/api/credits/balance", headers=auth(keys, "user_g")).json() == {
        "balance": 350
    }


def test_cron_reconcile_needs_the_secret(app: httpx.Client) -> None:
    for header in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": CRON_SECRET}):
        assert app.get("/api/cron/reconcile", headers=header).status_code == 401
    ok = app.get("/api/cron/reconcile", headers={"Authorization": f"Bearer {CRON_SECRET}"})
    assert ok.status_code == 200, ok.text


def test_cron_reconcile_finds_and_repairs(app: httpx.Client, keys: KeyPair, redis_url: str) -> None:
    for user in ("user_ok", "user_drift"):
        new_user(app, user)
    app.post("/api/chat", json={"message": "x"}, headers=auth(keys, "user_ok"))
    raw = redis.Redis.from_url(redis_url)
    raw.set("balance:user_drift", "1000")  # written behind the ledger's back
    raw.close()
    cron = {"Authorization": f"Bearer {CRON_SECRET}"}
    report = app.get("/api/cron/reconcile", headers=cron).json()
    assert (report["clean"], report["checked"], report["mismatched"]) == (False, 2, 1)
    drift = next(r for r in report["results"] if r["account"] == "user_drift")
    assert (drift["balance"], drift["ledger_sum"]) == (1000, 100)
    fixed = app.get(
        "/api/cron/reconcile", params={"account": "user_drift", "repair": "true"}, headers=cron
    ).json()
    assert (fixed["checked"], fixed["repaired"]) == (1, 1)
    assert app.get("/api/credits/balance", headers=auth(keys, "user_drift")).json() == {
        "balance": 100
    }
    assert app.get("/api/cron/reconcile", headers=cron).json()["clean"] is True


def test_burst_past_rate_limit_gets_429(app: httpx.Client, keys: KeyPair) -> None:
    new_user(app, "user_burst")
    headers = auth(keys, "user_burst")
    codes = [
        app.post("/api/chat", json={"message": f"m{i}"}, headers=headers).status_code
        for i in range(5)
    ]
    assert codes == [200] * 5
    limited = app.post("/api/chat", json={"message": "one more"}, headers=headers)
    assert limited.status_code == 429
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    # Refused before charging; other routes have their own budget.
    assert app.get("/api/credits/balance", headers=headers).json() == {"balance": 50}
    assert app.post("/api/generate", json={"prompt": "p"}, headers=headers).status_code == 200


# -- training, deletion -----------------------------------------------------------------


def train_report(http: httpx.Client, report: dict[str, Any], secret: str = TRAIN_SECRET) -> Any:
    raw = json.dumps(report).encode()
    signature = "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
    return http.post(
        "/api/train/webhook",
        content=raw,
        headers={"X-Train-Signature": signature, "content-type": "application/json"},
    )


def test_training_settles_once(app: httpx.Client, keys: KeyPair) -> None:
    new_user(app, "user_t")
    admin = auth(keys, ADMIN)
    app.post("/api/admin/credits/grant", json={"user_id": "user_t", "amount": 2900},
             headers=admin)
    started = app.post(
        "/api/train/start", json={"estimated_gpu_hours": 2.5, "job_id": "job_1"},
        headers=auth(keys, "user_t"),
    ).json()
    assert (started["reserved"], started["balance"]) == (2500, 500)
    report = {
        "job_id": "job_1", "user_id": "user_t", "hold_id": started["hold_id"],
        "reserved": 2500, "status": "succeeded", "gpu_hours": 1.5,
    }
    assert train_report(app, report, secret="not-the-secret").status_code == 400
    first = train_report(app, report)
    assert first.status_code == 200, first.text
    assert (first.json()["status"], first.json()["balance"]) == ("settled", 1500)
    again = train_report(app, report).json()  # the provider retries
    assert (again["balance"], again["replayed"]) == (1500, True)
    assert app.get("/api/credits/balance", headers=auth(keys, "user_t")).json() == {
        "balance": 1500
    }


def test_deleted_user_cannot_spend(app: httpx.Client, keys: KeyPair) -> None:
    new_user(app, "user_del")
    deleted = clerk_webhook(app, "user.deleted", "user_del", "msg_del")
    assert deleted.json()["outcome"] == "closed"
    response = app.post("/api/chat", json={"message": "x"}, headers=auth(keys, "user_del"))
    assert response.status_code == 403
    assert response.json()["error"] == "account_closed"
    assert app.get("/api/credits/balance", headers=auth(keys, "user_del")).json() == {
        "balance": 100
    }
