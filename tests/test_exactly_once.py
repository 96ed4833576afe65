"""Exactly once across apps, across the SDK's own re-sends, across versions.

* the idempotency fingerprint is what the operation is, never the app that sent it;
* records written by earlier versions (fingerprint with the app) still replay;
* ``replayed`` is true only when the caller's key had been applied before the caller's
  call: the SDK's own re-send after a lost reply (redis-py's retry) is invisible;
* entries of a type this version does not know never make a reader raise.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import redis

from conftest import ledger_sum
from proxy import DroppingProxy
from redis_servers import RedisServer
from sparked_credits import CreditsClient, IdempotencyConflictError, ValidationError
from sparked_credits._core.operations import _fingerprints
from sparked_credits.models import EntryType

ACCT = "user_2abc"


# -- A1: the fingerprint is the operation, not the app --------------------------------------


def test_two_apps_replay_each_others_keys(make_client: Callable[..., Any]) -> None:
    chat = make_client(app="app.sparked.world")
    canvas = make_client(app="canvas.sparked.world")
    chat.initialize_user(ACCT)
    first = chat.debit(ACCT, 10, action="chat_message", idempotency_key="svix_msg_1")
    again = canvas.debit(ACCT, 10, action="chat_message", idempotency_key="svix_msg_1")
    assert again.replayed is True
    assert again.entry.id == first.entry.id
    assert again.entry.app == "app.sparked.world"  # the first outcome, as written
    assert again.entry.metadata == {}
    hold = chat.reserve(ACCT, 30, action="model_training", idempotency_key="job-1")
    assert canvas.reserve(ACCT, 30, action="model_training", idempotency_key="job-1").replayed
    settled = canvas.settle(ACCT, hold.hold_id, 20)
    assert chat.settle(ACCT, hold.hold_id, 20).entry.id == settled.entry.id
    assert chat.get_balance(ACCT) == 100 - 10 - 20 == ledger_sum(chat, ACCT)


def test_other_parameters_are_still_a_conflict_across_apps(
    make_client: Callable[..., Any],
) -> None:
    chat = make_client(app="app.sparked.world")
    canvas = make_client(app="canvas.sparked.world")
    chat.initialize_user(ACCT)
    chat.debit(ACCT, 10, action="chat_message", idempotency_key="k")
    with pytest.raises(IdempotencyConflictError):
        canvas.debit(ACCT, 11, action="chat_message", idempotency_key="k")
    with pytest.raises(IdempotencyConflictError):
        canvas.debit(ACCT, 10, action="chat_message", metadata={"a": 1}, idempotency_key="k")
    assert chat.get_balance(ACCT) == 90 == ledger_sum(chat, ACCT)


def test_reserved_metadata_key_is_refused(make_client: Callable[..., Any]) -> None:
    client = make_client()
    client.initialize_user(ACCT)
    with pytest.raises(ValidationError):
        client.debit(ACCT, 1, action="chat_message", metadata={"_sc": 1})
    assert client.get_balance(ACCT) == 100
    kept = client.debit(ACCT, 1, action="chat_message", metadata={"job": "j1"})
    assert kept.entry.metadata == {"job": "j1"}
    page = client.history(ACCT, limit=1)
    assert page.entries[0].metadata == {"job": "j1"}  # the scripts' own member is dropped


def _old_sdk_debit(
    raw: redis.Redis, app: str, key: str, amount: int, balance_after: int
) -> str:
    """What a version before 0.9 left for a debit: an entry without '_sc' in meta and a
    record 'fingerprint-with-the-app|entry id'."""
    params = (str(amount), "chat_message", "", "")
    legacy = _fingerprints("debit", ACCT, app, params)[1]
    eid = raw.xadd(
        f"txs:{ACCT}",
        {
            "type": "debit",
            "delta": str(-amount),
            "balance": str(balance_after),
            "action": "chat_message",
            "app": app,
            "reason": "",
            "ref": "",
            "idem": key,
            "meta": "",
        },
    ).decode()
    raw.set(f"balance:{ACCT}", balance_after)
    raw.hset(f"idem:{{{ACCT}}}:current", key, f"{legacy}|{eid}")
    return eid


def test_record_of_an_older_version_replays_during_the_upgrade(
    redis_url: str, raw_redis: redis.Redis
) -> None:
    with CreditsClient(redis_url, app="app.sparked.world") as chat:
        chat.initialize_user(ACCT)
        eid = _old_sdk_debit(raw_redis, "app.sparked.world", "old-key", 10, 90)
        again = chat.debit(ACCT, 10, action="chat_message", idempotency_key="old-key")
        assert again.replayed is True
        assert again.entry.id == eid
        with pytest.raises(IdempotencyConflictError):
            chat.debit(ACCT, 12, action="chat_message", idempotency_key="old-key")
        assert chat.get_balance(ACCT) == 90 == ledger_sum(chat, ACCT)


def test_records_keep_the_format_older_readers_parse(
    redis_url: str, raw_redis: redis.Redis
) -> None:
    """An older process in the same app, mid-upgrade, reads 'fingerprint|entry id' and
    compares the part before '|' with its own fingerprint (which includes its app)."""
    with CreditsClient(redis_url, app="app.sparked.world") as chat:
        chat.initialize_user(ACCT)
        done = chat.debit(ACCT, 10, action="chat_message", idempotency_key="new-key")
    record = raw_redis.hget(f"idem:{{{ACCT}}}:current", "new-key")
    assert record is not None
    legacy = _fingerprints("debit", ACCT, "app.sparked.world", ("10", "chat_message", "", ""))
    assert record.decode() == f"{legacy[1]}|{done.entry.id}"
    stored = raw_redis.xrange(f"txs:{ACCT}", done.entry.id, done.entry.id)[0][1]
    meta = json.loads(stored[b"meta"])
    assert meta["_sc"]["f"] == legacy[0]


# -- A2: replayed means "the caller's key was applied before this call" ----------------------


def test_sdk_resend_after_lost_reply_is_not_a_replay(
    redis_server: RedisServer, redis_url: str
) -> None:
    proxy = DroppingProxy(redis_server.port)
    try:
        with CreditsClient(proxy.url) as client:
            client.initialize_user(ACCT)
            client.debit(ACCT, 1, action="warm_up")
            proxy.drop_next_reply()
            first = client.debit(ACCT, 10, action="chat_message", idempotency_key="pay-7")
            assert proxy.dropped == 1  # applied, reply lost, redis-py re-sent the call
            assert first.replayed is False
            again = client.debit(ACCT, 10, action="chat_message", idempotency_key="pay-7")
            assert again.replayed is True  # the caller's second call: a replay
            assert again.entry.id == first.entry.id
            assert client.get_balance(ACCT) == 89 == ledger_sum(client, ACCT)

            hold_key = "job-9"
            proxy.drop_next_reply()
            hold = client.reserve(ACCT, 20, action="model_training", idempotency_key=hold_key)
            assert hold.replayed is False
            proxy.drop_next_reply()
            settled = client.settle(ACCT, hold.hold_id, 5)  # derived key settle:<hold>
            assert settled.replayed is False
            assert client.settle(ACCT, hold.hold_id, 5).replayed is True
            proxy.drop_next_reply()
            closed = client.close_account(ACCT)
            assert closed.replayed is False
            assert client.close_account(ACCT).replayed is True
            assert proxy.dropped == 4
            assert client.get_balance(ACCT) == 84 == ledger_sum(client, ACCT)
    finally:
        proxy.close()


# -- A4: a newer version's entry types ------------------------------------------------------


def _newer_entry(raw: redis.Redis, balance_after: int) -> str:
    return raw.xadd(
        f"txs:{ACCT}",
        {
            "type": "rollover_expire",
            "delta": "-5",
            "balance": str(balance_after),
            "action": "promo_lot",
            "app": "new.sparked.world",
            "reason": "lot expired",
            "ref": "",
            "idem": "",
            "meta": '{"_sc":{"f":"0123456789abcdef","l":["1-0"]},"lot":"promo"}',
        },
    ).decode()


def test_unknown_entry_type_never_raises(redis_url: str, raw_redis: redis.Redis) -> None:
    with CreditsClient(redis_url, app="app.sparked.world") as client:
        client.initialize_user(ACCT)
        client.debit(ACCT, 10, action="chat_message")
        eid = _newer_entry(raw_redis, 85)
        raw_redis.set(f"balance:{ACCT}", 85)
        client.debit(ACCT, 10, action="chat_message")

        page = client.history(ACCT)
        newer = next(e for e in page.entries if e.id == eid)
        assert newer.type == "rollover_expire"
        assert newer.type_name == "rollover_expire"
        assert not isinstance(newer.type, EntryType)
        assert newer.delta == -5
        assert newer.metadata == {"lot": "promo"}
        assert [e.type_name for e in page.entries] == ["debit", "rollover_expire", "debit", "init"]
        assert client.history(ACCT, app="new.sparked.world").entries == [newer]
        assert [e.id for e in client.history(ACCT, types=[EntryType.DEBIT]).entries] != []
        assert newer.model_dump(mode="json")["type"] == "rollover_expire"

        usage = client.usage(ACCT, days=2)
        assert usage.total == 20  # not usage: this version cannot know it is

        result = client.reconcile(ACCT)
        assert result.matched is True
        assert result.ledger_sum == 75 == client.get_balance(ACCT)
        assert client.reconcile(ACCT, full=True).matched is True
