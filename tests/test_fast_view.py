"""The debit fast block's view: the meta hash's ``fv`` field (lua/prelude.lua).

It is a cache of the lots summary and the soonest hold expiry, stamped with the block
sums' ``n``: the fast block trusts it only while the stamp equals ``n``. These tests pin
the rules that keep it from ever being trusted when it is wrong, on a real server of each
line: every entry moves ``n`` (the view goes stale by itself); a script that writes lots
without an entry (a catch-up with credits the TypeScript SDK took, in ``grants``) and the
full repair drop it; a general-path debit writes it again.
"""

from __future__ import annotations

import time
from typing import Any

import redis

from sparked_credits import CreditsClient

ACCT = "user_view"


def _meta(client: CreditsClient) -> str:
    return client._ops.keys.account(ACCT).meta  # type: ignore[attr-defined, no-any-return]


def _view(raw: redis.Redis, client: CreditsClient) -> tuple[bytes | None, bytes | None]:
    got: list[Any] = raw.hmget(_meta(client), "fv", "n")
    return got[0], got[1]


def _script_calls(raw: redis.Redis, *names: str) -> dict[str, int]:
    stats = raw.info("commandstats")
    return {n: int(stats.get(f"cmdstat_{n}", {}).get("calls", 0)) for n in names}


def _typescript_write(raw: redis.Redis, delta: int) -> None:
    """What the TypeScript SDK does: the balance and an entry, no lots, no block sums."""
    after = raw.incrby(f"balance:{ACCT}", delta)
    raw.xadd(
        f"txs:{ACCT}",
        {
            "type": "debit" if delta < 0 else "credit",
            "delta": str(delta),
            "balance": str(after),
            "action": "ts",
            "app": "app.ts",
            "reason": "",
            "ref": "",
            "idem": "",
            "meta": "",
        },
    )


def test_the_view_is_stamped_and_stale_after_any_entry(
    redis_url: str, raw_redis: redis.Redis
) -> None:
    client = CreditsClient(redis_url, app="app.view")
    try:
        client.initialize_user(ACCT, 1000)
        assert _view(raw_redis, client)[0] is None  # only a debit writes it
        client.debit(ACCT, 10, action="chat_message")  # general path: writes the view
        view, n = _view(raw_redis, client)
        assert view is not None
        assert n is not None
        assert view.split(b"|", 1)[0] == n
        before = _script_calls(raw_redis, "zrangebyscore", "hget")
        client.debit(ACCT, 10, action="chat_message")  # the fast block, from the view
        after = _script_calls(raw_redis, "zrangebyscore", "hget")
        # Neither the hold index nor the lots summary was read; the one HGET is the previous
        # idempotency generation (the current one is younger than the re-send window).
        assert after["zrangebyscore"] == before["zrangebyscore"]
        assert after["hget"] - before["hget"] == 1
        view, n = _view(raw_redis, client)
        assert view is not None
        assert view.split(b"|", 1)[0] == n
        # A credit appends an entry: 'n' moves and the view is stale (not rewritten).
        client.credit(ACCT, 5, reason="bonus")
        view2, n2 = _view(raw_redis, client)
        assert view2 == view
        assert n2 != n
        # A hold: the general-path debit after it writes its expiry into the view.
        hold = client.reserve(ACCT, 50, ttl=600, action="train")
        client.debit(ACCT, 1, action="chat_message")
        view3, _ = _view(raw_redis, client)
        assert view3 is not None
        assert view3.split(b"|")[1] != b""
        client.release(ACCT, hold.hold_id)
        assert client.reconcile(ACCT, full=True).lots_problem is None
    finally:
        client.close()


def test_lots_written_without_an_entry_drop_the_view(
    redis_url: str, raw_redis: redis.Redis
) -> None:
    """The TypeScript SDK takes credits (no lots); ``grants`` catches the lots up without
    an entry; the TypeScript SDK gives them back: the balance covers the view's tracked
    credits again, but the view is older than the lots. It was dropped, so the next debit
    takes the general path and draws from the lots as they are."""
    client = CreditsClient(redis_url, app="app.view")
    try:
        client.initialize_user(ACCT, 1000)
        client.debit(ACCT, 10, action="chat_message")
        client.debit(ACCT, 10, action="chat_message")
        assert _view(raw_redis, client)[0] is not None
        _typescript_write(raw_redis, -100)
        client.grants(ACCT)  # catches the lots up with the 100 taken
        assert _view(raw_redis, client)[0] is None
        _typescript_write(raw_redis, +100)
        client.debit(ACCT, 10, action="chat_message")
        assert client.get_balance(ACCT) == 970
        # The 100 the catch-up took stay taken from the first lot; the 100 given back are
        # credits no lot tracks (what replaying the ledger gives). A stale view would have
        # drawn the debit from 980 and left nothing untracked.
        remaining = {g.source: g.remaining for g in client.grants(ACCT)}
        assert remaining == {"init": 870, "untracked": 100}
    finally:
        client.close()


def test_the_full_repair_drops_the_view(redis_url: str, raw_redis: redis.Redis) -> None:
    client = CreditsClient(redis_url, app="app.view")
    try:
        client.initialize_user(ACCT, 1000)
        client.debit(ACCT, 10, action="chat_message")
        assert _view(raw_redis, client)[0] is not None
        client.reconcile(ACCT, full=True, repair=True)
        assert _view(raw_redis, client)[0] is None
        client.debit(ACCT, 10, action="chat_message")
        assert _view(raw_redis, client)[0] is not None
    finally:
        client.close()


def test_a_hold_in_the_view_sends_the_debit_after_its_expiry_to_the_general_path(
    redis_url: str, raw_redis: redis.Redis
) -> None:
    """The view carries the soonest hold expiry: once it has passed, the fast block leaves
    the debit to the general path, which gives the hold back first (as before the view)."""
    client = CreditsClient(redis_url, app="app.view")
    try:
        client.initialize_user(ACCT, 1000)
        hold = client.reserve(ACCT, 100, ttl=1, action="train")
        client.debit(ACCT, 10, action="chat_message")  # general path: the view has the hold
        client.debit(ACCT, 10, action="chat_message")  # fast: the hold is not due yet
        view, _ = _view(raw_redis, client)
        assert hold.expires_at is not None
        expires_ms = int(hold.expires_at.timestamp() * 1000)
        assert view is not None
        assert abs(int(view.split(b"|")[1]) - expires_ms) <= 1
        time.sleep(1.3)
        client.debit(ACCT, 10, action="chat_message")
        types = [e.type for e in client.history(ACCT, limit=10).entries]
        assert types[:2] == ["debit", "expire"]  # the hold went back before the debit
        assert client.get_balance(ACCT) == 970
    finally:
        client.close()
