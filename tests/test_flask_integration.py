"""The Flask integration through a real HTTP server (werkzeug's, in a thread, stopped by
the fixture) on a real Redis: session auth, flat error bodies (the same as FastAPI's),
idempotent routes and rate limits."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from flask import Flask, request
from pydantic import BaseModel, ConfigDict, Field
from werkzeug.serving import make_server

from clerk_keys import ORIGIN, KeyPair
from sparked_credits import CreditsClient
from sparked_credits.integrations.flask import (
    ClerkAuth,
    credits_route,
    current_request,
    current_user,
    setup_credits,
)
from sparked_credits.integrations.ratelimit import AccountRateLimiter

KEYS = KeyPair("ins_flask")
ADMIN = "user_flaskadmin"


class Chat(BaseModel):
    model_config = ConfigDict(allow_inf_nan=False)
    message: str = Field(min_length=1)
    message_id: str | None = None


def make_app(credits: CreditsClient, limiter: AccountRateLimiter) -> Flask:
    app = Flask(__name__)
    setup_credits(app, credits, auth=ClerkAuth(jwt_key=KEYS.public_pem,
                                                authorized_parties=[ORIGIN]),
                  rate_limiter=limiter)

    @app.get("/api/credits/balance")
    @credits_route()
    def balance() -> Any:
        return {"balance": credits.get_balance(current_user().user_id)}

    @app.post("/api/chat")
    @credits_route(rate_limit="chat", idempotent="chat", body_field="message_id")
    def chat() -> Any:
        body = Chat.model_validate_json(request.get_data())
        charged = credits.charge(current_user().user_id, "chat_message",
                                 idempotency_key=current_request().charge_key())
        return {"reply": f"echo: {body.message}", "balance": charged.balance}

    @app.post("/api/admin/grant")
    @credits_route(authorize=lambda p: p.user_id == ADMIN, idempotent="grant")
    def grant() -> Any:
        data = request.get_json()
        result = credits.credit(data["user_id"], int(data["amount"]),
                                idempotency_key=current_request().charge_key("grant"))
        return {"balance": result.balance}

    return app


@pytest.fixture
def server(redis_url: str) -> Iterator[httpx.Client]:
    credits = CreditsClient(redis_url, app="flask.sparked.world")
    credits.initialize_user("user_f")
    limiter = AccountRateLimiter("3/minute", storage_url="memory://")
    http = make_server("127.0.0.1", 0, make_app(credits, limiter), threaded=True)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{http.server_port}", timeout=10) as c:
            yield c
    finally:
        http.shutdown()
        thread.join(10)
        http.server_close()
        credits.close()


def auth(user: str = "user_f") -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS.token(sub=user)}"}


def test_session_and_flat_errors(server: httpx.Client) -> None:
    missing = server.get("/api/credits/balance")
    assert missing.status_code == 401
    assert missing.json()["error"] == "token_verification_failed"
    assert missing.json()["reason"] == "missing"
    assert "Bearer" in missing.headers["www-authenticate"]
    assert server.get("/api/credits/balance", headers=auth()).json() == {"balance": 100}
    assert server.get("/nowhere").json()["error"] == "not_found"
    bad = server.post("/api/chat", content=b'{"message": NaN}',
                      headers={**auth(), "content-type": "application/json"})
    assert bad.status_code == 422
    assert bad.json()["error"] == "validation_error"
    forbidden = server.post("/api/admin/grant", content=b"{", headers=auth())
    assert forbidden.status_code == 403
    assert forbidden.json()["error"] == "forbidden"


def test_idempotent_route_and_rate_limit(server: httpx.Client) -> None:
    headers = auth()
    first = server.post("/api/chat", json={"message": "a", "message_id": "m1"}, headers=headers)
    assert first.status_code == 200
    assert first.headers["idempotent-replayed"] == "false"
    again = server.post("/api/chat", json={"message": "a", "message_id": "m1"}, headers=headers)
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    other = server.post("/api/chat", json={"message": "b", "message_id": "m1"}, headers=headers)
    assert other.status_code == 409
    assert other.json()["error"] == "idempotency_conflict"
    assert server.get("/api/credits/balance", headers=headers).json() == {"balance": 90}
    limited = server.post("/api/chat", json={"message": "c"}, headers=headers)
    assert limited.status_code == 429
    assert limited.json()["error"] == "rate_limited"
    assert int(limited.headers["retry-after"]) >= 1
    assert server.get("/api/credits/balance", headers=headers).json() == {"balance": 90}


def test_admin_grant_once(server: httpx.Client) -> None:
    headers = {**auth(ADMIN), "Idempotency-Key": "t-1"}
    for _ in range(3):
        response = server.post("/api/admin/grant", json={"user_id": "user_f", "amount": 7},
                               headers=headers)
        assert response.status_code == 200, response.text
    assert response.json() == {"balance": 107}
