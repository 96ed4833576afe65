"""The meta hash's 'noctl' mark, which lets a debit's fast block skip the account's
controls (lua/prelude.lua, lua/set_tier.lua): the fast block runs only where a general-path
debit found no controls, and every change of the controls takes the mark away in the same
script. A lost mark costs one general-path debit (which puts it back), never a limit.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis

from sparked_credits import DEFAULT_TABLE, CreditsClient, SpendLimitExceededError

TIERS = DEFAULT_TABLE.with_overrides({}, tiers={"capped": {"daily_limit": 100}})
ACCT = "user_marked"


def test_limits_hold_on_an_account_the_fast_block_served(make_client: Any) -> None:
    """Debits took the fast block (the mark was put), then a tier came: its limit holds on
    the next debit; off the tier, debits past the old limit go through again."""
    client = make_client(pricing=TIERS)
    client.initialize_user(ACCT, 1000)
    for _ in range(3):
        client.debit(ACCT, 5, action="chat_message")
    client.set_tier(ACCT, "capped")
    client.debit(ACCT, 90, action="chat_message")
    before = (client.get_balance(ACCT), client.get_controls(ACCT))
    with pytest.raises(SpendLimitExceededError):
        client.debit(ACCT, 11, action="chat_message")
    assert (client.get_balance(ACCT), client.get_controls(ACCT)) == before
    client.set_tier(ACCT, None)
    for _ in range(3):
        client.debit(ACCT, 50, action="chat_message")
    assert client.get_balance(ACCT) == 1000 - 15 - 90 - 150


def _meta(client: CreditsClient) -> str:
    return client._ops.debit(ACCT, 1, action="x").request.keys[2]  # type: ignore[attr-defined]


def _calls(raw: redis.Redis, *names: str) -> dict[str, int]:
    stats = raw.info("commandstats")
    return {n: int(stats.get(f"cmdstat_{n}", {}).get("calls", 0)) for n in names}


def _debit_calls(raw: redis.Redis, client: CreditsClient) -> dict[str, int]:
    before = _calls(raw, "hmget", "xrange", "exists", "hset")
    client.debit(ACCT, 1, action="chat_message")
    after = _calls(raw, "hmget", "xrange", "exists", "hset")
    return {n: after[n] - before[n] for n in after}


def test_the_mark_is_put_taken_and_put_back(redis_url: str, raw_redis: redis.Redis) -> None:
    client = CreditsClient(redis_url, app="app.mark", pricing=TIERS)
    try:
        client.initialize_user(ACCT, 100)
        meta = _meta(client)
        assert raw_redis.hget(meta, "noctl") is None
        first = _debit_calls(raw_redis, client)  # general path: finds no controls, marks
        assert raw_redis.hget(meta, "noctl") == b"1"
        fast = _debit_calls(raw_redis, client)
        # The fast block: two HMGETs, no EXISTS (the controls are not looked at), no XRANGE.
        assert (fast["hmget"], fast["exists"], fast["xrange"]) == (2, 0, 0), fast
        assert first["hmget"] > 2
        # A tier takes the mark, in set_tier's own script; the general path keeps it away.
        client.set_tier(ACCT, "capped")
        assert raw_redis.hget(meta, "noctl") is None
        assert _debit_calls(raw_redis, client)["hmget"] > 2
        assert raw_redis.hget(meta, "noctl") is None
        assert client.get_controls(ACCT).spent_today == 1
        # Off the tier: the next general debit marks again, then the fast block serves.
        client.set_tier(ACCT, None)
        assert raw_redis.hget(meta, "noctl") is None
        _debit_calls(raw_redis, client)
        assert raw_redis.hget(meta, "noctl") == b"1"
        assert _debit_calls(raw_redis, client)["hmget"] == 2
        # A lost mark (derived state): one general-path debit, which puts it back.
        raw_redis.hdel(meta, "noctl")
        balance = client.get_balance(ACCT)
        assert _debit_calls(raw_redis, client)["hmget"] > 2
        assert raw_redis.hget(meta, "noctl") == b"1"
        assert client.get_balance(ACCT) == balance - 1
        assert _debit_calls(raw_redis, client)["hmget"] == 2
    finally:
        client.close()


def test_set_tier_takes_the_mark_before_it_writes() -> None:
    """set_tier's writes in order: the mark goes first, so any prefix of them (a script cut
    short) leaves no mark beside controls."""
    from sparked_credits._core.scripts import SCRIPTS

    source = SCRIPTS.set_tier.source
    body = source[source.index("local K_CTL = KEYS[11]") :]
    assert body.index("HDEL', K_META, 'noctl'") < body.index("redis.call('HSET', K_CTL")
    assert body.index("HDEL', K_META, 'noctl'") < body.index("redis.call('DEL', K_CTL)")


def test_the_full_repair_takes_a_mark_left_beside_controls(
    redis_url: str, raw_redis: redis.Redis
) -> None:
    """Controls written by something that does not know the mark (an earlier SDK's set_tier
    was one HSET): the full repair takes the mark, and the limit holds again; without
    controls, it puts the mark back."""
    client = CreditsClient(redis_url, app="app.mark", pricing=TIERS)
    try:
        client.initialize_user(ACCT, 1000)
        client.debit(ACCT, 5, action="chat_message")  # general path: puts the mark
        controls_key = client._ops.keys.account(ACCT).controls  # type: ignore[attr-defined]
        raw_redis.hset(controls_key, mapping={"tier": "capped", "daily": "100"})
        assert raw_redis.hget(_meta(client), "noctl") == b"1"
        client.reconcile(ACCT, full=True, repair=True)
        assert raw_redis.hget(_meta(client), "noctl") is None
        client.debit(ACCT, 60, action="chat_message")
        before = client.get_balance(ACCT)
        with pytest.raises(SpendLimitExceededError):
            client.debit(ACCT, 50, action="chat_message")
        assert client.get_balance(ACCT) == before
        # Without controls, the full repair puts a lost mark back (derived state).
        raw_redis.delete(controls_key)
        client.reconcile(ACCT, full=True, repair=True)
        assert raw_redis.hget(_meta(client), "noctl") == b"1"
        # The repair dropped the fast view (prelude.lua): one general-path debit writes it.
        client.debit(ACCT, 1, action="chat_message")
        assert _debit_calls(raw_redis, client)["hmget"] == 2  # the fast block
    finally:
        client.close()


def test_debits_racing_set_tier_never_pass_the_limit(
    redis_url: str, raw_redis: redis.Redis
) -> None:
    """Threads debit a marked account (the fast block) while a tier comes: every debit that
    starts after set_tier returned is counted in the window, and the window never passes
    the limit."""
    import threading

    client = CreditsClient(redis_url, app="app.mark", pricing=TIERS)
    try:
        client.initialize_user(ACCT, 10_000)
        client.debit(ACCT, 1, action="chat_message")  # puts the mark
        tiered = threading.Event()
        after: list[int] = []
        refused: list[int] = []

        def spend() -> None:
            for _ in range(400):
                started_after = tiered.is_set()
                try:
                    client.debit(ACCT, 3, action="chat_message")
                except SpendLimitExceededError:
                    refused.append(1)
                    return
                if started_after:
                    after.append(3)

        threads = [threading.Thread(target=spend) for _ in range(4)]
        for t in threads:
            t.start()
        client.set_tier(ACCT, "capped")
        tiered.set()
        for t in threads:
            t.join()
        spent = client.get_controls(ACCT).spent_today
        assert len(refused) == len(threads)
        assert sum(after) <= spent <= 100
        assert raw_redis.hget(_meta(client), "noctl") is None
    finally:
        client.close()
