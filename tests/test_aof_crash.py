"""A real torn append-only file: cut inside a script's MULTI block, then two restarts.

What a power loss under ``appendfsync everysec`` can leave, reproduced on the server line
under test: the AOF ends inside the MULTI block of one script, after its XADD. Redis 6.2
and 7.0 load it (``aof-load-truncated yes``), cutting the file after the last complete
command: the first restart shows nothing of that script, so the caller's retry applies
it. Later writes are appended after the dangling MULTI, and the second restart replays
the torn prefix merged into the next transaction: the first attempt's entry reappears
below the checkpoint written between the restarts. The cheap reconcile must notice, and
the full repair must leave the call applied exactly once, every hold as the caller knows
it, and the balance equal to the ledger's sum.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

import aof
from conftest import line_binary
from redis_servers import RedisServer
from sparked_credits import CreditsClient

ACCT = "user_2abc"


@pytest.fixture
def aof_server(server_line: str) -> Iterator[RedisServer]:
    with RedisServer(
        "--appendonly", "yes", "--appendfsync", "always", binary=line_binary(server_line)
    ) as server:
        yield server


def _cut_inside_last_multi(server: RedisServer, offset: int) -> None:
    """Stop the server and cut its AOF in the middle of the command after the block's
    XADD: the MULTI and the XADD survive, the rest of the block does not."""
    path = aof.aof_path(server.directory)
    block = aof.parse(path.read_bytes()[offset:])
    assert block[0][2] == (b"MULTI",), block
    xadd = next(i for i, (_, _, cmd) in enumerate(block) if cmd[0] == b"XADD")
    start, end, _ = block[xadd + 1]
    server.shutdown()
    with open(path, "r+b") as f:
        f.truncate(offset + start + (end - start) // 2)


def _debit(c: CreditsClient) -> Any:
    return c.debit(ACCT, 10, action="chat_message", idempotency_key="torn")


def _reserve(c: CreditsClient) -> Any:
    return c.reserve(ACCT, 40, action="model_training", idempotency_key="torn")


@pytest.mark.parametrize("call", [_debit, _reserve], ids=["debit", "reserve"])
def test_torn_multi_and_two_restarts(
    aof_server: RedisServer, server_line: str, call: Callable[[CreditsClient], Any]
) -> None:
    server = aof_server
    with CreditsClient(server.url, app="app.sparked.world", retries=0) as client:
        client.initialize_user(ACCT, 100)
        client.debit(ACCT, 5, action="chat_message", idempotency_key="before")
        assert client.reconcile(ACCT).matched is True
        offset = aof.size(server.directory)
        call(client)  # applied and acknowledged, then the power goes
    _cut_inside_last_multi(server, offset)

    server.start()  # restart 1: the torn block is not applied
    with CreditsClient(server.url, app="app.sparked.world") as client:
        assert client.get_balance(ACCT) == 95
        retried = call(client)  # the caller never got a reply: it retries
        assert retried.replayed is False
        intended = client.get_balance(ACCT)
        open_before = [h for h in _open_holds(server)]
        client.debit(ACCT, 5, action="chat_message", idempotency_key="after")
        assert client.reconcile(ACCT).matched is True  # a clean checkpoint between restarts
        intended -= 5

    server.restart()  # restart 2: the torn prefix comes back, merged into a later block
    with CreditsClient(server.url, app="app.sparked.world") as client:
        raw = redis.Redis.from_url(server.url)
        try:
            keyed = [f for _, f in raw.xrange(f"txs:{ACCT}") if f[b"idem"] == b"torn"]
        finally:
            raw.close()
        assert len(keyed) == 2, "the torn prefix did not come back on this server line"

        cheap = client.reconcile(ACCT)
        assert cheap.matched is False  # the entry below the checkpoint is noticed
        assert cheap.full is True

        fixed = client.reconcile(ACCT, full=True, repair=True)
        assert fixed.repaired is True
        assert fixed.duplicates == 1
        assert client.get_balance(ACCT) == intended
        assert client.reconcile(ACCT, full=True).matched is True
        assert client.reconcile(ACCT).matched is True
        again = call(client)
        assert again.replayed is True
        assert again.entry.id == retried.entry.id
        assert client.get_balance(ACCT) == intended
        assert _open_holds(server) == open_before  # the caller's hold, and only it


def _open_holds(server: RedisServer) -> list[str]:
    raw = redis.Redis.from_url(server.url)
    try:
        return sorted(
            hid.decode()
            for hid, rec in raw.hgetall(f"holds:{{{ACCT}}}").items()
            if rec.startswith(b"O|")
        )
    finally:
        raw.close()


def test_torn_expiry_and_two_restarts(aof_server: RedisServer) -> None:
    """A torn sweep: its 'expire' entry comes back after the hold was expired again in
    between. A hold closes once: the repair compensates the repeat."""
    server = aof_server
    with CreditsClient(server.url, app="app.sparked.world", retries=0) as client:
        client.initialize_user(ACCT, 100)
        client.reserve(ACCT, 30, action="video_generation", ttl=0.02)
        time.sleep(0.05)
        assert client.reconcile(ACCT).matched is True
        offset = aof.size(server.directory)
        assert client.sweep_expired(ACCT) == 1
    _cut_inside_last_multi(server, offset)

    server.start()
    with CreditsClient(server.url, app="app.sparked.world") as client:
        assert client.get_balance(ACCT) == 70  # the expiry is gone
        assert client.sweep_expired(ACCT) == 1  # and happens again
        client.debit(ACCT, 5, action="chat_message")
        assert client.reconcile(ACCT).matched is True

    server.restart()
    with CreditsClient(server.url, app="app.sparked.world") as client:
        expiries = [e for e in client.history(ACCT, limit=100).entries if e.type_name == "expire"]
        assert len(expiries) == 2, "the torn prefix did not come back on this server line"
        assert client.reconcile(ACCT).matched is False
        fixed = client.reconcile(ACCT, full=True, repair=True)
        assert fixed.duplicates == 1
        assert client.get_balance(ACCT) == 95 == fixed.ledger_sum
        assert client.reconcile(ACCT, full=True, repair=True).duplicates == 0  # once
        assert client.get_balance(ACCT) == 95
        assert _open_holds(server) == []
