"""Every prefix of the money scripts' writes (purchase, revoke, allocate with a rollover
and a lapse), then the full repair: the same harness as test_torn_prefixes.py.

After any prefix, ``reconcile(full=True, repair=True)`` leaves the balance, the lots, the
idempotency records and the once-ever keys as the ledger says; retrying the call then
replays when its entry was in the prefix, and the account ends where a run without the
crash ends: applied once, never twice.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import redis

import aof
from redis_servers import RedisServer
from sparked_credits import CreditsClient, CreditsError
from test_torn_prefixes import (  # the harness, and its AOF server fixtures
    ACCT,
    K_LOTEXP,
    K_LOTQ,
    K_LOTS,
    _commit_id,
    _entries,
    _restore,
    _snapshot,
    aof_server,  # noqa: F401
    balance,
    check_derived_state,
    ledger_sum,
    lots_of,
    setting,  # noqa: F401
)

K_ONCE = f"once:{{{ACCT}}}"
PERIOD_END = datetime.now(timezone.utc) + timedelta(days=30)  # one value: retries replay


def _bought(c: CreditsClient) -> dict[str, Any]:
    c.initialize_user(ACCT, 100)
    c.purchase(ACCT, 500, payment_id="pay_1")
    c.debit(ACCT, 550, action="chat")  # 100 of init, 450 of the purchase: 50 left
    return {}


def _allocated(c: CreditsClient) -> dict[str, Any]:
    c.initialize_user(ACCT, 0)
    c.allocate(ACCT, 1000, period_id="p1", expires_at=PERIOD_END, rollover_cap=300)
    c.debit(ACCT, 400, action="chat")  # 600 unused: 300 carry, 300 lapse
    return {}


@dataclass(frozen=True)
class Scenario:
    name: str
    setup: Callable[[CreditsClient], dict[str, Any]]
    run: Callable[[CreditsClient], Any]
    key: str


SCENARIOS = [
    Scenario(
        "purchase",
        lambda c: c.initialize_user(ACCT, 100) and {},
        lambda c: c.purchase(ACCT, 500, payment_id="pay_1", expires_at=PERIOD_END),
        "purchase:pay_1",
    ),
    Scenario("revoke", _bought, lambda c: c.revoke(ACCT, "purchase:pay_1", 200,
                                                  idempotency_key="re_1"), "re_1"),
    Scenario("allocate_rollover", _allocated,
             lambda c: c.allocate(ACCT, 1000, period_id="p2", rollover_cap=300,
                                  expires_at=PERIOD_END + timedelta(days=30)),
             "allocate:p2"),
]


def check_once_keys(raw: redis.Redis) -> None:
    """The once-ever keys say what the ledger says."""
    revoked: dict[str, int] = {}
    for eid, f in _entries(raw):
        if f["type"] == "credit" and f["idem"].startswith(("purchase:", "allocate:")):
            assert raw.hget(K_ONCE, f["idem"]) == eid.encode()
        if f["type"] == "revoke":
            revoked[f["ref"]] = revoked.get(f["ref"], 0) - int(f["delta"])
            assert raw.hget(K_ONCE, "revoke:" + f["idem"]) == eid.encode()
    for lot, n in revoked.items():
        assert int(raw.hget(K_ONCE, f"revoked:{lot}") or 0) == n


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_every_prefix_is_repaired_and_applied_once(
    setting: tuple[RedisServer, redis.Redis],  # noqa: F811
    scenario: Scenario,
) -> None:
    server, raw = setting
    with CreditsClient(server.url, app="app.sparked.world") as client:
        scenario.setup(client)
        before = _snapshot(raw)
        offset = aof.size(server.directory)
        first = scenario.run(client)
        writes = aof.writes_since(server.directory, offset)
        assert writes
        final_balance, final_lots = balance(raw), lots_of(client)
        assert final_balance == ledger_sum(raw)

        for k in range(len(writes) + 1):
            _restore(raw, before)
            prefix = writes[:k]
            for cmd in prefix:
                raw.execute_command(*cmd)
            cheap = client.reconcile(ACCT)
            if cheap.matched:
                assert balance(raw) == ledger_sum(raw), f"prefix {k}: a missed break"
            client.reconcile(ACCT, full=True, repair=True)
            check_derived_state(raw)
            check_once_keys(raw)
            lots = client.reconcile(ACCT, full=True)
            assert lots.lots_matched is True, f"prefix {k}"

            with contextlib.suppress(CreditsError):
                again = scenario.run(client)
            committed = _commit_id(prefix, scenario.key)
            if committed is not None:
                assert again.replayed is True, f"prefix {k}"
                assert again.entry.id == committed
            assert client.reconcile(ACCT, full=True).matched is True, f"prefix {k}"
            assert balance(raw) == final_balance, f"prefix {k}: applied other than once"
            assert lots_of(client) == final_lots, f"prefix {k}"
            check_derived_state(raw)
            check_once_keys(raw)
            # Lost lots and once-ever keys come back from the ledger alone.
            raw.delete(K_LOTS, K_LOTQ, K_LOTEXP, K_ONCE)
            client.reconcile(ACCT, full=True, repair=True)
            assert lots_of(client) == final_lots, f"prefix {k}"
            assert scenario.run(client).replayed
            assert balance(raw) == final_balance
        assert first is not None
