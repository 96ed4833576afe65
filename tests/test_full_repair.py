"""The full pass and the recovery paths, through every public door: the sync and async
clients, reconcile_all and the command line."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import redis

from proxy import DroppingProxy
from redis_servers import RedisServer
from sparked_credits import AsyncCreditsClient, CreditsClient
from sparked_credits._core.lots import decode_draws

ACCT = "user_2abc"


def _rewrite_with_entry_below(
    raw: redis.Redis, key: str, below: str, fields: dict[str, str]
) -> None:
    """Put an entry into a stream below existing ones, as a second restart replaying a torn
    transaction does: the stream is rebuilt with explicit ids."""
    entries = raw.xrange(key)
    raw.delete(key)
    inserted = False
    def as_tuple(eid: str) -> tuple[int, int]:
        ms, seq = eid.split("-")
        return int(ms), int(seq)

    for eid, f in entries:
        if not inserted and as_tuple(eid.decode()) > as_tuple(below):
            raw.xadd(key, fields, id=below)  # type: ignore[arg-type]
            inserted = True
        raw.xadd(key, f, id=eid)
    assert inserted


def test_checkpointed_reconcile_notices_an_entry_below_its_checkpoint(
    redis_url: str, raw_redis: redis.Redis
) -> None:
    with CreditsClient(redis_url, app="app.sparked.world") as client:
        client.initialize_user(ACCT)
        first = client.debit(ACCT, 10, action="chat_message")
        time.sleep(0.005)  # room for an id between the two debits
        client.debit(ACCT, 10, action="chat_message")
        assert client.reconcile(ACCT).matched is True  # checkpoint at the last debit
        ms, seq = first.entry.id.split("-")
        _rewrite_with_entry_below(
            raw_redis,
            f"txs:{ACCT}",
            f"{ms}-{int(seq) + 1}",
            {"type": "debit", "delta": "-7", "balance": "73", "action": "chat_message",
             "app": "app.sparked.world", "reason": "", "ref": "", "idem": "torn-x", "meta": ""},
        )
        cheap = client.reconcile(ACCT)
        assert cheap.full is True
        assert cheap.matched is False
        assert (cheap.balance, cheap.ledger_sum) == (80, 73)
        fixed = client.reconcile(ACCT, repair=True)  # a repair always runs the full pass
        assert fixed.repaired is True
        assert fixed.full is True
        assert client.get_balance(ACCT) == 73
        assert raw_redis.hget(f"idem:{{{ACCT}}}:current", "torn-x") is not None  # rebuilt
        assert client.reconcile(ACCT).matched is True
        assert client.reconcile(ACCT).entries_read == 0


def test_async_full_pass_and_reconcile_all(redis_url: str, raw_redis: redis.Redis) -> None:
    async def main() -> None:
        async with AsyncCreditsClient(redis_url, app="app.sparked.world") as client:
            for acct in ("user_a", "user_b"):
                await client.initialize_user(acct)
                await client.reserve(acct, 30, action="model_training", idempotency_key="j")
            raw_redis.hdel("holds:{user_b}", *raw_redis.hkeys("holds:{user_b}"))
            raw_redis.delete("holdexp:{user_b}", "idem:{user_b}:current")
            checked = await client.reconcile_all(full=True)
            assert checked.clean is True  # balances add up: the records are not checked
            assert all(r.full for r in checked.results)
            report = await client.reconcile_all(full=True, repair=True)
            assert report.repaired == 1
            b = next(r for r in report.results if r.account == "user_b")
            assert b.rebuilt == 2  # the idempotency record; the hold (record and expiry)
            again = await client.reserve("user_b", 30, action="model_training",
                                         idempotency_key="j")
            assert again.replayed is True
            assert again.state.value == "open"
            assert await client.get_balance("user_b") == 70

    asyncio.run(main())


def test_cli_reconcile_full_repair(redis_url: str, raw_redis: redis.Redis) -> None:
    with CreditsClient(redis_url, app="app.sparked.world") as client:
        client.initialize_user(ACCT)
        client.debit(ACCT, 10, action="chat_message", idempotency_key="m1")
        client.reconcile(ACCT)
    raw_redis.delete(f"idem:{{{ACCT}}}:current")
    raw_redis.set(f"balance:{ACCT}", "95")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "sparked_credits", "--url", redis_url, "reconcile", *args],
            capture_output=True, text=True, timeout=60, check=False,
        )

    found = cli("--all", "--full", "--json")
    assert found.returncode == 1, found.stderr
    report = json.loads(found.stdout)
    assert report["results"][0]["full"] is True
    fixed = cli("--all", "--full", "--repair")
    assert fixed.returncode == 0, fixed.stderr
    assert raw_redis.get(f"balance:{ACCT}") == b"90"
    with CreditsClient(redis_url, app="canvas.sparked.world") as other:
        assert other.debit(ACCT, 10, action="chat_message", idempotency_key="m1").replayed


def test_async_sdk_resend_is_not_a_replay(redis_server: RedisServer, redis_url: str) -> None:
    proxy = DroppingProxy(redis_server.port)

    async def main() -> None:
        async with AsyncCreditsClient(proxy.url) as client:
            await client.initialize_user(ACCT)
            await client.debit(ACCT, 1, action="warm_up")
            proxy.drop_next_reply()
            first = await client.debit(ACCT, 10, action="chat_message", idempotency_key="p")
            assert proxy.dropped == 1
            assert first.replayed is False
            again = await client.debit(ACCT, 10, action="chat_message", idempotency_key="p")
            assert again.replayed is True
            assert await client.get_balance(ACCT) == 89

    try:
        asyncio.run(main())
    finally:
        proxy.close()


# -- Compensations move credit lots like any entry -----------------------------------------
# A second application of one key (what a retry after a torn "XADD only" prefix does) is
# made here by dropping the key's record before the retry and again after it: the full
# repair then rebuilds the record for the first entry and compensates the second, whose
# compensation gives back to (or takes from) the lots the second moved.

TOMORROW = datetime.now(timezone.utc) + timedelta(days=1)


def _client(raw: redis.Redis) -> CreditsClient:
    port = raw.connection_pool.connection_kwargs["port"]
    return CreditsClient(f"redis://127.0.0.1:{port}", app="app.sparked.world")


def _twice(raw: redis.Redis, call: Callable[[], Any]) -> tuple[Any, Any]:
    """``call`` applied twice under one key, the key's record then lost."""
    first = call()
    raw.delete(f"idem:{{{ACCT}}}:current", f"idem:{{{ACCT}}}:previous")
    second = call()
    assert second.replayed is False
    assert second.entry.id != first.entry.id
    raw.delete(f"idem:{{{ACCT}}}:current", f"idem:{{{ACCT}}}:previous")
    return first, second


