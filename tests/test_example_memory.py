"""The example app as one process on memory:// (the quick-start setup), in-process."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from datetime import datetime, timezone

import pytest
from fastapi.testclient import TestClient
from svix.webhooks import Webhook

import credits_app
from clerk_keys import KeyPair
from sparked_credits import ConfigurationError
from sparked_credits.backends.memory import reset_memory_store

SECRET = "whsec_" + base64.b64encode(os.urandom(24)).decode()


@pytest.fixture
def keys() -> KeyPair:
    return KeyPair("ins_memory")


@pytest.fixture
def http(keys: KeyPair, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    for name in ("UPSTASH_REDIS_URL", "UPSTASH_REDIS_REST_URL"):
        monkeypatch.delenv(name, raising=False)
    env = {
        "REDIS_URL": "memory://example-app",
        "CLERK_JWT_KEY": keys.public_pem,
        "CLERK_WEBHOOK_SECRET": SECRET,
        "CRON_SECRET": "c",
        "CREDITS_RATE_LIMIT": "2/minute",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    app = credits_app.create_app()
    with TestClient(app) as client:
        yield client
    reset_memory_store("example-app")


def test_one_process_on_memory(http: TestClient, keys: KeyPair) -> None:
    body = json.dumps({"type": "user.created", "data": {"id": "user_m"}})
    now = datetime.now(timezone.utc)
    headers = {
        "svix-id": "msg_m",
        "svix-timestamp": str(int(now.timestamp())),
        "svix-signature": Webhook(SECRET).sign("msg_m", now, body),
    }
    assert http.post("/api/webhooks/clerk", content=body, headers=headers).status_code == 200
    user = {"Authorization": f"Bearer {keys.token(sub='user_m')}"}
    assert http.post("/api/chat", json={"message": "hi"}, headers=user).json()["balance"] == 90
    assert http.post("/api/chat", json={"message": "hi"}, headers=user).status_code == 200
    limited = http.post("/api/chat", json={"message": "hi"}, headers=user)
    assert limited.status_code == 429
    assert "retry-after" in limited.headers
    assert http.get("/api/credits/balance", headers=user).json() == {"balance": 80}


def test_settings_from_env() -> None:
    settings = credits_app.Settings.from_env(
        {
            "CLERK_JWT_KEY": "k",
            "CLERK_AUTHORIZED_PARTIES": "https://a.example, https://b.example",
            "CREDITS_ADMIN_USER_IDS": "user_1,user_2",
            "CREDITS_RATE_LIMIT": "off",
        }
    )
    assert settings.authorized_parties == ("https://a.example", "https://b.example")
    assert settings.admin_user_ids == frozenset({"user_1", "user_2"})
    assert settings.rate_limit is None


def test_app_refuses_to_start_without_a_key() -> None:
    with pytest.raises(ConfigurationError, match="CLERK_JWT_KEY"):
        credits_app.create_app(credits_app.Settings(storage_url="memory://nokey"))
    reset_memory_store("nokey")
