"""Idempotent requests (``CreditsRoute`` + ``@idempotent``) as a table over every backend
(memory, a real redis-server, the real local Redis Cluster, Upstash through the HTTP bridge)
and both clients: an app built on ``CreditsClient`` with ``def`` routes, and one built on
``AsyncCreditsClient`` with ``async def`` routes. Each row runs the request-record script
on that backend: first run, replay, conflict, in progress, failure before a charge,
takeover of a crashed attempt.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Annotated, Any

import pytest
from fastapi import APIRouter, Depends, FastAPI
from pydantic import BaseModel
from starlette.testclient import TestClient

from clerk_keys import ORIGIN, KeyPair
from conftest import ledger_sum
from sparked_credits import AsyncCreditsClient, CreditsClient
from sparked_credits.clerk import ClerkPrincipal
from sparked_credits.integrations import idempotency as idem
from sparked_credits.integrations.fastapi import (
    ClerkAuth,
    CreditsRoute,
    IdempotentRequest,
    get_async_credits,
    get_clerk_user,
    get_credits,
    idempotent,
    setup_credits,
)
from sparked_credits.integrations.http_errors import HTTPRefusal
from upstash_bridge import TOKEN

KEYS = KeyPair("ins_idem_table")
USER = "user_idem"
User = Annotated[ClerkPrincipal, Depends(get_clerk_user)]


class Spend(BaseModel):
    note: str
    refuse: bool = False  # answer 400 before asking for a charge key


def _options(url: str) -> dict[str, Any]:
    options: dict[str, Any] = {"app": "app.sparked.world"}
    if url.startswith("http"):
        options["token"] = TOKEN
    return options


def build_app(url: str, mode: str) -> FastAPI:
    """A user's own app: one idempotent spending route, on the sync or the async client."""
    client: CreditsClient | AsyncCreditsClient
    router = APIRouter(route_class=CreditsRoute)
    runs: list[str] = []
    if mode == "sync":
        client = CreditsClient(url, **_options(url))

        @router.post("/api/spend")
        @idempotent("spend", body_field="request_id")
        def spend(body: Spend, user: User, req: IdempotentRequest,
                  credits: Annotated[CreditsClient, Depends(get_credits)]) -> dict[str, Any]:
            if body.refuse:
                raise HTTPRefusal(400, "refused", "refused before any charge")
            runs.append(body.note)
            charged = credits.charge(user.user_id, "chat_message",
                                     idempotency_key=req.charge_key())
            return {"note": body.note, "balance": charged.balance, "run": len(runs)}
    else:
        client = AsyncCreditsClient(url, **_options(url))

        @router.post("/api/spend")
        @idempotent("spend", body_field="request_id")
        async def spend_async(
            body: Spend, user: User, req: IdempotentRequest,
            credits: Annotated[AsyncCreditsClient, Depends(get_async_credits)],
        ) -> dict[str, Any]:
            if body.refuse:
                raise HTTPRefusal(400, "refused", "refused before any charge")
            runs.append(body.note)
            charged = await credits.charge(user.user_id, "chat_message",
                                           idempotency_key=req.charge_key())
            return {"note": body.note, "balance": charged.balance, "run": len(runs)}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        yield
        if isinstance(client, AsyncCreditsClient):
            await client.aclose()  # on the loop that used it
        else:
            client.close()

    app = FastAPI(lifespan=lifespan)
    setup_credits(app, client, auth=ClerkAuth(jwt_key=KEYS.public_pem,
                                              authorized_parties=[ORIGIN]))
    app.include_router(router)
    return app


