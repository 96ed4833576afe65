"""What only a real server can show: retries, lost replies, script cache loss, contention."""

from __future__ import annotations

import multiprocessing
import threading
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

import pytest
import redis

from conftest import ledger_sum
from contention_worker import hammer
from proxy import DroppingProxy
from redis_servers import RedisServer, free_port
from sparked_credits import BackendError, CreditsClient, EntryType
from sparked_credits._core.scripts import SCRIPTS

ACCT = "user_2abc"


def _entries(client: CreditsClient, account: str) -> list[Any]:
    out, cursor = [], None
    while True:
        page = client.history(account, limit=1000, cursor=cursor)
        out += page.entries
        if page.next_cursor is None:
            return out
        cursor = page.next_cursor


def test_same_call_replayed_1000_times_applies_once(client: Any) -> None:
    client.initialize_user(ACCT)
    results = [
        client.debit(ACCT, 10, action="chat_message", idempotency_key="once")
        for _ in range(1000)
    ]
    assert client.get_balance(ACCT) == 90
    assert results[0].replayed is False
    assert all(r.replayed for r in results[1:])
    assert {r.entry.id for r in results} == {results[0].entry.id}
    assert len(client.history(ACCT).entries) == 2


def test_concurrent_replays_of_one_key_apply_once(redis_url: str) -> None:
    with CreditsClient(redis_url) as client:
        client.initialize_user(ACCT)
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(
                lambda _: client.debit(ACCT, 10, action="chat_message", idempotency_key="k"),
                range(200),
            ))
        assert sum(not r.replayed for r in results) == 1
        assert client.get_balance(ACCT) == 90


def test_lost_reply_then_automatic_retry_applies_once(redis_server: RedisServer,
                                                      redis_url: str) -> None:
    proxy = DroppingProxy(redis_server.port)
    try:
        with CreditsClient(proxy.url) as client:
            client.initialize_user(ACCT)
            client.debit(ACCT, 1, action="warm_up")  # so the dropped reply is the script's
            proxy.drop_next_reply()
            # redis-py reconnects and re-sends the same EVALSHA, with the same key.
            result = client.debit(ACCT, 10, action="chat_message")
            assert proxy.dropped == 1
            assert result.replayed is False  # the SDK's own re-send is not a replay
            assert client.get_balance(ACCT) == 89
            debits = [e for e in _entries(client, ACCT) if e.action == "chat_message"]
            assert len(debits) == 1
            assert debits[0].id == result.entry.id
    finally:
        proxy.close()


def test_lost_reply_without_client_retries_is_safe_to_retry_by_hand(
    redis_server: RedisServer, redis_url: str
) -> None:
    proxy = DroppingProxy(redis_server.port)
    try:
        with CreditsClient(proxy.url, retries=0) as client:
            client.initialize_user(ACCT)
            client.debit(ACCT, 1, action="warm_up")
            proxy.drop_next_reply()
            with pytest.raises(BackendError) as info:
                client.debit(ACCT, 10, action="chat_message", idempotency_key="pay-1")
            err = info.value
            assert err.may_have_applied is True
            assert err.retry_safe is True
            assert err.idempotency_key == "pay-1"
            again = client.debit(ACCT, 10, action="chat_message",
                                 idempotency_key=err.idempotency_key)
            assert again.replayed is True
            assert client.get_balance(ACCT) == 89
    finally:
        proxy.close()


def test_server_down_is_a_backend_error() -> None:
    client = CreditsClient(f"redis://127.0.0.1:{free_port()}/0?socket_connect_timeout=0.2")
    with pytest.raises(BackendError) as info:
        client.get_balance(ACCT)
    assert info.value.retry_safe is True
    assert info.value.may_have_applied is False
    with pytest.raises(BackendError) as info2:
        client.debit(ACCT, 1, action="chat_message", idempotency_key="k")
    assert info2.value.idempotency_key == "k"
    assert isinstance(info2.value.__cause__, redis.RedisError)
    client.close()


def test_script_flush_mid_run_falls_back_to_eval(redis_url: str, raw_redis: redis.Redis) -> None:
    with CreditsClient(redis_url) as client:
        client.initialize_user(ACCT)
        client.debit(ACCT, 1, action="chat_message")
        raw_redis.config_resetstat()
        raw_redis.script_flush()
        client.debit(ACCT, 1, action="chat_message")  # NOSCRIPT, then EVAL
        client.debit(ACCT, 1, action="chat_message")  # cached again: EVALSHA only
        stats = raw_redis.info("commandstats")
        assert stats["cmdstat_eval"]["calls"] == 1
        assert stats["cmdstat_evalsha"]["calls"] == 2
        assert client.get_balance(ACCT) == 97 == ledger_sum(client, ACCT)
        assert raw_redis.script_exists(SCRIPTS.debit.sha) == [True]


def test_script_flush_on_memory_backend() -> None:
    with CreditsClient("memory://flush-test") as client:
        client.initialize_user(ACCT)
        client._backend.client.script_flush()
        assert client.debit(ACCT, 1, action="chat_message").balance == 99


