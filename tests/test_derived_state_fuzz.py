"""A fuzzer of derived state: the ledger is the commit record, so whatever happens to every
other key of an account, ``reconcile(full=True, repair=True)`` puts it back.

One history per backend and mode calls every keyed script (debit, credit, adjust, refund,
reserve, settle, release, close) and the ones that act on their own (an expired hold, a
lapsed lot), under caller keys and keys the SDK made. Then, seed after seed, a few random
corruptions of the derived keys (balance, idempotency records, hold records and their
expiry index, refund totals, lot records and their indexes and summary, the meta hash's
marks and block sums, never the ledger), the full repair, and a comparison with the state
before: every key as it was (checkpoints and the form of the block sums aside, which a
pass may move), the cheap and full checks clean, and every applied key replaying.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from lots_support import DERIVED_FAMILIES, account_keys, raw, restore, snapshot, text
from sparked_credits import IdempotencyConflictError
from sparked_credits._core.protocol import SPECS

ACCT = "user_fuzz"
SEEDS = int(os.environ.get("FUZZ_SEEDS", "10"))
"""Corruption rounds per run (a longer local run: FUZZ_SEEDS=2000)."""

KEYED = sorted(name for name, spec in SPECS.items() if spec.keyed)
META_MOVING = {"ckpt_id", "ckpt_sum", "ckpt_count", "n", "bo", "bf", "bfn"}


def _history(client: Any) -> dict[str, Callable[[], Any]]:
    """Every keyed script at least once; returns each caller-keyed call, to retry later."""
    later = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(days=2)
    calls: dict[str, Callable[[], Any]] = {
        "c1": lambda: client.credit(ACCT, 40, source="promo", priority=10, expires_at=later,
                                    idempotency_key="c1"),
        "d1": lambda: client.debit(ACCT, 25, action="chat", idempotency_key="d1"),
        "a1": lambda: client.adjust(ACCT, 15, idempotency_key="a1"),
    }
    ran = _record_scripts(client)
    client.initialize_user(ACCT, 100)
    # Lapses below: its expiry taken at the call, so a slow server cannot put it in the past.
    soon = datetime.now(timezone.utc) + timedelta(milliseconds=250)
    client.credit(ACCT, 5, source="referral", priority=95, expires_at=soon)
    client.reserve(ACCT, 4, action="video", ttl=0.25)  # expires below
    for call in calls.values():
        call()
    taken = client.debit(ACCT, 30, action="video")
    client.refund(ACCT, taken.entry.id, amount=10)
    calls["r1"] = lambda: client.refund(ACCT, taken.entry.id, idempotency_key="r1")
    calls["r1"]()
    kept = client.reserve(ACCT, 20, action="train", ttl=3600)
    client.settle(ACCT, kept.hold_id, 28, allow_overage=True)
    client.refund(ACCT, client.history(ACCT, limit=1).entries[0].id, amount=3)
    back = client.reserve(ACCT, 12, action="video", ttl=3600)
    client.release(ACCT, back.hold_id)
    calls["h1"] = lambda: client.reserve(ACCT, 7, action="render", ttl=7200,
                                         idempotency_key="h1")
    calls["h1"]()  # stays open
    time.sleep(max(0.0, (soon - datetime.now(timezone.utc)).total_seconds()) + 0.1)
    client.sweep_expired(ACCT)
    client.adjust(ACCT, -200, allow_overdraft=True)
    client.credit(ACCT, 150, priority=90)  # pays the debt first
    # Money in and controls: a payment's lot, part of it revoked, two periods' allocations
    # (the second rolls over and lapses), a referral reward.
    calls["p1"] = lambda: client.purchase(ACCT, 60, payment_id="pay_1")
    calls["p1"]()
    calls["v1"] = lambda: client.revoke(ACCT, "purchase:pay_1", 20, idempotency_key="v1")
    calls["v1"]()
    client.allocate(ACCT, 50, period_id="m1", expires_at=later, rollover_cap=10)
    client.debit(ACCT, 5, action="chat")
    calls["m2"] = lambda: client.allocate(
        ACCT, 50, period_id="m2", expires_at=later + timedelta(days=1), rollover_cap=10
    )
    calls["m2"]()
    client.reward_referral("user_fuzz_referrer", ACCT, referrer_credits=5, referred_credits=3)
    calls["x1"] = lambda: client.close_account(ACCT, reason="deleted")
    calls["x1"]()
    types = {e.type_name for e in client.history(ACCT, limit=100).entries}
    assert {"expire", "lot_expire", "close"} <= types
    missing = set(KEYED) - ran
    assert not missing, f"a keyed script missing from the history: {sorted(missing)}"
    return calls


def _record_scripts(client: Any) -> set[str]:
    """The names of the scripts the client runs from now on (sync or async client)."""
    inner = getattr(client, "_client", client)
    backend = inner._backend
    execute = backend.execute
    ran: set[str] = set()

    def recording(request: Any) -> Any:
        script = getattr(request, "script", None)
        if script is not None:
            ran.add(script.name)
        return execute(request)

    backend.execute = recording
    return ran


def _ids(client: Any) -> list[str]:
    return [e.id for e in client.history(ACCT, limit=100).entries]


def _normal(state: dict[str, Any]) -> dict[str, Any]:
    """Derived state as comparable: the checkpoint and the block sums' form aside (a pass
    moves them; their meaning is checked apart), idempotency records by the entry they
    name, in either generation, without the generations' birth time."""
    out = dict(state)
    meta = dict(state["meta"][1]) if state["meta"] else {}
    out["meta"] = {k: v for k, v in meta.items() if k not in META_MOVING}
    records: dict[str, str] = {}
    for family in ("idempotency_previous", "idempotency"):
        if state[family]:
            for key, rec in state[family][1].items():
                if key:
                    records[key] = rec.rsplit("|", 1)[-1]
    out["idempotency"] = records
    del out["idempotency_previous"]
    return out