@pytest.fixture
def http(backend_url: str, mode: str) -> Iterator[TestClient]:
    with CreditsClient(backend_url, **_options(backend_url)) as credits:
        credits.initialize_user(USER, 100)
    with TestClient(build_app(backend_url, mode), raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def credits(backend_url: str) -> Iterator[CreditsClient]:
    """A second client on the same store: to look at the balance, or to play the part of
    another process."""
    with CreditsClient(backend_url, **_options(backend_url)) as client:
        yield client


def post(http: TestClient, body: bytes, key: str | None = None) -> Any:
    headers = {"Authorization": f"Bearer {KEYS.token(sub=USER)}",
               "content-type": "application/json"}
    if key:
        headers[idem.IDEMPOTENCY_HEADER] = key
    return http.post("/api/spend", content=body, headers=headers)


def balance_checked(credits: CreditsClient) -> int:
    balance = credits.get_balance(USER)
    assert balance == ledger_sum(credits, USER)
    return balance


def test_first_run_replay_and_conflict(http: TestClient, credits: CreditsClient) -> None:
    body = json.dumps({"note": "a", "request_id": "r-1"}).encode()
    first = post(http, body)
    assert first.status_code == 200, first.text
    assert first.headers[idem.REPLAYED_HEADER] == "false"
    for _ in range(2):
        again = post(http, body)
        assert again.status_code == 200
        assert again.headers[idem.REPLAYED_HEADER] == "true"
        assert again.json() == first.json()  # the route did not run again
    by_header = post(http, body, key="r-1h")  # the header wins over the body field
    assert by_header.headers[idem.REPLAYED_HEADER] == "false"
    assert by_header.json()["run"] == 2
    other = post(http, json.dumps({"note": "free?", "request_id": "r-1"}).encode())
    assert other.status_code == 409
    assert other.json()["error"] == "idempotency_conflict"
    untracked = json.dumps({"note": "no id"}).encode()
    assert post(http, untracked).json()["run"] == 3
    assert post(http, untracked).json()["run"] == 4
    assert balance_checked(credits) == 100 - 4 * 10


def test_refusal_before_a_charge_is_forgotten(http: TestClient, credits: CreditsClient) -> None:
    refused = post(http, json.dumps({"note": "x", "refuse": True}).encode(), key="r-2")
    assert refused.status_code == 400
    assert refused.json()["error"] == "refused"
    retried = post(http, json.dumps({"note": "x", "refuse": True}).encode(), key="r-2")
    assert retried.status_code == 400  # not replayed: the refusal was not stored
    assert balance_checked(credits) == 100


def test_in_progress_then_takeover_after_the_lease(http: TestClient,
                                                   credits: CreditsClient) -> None:
    """Another process began the request (and charged) and holds its lease: 409
    request_in_progress. Its lease runs out (the process died): a retry takes over with
    the same charge key, so the charge replays."""
    body = json.dumps({"note": "c", "request_id": "r-3"}).encode()
    ctx = idem.RequestContext(account=USER, scope="spend", key="r-3")
    fp = idem.fingerprint("POST", body)
    begun = credits.run_request_step(
        idem.begin_operation(credits.options, ctx, fp, timedelta(seconds=30)))
    assert begun == idem.Started(1)
    credits.charge(USER, "chat_message", idempotency_key=ctx.charge_key())
    busy = post(http, body)
    assert busy.status_code == 409
    assert busy.json()["error"] == "request_in_progress"
    assert int(busy.headers["retry-after"]) >= 1
    assert balance_checked(credits) == 90
    # The lease ends: as if the record had been begun with a 1 ms lease.
    ctx2 = idem.RequestContext(account=USER, scope="spend", key="r-3x")
    credits.run_request_step(idem.begin_operation(credits.options, ctx2, fp,
                                                  timedelta(milliseconds=1)))
    credits.charge(USER, "chat_message", idempotency_key=ctx2.charge_key())
    body2 = json.dumps({"note": "c", "request_id": "r-3x"}).encode()
    fp2 = idem.fingerprint("POST", body2)
    assert fp2 != fp
    # That record holds the digest of ``body``: another body is a conflict, the same
    # body (once the 1 ms lease is over) a takeover.
    assert post(http, body2).status_code == 409
    time.sleep(0.01)
    taken = post(http, body, key="r-3x")
    assert taken.status_code == 200, taken.text
    assert taken.headers[idem.REPLAYED_HEADER] == "false"
    assert balance_checked(credits) == 80  # r-3x's charge replayed: charged once
    assert post(http, body, key="r-3x").headers[idem.REPLAYED_HEADER] == "true"
    assert balance_checked(credits) == 80


def test_flask_route_on_every_backend(backend_url: str) -> None:
    """The Flask integration runs the same flow (``RequestFlow``) on each backend: first
    run, replay, conflict, a refusal before any charge forgotten."""
    pytest.importorskip("flask")
    from flask import Flask, request

    from sparked_credits.integrations import flask as credits_flask
    from sparked_credits.integrations.flask import credits_route, current_request, current_user

    credits = CreditsClient(backend_url, **_options(backend_url))
    credits.initialize_user(USER, 100)
    app = Flask(__name__)
    credits_flask.setup_credits(app, credits, auth=credits_flask.ClerkAuth(
        jwt_key=KEYS.public_pem, authorized_parties=[ORIGIN]))
    runs: list[str] = []

    @app.post("/api/spend")
    @credits_route(idempotent="spend", body_field="request_id")
    def spend() -> Any:
        body = Spend.model_validate_json(request.get_data())
        if body.refuse:
            raise HTTPRefusal(400, "refused", "refused before any charge")
        runs.append(body.note)
        charged = credits.charge(current_user().user_id, "chat_message",
                                 idempotency_key=current_request().charge_key())
        return {"note": body.note, "balance": charged.balance, "run": len(runs)}

    web = app.test_client()
    headers = {"Authorization": f"Bearer {KEYS.token(sub=USER)}",
               "content-type": "application/json"}
    try:
        body = json.dumps({"note": "f", "request_id": "f-1"})
        first = web.post("/api/spend", data=body, headers=headers)
        assert first.status_code == 200, first.get_data(as_text=True)
        assert first.headers[idem.REPLAYED_HEADER] == "false"
        again = web.post("/api/spend", data=body, headers=headers)
        assert again.headers[idem.REPLAYED_HEADER] == "true"
        assert again.get_json() == first.get_json()
        other = web.post("/api/spend", data=json.dumps({"note": "g", "request_id": "f-1"}),
                         headers=headers)
        assert other.status_code == 409
        assert other.get_json()["error"] == "idempotency_conflict"
        refused = json.dumps({"note": "r", "refuse": True, "request_id": "f-2"})
        for _ in range(2):
            answer = web.post("/api/spend", data=refused, headers=headers)
            assert answer.status_code == 400
            assert answer.get_json()["error"] == "refused"
        assert runs == ["f"]
        assert balance_checked(credits) == 90
    finally:
        credits.close()


def test_a_reserialized_body_is_a_replay(http: TestClient, credits: CreditsClient) -> None:
    """The same JSON with other spacing and key order (a retry through another JSON
    library) replays; a body that means something else is still a conflict."""
    first = post(http, b'{"note": "j", "request_id": "r-json"}')
    assert first.status_code == 200, first.text
    again = post(http, b'{\n  "request_id":"r-json",\n  "note":"j"\n}')
    assert again.status_code == 200, again.text
    assert again.headers[idem.REPLAYED_HEADER] == "true"
    assert again.json() == first.json()
    other = post(http, b'{"request_id": "r-json", "note": "k"}')
    assert other.status_code == 409
    assert other.json()["differs"] == ["body"]
    assert balance_checked(credits) == 90


def test_body_digest_by_json_meaning_and_bytes_otherwise() -> None:
    assert idem.fingerprint("POST", b'{"a":1,"b":[1,2]}') == idem.fingerprint(
        "post", b'{ "b": [1, 2],\n "a": 1 }')
    assert idem.fingerprint("POST", b'{"a":1}') != idem.fingerprint("POST", b'{"a":2}')
    # Already canonical: the digest earlier versions stored (a rolling upgrade replays).
    import hashlib

    assert idem.fingerprint("POST", b'{"a":1}') == hashlib.sha256(b'POST\n{"a":1}').hexdigest()
    # Not JSON (or not UTF-8): byte-exact.
    assert idem.fingerprint("POST", b"a b") != idem.fingerprint("POST", b"a  b")
    assert idem.fingerprint("POST", b"\xff") != idem.fingerprint("POST", b"\xfe")
    assert idem.fingerprint("POST", b"[" * 100_000) == idem.fingerprint("POST", b"[" * 100_000)
