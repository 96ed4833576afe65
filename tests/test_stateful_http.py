"""A hypothesis state machine over the example app's HTTP routes, on a real Redis.

Sequences of spending (chat, canvas, video, whose failed renders are refunded), training
holds (start, then a signed report that settles or releases), history reads, admin grants,
repeats of earlier requests (same id, same body) and reuses of their ids with another body,
all with valid sessions. After every step:

* no answer is a 5xx, except the 502 of a video whose rendering this test made fail (its
  charge refunded);
* a refusal (4xx) and a replay change nothing in Redis;
* each account's balance equals the sum of its ledger, and equals a model that counts only
  first answers (a replay or a reused id never buys work);
* a repeat of a stored request answers the stored answer with ``Idempotent-Replayed: true``.

Why not schemathesis' stateful mode: it follows OpenAPI links from one response's fields to
another request's parameters, and these routes share no such fields (the state that links
them, a balance, is per user and implicit); the one real link, ``hold_id`` from
``/api/train/start`` to the signed training webhook, is not a session-authenticated
operation. The per-operation schemathesis fuzzing lives in test_fuzz_http.py.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    multiple,
    rule,
)
from starlette.testclient import TestClient
from svix.webhooks import Webhook

import app_flows
from clerk_keys import ORIGIN, KeyPair
from credits_app import Settings, create_app
from sparked_credits import CreditsClient

KEYS = KeyPair("ins_stateful_http")
ADMIN = "user_sadmin"
USERS = ("user_s1", "user_s2")
WEBHOOK_SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
TRAIN_SECRET = "train-stateful-secret"
FAIL = "please fail"  # a video prompt whose rendering this test makes fail

# derandomize: the same sequences on every run, so the check that the machine reached its
# replays (an admin grant repeated, a spend repeated) cannot fail by chance in CI.
STEPS = settings(max_examples=25, stateful_step_count=30, deadline=None, database=None,
                 derandomize=True, suppress_health_check=list(HealthCheck))


def _render(prompt: str, seconds: float) -> str:
    if prompt == FAIL:
        raise RuntimeError("the renderer is down")
    return app_flows.render_video(prompt, seconds)


@pytest.fixture
def http(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setattr(app_flows, "create_video",
                        functools.partial(app_flows.create_video, render=_render))
    app = create_app(Settings(
        storage_url=redis_url, clerk_jwt_key=KEYS.public_pem, authorized_parties=(ORIGIN,),
        clerk_webhook_secret=WEBHOOK_SECRET, admin_user_ids=frozenset({ADMIN}),
        train_webhook_secret=TRAIN_SECRET, rate_limit=None,
    ))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def _state(raw: redis.Redis) -> dict[bytes, Any]:
    """Every key of the store with its content, but the request records: what a refusal or
    a replay must not touch. (Rate limits are off.) A refused attempt that asked for a
    charge key may leave its request record ``failed``: a retry then runs again, with new
    charge keys, as a refused charge records nothing (see ``failure_mode``)."""
    out: dict[bytes, Any] = {}
    for key in raw.scan_iter():
        if key.startswith(b"request:"):
            continue
        kind = raw.type(key)
        if kind == b"string":
            out[key] = raw.get(key)
        elif kind == b"hash":
            out[key] = raw.hgetall(key)
        elif kind == b"stream":
            out[key] = [entry_id for entry_id, _ in raw.xrange(key)]
        elif kind == b"zset":
            out[key] = raw.zrange(key, 0, -1, withscores=True)
    return out


def _sign_clerk(body: str, msg_id: str) -> dict[str, str]:
    now = datetime.now(timezone.utc)
    return {"svix-id": msg_id, "svix-timestamp": str(int(now.timestamp())),
            "svix-signature": Webhook(WEBHOOK_SECRET).sign(msg_id, now, body),
            "content-type": "application/json"}


def _sign_train(raw: bytes) -> dict[str, str]:
    mac = hmac.new(TRAIN_SECRET.encode(), raw, hashlib.sha256).hexdigest()
    return {"X-Train-Signature": f"sha256={mac}", "content-type": "application/json"}


REPLAYS: list[str] = []  # the routes replayed, to check the machine reaches its replays

Sent = tuple[str, str, str, bytes, dict[str, str]]  # user, route, key, body, answer summary

users = st.sampled_from(USERS)
request_ids = st.text(alphabet="abcdefgh0123", min_size=1, max_size=6)


def make_machine(http: TestClient, redis_url: str) -> type[RuleBasedStateMachine]:
    raw = redis.Redis.from_url(redis_url)

    class HttpLedger(RuleBasedStateMachine):
        sent = Bundle("sent")
        holds = Bundle("holds")

        def __init__(self) -> None:
            super().__init__()
            raw.flushall()
            self.model: dict[str, int] = {u: 0 for u in USERS}
            self.grants: dict[str, dict[str, Any]] = {}  # grant request id -> its body
            self.credits = CreditsClient(redis_url, app="app.sparked.world")
            self.sign_up(USERS[0])  # one user starts with credits, the other with none

        def teardown(self) -> None:
            self.credits.close()

        # -- helpers ------------------------------------------------------------------

        def post(self, user: str, route: str, body: dict[str, Any], key: str | None,
                 ) -> tuple[Any, bool]:
            """Send one request; check the refusal and replay rules; return (response,
            whether it was a first success)."""
            headers = {"Authorization": f"Bearer {KEYS.token(sub=user)}",
                       "content-type": "application/json"}
            if key is not None:
                headers["Idempotency-Key"] = key
            before = _state(raw)
            response = http.post(route, content=json.dumps(body).encode(), headers=headers)
            where = (route, body, key, response.status_code, response.text[:300])
            failed_render = route == "/api/video/generate" and body.get("prompt") == FAIL
            if response.status_code >= 500:
                assert failed_render, where
                assert response.status_code == 502, where
                assert response.json()["error"] == "generation_failed", where
                assert "could not be rendered" in response.json()["message"], where
            if response.status_code >= 400:
                assert isinstance(response.json().get("error"), str), where
                if response.status_code < 500:
                    assert _state(raw) == before, where
                return response, False
            replayed = response.headers.get("idempotent-replayed") == "true"
            if replayed:
                assert _state(raw) == before, where
            return response, not replayed

        # -- rules --------------------------------------------------------------------

        @rule(user=users)
        def sign_up(self, user: str) -> None:
            body = json.dumps({"type": "user.created", "object": "event", "data": {"id": user}})
            response = http.post("/api/webhooks/clerk", content=body,
                                 headers=_sign_clerk(body, f"msg_{user}"))
            assert response.status_code == 200, response.text
            if response.json()["outcome"] == "initialized":
                self.model[user] += 100

        @rule(target=sent, user=users, key=request_ids | st.none(),
              route=st.sampled_from(["/api/chat", "/api/generate", "/api/video/generate"]),
              n=st.integers(1, 4), flag=st.booleans())
        def spend(self, user: str, key: str | None, route: str, n: int, flag: bool) -> Any:
            body: dict[str, Any]
            if route == "/api/chat":
                body = {"message": f"m{n}"}
            elif route == "/api/generate":
                body = {"prompt": f"p{n}", "complex": flag}
            else:
                body = {"prompt": FAIL if flag and n == 1 else f"v{n}", "duration": n}
            response, first = self.post(user, route, body, key)
            if first:
                self.model[user] -= response.json()["credits_used"]
            if key is None or response.status_code >= 400:
                return multiple()  # nothing to repeat
            return (user, route, key, body, response.json())

        @rule(target=sent, key=request_ids, amount=st.integers(1, 300), to=users,
              admin=st.booleans())
        def grant(self, key: str, amount: int, to: str, admin: bool) -> Any:
            body = {"user_id": to, "amount": amount}
            response, first = self.post(ADMIN if admin else to, "/api/admin/credits/grant",
                                        body, key)
            if not admin:
                assert response.status_code == 403, response.text
                return multiple()
            if self.grants.setdefault(key, body) != body:  # this id bought another grant
                assert response.status_code == 409, response.text
                assert response.json()["error"] == "idempotency_conflict"
                return multiple()
            assert response.status_code == 200, response.text
            if first:
                self.model[to] += amount
            return (ADMIN, "/api/admin/credits/grant", key, {"user_id": to, "amount": amount},
                    response.json())

        @rule(previous=sent)
        def repeat(self, previous: Any) -> None:
            user, route, key, body, answer = previous
            response, first = self.post(user, route, body, key)
            assert not first, (route, body, key, response.text)
            REPLAYS.append(route)
            assert response.status_code == 200
            assert response.json() == answer

        @rule(previous=sent, other=st.integers(5, 9))
        def reuse_id_for_other_work(self, previous: Any, other: int) -> None:
            user, route, key, body, _ = previous
            changed = {**body, "amount": body.get("amount", 0) + other} if "amount" in body \
                else {**body, "prompt": f"other {other}", "message": f"other {other}"}
            response, _ = self.post(user, route, changed, key)
            assert response.status_code == 409, response.text
            assert response.json()["error"] == "idempotency_conflict"

        @rule(target=holds, user=users, hours=st.sampled_from([0.01, 0.05]),
              key=request_ids)
        def train_start(self, user: str, hours: float, key: str) -> Any:
            response, first = self.post(user, "/api/train/start",
                                        {"estimated_gpu_hours": hours, "job_id": f"j{key}"}, None)
            if response.status_code != 200:
                return multiple()
            job = response.json()
            if not first:
                return multiple()  # a replay of an earlier start: its hold is already in play
            self.model[user] -= job["reserved"]
            return (user, job)

        @rule(held=consumes(holds), used=st.sampled_from([0.0, 0.02, 0.1]),
              ok=st.booleans())
        def train_report(self, held: Any, used: float, ok: bool) -> None:
            user, job = held
            raw_body = json.dumps({
                "job_id": job["job_id"], "user_id": user, "hold_id": job["hold_id"],
                "reserved": job["reserved"], "status": "succeeded" if ok else "failed",
                "gpu_hours": used}).encode()
            for _ in range(2):  # the provider redelivers: one settlement
                before = _state(raw)
                response = http.post("/api/train/webhook", content=raw_body,
                                     headers=_sign_train(raw_body))
                if response.status_code == 402:  # an overage the balance cannot cover
                    assert ok, response.text
                    assert used * 1000 > job["reserved"], response.text
                    assert _state(raw) == before
                    continue
                assert response.status_code == 200, response.text
            # The balance after the settlement, whatever the overage rule decided, is read
            # back: the ledger invariant below checks it against the entries.
            self.model[user] = self.credits.get_balance(user)

        @rule(user=users, limit=st.integers(1, 5), bad=st.booleans())
        def history(self, user: str, limit: int, bad: bool) -> None:
            headers = {"Authorization": f"Bearer {KEYS.token(sub=user)}"}
            params: dict[str, Any] = {"limit": limit}
            if bad:
                params["cursor"] = "0-0"
            before = _state(raw)
            response = http.get("/api/credits/history", params=params, headers=headers)
            assert _state(raw) == before
            if bad:
                assert response.status_code == 400, response.text
                return
            assert response.status_code == 200, response.text
            entries = response.json()["transactions"]
            assert len(entries) <= limit
            if entries:
                assert entries[0]["balance_after"] == self.credits.get_balance(user)

        # -- invariants ---------------------------------------------------------------

        @invariant()
        def balance_is_ledger_sum_and_model(self) -> None:
            for user in USERS:
                balance = self.credits.get_balance(user)
                total = sum(int(fields[b"delta"]) for _, fields in
                            raw.xrange(f"txs:{user}".encode()))
                assert balance == total, (user, balance, total)
                assert balance == self.model[user], (user, balance, self.model)

    return HttpLedger


def test_http_sequences_keep_the_ledger(http: TestClient, redis_url: str) -> None:
    from hypothesis.stateful import run_state_machine_as_test

    machine: Callable[[], RuleBasedStateMachine] = make_machine(http, redis_url)
    REPLAYS.clear()
    run_state_machine_as_test(machine, settings=STEPS)
    assert "/api/admin/credits/grant" in REPLAYS, REPLAYS
    assert {"/api/chat", "/api/generate", "/api/video/generate"} & set(REPLAYS), REPLAYS