# -- corruptions: one family each, never the ledger ---------------------------------------


def _fields(client: Any, name: str) -> list[str]:
    flat = text(raw(client, "HKEYS", name))
    return [f for f in flat if f]


def _members(client: Any, name: str) -> list[str]:
    return [m for m in text(raw(client, "ZRANGE", name, 0, -1))]


def corrupt(client: Any, rng: random.Random, family: str, ids: list[str]) -> str:
    """One random corruption of one key family; returns what it did."""
    name = getattr(account_keys(client, ACCT), family)
    kind = text(raw(client, "TYPE", name))
    junk = rng.choice(["", "x", "-7", "12|", str(rng.randint(0, 10**6)), rng.choice(ids)])
    if kind == "none" or rng.random() < 0.15:
        raw(client, "DEL", name)
        return f"{family}: deleted"
    if kind == "string":
        raw(client, "SET", name, str(rng.randint(-500, 500)))
        return f"{family}: set"
    if kind == "hash":
        fields = _fields(client, name)
        if family == "meta":
            fields += ["init", "closed", "opened", "lots_all", "n", "bo", "bf"]
        field = rng.choice(fields) if fields else "x"
        how = rng.choice(["del", "junk", "number"])
        if how == "del":
            raw(client, "HDEL", name, field)
        elif how == "number":
            raw(client, "HSET", name, field, str(rng.randint(0, 300)))
        else:
            raw(client, "HSET", name, field, junk)
        return f"{family}: {how} {field}"
    members = _members(client, name)
    how = rng.choice(["rem", "score", "add"])
    if how == "rem" and members:
        member = rng.choice(members)
        raw(client, "ZREM", name, member)
    elif how == "score" and members:
        member = rng.choice(members)
        raw(client, "ZADD", name, str(rng.randint(0, 2**40)), member)
    else:
        member = rng.choice(ids)
        raw(client, "ZADD", name, str(rng.randint(0, 2**40)), member)
    return f"{family}: {how} {member}"


FAMILIES = [f for f in DERIVED_FAMILIES]


def _clean(client: Any, calls: dict[str, Callable[[], Any]], note: str) -> None:
    cheap = client.reconcile(ACCT)
    assert (cheap.matched, cheap.lots_matched) == (True, True), note
    full = client.reconcile(ACCT, full=True)
    assert (full.matched, full.lots_matched, full.duplicates) == (True, True, 0), note
    meta = snapshot(client, ACCT)["meta"][1]
    deltas, cursor = [], None
    while True:
        page = client.history(ACCT, limit=1000, cursor=cursor)
        deltas += [e.delta for e in page.entries]
        if (cursor := page.next_cursor) is None:
            break
    assert int(meta["n"]) == len(deltas), note
    assert int(meta.get("bo", 0)) + int(meta.get("bf", 0)) == sum(deltas), note


def test_the_full_repair_restores_every_derived_key(
    make_client: Callable[..., Any], backend_url: str, mode: str
) -> None:
    client = make_client()
    calls = _history(client)
    client.reconcile(ACCT, full=True, repair=True)
    _clean(client, calls, "before any corruption")
    before = snapshot(client, ACCT)
    rng = random.Random(sum(map(ord, backend_url.split(":")[0] + mode)) + SEEDS)
    for seed in range(SEEDS):
        ids = _ids(client)
        done = [corrupt(client, rng, rng.choice(FAMILIES), ids)
                for _ in range(rng.randint(1, 3))]
        note = f"seed {seed}: {done}"
        client.reconcile(ACCT, full=True, repair=True)
        after = snapshot(client, ACCT)
        assert _normal(after) == _normal(before), note
        _clean(client, calls, note)
        before = after
    for key, call in calls.items():
        again = call()
        assert again.replayed is True, key
    with pytest.raises(IdempotencyConflictError):
        client.debit(ACCT, 26, action="chat", idempotency_key="d1")
    restore(client, ACCT, before)


def test_the_opened_mark_is_rebuilt_so_a_later_init_still_grants(
    make_client: Callable[..., Any],
) -> None:
    """Credits that reach an account before its init mark it 'opened' (the later init still
    grants the starting credits): a repair rebuilds a lost mark from the ledger."""
    client = make_client()
    client.credit(ACCT, 30)
    keys = account_keys(client, ACCT)
    raw(client, "HDEL", keys.meta, "opened")
    fixed = client.reconcile(ACCT, full=True, repair=True)
    assert (fixed.lots_matched, fixed.lots_problem) == (False, "ledger")
    assert client.reconcile(ACCT, full=True).lots_matched is True
    assert client.initialize_user(ACCT, 100).created is True
    assert client.get_balance(ACCT) == 130
