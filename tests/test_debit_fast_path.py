"""The debit script's ``-- @fast`` block writes exactly what its general path writes.

lua/debit.lua answers the common debit before the prelude (no closures made for the
prelude's helpers) and falls through to the general path for everything else. Two
accounts live the same history on one real server: account A's debits run the real
script, account B's the same script without its fast block (``scripts.general_only``),
both by raw EVALSHA with the KEYS/ARGV the SDK builds; every other operation goes through
the SDK on both. After every step the replies and every key of the two accounts must be
equal once the per-account parts are mapped (entry ids by their place in the ledger, times,
fingerprints and nonces, which include the account).

The scenario walks each case the fast block must decline (a replay, a conflict, a closed
or uninitialized account, a due hold, a due lot, credits taken behind the lots' back, a
first lot that the debit drains or overruns, a lots summary in an earlier layout, an
idempotency generation due to rotate) and the ones it takes; then hypothesis draws random
histories. The counts of fast answers prove both branches ran.
"""

from __future__ import annotations

import functools
import re
import secrets
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sparked_credits import CreditsClient
from sparked_credits._core.operations import Extras
from sparked_credits._core.scripts import SCRIPTS, general_only

A, B = "user_fast_a", "user_fast_b"
_ID = re.compile(rb"\d{13}-\d+")
_MS = re.compile(rb"\d{13}")
_FP = re.compile(rb'"([fn])":"[^"]*"')
_RECORD = re.compile(rb"^[^|]*\|(E\d+)$")