def test_one_round_trip_per_operation(redis_url: str, raw_redis: redis.Redis) -> None:
    with CreditsClient(redis_url) as client:

        def each_operation_once() -> None:
            debit = client.debit(ACCT, 1, action="chat_message")
            client.credit(ACCT, 1)
            client.refund(ACCT, debit.entry.id)
            client.adjust(ACCT, 1)
            client.get_balance(ACCT)
            client.history(ACCT)

        client.initialize_user(ACCT)
        each_operation_once()  # the first use of each script pays NOSCRIPT + EVAL once
        raw_redis.config_resetstat()
        each_operation_once()
        stats = {k: v["calls"] for k, v in raw_redis.info("commandstats").items()}
    # Four mutations and get_balance (a script that only reads): five EVALSHA and nothing
    # else from the client. Commands run inside a script are counted under their own
    # names: each of the five scripts does one GET of the balance.
    assert stats["cmdstat_evalsha"] == 5
    assert "cmdstat_eval" not in stats
    assert stats["cmdstat_get"] == 5
    assert stats["cmdstat_xrevrange"] == 1
    assert stats["cmdstat_xadd"] == 4


def _check_ledger(client: CreditsClient, account: str) -> list[Any]:
    entries = _entries(client, account)
    running = 0
    for entry in reversed(entries):
        running += entry.delta
        assert entry.balance_after == running, entry
        assert entry.balance_after >= 0, entry
    assert client.get_balance(account) == running
    # Credit lots: they add up to the balance, none is negative, and replaying the ledger
    # gives the same lots.
    lots = client.grants(account)
    assert sum(g.remaining for g in lots) == running
    assert all(g.remaining > 0 for g in lots)
    assert client.reconcile(account, full=True).lots_matched is True
    return entries


@pytest.mark.slow
def test_threads_contending_on_one_account(redis_url: str) -> None:
    with CreditsClient(redis_url) as client:
        client.initialize_user(ACCT, 200)
        with ThreadPoolExecutor(8) as pool:
            outcomes = list(pool.map(lambda s: hammer(redis_url, ACCT, s, 150), range(8)))
        entries = _check_ledger(client, ACCT)
    debited = sum(o["debited"] for o in outcomes)
    credited = sum(o["credited"] for o in outcomes)
    refunded = sum(o["refunded"] for o in outcomes)
    assert client_balance(redis_url) == 200 - debited + credited + refunded
    assert sum(1 for e in entries if e.type is EntryType.DEBIT) == sum(
        o["debits"] for o in outcomes
    )
    assert sum(o["refused"] for o in outcomes) > 0  # the contention really ran dry


def client_balance(url: str) -> int:
    with CreditsClient(url) as client:
        return client.get_balance(ACCT)


@pytest.mark.slow
def test_processes_contending_on_one_account(redis_url: str) -> None:
    with CreditsClient(redis_url) as client:
        client.initialize_user(ACCT, 200)
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(3, mp_context=ctx) as pool:
        futures = [pool.submit(hammer, redis_url, ACCT, seed, 200) for seed in range(3)]
        outcomes = [f.result(timeout=120) for f in futures]
    with CreditsClient(redis_url) as client:
        entries = _check_ledger(client, ACCT)
        apps = {e.app for e in entries if e.type is EntryType.DEBIT}
    assert len(apps) == 3  # every process really wrote
    debited = sum(o["debited"] for o in outcomes)
    credited = sum(o["credited"] for o in outcomes)
    refunded = sum(o["refunded"] for o in outcomes)
    assert client_balance(redis_url) == 200 - debited + credited + refunded
    assert sum(1 for e in entries if e.type is EntryType.DEBIT) == sum(
        o["debits"] for o in outcomes
    )


def test_async_client_many_concurrent_debits(redis_url: str) -> None:
    import asyncio

    from sparked_credits import AsyncCreditsClient, InsufficientCreditsError

    async def main() -> tuple[int, int]:
        async with AsyncCreditsClient(redis_url) as client:
            await client.initialize_user(ACCT, 500)

            async def one() -> bool:
                try:
                    await client.debit(ACCT, 7, action="chat_message")
                    return True
                except InsufficientCreditsError:
                    return False

            ok = sum(await asyncio.gather(*(one() for _ in range(100))))
            return ok, await client.get_balance(ACCT)

    ok, balance = asyncio.run(main())
    assert ok == 500 // 7
    assert balance == 500 - 7 * ok
    with CreditsClient(redis_url) as client:
        _check_ledger(client, ACCT)


def test_threads_share_one_memory_store() -> None:
    client = CreditsClient("memory://threads")
    client.initialize_user(ACCT, 1000)
    barrier = threading.Barrier(4)

    def work(_: int) -> int:
        barrier.wait()
        n = 0
        for _ in range(100):
            try:
                client.debit(ACCT, 3, action="chat_message")
                n += 1
            except Exception:
                pass
        return n

    with ThreadPoolExecutor(4) as pool:
        ok = sum(pool.map(work, range(4)))
    assert ok == 333
    assert client.get_balance(ACCT) == 1
    assert ledger_sum(client, ACCT) == 1


def test_unix_socket_url(tmp_path: Any) -> None:
    sock = tmp_path / "redis.sock"
    with RedisServer("--unixsocket", str(sock), "--unixsocketperm", "700"), CreditsClient(
        f"unix://{sock}?db=0", app="app.sparked.world"
    ) as client:
        client.initialize_user(ACCT)
        assert client.debit(ACCT, 10, action="chat_message").balance == 90
        assert ledger_sum(client, ACCT) == 90
