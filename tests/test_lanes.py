"""The redis-py backends' lanes (``backends.redis_py.Lanes``): commands sent on pooled
connections without ``execute_command``. They must behave as the pool would: one
connection per concurrent caller, the pool's ``max_connections``, a reconnect after the
server went away, a forked child never sharing the parent's sockets, redis-py's reply
parsing and exception classes."""

from __future__ import annotations

import asyncio
import os
import threading

import pytest
import redis

from redis_servers import RedisServer
from sparked_credits import AsyncCreditsClient, CreditsClient
from sparked_credits.backends.redis_py import AsyncLanes, Lanes

ACCT = "user_lanes"


def test_threads_each_get_their_own_connection(redis_url: str) -> None:
    client = CreditsClient(redis_url)
    client.initialize_user(ACCT, 10_000)
    barrier = threading.Barrier(8)

    def work() -> None:
        barrier.wait()
        for _ in range(50):
            client.debit(ACCT, 1, action="chat_message")

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert client.get_balance(ACCT) == 10_000 - 400
    assert client.reconcile(ACCT).matched
    lanes = client._backend._call.__self__  # type: ignore[attr-defined]
    assert isinstance(lanes, Lanes)
    assert 1 <= len(lanes.idle) <= 8  # never more connections than concurrent callers
    assert len({id(c) for c in lanes.idle}) == len(lanes.idle)
    client.close()


def test_replies_are_parsed_as_execute_command_parses_them(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    lanes = Lanes(client)
    client.set("lanes:a", "1")
    client.xadd("lanes:s", {"f": "v"})
    for command in (
        ("GET", "lanes:a"),
        ("SCAN", "0", "MATCH", "lanes:*", "COUNT", "100"),
        ("XRANGE", "lanes:s", "-", "+"),
        ("XREVRANGE", "lanes:s", "+", "-"),
    ):
        assert lanes.call(*command) == client.execute_command(*command), command
    with pytest.raises(redis.exceptions.NoScriptError):
        lanes.call("EVALSHA", "0" * 40, 0)
    with pytest.raises(redis.exceptions.ResponseError):
        lanes.call("INCR", "lanes:missing-type", "x")
    assert lanes.call("GET", "lanes:a") == b"1"  # a reply error leaves the connection usable
    client.close()


def test_a_restarted_server_is_reconnected_without_a_retry(server_binary: str) -> None:
    with RedisServer(binary=server_binary) as server:
        client = CreditsClient(server.url, retries=0, auto_initialize=True)
        assert client.debit(ACCT, 1, action="chat_message").balance == 99
        server.restart()  # no persistence: the account starts again
        assert client.debit(ACCT, 1, action="chat_message").balance == 99
        client.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_opens_its_own_connection(redis_url: str) -> None:
    client = CreditsClient(redis_url)
    client.initialize_user(ACCT, 1000)
    lanes = client._backend._call.__self__  # type: ignore[attr-defined]
    parent_conn = lanes.idle[0]
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: must not touch the parent's socket
        code = 1
        try:
            fresh = not lanes.idle
            client.debit(ACCT, 10, action="chat_message")
            code = 0 if fresh and lanes.idle[0] is not parent_conn else 2
        finally:
            os.write(write, bytes([code]))
            os._exit(0)
    os.close(write)
    status = os.read(read, 1)
    os.close(read)
    os.waitpid(pid, 0)
    assert status == b"\x00"
    assert client.debit(ACCT, 10, action="chat_message").balance == 980
    assert lanes.idle == [parent_conn]
    client.close()


def test_async_tasks_share_the_pool_limit(redis_url: str) -> None:
    async def main() -> tuple[int, int]:
        async with AsyncCreditsClient(redis_url) as client:
            await client.initialize_user(ACCT, 10_000)
            await asyncio.gather(
                *(client.debit(ACCT, 1, action="chat_message") for _ in range(100))
            )
            lanes = client._backend._call.__self__  # type: ignore[attr-defined]
            assert isinstance(lanes, AsyncLanes)
            # A read after 100 concurrent debits still finds a connection (the pool's
            # max_connections is 100 and the lanes keep what they checked out).
            return await client.get_balance(ACCT), len(lanes.idle)

    balance, idle = asyncio.run(main())
    assert balance == 10_000 - 100
    assert 1 <= idle <= 100
