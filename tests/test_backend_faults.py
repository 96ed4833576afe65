"""Production backends under faults: the Upstash path through the bridge (502, a connection
closed after Redis ran the command, a reply slower than the timeout, bad token, unreadable
replies) and a Redis Cluster node going down and coming back.

Each case checks the three promises: no double effect, no lost acknowledged write, and a
typed BackendError that says whether the call may have applied and whether a retry is safe.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from conftest import UPSTASH_TOKEN, AsyncFacade, ledger_sum
from redis_servers import RedisCluster, free_port
from sparked_credits import AsyncCreditsClient, BackendError, CreditsClient, EntryType
from upstash_bridge import UpstashBridge

ACCT = "user_2abc"


@pytest.fixture
def upstash(upstash_url: str, mode: str) -> Iterator[Callable[..., Any]]:
    """Factory of Upstash clients (sync, or async through AsyncFacade) on the bridge."""
    made: list[Any] = []

    def make(**options: Any) -> Any:
        options.setdefault("token", UPSTASH_TOKEN)
        options.setdefault("app", "app.sparked.world")
        url = options.pop("url", upstash_url)
        client: Any = (
            CreditsClient(url, **options)
            if mode == "sync"
            else AsyncFacade(AsyncCreditsClient(url, **options))
        )
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def _debits(client: Any, account: str = ACCT) -> list[Any]:
    return [e for e in client.history(account, limit=100).entries if e.type is EntryType.DEBIT]


def _warm(client: Any, bridge: UpstashBridge) -> None:
    """Initialize the account and load the scripts used below, then zero the counters."""
    client.initialize_user(ACCT)
    client.debit(ACCT, 1, action="warm_up")
    client.get_balance(ACCT)  # a script too (it leaves out lots past their expiry)
    bridge.reset()


# -- Upstash: requests per operation -------------------------------------------------------


def test_one_http_request_per_operation(upstash: Any, upstash_bridge: UpstashBridge) -> None:
    client = upstash()
    client.initialize_user(ACCT, 1000)
    for op in (
        lambda: client.debit(ACCT, 10, action="chat_message"),
        lambda: client.credit(ACCT, 5, source="grant"),
        lambda: client.reserve(ACCT, 50, action="model_training"),
        lambda: client.get_balance(ACCT),
        lambda: client.history(ACCT, limit=5),
    ):
        op()  # the first run of a script may need EVALSHA then EVAL
    debit = client.debit(ACCT, 10, action="chat_message")
    hold_a = client.reserve(ACCT, 50, action="model_training")
    hold_b = client.reserve(ACCT, 50, action="model_training")
    client.settle(ACCT, hold_a.hold_id, 20)  # load settle and release scripts
    client.release(ACCT, hold_b.hold_id)
    client.refund(ACCT, debit.entry.id, amount=1)
    hold_c = client.reserve(ACCT, 50, action="model_training")
    hold_d = client.reserve(ACCT, 50, action="model_training")
    steady = {
        "debit": lambda: client.debit(ACCT, 10, action="chat_message"),
        "credit": lambda: client.credit(ACCT, 5, source="grant"),
        "refund": lambda: client.refund(ACCT, debit.entry.id, amount=1),
        "reserve": lambda: client.reserve(ACCT, 50, action="model_training"),
        "settle": lambda: client.settle(ACCT, hold_c.hold_id, 10),
        "release": lambda: client.release(ACCT, hold_d.hold_id),
        "get_balance": lambda: client.get_balance(ACCT),
        "history": lambda: client.history(ACCT, limit=5),
    }
    for name, op in steady.items():
        before = upstash_bridge.requests
        op()
        assert upstash_bridge.requests - before == 1, name
    assert client.get_balance(ACCT) == ledger_sum(client, ACCT)


def test_noscript_costs_one_extra_request_once(
    upstash: Any, upstash_bridge: UpstashBridge, raw_redis: redis.Redis
) -> None:
    client = upstash()
    _warm(client, upstash_bridge)
    raw_redis.script_flush()
    client.debit(ACCT, 1, action="chat_message")  # EVALSHA -> NOSCRIPT -> EVAL
    client.debit(ACCT, 1, action="chat_message")  # cached again: EVALSHA only
    assert upstash_bridge.requests == 3
    assert client.get_balance(ACCT) == 97 == ledger_sum(client, ACCT)


def test_read_your_writes_token_is_sent_back(upstash: Any, upstash_bridge: UpstashBridge) -> None:
    client = upstash()
    _warm(client, upstash_bridge)
    client.debit(ACCT, 1, action="chat_message")
    assert client.get_balance(ACCT) == 98
    # Every request after the first carries the sync token of a reply this client received.
    tokens = upstash_bridge.sync_tokens_seen
    assert len(tokens) == 2
    assert all(t.startswith("sync-") for t in tokens)


# -- Upstash: faults -------------------------------------------------------------------------


@pytest.mark.parametrize("executed", [True, False], ids=["after-redis", "before-redis"])
def test_502_without_retries_is_typed_and_retry_applies_once(
    upstash: Any, upstash_bridge: UpstashBridge, executed: bool
) -> None:
    client = upstash(retries=0)
    _warm(client, upstash_bridge)
    upstash_bridge.fail_next(502, execute=executed)
    with pytest.raises(BackendError) as info:
        client.debit(ACCT, 10, action="chat_message", idempotency_key="msg-1")
    err = info.value
    assert "HTTP 502" in str(err)
    assert err.may_have_applied is True  # a gateway error: the database may have run it
    assert err.retry_safe is True
    assert err.idempotency_key == "msg-1"
    assert isinstance(err.__cause__, Exception)
    assert client.get_balance(ACCT) == (89 if executed else 99)
    retried = client.debit(ACCT, 10, action="chat_message", idempotency_key="msg-1")
    assert retried.replayed is executed
    assert retried.balance == 89 == client.get_balance(ACCT)
    assert len([e for e in _debits(client) if e.idempotency_key == "msg-1"]) == 1
    assert ledger_sum(client, ACCT) == 89


def test_502_is_retried_by_the_sdk_and_applies_once(
    upstash: Any, upstash_bridge: UpstashBridge
) -> None:
    client = upstash()  # retries=3 by default
    _warm(client, upstash_bridge)
    upstash_bridge.fail_next(502, execute=True, count=2)
    result = client.debit(ACCT, 10, action="chat_message")
    assert upstash_bridge.requests == 3
    # The first attempt applied; the third found it: the SDK's own re-send, not a replay.
    assert result.replayed is False
    assert client.get_balance(ACCT) == 89 == ledger_sum(client, ACCT)
    assert len(_debits(client)) == 2  # warm-up and this one


def test_connection_closed_mid_request(upstash: Any, upstash_bridge: UpstashBridge) -> None:
    client = upstash(retries=0)
    _warm(client, upstash_bridge)
    upstash_bridge.drop_next()
    with pytest.raises(BackendError) as info:
        client.debit(ACCT, 10, action="chat_message", idempotency_key="msg-2")
    assert "connection closed mid-request" in str(info.value)
    assert info.value.may_have_applied is True
    assert info.value.retry_safe is True
    assert client.get_balance(ACCT) == 89  # Redis ran it: an acknowledged-by-Redis write
    assert client.debit(ACCT, 10, action="chat_message", idempotency_key="msg-2").replayed
    assert client.get_balance(ACCT) == 89 == ledger_sum(client, ACCT)

    retrying = upstash()
    upstash_bridge.drop_next()
    result = retrying.debit(ACCT, 10, action="chat_message")
    assert result.replayed is False  # the SDK re-sent its own call
    assert retrying.get_balance(ACCT) == 79 == ledger_sum(retrying, ACCT)


def test_timeout_is_real_and_typed(upstash: Any, upstash_bridge: UpstashBridge) -> None:
    client = upstash(retries=0, timeout=0.3)
    _warm(client, upstash_bridge)
    upstash_bridge.delay_next(1.0)
    with pytest.raises(BackendError) as info:
        client.debit(ACCT, 10, action="chat_message", idempotency_key="msg-3")
    assert "no reply within the timeout" in str(info.value)
    assert info.value.may_have_applied is True
    assert info.value.retry_safe is True
    retried = client.debit(ACCT, 10, action="chat_message", idempotency_key="msg-3")
    assert retried.replayed is True
    assert client.get_balance(ACCT) == 89 == ledger_sum(client, ACCT)

    patient = upstash(retries=2, timeout=0.3)
    upstash_bridge.delay_next(1.0)
    assert patient.debit(ACCT, 10, action="chat_message").replayed is False  # own re-send
    assert patient.get_balance(ACCT) == 79 == ledger_sum(patient, ACCT)


def test_bad_token_is_an_authentication_error(upstash: Any, upstash_bridge: UpstashBridge) -> None:
    client = upstash(token="wrong")
    with pytest.raises(BackendError) as info:
        client.get_balance(ACCT)
    assert "authentication failed (HTTP 401)" in str(info.value)
    with pytest.raises(BackendError) as info:
        client.debit(ACCT, 10, action="chat_message")
    assert info.value.may_have_applied is False
    assert upstash_bridge.requests == 2  # an auth failure is not retried
    assert upstash(token=UPSTASH_TOKEN).get_balance(ACCT) == 0


@pytest.mark.parametrize(
    "body",
    [b"<html>oops</html>", b'["not", "an", "object"]', b'{"neither": 1}', b"{"],
    ids=["html", "list", "no-result", "truncated"],
)
def test_unreadable_reply_is_a_backend_error(
    upstash: Any, upstash_bridge: UpstashBridge, body: bytes
) -> None:
    client = upstash(retries=0)
    _warm(client, upstash_bridge)
    upstash_bridge.garble_next(body)
    with pytest.raises(BackendError) as info:
        client.debit(ACCT, 10, action="chat_message", idempotency_key="msg-4")
    assert "unreadable reply" in str(info.value)
    assert info.value.may_have_applied is True
    assert client.debit(ACCT, 10, action="chat_message", idempotency_key="msg-4").replayed
    assert client.get_balance(ACCT) == 89 == ledger_sum(client, ACCT)


def test_unreachable_endpoint_never_applied(upstash: Any) -> None:
    client = upstash(url=f"http://127.0.0.1:{free_port()}", retries=1)
    with pytest.raises(BackendError) as info:
        client.debit(ACCT, 10, action="chat_message")
    assert "could not connect" in str(info.value)
    assert info.value.may_have_applied is False
    assert info.value.retry_safe is True


def test_bridge_pipeline_and_multi_exec(upstash_url: str, upstash_bridge: UpstashBridge) -> None:
    """The bridge's batch endpoints answer upstash-redis's pipeline and transaction."""
    from upstash_redis import Redis

    client = Redis(upstash_url, UPSTASH_TOKEN, rest_retries=0, allow_telemetry=False)
    try:
        pipe = client.pipeline()
        pipe.set("k", "v")
        pipe.incr("n")
        pipe.get("k")
        assert pipe.exec() == [True, 1, "v"]  # upstash-redis casts SET's "OK"
        tx = client.multi()
        tx.incr("n")
        tx.get("n")
        assert tx.exec() == [2, "2"]
        assert upstash_bridge.by_path["/pipeline"] == 1
        assert upstash_bridge.by_path["/multi-exec"] == 1
    finally:
        client.close()


# -- Redis Cluster ---------------------------------------------------------------------------


def _client(url: str, mode: str, **options: Any) -> Any:
    if mode == "sync":
        return CreditsClient(url, **options)
    return AsyncFacade(AsyncCreditsClient(url, **options))


def test_accounts_spread_over_every_primary_and_the_sweep_finds_them_all(
    cluster_url: str, redis_cluster: RedisCluster, mode: str
) -> None:
    client = _client(cluster_url, mode)
    accounts = [f"user_{i}" for i in range(30)]
    for acct in accounts:
        client.initialize_user(acct, 100)
        client.reserve(acct, 10, action="video_generation", ttl=0.05)
    owners = {redis_cluster.node_for_key(f"holdexp:{{{a}}}").port for a in accounts}
    assert owners == set(redis_cluster.ports)  # all three primaries hold some accounts
    time.sleep(0.1)
    assert client.sweep_expired() == 30
    for acct in accounts:
        assert client.get_balance(acct) == 100 == ledger_sum(client, acct)
    client.close()


@pytest.fixture(scope="module")
def durable_cluster() -> Iterator[RedisCluster]:
    """A cluster whose nodes keep an AOF, so a restarted primary comes back with its data."""
    with RedisCluster(3, persistent=True) as cluster:
        yield cluster


def test_cluster_node_restart(durable_cluster: RedisCluster, mode: str) -> None:
    cluster = durable_cluster
    cluster.flush()
    client = _client(cluster.url, mode, retries=1)
    other = "user_elsewhere"
    try:
        node = cluster.node_for_key(f"balance:{{{ACCT}}}")
        while cluster.node_for_key(f"balance:{{{other}}}") is node:
            other += "_"
        client.initialize_user(ACCT)
        client.initialize_user(other)
        acknowledged = client.debit(ACCT, 10, action="chat_message")
        assert acknowledged.balance == 90

        cluster.stop_node(node)
        with pytest.raises(BackendError) as info:
            client.debit(ACCT, 10, action="chat_message", idempotency_key="during-outage")
        assert info.value.retry_safe is True
        assert info.value.idempotency_key == "during-outage"
        # Accounts on the other primaries keep working while one is down.
        assert client.debit(other, 5, action="chat_message").balance == 95

        cluster.start_node(node)
        retried = client.debit(ACCT, 10, action="chat_message", idempotency_key="during-outage")
        again = client.debit(ACCT, 10, action="chat_message", idempotency_key="during-outage")
        assert again.replayed is True
        assert again.entry.id == retried.entry.id
        assert client.get_balance(ACCT) == 80 == ledger_sum(client, ACCT)
        ids = [e.id for e in _debits(client)]
        assert acknowledged.entry.id in ids  # the write acknowledged before the restart
        assert len(ids) == 2
    finally:
        client.close()
