"""Torn prefixes of the scripts that write account-controls state, then the full repair:
no crossing loses its alert or gets two, and no referral is paid twice, even after the
idempotency records are gone (their retention passed).

Same method as test_torn_prefixes.py: run the call once on a server that writes every
command to its append-only file, read its writes back, put the keys back as they were
before and apply the first k writes, for every k; then ``reconcile(full=True,
repair=True)`` and the call again. The alert arming (``fired`` in the controls hash) and
the referral marks are derived state: the repair rebuilds them from the ledger
(_core/controls_repair.py). A last test corrupts them at random, fuzzer style.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
import redis

import aof
from lots_support import account_keys, raw, text
from redis_servers import RedisServer
from sparked_credits import CreditsClient, ReferralError, SpendLimitExceededError
from test_torn_prefixes import (  # the harness, and its AOF server fixtures
    _restore,
    _snapshot,
    aof_server,  # noqa: F401
    setting,  # noqa: F401
)

ACCT = "user_2abc"
REFERRER = "user_ref"
K_CTL = f"ctl:{{{ACCT}}}"


def _alerts_for(client: CreditsClient, account: str = ACCT) -> list[Any]:
    return [a for a in client.alerts("torn-test", count=100) if a.account == account]


def _entry_ids(raw: redis.Redis, account: str) -> list[str]:
    return [eid.decode() for eid, _ in raw.xrange(f"txs:{account}")]


def _drop_idempotency_records(raw: redis.Redis, *accounts: str) -> None:
    for account in accounts:
        raw.delete(f"idem:{{{account}}}:current", f"idem:{{{account}}}:previous")


def test_a_torn_crossing_is_alerted_once(
    setting: tuple[RedisServer, redis.Redis],  # noqa: F811
) -> None:
    server, raw = setting
    with CreditsClient(server.url, app="app.sparked.world") as client:
        client.initialize_user(ACCT, 100)
        client.set_tier(ACCT, None, low_balance=50)
        before = _snapshot(raw)
        offset = aof.size(server.directory)
        crossing = client.debit(ACCT, 60, action="chat", idempotency_key="k").entry.id
        writes = aof.writes_since(server.directory, offset)
        assert len(_alerts_for(client)) == 1
        assert any(cmd[0].upper() == b"XADD" and cmd[1] == f"alerts:{{{ACCT}}}".encode()
                   for cmd in writes)
        for k in range(len(writes) + 1):
            _restore(raw, before)
            for cmd in writes[:k]:
                raw.execute_command(*cmd)
            client.reconcile(ACCT, full=True, repair=True)
            applied = crossing in _entry_ids(raw, ACCT)
            alerts = _alerts_for(client)
            # The repair alerts a crossing the ledger holds, once; none it does not hold.
            assert [a.entry_id for a in alerts] == ([crossing] if applied else []), f"k={k}"
            assert (raw.hget(K_CTL, "fired") is not None) == applied, f"k={k}"
            client.reconcile(ACCT, full=True, repair=True)  # again: nothing more
            assert len(_alerts_for(client)) == int(applied), f"k={k}"
            again = client.debit(ACCT, 60, action="chat", idempotency_key="k")
            assert again.replayed is applied, f"k={k}"
            client.debit(ACCT, 5, action="chat")  # still below: no new alert
            alerts = _alerts_for(client)
            assert len(alerts) == 1, f"k={k}: {alerts}"
            assert alerts[0].entry_id == again.entry.id, f"k={k}"
            assert client.get_balance(ACCT) == 35, f"k={k}"


def test_an_alert_whose_mark_was_lost_is_not_repeated(
    setting: tuple[RedisServer, redis.Redis],  # noqa: F811
) -> None:
    """The prefix that matters most: the alert is in the outbox, its mark is not. Without
    the repair the next debit would alert the same crossing again."""
    server, raw = setting
    with CreditsClient(server.url, app="app.sparked.world") as client:
        client.initialize_user(ACCT, 100)
        client.set_tier(ACCT, None, low_balance=50)
        client.debit(ACCT, 60, action="chat")
        raw.hdel(K_CTL, "fired")
        assert client.reconcile(ACCT, full=True, repair=True).matched
        assert raw.hget(K_CTL, "fired") is not None
        client.debit(ACCT, 5, action="chat")
        assert len(_alerts_for(client)) == 1
        # Back above the threshold and down again: a new crossing, a new alert.
        client.credit(ACCT, 100)
        client.debit(ACCT, 100, action="chat")
        assert len(_alerts_for(client)) == 2


def test_a_torn_referral_is_paid_once_after_the_records_expired(
    setting: tuple[RedisServer, redis.Redis],  # noqa: F811
) -> None:
    server, raw = setting

    def reward(c: CreditsClient) -> Any:
        return c.reward_referral(REFERRER, ACCT, referrer_credits=5, referred_credits=20,
                                 monthly_cap=3)

    with CreditsClient(server.url, app="app.sparked.world") as client:
        client.initialize_user(ACCT, 100)
        client.initialize_user(REFERRER, 100)
        before = _snapshot(raw)
        offset = aof.size(server.directory)
        reward(client)
        writes = aof.writes_since(server.directory, offset)
        final = {a: client.get_balance(a) for a in (ACCT, REFERRER)}
        marks = {a: raw.hgetall(f"referral:{{{a}}}") for a in (ACCT, REFERRER)}
        assert final == {ACCT: 120, REFERRER: 105}
        for k in range(len(writes) + 1):
            _restore(raw, before)
            for cmd in writes[:k]:
                raw.execute_command(*cmd)
            for account in (ACCT, REFERRER):
                client.reconcile(account, full=True, repair=True)
            # Every reward the ledger holds has its mark (the month's count with it).
            for account in (ACCT, REFERRER):
                rewards = [f for _, f in raw.xrange(f"txs:{account}")
                           if f[b"action"] == b"referral"]
                got = raw.hgetall(f"referral:{{{account}}}")
                assert len(rewards) <= 1, f"k={k}"
                if rewards:
                    assert got == marks[account], f"k={k}: {account} {got}"
            # Retention passed: only the marks can tell a retry it was paid.
            _drop_idempotency_records(raw, ACCT, REFERRER)
            reward(client)
            reward(client)
            assert {a: client.get_balance(a) for a in (ACCT, REFERRER)} == final, f"k={k}"
            for account in (ACCT, REFERRER):
                n = sum(1 for _, f in raw.xrange(f"txs:{account}") if f[b"action"] == b"referral")
                assert n == 1, f"k={k}: {account} paid {n} times"


@pytest.mark.parametrize("seed", range(3))
def test_lost_marks_and_arming_are_rebuilt(make_client: Any, seed: int) -> None:
    """Fuzzer style, on every backend: delete or spoil the referral marks and the alert
    arming at random; the full repair puts back what the scripts wrote."""
    client = make_client()
    client.initialize_user(ACCT, 100)
    client.set_tier(ACCT, None, low_balance=50)
    client.reward_referral(REFERRER, ACCT, referrer_credits=5, referred_credits=20)
    client.reward_referral(ACCT, "user_other", referrer_credits=7, referred_credits=1)
    client.debit(ACCT, 90, action="chat")  # 127 -> 37: a crossing
    keys = _keys(client)
    want = {name: _hash(client, key) for name, key in keys.items()}
    assert "fired" in want["controls"]
    assert "referred_by" in want["referrals"]
    rng = random.Random(seed)
    for _ in range(4):
        name = rng.choice(["controls", "referrals"])
        if name == "controls":
            _raw(client, "HDEL", keys[name], "fired")
        else:
            field = rng.choice(sorted(want[name]))
            _raw(client, "HDEL", keys[name], field)
        client.reconcile(ACCT, full=True, repair=True)
        assert {n: _hash(client, k) for n, k in keys.items()} == want, (seed, name)
    alerts = [a for a in client.alerts("fuzz", count=100) if a.account == ACCT]
    assert len(alerts) == 1
    client.debit(ACCT, 1, action="chat")
    assert len([a for a in client.alerts("fuzz", count=100) if a.account == ACCT]) == 1
    with pytest.raises(ReferralError):  # the referred account: once ever
        client.reward_referral("user_third", ACCT, referrer_credits=5, referred_credits=20)


def _keys(client: Any) -> dict[str, str]:
    keys = account_keys(client, ACCT)
    return {"controls": keys.controls, "referrals": keys.referrals}


def _raw(client: Any, *args: str) -> Any:
    return raw(client, *args)


def _hash(client: Any, key: str) -> dict[str, str]:
    flat = text(_raw(client, "HGETALL", key))
    if not isinstance(flat, dict):
        flat = dict(zip(flat[::2], flat[1::2], strict=True))
    return {text(k): text(v) for k, v in flat.items()}


def test_alert_arming_rules() -> None:
    from sparked_credits._core.controls_repair import Arming, alert_arming

    run = [("5-0", "lot_expire", 45), ("6-0", "debit", 30), ("7-0", "debit", 20)]
    # At or above: armed (a mark left is taken).
    assert alert_arming([], True, [], 60, 50, "1-0") == Arming("rearm")
    assert alert_arming([], True, [], 60, 50, "") == Arming("")
    # Below, the crossing alerted: its mark is put back where it was lost.
    assert alert_arming(run, True, ["6-0"], 20, 50, "") == Arming("mark", "6-0")
    assert alert_arming(run, True, ["6-0"], 20, 50, "6-0") == Arming("")
    # Below, no alert: the first spending entry of the run is the crossing.
    assert alert_arming(run, True, ["2-0"], 20, 50, "") == Arming("alert", "6-0", 30)
    assert alert_arming(run, True, [], 20, 50, "2-0") == Arming("alert", "6-0", 30)
    # A run not read whole (a trimmed ledger) is left alone; so is one the mark names.
    assert alert_arming(run, False, [], 20, 50, "") == Arming("")
    # Only a lapse below the threshold: armed, so the next spending script alerts.
    assert alert_arming(run[:1], True, [], 45, 50, "2-0") == Arming("rearm")


def test_a_torn_member_limited_debit_is_counted_once(
    setting: tuple[RedisServer, redis.Redis],  # noqa: F811
) -> None:
    """Every prefix of a debit in an organization's account with a member limit, then the
    full repair: the member's window counts what the ledger holds (never less), and the
    retry applies the debit once."""
    server, raw = setting
    org, member = "org_torn", "user_torn"
    meta = {"member": member}
    with CreditsClient(server.url, app="app.sparked.world") as client:
        client.initialize_user(org, 100)
        client.set_member_limit(org, None, daily_limit=50)
        client.debit(org, 10, action="chat", metadata=meta)
        before = _snapshot(raw)
        offset = aof.size(server.directory)
        client.debit(org, 30, action="chat", metadata=meta, idempotency_key="k")
        writes = aof.writes_since(server.directory, offset)
        for k in range(len(writes) + 1):
            _restore(raw, before)
            for cmd in writes[:k]:
                raw.execute_command(*cmd)
            client.reconcile(org, full=True, repair=True)
            applied = any(f[b"idem"] == b"k" for _, f in raw.xrange(f"txs:{org}"))
            spent = client.get_member_controls(org, member).spent_today
            assert spent == (40 if applied else 10), f"k={k}"
            again = client.debit(org, 30, action="chat", metadata=meta, idempotency_key="k")
            assert again.replayed is applied, f"k={k}"
            assert client.get_member_controls(org, member).spent_today == 40, f"k={k}"
            assert client.get_balance(org) == 60, f"k={k}"
            with pytest.raises(SpendLimitExceededError):
                client.debit(org, 11, action="chat", metadata=meta)
