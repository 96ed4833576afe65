"""``redis_path``: a redis-py backend sends through lanes (the default) or through
redis-py's public ``execute_command`` (what tracing integrations wrap). Both paths must
answer the same for the same history: results, refusals, ledger pages (XREVRANGE's
reply callback), reconciliation (SCAN) and the keys they leave behind."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import redis

from conftest import AsyncFacade
from sparked_credits import AsyncCreditsClient, CreditsClient
from sparked_credits.backends.redis_py import AsyncLanes, Lanes, use_lanes, wrapped
from sparked_credits.errors import ConfigurationError

_ID = re.compile(r"\d{13}-\d+|\d{4}-\d\d-\d\dT[\d:.]+Z?|\d{13}")


def _normal(value: Any) -> Any:
    """A result with the parts that differ between two runs (ids, times, keys the SDK
    made per call) replaced by placeholders."""
    if hasattr(value, "model_dump"):
        value = value.model_dump(mode="json")
    if isinstance(value, dict):
        return {
            k: "*"
            if k in ("idempotency_key", "created_at", "expires_at", "checked_at")
            else _normal(v)
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [_normal(v) for v in value]
    if isinstance(value, str):
        return _ID.sub("ID", value)
    return value


def _scenario(client: Any, acct: str) -> list[Any]:
    """A history touching every kind of command the SDK sends: scripts (EVALSHA, and
    EVAL after a NOSCRIPT), GET, XREVRANGE pages, SCAN, refusals."""
    out: list[Any] = []

    def step(fn: Callable[[], Any]) -> None:
        try:
            out.append(("ok", _normal(fn())))
        except Exception as exc:
            out.append(("error", type(exc).__name__, _normal(str(exc))))

    step(lambda: client.initialize_user(acct, 100))
    step(lambda: client.debit(acct, 10, action="chat_message", metadata={"m": "1"}))
    step(lambda: client.debit(acct, 5, action="chat_message", idempotency_key="k1"))
    step(lambda: client.debit(acct, 5, action="chat_message", idempotency_key="k1"))
    step(lambda: client.debit(acct, 6, action="chat_message", idempotency_key="k1"))
    step(lambda: client.debit(acct, 10_000, action="chat_message"))
    step(lambda: client.credit(acct, 40, source="grant", priority=10))
    hold = client.reserve(acct, 20, action="video", ttl=timedelta(minutes=5))
    out.append(("hold", _normal(hold)))
    step(lambda: client.settle(acct, hold.hold_id, 12))
    step(lambda: client.release(acct, hold.hold_id))
    step(lambda: client.get_balance(acct))
    step(lambda: client.history(acct, limit=3))
    step(lambda: client.reconcile(acct))
    return out


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_lanes_and_execute_command_answer_the_same(redis_url: str, mode: str) -> None:
    answers = []
    for path, kind in (("lanes", (Lanes, AsyncLanes)), ("execute_command", ())):
        client: Any
        if mode == "sync":
            client = CreditsClient(redis_url, redis_path=path)
            backend = client._backend
        else:
            client = AsyncFacade(AsyncCreditsClient(redis_url, redis_path=path))
            backend = client._client._backend
        sender = getattr(backend._call, "__self__", None)
        assert isinstance(sender, kind) if kind else not isinstance(sender, (Lanes, AsyncLanes))
        redis.Redis.from_url(redis_url).script_flush()  # the first script call: NOSCRIPT
        answers.append(_scenario(client, "user_same"))
        client.close()
        redis.Redis.from_url(redis_url).flushall()
    assert answers[0] == answers[1]


def test_redis_path_is_validated() -> None:
    with pytest.raises(ConfigurationError, match="redis_path"):
        CreditsClient("redis://localhost:1", redis_path="fast")  # type: ignore[arg-type]


def test_auto_takes_lanes_unless_execute_command_is_wrapped() -> None:
    class Plain:
        def execute_command(self, *args: Any) -> None: ...

    class Traced:
        def execute_command(self, *args: Any) -> None: ...

    Traced.execute_command.__wrapped__ = Plain.execute_command  # type: ignore[attr-defined]
    assert not wrapped(redis.Redis)
    assert not wrapped(redis.asyncio.Redis)
    assert use_lanes("auto", Plain)
    assert not use_lanes("auto", Traced)
    assert use_lanes("lanes", Traced)
    assert not use_lanes("execute_command", Plain)
