# ruff: noqa: F811  (the example app fixtures are imported from test_example_app)
"""The example app's HTTP edge over real HTTP (uvicorn) on a real Redis: every malformed
input a 4xx in the one flat shape, authorization before validation, nothing written on a
refusal, and idempotent requests (one request id, one piece of work, one answer)."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from typing import Any

import httpx
import pytest
import redis

from clerk_keys import ORIGIN, KeyPair
from test_example_app import (  # noqa: F401  (fixtures)
    ADMIN,
    TRAIN_SECRET,
    app,
    apps,
    auth,
    canvas,
    keys,
    new_user,
)


def flat(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert isinstance(body.get("error"), str), body
    assert isinstance(body.get("message"), str), body
    assert "detail" not in body
    return body


def balance(http: httpx.Client, keys: KeyPair, user: str) -> int:
    return int(http.get("/api/credits/balance", headers=auth(keys, user)).json()["balance"])


RAW_BODIES = [
    b'{"message": NaN}', b'{"message": "x", "message_id": Infinity}', b'{"duration": 1e999}',
    b'{"duration": NaN}', b'{"duration": -Infinity}', b'{"prompt": 1e999}', b"{", b"[]",
    b'{"message": "\\ud800"}', b"null", b'"x"',
]


@pytest.mark.parametrize("body", RAW_BODIES)
@pytest.mark.parametrize("route", ["/api/chat", "/api/generate", "/api/video/generate",
                                   "/api/train/start", "/api/admin/credits/grant"])
def test_malformed_bodies_are_flat_4xx(app: httpx.Client, keys: KeyPair, route: str,
                                       body: bytes) -> None:
    headers = {**auth(keys, ADMIN), "content-type": "application/json"}
    response = app.post(route, content=body, headers=headers)
    assert 400 <= response.status_code < 500, response.text
    flat(response, response.status_code)


def test_authorization_before_validation(app: httpx.Client, keys: KeyPair) -> None:
    body = b'{"user_id": "user_x", "amount": NaN}'
    json_headers = {"content-type": "application/json"}
    assert flat(app.post("/api/admin/credits/grant", content=body, headers=json_headers),
                401)["error"] == "token_verification_failed"
    refused = app.post("/api/admin/credits/grant", content=body,
                       headers={**json_headers, **auth(keys, "user_nobody")})
    assert flat(refused, 403)["error"] == "forbidden"
    assert flat(app.post("/api/chat", content=b"{", headers=json_headers), 401)
    assert flat(app.post("/api/admin/credits/grant", content=body,
                         headers={**json_headers, **auth(keys, ADMIN)}), 422)


def test_history_cursor_refused_with_400(app: httpx.Client, keys: KeyPair) -> None:
    headers = auth(keys, "user_cursor")
    for cursor in ("0-0", "abc", "-1-0", "99999999999999999999999-0", "1-"):
        body = flat(app.get("/api/credits/history", params={"cursor": cursor}, headers=headers),
                    400)
        assert body["error"] == "invalid_cursor"
    assert app.get("/api/credits/history", params={"cursor": "0-1"},
                   headers=headers).status_code == 200


def test_401_403_429_404_are_flat(app: httpx.Client, keys: KeyPair) -> None:
    assert flat(app.get("/api/credits/balance"), 401)["reason"] == "missing"
    assert flat(app.get("/api/nowhere"), 404)["error"] == "not_found"
    assert flat(app.get("/api/cron/reconcile"), 401)["error"] == "unauthorized"
    new_user(app, "user_rl")
    headers = auth(keys, "user_rl")
    for i in range(5):
        app.post("/api/chat", json={"message": f"m{i}"}, headers=headers)
    limited = flat(app.post("/api/chat", json={"message": "more"}, headers=headers), 429)
    assert limited["error"] == "rate_limited"
    assert limited["retry_after"] >= 1


def sign_train(raw: bytes) -> dict[str, str]:
    signature = "sha256=" + hmac.new(TRAIN_SECRET.encode(), raw, hashlib.sha256).hexdigest()
    return {"X-Train-Signature": signature, "content-type": "application/json"}


@pytest.mark.parametrize("raw", [
    b'{"job_id": "j", "user_id": "user_t", "hold_id": "1-1", "status": "succeeded",'
    b' "gpu_hours": -1}',
    b'{"job_id": "j", "user_id": "user_t", "hold_id": "1-1", "status": "succeeded",'
    b' "gpu_hours": "lots"}',
    b'{"job_id": "j", "user_id": "user_t", "hold_id": "1-1", "status": "maybe"}',
    b'{"job_id": "j", "user_id": "user_t", "status": "failed"}',
    b'{"job_id": "j", "user_id": "user_t", "hold_id": "1-1", "status": "succeeded",'
    b' "gpu_hours": NaN}',
    b"[]", b"null", b'{"job_id": "j"', b"[" * 100_000 + b"]" * 100_000,
])
def test_signed_invalid_training_reports_are_4xx(app: httpx.Client, raw: bytes) -> None:
    response = app.post("/api/train/webhook", content=raw, headers=sign_train(raw))
    assert 400 <= response.status_code < 500, response.text
    flat(response, response.status_code)


def test_webhook_bodies_over_the_limit_refused(app: httpx.Client) -> None:
    big = b"x" * (1024 * 1024 + 1)
    for route in ("/api/train/webhook", "/api/webhooks/clerk"):
        assert flat(app.post(route, content=big, headers=sign_train(big)), 413)

    def chunks() -> Any:  # no Content-Length: refused while streaming
        for _ in range(200):
            yield b"y" * 8192

    response = app.post("/api/train/webhook", content=chunks(), headers=sign_train(b""))
    assert flat(response, 413)["error"] == "payload_too_large"


# -- idempotent requests ----------------------------------------------------------------


def test_reused_request_id_with_other_body_is_409(app: httpx.Client, keys: KeyPair) -> None:
    new_user(app, "user_free")
    headers = auth(keys, "user_free")
    first = app.post("/api/chat", json={"message": "first", "message_id": "X"}, headers=headers)
    assert first.status_code == 200
    assert first.headers["idempotent-replayed"] == "false"
    again = app.post("/api/chat", json={"message": "first", "message_id": "X"}, headers=headers)
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    other = app.post("/api/chat", json={"message": "another, free one", "message_id": "X"},
                     headers=headers)
    assert flat(other, 409)["error"] == "idempotency_conflict"
    by_header = {**headers, "Idempotency-Key": "Y"}
    assert app.post("/api/generate", json={"prompt": "a"}, headers=by_header).status_code == 200
    assert flat(app.post("/api/generate", json={"prompt": "b"}, headers=by_header), 409)
    # The same id on another route is another request.
    assert app.post("/api/chat", json={"message": "z"}, headers=by_header).status_code == 200
    assert balance(app, keys, "user_free") == 100 - 10 - 50 - 10


def test_admin_grant_once_per_key(app: httpx.Client, keys: KeyPair) -> None:
    new_user(app, "user_gr")
    headers = {**auth(keys, ADMIN), "Idempotency-Key": "ticket-1"}
    grant = {"user_id": "user_gr", "amount": 40}
    for _ in range(3):
        assert app.post("/api/admin/credits/grant", json=grant, headers=headers).status_code == 200
    assert flat(app.post("/api/admin/credits/grant", json={**grant, "amount": 41},
                         headers=headers), 409)
    assert balance(app, keys, "user_gr") == 140


def test_concurrent_repeats_charge_once(app: httpx.Client, canvas: httpx.Client,
                                        keys: KeyPair) -> None:
    """Ten threads over two processes send one request id at once: one charge, every
    answer a success, a replay or a 409 request_in_progress."""
    new_user(app, "user_race")
    headers = {**auth(keys, "user_race"), "Idempotency-Key": "race-1"}
    statuses: list[int] = []
    barrier = threading.Barrier(10)

    def send(i: int) -> None:
        http = app if i % 2 else canvas
        with httpx.Client(base_url=str(http.base_url), timeout=10) as client:
            barrier.wait()
            statuses.append(client.post("/api/video/generate", json={"duration": 2},
                                        headers=headers).status_code)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(statuses) <= {200, 409}, statuses
    assert 200 in statuses
    assert balance(app, keys, "user_race") == 80


def test_crash_between_charge_and_answer_charges_once(app: httpx.Client, keys: KeyPair,
                                                      redis_url: str) -> None:
    """A process that charged and died before storing its answer: the record stays
    running; once its lease is gone a retry takes over with the same charge key, so the
    charge replays."""
    from sparked_credits import CreditsClient
    from sparked_credits.integrations import idempotency as idem

    new_user(app, "user_crash")
    credits = CreditsClient(redis_url, app="app.sparked.world")
    try:
        ctx = idem.RequestContext(account="user_crash", scope="chat", key="crash-1")
        body = json.dumps({"message": "hi"}).encode()
        fp = idem.fingerprint("POST", body)
        from datetime import timedelta

        begun = credits.run_request_step(
            idem.begin_operation(credits.options, ctx, fp, timedelta(milliseconds=1))
        )
        assert isinstance(begun, idem.Started)
        credits.charge("user_crash", "chat_message",
                       idempotency_key=f"chat:{ctx.request_id}")  # ... and the process dies
    finally:
        credits.close()
    headers = {**auth(keys, "user_crash"), "Idempotency-Key": "crash-1",
               "content-type": "application/json"}
    retry = app.post("/api/chat", content=body, headers=headers)
    assert retry.status_code == 200, retry.text
    assert balance(app, keys, "user_crash") == 90
    again = app.post("/api/chat", content=body, headers=headers)
    assert again.headers["idempotent-replayed"] == "true"
    assert balance(app, keys, "user_crash") == 90


def test_failed_before_charge_may_be_retried(app: httpx.Client, keys: KeyPair,
                                             raw_redis: redis.Redis) -> None:
    headers = {**auth(keys, "user_poor"), "Idempotency-Key": "video-1"}
    refused = app.post("/api/video/generate", json={"duration": 5}, headers=headers)
    assert flat(refused, 402)["error"] == "insufficient_credits"  # no account yet: balance 0
    new_user(app, "user_poor")
    ok = app.post("/api/video/generate", json={"duration": 5}, headers=headers)
    assert ok.status_code == 200, ok.text
    assert balance(app, keys, "user_poor") == 50


# -- review of the edge's rules ---------------------------------------------------------


@pytest.mark.parametrize("azp", [None, [ORIGIN], 5, {"origin": ORIGIN}, True,
                                 "https://evil.test", ""])
def test_azp_must_be_an_allowed_string(app: httpx.Client, keys: KeyPair, azp: object) -> None:
    """With CLERK_AUTHORIZED_PARTIES set, ``azp`` must be a string naming one of them:
    missing, empty, another type or another origin is 401 wrong_party."""
    refused = app.get("/api/credits/balance", headers=auth(keys, "user_azp", azp=azp))
    assert flat(refused, 401)["reason"] == "wrong_party"
    assert app.get("/api/credits/balance",
                   headers=auth(keys, "user_azp", azp=ORIGIN)).status_code == 200


def test_without_authorized_parties_azp_is_not_required(redis_url: str) -> None:
    """Without the setting (the app logs a warning), a token without ``azp`` passes, as
    in Clerk's SDKs; an ``azp`` that is not a string is still refused."""
    from starlette.testclient import TestClient

    from credits_app import Settings, create_app

    pair = KeyPair("ins_noparties")
    app_ = create_app(Settings(storage_url=redis_url, clerk_jwt_key=pair.public_pem,
                               rate_limit=None))
    with TestClient(app_) as http:
        ok = http.get("/api/credits/balance", headers=auth(pair, "user_np", azp=None))
        assert ok.status_code == 200, ok.text
        other = http.get("/api/credits/balance", headers=auth(pair, "user_np", azp=[ORIGIN]))
        assert other.status_code == 401
        assert other.json()["reason"] == "wrong_party"


@pytest.mark.parametrize("tz", ["America", "Europe/", "../etc", "/etc/localtime", "Mars/Base",
                                "", "Europe/Paris\x00"])
def test_unknown_time_zone_is_400_and_a_validation_error_in_the_sdk(
    app: httpx.Client, keys: KeyPair, redis_url: str, tz: str
) -> None:
    """The app answers 400 invalid_time_zone; the SDK itself raises ValidationError (tz)
    for the same names, so a user's own route cannot crash on a directory name either."""
    from sparked_credits import CreditsClient, ValidationError

    bad = app.get("/api/credits/usage", params={"tz": tz}, headers=auth(keys, "user_tz"))
    assert flat(bad, 400)["error"] == "invalid_time_zone"
    with CreditsClient(redis_url) as credits, pytest.raises(ValidationError) as err:
        credits.usage("user_tz", tz=tz)
    assert err.value.field == "tz"