def _init_lot(client: CreditsClient) -> str:
    created = client.initialize_user(ACCT)
    assert created.entry is not None
    return created.entry.id


def _open_lots(client: CreditsClient) -> list[tuple[str, int]]:
    """(lot id, remaining) in consumption order; the invariants hold."""
    lots = client.grants(ACCT)
    result = client.reconcile(ACCT, full=True)
    assert (result.matched, result.lots_matched, result.lots_replayed) == (True, True, True)
    assert client.get_balance(ACCT) == sum(g.remaining for g in lots)
    return [(g.grant_id, g.remaining) for g in lots]


def _repair_once(client: CreditsClient) -> Any:
    fixed = client.reconcile(ACCT, full=True, repair=True)
    assert (fixed.duplicates, fixed.lots_matched, fixed.lots_rebuilt) == (1, True, 0)
    entries = client.history(ACCT, limit=100).entries
    (compensation,) = [e for e in entries if "repeats" in (e.reason or "")]
    assert client.reconcile(ACCT, full=True, repair=True).duplicates == 0
    return compensation


def test_repeated_debit_gives_back_to_the_lots_it_drew(raw_redis: redis.Redis) -> None:
    with _client(raw_redis) as client:
        init = _init_lot(client)
        promo = client.credit(ACCT, 50, source="promo", priority=10, expires_at=TOMORROW)
        _, second = _twice(
            raw_redis, lambda: client.debit(ACCT, 30, action="chat", idempotency_key="k")
        )
        assert decode_draws(second.entry.lots) == [(promo.entry.id, 20), (init, 10)]
        compensation = _repair_once(client)
        assert sorted(decode_draws(compensation.lots)) == sorted(decode_draws(second.entry.lots))
        assert _open_lots(client) == [(promo.entry.id, 20), (init, 100)]


def test_repeated_credit_is_taken_back_from_the_lot_it_opened(raw_redis: redis.Redis) -> None:
    with _client(raw_redis) as client:
        init = _init_lot(client)
        _, second = _twice(
            raw_redis,
            lambda: client.credit(ACCT, 50, source="promo", priority=10, idempotency_key="c"),
        )
        client.debit(ACCT, 60, action="video")  # the first lot (oldest), then the second
        compensation = _repair_once(client)
        # The second lot held 40 of its 50: those, and 10 more in consumption order.
        assert decode_draws(compensation.lots) == [(second.entry.id, 40), (init, 10)]
        assert _open_lots(client) == [(init, 90)]


def test_repeated_reserve_is_released_to_its_lots(raw_redis: redis.Redis) -> None:
    with _client(raw_redis) as client:
        init = _init_lot(client)
        promo = client.credit(ACCT, 50, source="promo", priority=10, expires_at=TOMORROW)
        first, second = _twice(
            raw_redis,
            lambda: client.reserve(ACCT, 40, action="video", ttl=600, idempotency_key="r"),
        )
        compensation = _repair_once(client)
        assert compensation.type_name == "release"
        assert sorted(decode_draws(compensation.lots)) == sorted(decode_draws(second.entry.lots))
        assert _open_lots(client) == [(promo.entry.id, 10), (init, 100)]
        client.settle(ACCT, first.hold_id, 40)
        assert _open_lots(client) == [(promo.entry.id, 10), (init, 100)]


def test_hold_closed_twice_takes_back_what_the_repeat_gave(raw_redis: redis.Redis) -> None:
    """A hold released, then expired again (a torn expiry's hold record came back open):
    the closing entry the record disagrees with is compensated, from the lots it gave to."""
    with _client(raw_redis) as client:
        init = _init_lot(client)
        promo = client.credit(ACCT, 50, source="promo", priority=10, expires_at=TOMORROW)
        hold = client.reserve(ACCT, 30, action="video", ttl=600)
        released = client.release(ACCT, hold.hold_id)
        past = int(time.time() * 1000) - 1000
        raw_redis.hset(f"holds:{{{ACCT}}}", hold.hold_id, f"O|30|{past}|video|app.sparked.world")
        raw_redis.zadd(f"holdexp:{{{ACCT}}}", {hold.hold_id: past})
        assert client.sweep_expired(ACCT) == 1  # gives the 30 back a second time
        assert client.get_balance(ACCT) == 180
        compensation = _repair_once(client)
        assert compensation.delta == -30
        assert decode_draws(compensation.lots) == decode_draws(released.entry.lots)
        assert _open_lots(client) == [(promo.entry.id, 50), (init, 100)]
