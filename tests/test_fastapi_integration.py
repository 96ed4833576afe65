"""The FastAPI integration in-process: error mapping, auth dependency, rate limits."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Annotated, Any

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from clerk_keys import ORIGIN, KeyPair
from sparked_credits import (
    BackendError,
    ConfigurationError,
    CreditsClient,
    ValidationError,
)
from sparked_credits.clerk import ClerkPrincipal
from sparked_credits.integrations.fastapi import (
    ClerkAuth,
    get_async_credits,
    get_clerk_user,
    get_credits,
    rate_limited,
    setup_credits,
)
from sparked_credits.integrations.ratelimit import AccountRateLimiter, limits_storage_url


@pytest.fixture(scope="module")
def keys() -> KeyPair:
    return KeyPair("ins_unit")


User = Annotated[ClerkPrincipal, Depends(get_clerk_user)]
Credits = Annotated[CreditsClient, Depends(get_credits)]
Limited = Annotated[ClerkPrincipal, Depends(rate_limited("spend"))]


@pytest.fixture
def http(redis_url: str, keys: KeyPair) -> Iterator[TestClient]:
    client = CreditsClient(redis_url, app="app.sparked.world")
    app = FastAPI()
    setup_credits(
        app,
        client,
        auth=ClerkAuth(jwt_key=keys.public_pem, authorized_parties=[ORIGIN]),
        rate_limiter=AccountRateLimiter.for_credits_url("3/minute", redis_url),
    )

    @app.post("/debit/{amount}")
    def debit(
        amount: int, user: User, credits: Credits, key: str | None = None
    ) -> dict[str, Any]:
        result = credits.debit(user.user_id, amount, action="chat_message", idempotency_key=key)
        return {"balance": result.balance}

    @app.post("/spend")
    def spend(user: Limited, credits: Credits) -> dict[str, Any]:
        return {"balance": credits.charge(user.user_id, "chat_message").balance}

    @app.post("/refund/{entry_id}")
    def refund(entry_id: str, user: User, credits: Credits) -> dict[str, Any]:
        return {"balance": credits.refund(user.user_id, entry_id).balance}

    @app.get("/fail")
    def fail() -> None:
        raise BackendError(
            "redis://:hunter2@db.internal down", operation="debit",
            may_have_applied=False, retry_safe=True,
        )

    @app.get("/async-client")
    def wrong_kind(request: Any = Depends(get_async_credits)) -> None:  # noqa: B008
        return None

    client.initialize_user("user_1")
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client
    client.close()


def bearer(keys: KeyPair, user: str = "user_1") -> dict[str, str]:
    return {"Authorization": f"Bearer {keys.token(sub=user)}"}


def test_402_body(http: TestClient, keys: KeyPair) -> None:
    response = http.post("/debit/500", headers=bearer(keys))
    assert response.status_code == 402
    body = response.json()
    assert {k: body[k] for k in ("balance", "required", "action")} == {
        "balance": 100, "required": 500, "action": "chat_message"
    }


def test_404_409_422(http: TestClient, keys: KeyPair) -> None:
    missing = http.post("/refund/1700000000000-0", headers=bearer(keys))
    assert (missing.status_code, missing.json()["error"]) == (404, "entry_not_found")
    assert http.post("/debit/10?key=k1", headers=bearer(keys)).status_code == 200
    conflict = http.post("/debit/20?key=k1", headers=bearer(keys))
    assert (conflict.status_code, conflict.json()["error"]) == (409, "idempotency_conflict")
    bad = http.post("/refund/not-an-id", headers=bearer(keys))
    assert (bad.status_code, bad.json()["field"]) == (422, "entry_id")


def test_5xx_hides_details(http: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR):
        response = http.get("/fail")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert "hunter2" not in response.text
    assert response.json()["error"] == "backend_error"


def test_wrong_client_kind_is_500(http: TestClient) -> None:
    response = http.get("/async-client")
    assert response.status_code == 500
    assert response.json() == {
        "error": "configuration_error", "message": "the credits service failed"
    }


def test_auth_failures_are_401(http: TestClient, keys: KeyPair) -> None:
    assert http.post("/debit/1").status_code == 401
    other = KeyPair("ins_other")
    forged = http.post("/debit/1", headers=bearer(other))
    assert forged.status_code == 401
    assert forged.json()["reason"] == "bad_signature"


def test_no_token_in_logs(http: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    token = KeyPair("ins_other2").token(sub="user_1")
    with caplog.at_level(logging.DEBUG):
        http.post("/debit/1", headers={"Authorization": f"Bearer {token}"})
    assert token not in caplog.text
    assert token.split(".")[2] not in caplog.text


def test_rate_limit_429_before_charging(http: TestClient, keys: KeyPair) -> None:
    assert [http.post("/spend", headers=bearer(keys)).status_code for _ in range(3)] == [200] * 3
    limited = http.post("/spend", headers=bearer(keys))
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) >= 1
    assert http.app.state.sparked_credits.get_balance("user_1") == 70  # type: ignore[attr-defined]
    # Per account: another user still has their budget.
    http.app.state.sparked_credits.initialize_user("user_2")  # type: ignore[attr-defined]
    assert http.post("/spend", headers=bearer(keys, "user_2")).status_code == 200


def test_clerk_auth_config_checked_at_startup(keys: KeyPair) -> None:
    with pytest.raises(ConfigurationError):
        ClerkAuth()
    with pytest.raises(ConfigurationError):
        ClerkAuth(jwt_key="not a pem")


# -- the limiter itself -----------------------------------------------------------------


def test_limiter_shared_through_redis(redis_url: str) -> None:
    """Two limiters (two processes) on one Redis share one budget per account."""
    a = AccountRateLimiter.for_credits_url("4/minute", redis_url)
    b = AccountRateLimiter.for_credits_url("4/minute", redis_url)
    results = [lim.hit("user_x", "chat").allowed for lim in (a, b, a, b, a)]
    assert results == [True, True, True, True, False]
    assert b.hit("user_y", "chat").allowed
    assert b.hit("user_x", "video").allowed
    a.reset("user_x", "chat")
    assert b.hit("user_x", "chat").allowed


def test_limiter_memory_and_multiple_limits() -> None:
    limiter = AccountRateLimiter("2/second; 3/minute", storage_url="memory://")
    decisions = [limiter.hit("u", "s") for _ in range(3)]
    assert [d.allowed for d in decisions] == [True, True, False]
    assert decisions[2].retry_after >= 1
    assert decisions[0].remaining == 1


def test_limiter_storage_urls() -> None:
    assert limits_storage_url("memory://shop") == "memory://"
    assert limits_storage_url("redis://h:1/0") == "redis://h:1/0"
    assert limits_storage_url("unix:///tmp/r.sock") == "redis+unix:///tmp/r.sock"
    with pytest.raises(ValidationError):
        AccountRateLimiter("lots", storage_url="memory://")
