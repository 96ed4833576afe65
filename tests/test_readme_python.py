"""The README's Python blocks, executed as written. The SDK blocks get the test's
redis-server in place of ``redis://localhost:6379/0`` (the only substitution), and the names
the prose gives them (``message_id``, ``job_id``, ``render``, ``entry_id``...); the FastAPI and
Flask snippets run as they stand and are then called over their test clients."""

from __future__ import annotations

import asyncio
import re
import textwrap
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from clerk_keys import ORIGIN, KeyPair

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
KEYS = KeyPair("ins_readme_python")


def python_block(text: str) -> str:
    found = [b for b in re.findall(r"```python\n(.*?)```", README, flags=re.S) if text in b]
    assert len(found) == 1, text
    return found[0]


def sdk_block(text: str, redis_url: str) -> str:
    return python_block(text).replace("redis://localhost:6379/0", redis_url)


def test_sdk_blocks(redis_url: str) -> None:
    ns: dict[str, Any] = {}
    exec(sdk_block("# once per account, ever: a webhook retry changes nothing", redis_url), ns)
    assert ns["result"].balance == 90
    credits = ns["credits"]
    async_block = sdk_block("async with AsyncCreditsClient", redis_url)
    async_ns: dict[str, Any] = {}
    exec("async def main():\n" + textwrap.indent(async_block, "    "), async_ns)
    asyncio.run(async_ns["main"]())
    assert credits.get_balance("user_2abc") == 80
    credits.credit("user_2abc", 10_000, source="test")
    ns.update(message_id="m1", job_id="job_1", timedelta=timedelta, render=lambda: None)
    exec(python_block("credits.charge(\"user_2abc\", \"chat_message\""), ns)
    ns.update(get_all_user_ids=lambda: None,
              entry_id=credits.history("user_2abc", limit=1).entries[0].id)
    exec(python_block("credits.reconcile(\"user_2abc\")"), ns)
    assert credits.reconcile("user_2abc").matched
    credits.close()


def test_fastapi_idempotent_route_block() -> None:
    from fastapi import FastAPI
    from starlette.testclient import TestClient

    from sparked_credits import CreditsClient
    from sparked_credits.backends.memory import reset_memory_store
    from sparked_credits.integrations.fastapi import ClerkAuth, setup_credits

    ns: dict[str, Any] = {}
    exec(python_block("@idempotent(\"summarize\""), ns)
    app = FastAPI()
    client = CreditsClient("memory://readme-summarize", app="app.sparked.world")
    client.initialize_user("user_sum", 100)
    setup_credits(app, client, auth=ClerkAuth(jwt_key=KEYS.public_pem,
                                              authorized_parties=[ORIGIN]))
    app.include_router(ns["router"])
    try:
        with TestClient(app) as http:
            headers = {"Authorization": f"Bearer {KEYS.token(sub='user_sum')}"}
            body = {"text": "a long text", "request_id": "r1"}
            answers = [http.post("/api/summarize", json=body, headers=headers)
                       for _ in range(3)]
        assert [a.status_code for a in answers] == [200, 200, 200]
        assert [a.headers["idempotent-replayed"] for a in answers] == ["false", "true", "true"]
        assert client.get_balance("user_sum") == 90
    finally:
        client.close()
        reset_memory_store("readme-summarize")


def test_flask_block(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("flask")
    reset_memory_store()
    monkeypatch.setenv("CLERK_JWT_KEY", KEYS.public_pem)
    ns: dict[str, Any] = {"__name__": "readme_flask"}
    exec(python_block("from flask import Flask"), ns)
    ns["credits"].initialize_user("user_flask", 100)
    web = ns["app"].test_client()
    headers = {"Authorization": f"Bearer {KEYS.token(sub='user_flask')}"}
    answers = [web.post("/api/chat", json={"message_id": "m1"}, headers=headers)
               for _ in range(2)]
    assert [a.status_code for a in answers] == [200, 200], answers[0].get_data(as_text=True)
    assert answers[1].headers["Idempotent-Replayed"] == "true"
    assert ns["credits"].get_balance("user_flask") == 90
    missing = web.post("/api/chat", json={"message_id": "m2"})
    assert missing.status_code == 401
    assert missing.get_json()["error"] == "token_verification_failed"
    ns["credits"].close()
    reset_memory_store()  # the block's memory:// store, and the rate limiter's


def reset_memory_store() -> None:
    from sparked_credits.backends.memory import reset_memory_store as reset

    reset("default")
