"""Every prefix of every mutation script's writes, on a real server, then the full repair.

Redis 6.2 and 7.0 can, after a power loss under ``appendfsync everysec`` and a second
restart, apply a prefix of one script's MULTI block (see test_aof_crash.py for the real
thing). Here each script runs once on a server that keeps an append-only file; its block
is read back from the file, the account is put back as it was before the script, and the
first k writes are applied directly, for every k. Then:

* the cheap checkpointed ``reconcile()`` never says "matched" while the balance differs
  from the ledger's sum (the prefix is harmless, or the check sees it);
* ``reconcile(full=True, repair=True)`` leaves balance == ledger sum, a record for every
  applied key, every open hold open (and in the expiry index), closed holds closed,
  refund totals and init/close marks as the ledger says;
* retrying the same call then replays when its entry was in the prefix, and the account
  ends exactly where a run without the crash ends: applied once, never twice.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import redis

import aof
import block_sums
from redis_servers import RedisServer
from sparked_credits import CreditsClient, CreditsError, Hold, MutationResult

ACCT = "user_2abc"
K_TXS = f"txs:{ACCT}"
K_BAL = f"balance:{ACCT}"
K_META = f"account:{{{ACCT}}}"
K_HOLDS = f"holds:{{{ACCT}}}"
K_HOLDEXP = f"holdexp:{{{ACCT}}}"
K_REFUNDS = f"refunds:{{{ACCT}}}"
K_LOTS, K_LOTQ, K_LOTEXP = f"lots:{{{ACCT}}}", f"lotq:{{{ACCT}}}", f"lotexp:{{{ACCT}}}"
IDEM = (f"idem:{{{ACCT}}}:current", f"idem:{{{ACCT}}}:previous")


@pytest.fixture(scope="session")
def aof_server(server_line: str) -> Iterator[RedisServer]:
    """A server of the line under test that writes every command to its AOF at once."""
    from conftest import line_binary

    with RedisServer(
        "--appendonly", "yes", "--appendfsync", "always", binary=line_binary(server_line)
    ) as server:
        yield server


@pytest.fixture
def setting(aof_server: RedisServer) -> Iterator[tuple[RedisServer, redis.Redis]]:
    raw = redis.Redis.from_url(aof_server.url)
    raw.flushall()
    yield aof_server, raw
    raw.close()


Ctx = dict[str, Any]


@dataclass(frozen=True)
class Scenario:
    name: str
    setup: Callable[[CreditsClient], Ctx]
    run: Callable[[CreditsClient, Ctx], Any]
    key: str | None = None  # the idempotency key the retry must replay
    auto_init: bool = False


def _init(c: CreditsClient) -> Ctx:
    c.initialize_user(ACCT, 100)
    return {}


def _with_tier(c: CreditsClient) -> Ctx:
    c.initialize_user(ACCT, 100)
    c.set_tier(ACCT, None, daily_limit=500, low_balance=50)
    return {}


def _with_debit(c: CreditsClient) -> Ctx:
    c.initialize_user(ACCT, 100)
    return {"eid": c.debit(ACCT, 30, action="chat_message").entry.id}


def _with_hold(c: CreditsClient) -> Ctx:
    c.initialize_user(ACCT, 100)
    return {"hid": c.reserve(ACCT, 40, action="model_training").hold_id}


def _with_settled_hold(c: CreditsClient) -> Ctx:
    ctx = _with_hold(c)
    ctx["sid"] = c.settle(ACCT, ctx["hid"], 25).entry.id
    return ctx


def _with_due_holds(c: CreditsClient) -> Ctx:
    c.initialize_user(ACCT, 100)
    c.reserve(ACCT, 10, action="video_generation", ttl=0.02)
    c.reserve(ACCT, 15, action="video_generation", ttl=0.02)
    time.sleep(0.05)
    return {}


def _with_checkpoint(c: CreditsClient) -> Ctx:
    c.initialize_user(ACCT, 100)
    ids = [c.debit(ACCT, 1, action="chat_message").entry.id for _ in range(5)]
    c.reconcile(ACCT)
    c.debit(ACCT, 1, action="chat_message")
    return {"before": ids[3]}


def _with_lots_and_checkpoint(c: CreditsClient) -> Ctx:
    """Lots opened, drawn and given back, then a checkpoint: a trim removes the entries
    that opened them, and keeps the lots as of its base for the full repair."""
    c.initialize_user(ACCT, 100)
    c.credit(ACCT, 50, source="promo", priority=10, expires_at=TOMORROW)
    c.credit(ACCT, 20, source="grant")
    spent = c.debit(ACCT, 70, action="chat_message")
    c.refund(ACCT, spent.entry.id, amount=15)
    c.reconcile(ACCT)
    ckpt = c._backend.client.hget(K_META, "ckpt_id").decode()  # type: ignore[attr-defined]
    c.debit(ACCT, 1, action="chat_message")
    return {"before": ckpt}


def _with_repeated_debit(c: CreditsClient) -> Ctx:
    """One key applied twice across lots (its record lost before the retry and after it):
    the full repair compensates the second, giving back to the lots it drew from."""
    c.initialize_user(ACCT, 100)
    c.credit(ACCT, 50, source="promo", priority=10, expires_at=TOMORROW)
    raw = c._backend.client  # type: ignore[attr-defined]
    for _ in range(2):
        c.debit(ACCT, 30, action="chat_message", idempotency_key="twice")
        raw.delete(*IDEM)
    return {}


def _with_old_records(c: CreditsClient) -> Ctx:
    """Records whose generation is past the retention: the next call rotates them (UNLINK,
    RENAME, PEXPIRE...), the longest write sequence of a mutation."""
    c.initialize_user(ACCT, 100)
    c.debit(ACCT, 1, action="chat_message", idempotency_key="k0")
    born = int(time.time() * 1000) - 8 * 24 * 3600 * 1000
    c._backend.client.hset(IDEM[0], "", born)  # type: ignore[attr-defined]
    c._backend.client.hset(IDEM[1], "k-1", "0|1-0")  # type: ignore[attr-defined]
    return {}


def _corrupted(c: CreditsClient) -> Ctx:
    c.initialize_user(ACCT, 100)
    c.debit(ACCT, 10, action="chat_message")
    c._backend.client.set(K_BAL, "500")  # type: ignore[attr-defined]
    return {}


def _with_lots(c: CreditsClient) -> Ctx:
    c.initialize_user(ACCT, 100)
    c.credit(ACCT, 30, source="promo", priority=10)
    return {}


def _spent_from_expiring_lot(c: CreditsClient) -> Ctx:
    c.initialize_user(ACCT, 100)
    c.credit(ACCT, 50, source="promo", priority=0, expires_at=_soon())
    eid = c.debit(ACCT, 60, action="chat_message").entry.id
    time.sleep(0.3)  # the promo lot has expired: a refund to it lapses at once
    return {"eid": eid}


def _with_due_lot(c: CreditsClient) -> Ctx:
    c.initialize_user(ACCT, 100)
    c.credit(ACCT, 20, source="promo", expires_at=_soon())
    time.sleep(0.3)
    return {}


def _soon() -> datetime:
    return datetime.now(timezone.utc) + timedelta(seconds=0.2)


TOMORROW = datetime.now(timezone.utc) + timedelta(days=1)  # one value: retries replay


SCENARIOS = [
    Scenario("initialize", lambda c: {}, lambda c, x: c.initialize_user(ACCT, 100)),
    Scenario("debit", _init, lambda c, x: c.debit(ACCT, 10, action="chat", idempotency_key="k"),
             key="k"),
    Scenario("debit_auto_init", lambda c: {},
             lambda c, x: c.debit(ACCT, 10, action="chat", idempotency_key="k"), key="k",
             auto_init=True),
    Scenario("debit_after_due_holds", _with_due_holds,
             lambda c, x: c.debit(ACCT, 10, action="chat", idempotency_key="k"), key="k"),
    Scenario("debit_rotating_records", _with_old_records,
             lambda c, x: c.debit(ACCT, 10, action="chat", idempotency_key="k"), key="k"),
    Scenario("credit", _init,
             lambda c, x: c.credit(ACCT, 50, source="grant", idempotency_key="k"), key="k"),
    Scenario("adjust", _init, lambda c, x: c.adjust(ACCT, -20, idempotency_key="k"), key="k"),
    Scenario("refund", _with_debit,
             lambda c, x: c.refund(ACCT, x["eid"], amount=10, idempotency_key="k"), key="k"),
    Scenario("refund_settle", _with_settled_hold,
             lambda c, x: c.refund(ACCT, x["sid"], idempotency_key="k"), key="k"),
    Scenario("reserve", _init,
             lambda c, x: c.reserve(ACCT, 40, action="training", idempotency_key="k"), key="k"),
    Scenario("settle", _with_hold, lambda c, x: c.settle(ACCT, x["hid"], 25)),
    Scenario("release", _with_hold, lambda c, x: c.release(ACCT, x["hid"])),
    Scenario("close_account", _init, lambda c, x: c.close_account(ACCT)),
    Scenario("sweep", _with_due_holds, lambda c, x: c.sweep_expired(ACCT)),
    Scenario("trim", _with_checkpoint, lambda c, x: c.trim_ledger(ACCT, before=x["before"])),
    Scenario("reconcile_repair", _corrupted, lambda c, x: c.reconcile(ACCT, repair=True)),
    # Credit lots (they are derived state too: rebuilt from the entries' _sc.l).
    Scenario("credit_expiring_lot", _init,
             lambda c, x: c.credit(ACCT, 50, source="promo", priority=10, idempotency_key="k",
                                   expires_at=TOMORROW),
             key="k"),
    Scenario("debit_across_lots", _with_lots,
             lambda c, x: c.debit(ACCT, 120, action="chat", idempotency_key="k"), key="k"),
    Scenario("refund_to_expired_lot", _spent_from_expiring_lot,
             lambda c, x: c.refund(ACCT, x["eid"], idempotency_key="k"), key="k"),
    Scenario("sweep_lots", _with_due_lot, lambda c, x: c.sweep_expired(ACCT)),
    Scenario("reconcile_compensates", _with_repeated_debit,
             lambda c, x: c.reconcile(ACCT, full=True, repair=True)),
    # The referred account's step (its lot, then the referrer's): once per referred account.
    Scenario("referral_referred", _init,
             lambda c, x: c.reward_referral("user_referrer", ACCT, referrer_credits=50,
                                            referred_credits=20)),
    Scenario("trim_lots", _with_lots_and_checkpoint,
             lambda c, x: c.trim_ledger(ACCT, before=x["before"])),
    # Account controls: the window count and the alert are the unit's derived state.
    Scenario("debit_with_tier", _with_tier,
             lambda c, x: c.debit(ACCT, 60, action="chat", idempotency_key="k"), key="k"),
    Scenario("referral", lambda c: {},
             lambda c, x: c.reward_referral("user_ref", ACCT, referrer_credits=5,
                                            referred_credits=20)),
]


def _snapshot(raw: redis.Redis) -> dict[bytes, tuple[bytes, int]]:
    out = {}
    for key in raw.keys("*"):
        out[key] = (raw.dump(key), max(raw.pttl(key), 0))
    return out


def _restore(raw: redis.Redis, snap: dict[bytes, tuple[bytes, int]]) -> None:
    raw.flushall()
    for key, (payload, ttl) in snap.items():
        raw.restore(key, ttl, payload)


def _entries(raw: redis.Redis) -> list[tuple[str, dict[str, str]]]:
    return [
        (eid.decode(), {k.decode(): v.decode() for k, v in f.items()})
        for eid, f in raw.xrange(K_TXS)
    ]


def ledger_sum(raw: redis.Redis) -> int:
    base = int(raw.hget(K_META, "base_sum") or 0)
    return base + sum(int(f["delta"]) for _, f in _entries(raw))


def balance(raw: redis.Redis) -> int:
    return int(raw.get(K_BAL) or 0)


def open_holds(raw: redis.Redis) -> list[int]:
    """Amounts of the open holds, checked against the expiry index."""
    amounts = []
    for hid, rec in raw.hgetall(K_HOLDS).items():
        if rec.startswith(b"O|"):
            assert raw.zscore(K_HOLDEXP, hid) is not None, f"open hold {hid!r} never expires"
            amounts.append(int(rec.split(b"|")[1]))
    return sorted(amounts)


def lots_of(client: CreditsClient) -> list[tuple[str, int, int, int]]:
    """The open lots, without their ids (a retried call opens its lot under a new id)."""
    return [(g.source, g.remaining, g.amount, g.priority) for g in client.grants(ACCT)]


def check_derived_state(raw: redis.Redis) -> None:
    """Everything the ledger says, the derived records say."""
    entries = _entries(raw)
    assert balance(raw) == ledger_sum(raw)
    closing = {f["ref"]: f["type"] for _, f in entries if f["type"] in ("settle", "release",
                                                                         "expire")}
    refunded: dict[str, int] = {}
    for eid, f in entries:
        typ, key = f["type"], f["idem"]
        if key and typ not in ("init", "close"):
            rec = raw.hget(IDEM[0], key) or raw.hget(IDEM[1], key)
            assert rec is not None, f"applied key {key} has no record"
            target = rec.decode().split("|", 1)[1]
            assert any(i == target and g["idem"] == key for i, g in entries)
        if typ == "reserve":
            rec = raw.hget(K_HOLDS, eid)
            assert rec is not None
            if eid in closing:
                assert not rec.startswith(b"O|")
                assert raw.zscore(K_HOLDEXP, eid) is None
            else:
                assert rec.startswith(b"O|"), f"hold {eid} lost: {rec!r}"
                assert raw.zscore(K_HOLDEXP, eid) is not None
        if typ == "refund":
            refunded[f["ref"]] = refunded.get(f["ref"], 0) + int(f["delta"])
        if typ == "init":
            assert raw.hget(K_META, "init") is not None
        if typ == "close":
            assert raw.hget(K_META, "closed") is not None
    for eid, total in refunded.items():
        assert int(raw.hget(K_REFUNDS, eid) or 0) == total
    check_blocks(raw)



def check_blocks(raw: redis.Redis) -> None:
    meta = {k.decode(): v.decode() for k, v in raw.hgetall(K_META).items()}
    block_sums.check_blocks(meta, [int(f[b"delta"]) for _, f in raw.xrange(K_TXS)])

def _commit_id(writes: list[aof.Command], key: str) -> str | None:
    """The id of the entry the script wrote for ``key``, if its XADD is in ``writes``."""
    for cmd in writes:
        if cmd[0].upper() == b"XADD":
            fields = dict(zip(cmd[3::2], cmd[4::2], strict=True))
            if fields.get(b"idem") == key.encode():
                return cmd[2].decode()
    return None


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_every_prefix_is_detected_and_repaired(
    setting: tuple[RedisServer, redis.Redis], scenario: Scenario
) -> None:
    server, raw = setting
    with CreditsClient(server.url, app="app.sparked.world",
                       auto_initialize=scenario.auto_init) as client:
        ctx = scenario.setup(client)
        before = _snapshot(raw)
        offset = aof.size(server.directory)
        scenario.run(client, ctx)
        writes = aof.writes_since(server.directory, offset)
        assert writes, "the script wrote nothing"
        final_balance, final_holds = balance(raw), open_holds(raw)
        final_lots = lots_of(client)
        final_sum = ledger_sum(raw)
        assert final_balance == final_sum

        for k in range(len(writes) + 1):
            # The prefix buried under later traffic (Redis replays it, the service goes
            # on): the cheap check (the block sums first) still sees a break.
            _restore(raw, before)
            for cmd in writes[:k]:
                raw.execute_command(*cmd)
            with contextlib.suppress(CreditsError):
                client.credit(ACCT, 1, source="grant")
            if client.reconcile(ACCT).matched:
                assert balance(raw) == ledger_sum(raw), f"prefix {k}, buried: a missed break"

            _restore(raw, before)
            prefix = writes[:k]
            for cmd in prefix:
                raw.execute_command(*cmd)

            cheap = client.reconcile(ACCT)
            if cheap.matched:
                assert balance(raw) == ledger_sum(raw), f"prefix {k}: a missed break"
            client.reconcile(ACCT, full=True, repair=True)
            check_derived_state(raw)
            # The lots agree with the ledger (replayed from the trim base on a trimmed one).
            lots = client.reconcile(ACCT, full=True)
            assert (lots.lots_matched, lots.lots_replayed) == (True, True), f"prefix {k}"
            assert client.reconcile(ACCT).lots_matched is True, f"prefix {k}"

            again = scenario.run(client, ctx)
            committed = _commit_id(prefix, scenario.key) if scenario.key else None
            if committed is not None:
                assert isinstance(again, MutationResult | Hold)
                assert again.replayed is True, f"prefix {k}"
                assert again.entry.id == committed
            assert client.reconcile(ACCT, full=True).matched is True, f"prefix {k}"
            assert balance(raw) == final_balance, f"prefix {k}: applied other than once"
            assert open_holds(raw) == final_holds, f"prefix {k}"
            check_derived_state(raw)
            assert lots_of(client) == final_lots, f"prefix {k}"
            # The lots are derived state: lost, the full repair rebuilds them from the
            # ledger (from the lots kept at the trim base, where it was trimmed).
            raw.delete(K_LOTS, K_LOTQ, K_LOTEXP)
            client.reconcile(ACCT, full=True, repair=True)
            assert lots_of(client) == final_lots, f"prefix {k}"


def test_the_scenarios_cover_every_keyed_script() -> None:
    """Each mutation script the declarations mark keyed (and initialize, and every script
    that writes) has a scenario here whose run calls it: a new script cannot skip the
    torn-prefix proof. Recorded on memory://, where running the scenarios costs nothing."""
    import test_money_torn
    from sparked_credits._core.protocol import SPECS

    scenarios = [(s.name, s.setup, s.run) for s in SCENARIOS] + [
        (s.name, s.setup, lambda c, x, run=s.run: run(c)) for s in test_money_torn.SCENARIOS
    ]
    ran: set[str] = set()
    for name, setup, run in scenarios:
        with CreditsClient(f"memory://torn-cover-{name}") as client:
            ctx = setup(client)
            execute = client._backend.execute

            def recording(request: Any, execute: Any = execute) -> Any:
                script = getattr(request, "script", None)
                if script is not None:
                    ran.add(script.name)
                return execute(request)

            client._backend.execute = recording  # type: ignore[method-assign]
            with contextlib.suppress(CreditsError):
                run(client, ctx)
    writers = {name for name, spec in SPECS.items() if spec.keyed} | {
        "initialize",
        "sweep",
        "trim",
        "reconcile",
    }
    assert writers - ran == set()