class Twins:
    """Two accounts, one history: A's debits take the fast block, B's never do."""

    def __init__(self, url: str, raw: redis.Redis, **options: Any) -> None:
        self.client = CreditsClient(url, app="app.twins", **options)
        self.raw = raw
        self.fast_sha = raw.script_load(SCRIPTS.debit.source)
        self.general_sha = raw.script_load(general_only("debit").source)
        self.fast_answers = 0
        self.fast_declined = 0

    # -- operations -----------------------------------------------------------------------

    def debit(
        self,
        amount: int,
        *,
        key: str | None = None,
        reason: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        token = key or secrets.token_urlsafe(12)
        replies = []
        for account, sha in ((A, self.fast_sha), (B, self.general_sha)):
            op = self.client._ops.debit(
                account,
                amount,
                action="chat_message",
                extras=Extras(reason=reason, metadata=metadata, idempotency_key=key),
            )
            call = op.request
            args = list(call.args)
            args[0] = token
            before = self._commands()
            replies.append(self.raw.evalsha(sha, len(call.keys), *call.keys, *args))
            if account == A:
                self._count(self._commands(), before)
        self.check(replies[0], replies[1])

    def both(self, fn: Any) -> None:
        """The same SDK call on both accounts; the replies must agree too."""
        got = []
        for account in (A, B):
            try:
                got.append(("ok", fn(account)))
            except Exception as exc:  # compared below, not swallowed
                got.append(("error", type(exc).__name__))
        assert (got[0][0], got[1][0]) in (("ok", "ok"), ("error", "error")), got
        if got[0][0] == "error":
            assert got[0][1] == got[1][1]
        self.check(None, None)

    # -- the comparison -------------------------------------------------------------------

    def _commands(self) -> tuple[int, int]:
        stats = self.raw.info("commandstats")
        return tuple(  # type: ignore[return-value]
            int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("hmget", "xrange")
        )

    def _count(self, after: tuple[int, int], before: tuple[int, int]) -> None:
        """The fast block answers with two HMGETs (idempotency key, meta marks) and no
        XRANGE; a call it declines also runs the general path, which reads the key again
        (HMGET) and then either finds it (XRANGE) or reads the marks (a third HMGET)."""
        hmget, xrange = after[0] - before[0], after[1] - before[1]
        if hmget == 2 and xrange == 0:
            self.fast_answers += 1
        else:
            self.fast_declined += 1

    def _keys(self, account: str) -> tuple[str, ...]:
        return self.client._ops.debit(account, 1, action="x").request.keys

    def _names(self, account: str) -> dict[bytes, bytes]:
        """Entry ids and idempotency keys (the SDK makes one per call and account) by
        their place in the ledger."""
        names: dict[bytes, bytes] = {}
        for n, (entry_id, fields) in enumerate(self.raw.xrange(self._keys(account)[1])):
            names[entry_id] = f"E{n}".encode()
            if fields.get(b"idem"):
                names.setdefault(fields[b"idem"], f"K{n}".encode())
        return names

    def _dump(self, account: str) -> list[Any]:
        ids = self._names(account)
        dumped: list[Any] = []
        for key in self._keys(account):
            kind = self.raw.type(key).decode()
            if kind == "string":
                value: Any = self.raw.get(key)
            elif kind == "hash":
                value = sorted(self.raw.hgetall(key).items())
            elif kind == "zset":
                value = self.raw.zrange(key, 0, -1, withscores=True)
            elif kind == "stream":
                value = [sorted(fields.items()) for _, fields in self.raw.xrange(key)]
            else:
                value = None
            dumped.append((kind, self._normal(value, ids, account)))
        return dumped

    def _normal(self, value: Any, ids: dict[bytes, bytes], account: str) -> Any:
        if isinstance(value, (list, tuple)):
            return [self._normal(v, ids, account) for v in value]
        if isinstance(value, float):
            return "T" if value > 1e12 and value < 2**45 else value
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            value = value.encode()
        if not isinstance(value, bytes):
            return value
        if value in ids:
            return ids[value]
        value = _ID.sub(lambda m: ids.get(m.group(0), b"E?"), value)
        value = _MS.sub(b"T", value)
        # Fingerprints and nonces include the account: same place, other text.
        value = _FP.sub(rb'"\1":"*"', value)
        value = _RECORD.sub(rb"*|\1", value)
        return value.replace(account.encode(), b"ACCT")

    def check(self, reply_a: Any, reply_b: Any) -> None:
        assert self._dump(A) == self._dump(B)
        if reply_a is not None:
            assert self._normal(reply_a, self._names(A), A) == self._normal(
                reply_b, self._names(B), B
            )


@pytest.fixture
def twins(redis_url: str, raw_redis: redis.Redis) -> Iterator[Twins]:
    t = Twins(redis_url, raw_redis)
    yield t
    t.client.close()


def _in(ms: int) -> datetime:
    return datetime.now(timezone.utc) + timedelta(milliseconds=ms)


def test_fast_block_writes_what_the_general_path_writes(twins: Twins) -> None:
    t = twins
    # Not initialized yet: auto-initialize happens on the general path.
    t.debit(5)
    t.both(lambda a: t.client.initialize_user(a, 100))
    t.debit(7)  # fast
    t.debit(3, reason="r", metadata={"message_id": "m1"})  # fast, with metadata
    t.debit(2, metadata={})  # fast, empty metadata
    t.debit(4, key="caller-key-1")  # fast, a caller's key (nonce in the entry)
    t.debit(4, key="caller-key-1")  # replay: general
    t.debit(5, key="caller-key-1")  # conflict: general
    t.debit(10**6)  # insufficient, answered by the fast block
    # A block of 1024 entries closes (block sums, prelude.lua): n moved near the boundary.
    for account in (A, B):
        t.raw.hset(t._keys(account)[2], "n", 1022)
    t.debit(1)
    t.debit(1)  # the 1024th entry: closes block 0
    t.debit(1)
    # Lots: a promotional lot first in order, with an expiry.
    expiry = _in(60_000)
    t.both(lambda a: t.client.credit(a, 30, source="promo", expires_at=expiry, priority=10))
    t.debit(10)  # fast: the promo lot covers it
    t.debit(20)  # drains the promo lot exactly: general
    t.debit(30)  # fast again, on the init lot
    t.both(lambda a: t.client.credit(a, 15, priority=0))
    t.debit(25)  # overruns the first lot: general (draws on two)
    # A lot that expires soon, then is due.
    t.both(lambda a: t.client.credit(a, 9, source="soon", expires_at=_in(400), priority=0))
    t.debit(1)  # fast (the soon lot is the head and the soonest)
    time.sleep(0.5)
    t.debit(1)  # the soon lot is due: general (its lapse entry first)
    t.debit(1)  # fast
    # A hold past its ttl.
    t.both(lambda a: t.client.reserve(a, 5, action="video", ttl=timedelta(seconds=1)))
    t.debit(1)  # fast: the hold is not due
    time.sleep(1.1)
    t.debit(1)  # the hold is due: general (its expire entry first)
    t.debit(1)  # fast
    # Credits taken behind the lots' back (an older SDK's debit).
    for account in (A, B):
        t.raw.decrby(t._keys(account)[0], 3)
    t.debit(2)  # lots must catch up: general
    t.debit(2)  # fast
    # A summary in an earlier layout (the tracked sum alone).
    for account in (A, B):
        lots = t._keys(account)[7]
        tracked = t.raw.hget(lots, "").split(b"|")[0]
        t.raw.hset(lots, "", tracked)
    t.debit(2)  # general (rewrites the summary in today's layout)
    t.debit(2)  # fast
    # Closed account.
    t.both(lambda a: t.client.close_account(a))
    t.debit(1)  # closed: general
    assert t.fast_answers >= 10, t.fast_answers
    assert t.fast_declined >= 8, t.fast_declined


def test_fast_block_declines_an_idempotency_generation_due_to_rotate(
    redis_url: str, raw_redis: redis.Redis
) -> None:
    t = Twins(redis_url, raw_redis, idempotency_ttl=timedelta(seconds=1))
    try:
        t.both(lambda a: t.client.initialize_user(a, 100))
        t.debit(1)  # no generation yet: general (starts one)
        t.debit(1)  # fast
        time.sleep(1.1)
        t.debit(1)  # the generation is a ttl old: general (rotates)
        t.debit(1)  # fast
        assert (t.fast_answers, t.fast_declined) == (2, 2)
    finally:
        t.client.close()


def test_fast_block_on_an_account_from_before_lots(twins: Twins) -> None:
    """No lots summary (an account the TypeScript SDK or an earlier version made): the
    general path, which puts the credits in the implicit lot."""
    t = twins
    for account in (A, B):
        keys = t._keys(account)
        t.raw.set(keys[0], 50)
        t.raw.hset(keys[2], "init", "1-0")
    t.debit(5)
    t.debit(5)
    assert (t.fast_answers, t.fast_declined) == (0, 2)


OPS = st.lists(
    st.one_of(
        st.tuples(st.just("debit"), st.integers(1, 40)),
        st.tuples(st.just("debit"), st.integers(1, 40)),
        # A caller's key, reused now and then (replays, conflicts), and metadata.
        st.tuples(st.just("debit_key"), st.integers(1, 40), st.sampled_from(["k1", "k2"])),
        st.tuples(st.just("debit_meta"), st.integers(1, 40), st.sampled_from(["m", ""])),
        st.tuples(st.just("credit"), st.integers(1, 40), st.sampled_from([0, 50, 100])),
        st.tuples(st.just("reserve_settle"), st.integers(1, 30), st.integers(0, 30)),
        st.tuples(st.just("refund"), st.integers(1, 10)),
        st.tuples(st.just("adjust"), st.integers(-20, 20).filter(bool)),
    ),
    min_size=1,
    max_size=16,
)


def _sdk_step(t: Twins, op: tuple[Any, ...], account: str, expiry: datetime) -> object:
    """One drawn operation other than a debit, through the SDK."""
    kind, n = op[0], op[1]
    if kind == "credit":
        return t.client.credit(account, n, priority=op[2], expires_at=expiry)
    if kind == "reserve_settle":
        hold = t.client.reserve(account, n, action="video")
        return t.client.settle(account, hold.hold_id, op[2], allow_overage=True)
    if kind == "refund":
        debits = [e for e in t.client.history(account, limit=50).entries if e.type == "debit"]
        if not debits:
            return None
        return t.client.refund(account, debits[0].id, amount=min(n, -debits[0].delta))
    return t.client.adjust(account, n, allow_overdraft=True)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(ops=OPS)
def test_random_histories_agree(twins: Twins, ops: list[tuple[Any, ...]]) -> None:
    t = twins
    for account in (A, B):
        for key in t._keys(account):
            t.raw.delete(key)
    t.both(lambda a: t.client.initialize_user(a, 60))
    expiry = _in(3_600_000)
    for op in ops:
        if op[0] == "debit":
            t.debit(op[1])
        elif op[0] == "debit_key":
            t.debit(op[1], key=op[2])
        elif op[0] == "debit_meta":
            t.debit(op[1], reason=op[2] or None, metadata={"m": op[2]} if op[2] else {})
        else:
            t.both(functools.partial(_sdk_step, t, op, expiry=expiry))


def test_fast_block_skips_the_previous_generation_for_an_sdk_key(twins: Twins) -> None:
    """In an idempotency generation older than the re-send window (RESEND_WINDOW), a key
    the SDK made for the call cannot have its record in the previous generation: the
    fast block does not read it (one HGET fewer). A caller's key still has it read."""
    t = twins
    t.both(lambda a: t.client.initialize_user(a, 100))
    t.debit(1)  # starts the generation
    old = int(time.time() * 1000) - 25 * 3600 * 1000
    for account in (A, B):
        t.raw.hset(t._keys(account)[3], "", old)

    def hgets(**options: Any) -> int:
        before = int(t.raw.info("commandstats").get("cmdstat_hget", {}).get("calls", 0))
        t.debit(1, **options)  # A, then its twin B on the general path
        after = int(t.raw.info("commandstats").get("cmdstat_hget", {}).get("calls", 0))
        return after - before

    answers = t.fast_answers
    sdk_key = hgets()
    caller_key = hgets(key="caller-key-old-generation")
    assert t.fast_answers == answers + 2
    assert caller_key - sdk_key == 1  # the previous generation, read for the caller's key
    # A replay of the caller's key still finds its record (general path).
    t.debit(1, key="caller-key-old-generation")
    assert t.fast_answers == answers + 2
