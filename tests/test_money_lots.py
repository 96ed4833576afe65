"""revoke, allocate and purchase on every backend, sync and async.

After every step the lots invariants hold (balance == ledger sum == sum of the open lots,
none negative), and a full reconcile finds the stored lots equal to those the ledger
implies; after the lots and the once-ever keys are deleted, a full repair rebuilds both from
the ledger alone. Bad input is refused with a typed error and changes nothing.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import redis

from conftest import ledger_sum
from sparked_credits import (
    CreditsClient,
    EntryNotFoundError,
    EntryType,
    IdempotencyConflictError,
    ValidationError,
)
from sparked_credits._core.keys import KeySpace
from sparked_credits._core.lots import decode_draws

ACCT = "user_money"


def check(client: Any, account: str = ACCT) -> list[Any]:
    """The lots invariants, and the stored lots equal to those the ledger implies."""
    lots = client.grants(account)
    balance = client.get_balance(account)
    assert balance == ledger_sum(client, account)
    assert max(balance, 0) == sum(g.remaining for g in lots), lots
    assert all(g.remaining > 0 for g in lots)
    result = client.reconcile(account, full=True)
    assert result.matched, result
    assert result.lots_matched, result
    return lots


def state(client: Any, account: str = ACCT) -> tuple[Any, ...]:
    """Everything a refused call must leave as it was."""
    entries = client.history(account, limit=1000).entries
    grants = [(g.grant_id, g.remaining) for g in client.grants(account)]
    return client.get_balance(account), [e.id for e in entries], grants


def later(days: float) -> datetime:
    return datetime.now(timezone.utc) + timedelta(days=days)


def test_revoke_takes_only_what_is_unspent(client: Any) -> None:
    client.initialize_user(ACCT, 0)
    bought = client.purchase(ACCT, 500, payment_id="pi_A", reason="starter pack")
    assert bought.entry.action == "purchase"
    assert bought.balance == 500
    # The same payment again, from any process: a replay, never a second lot.
    again = client.purchase(ACCT, 500, payment_id="pi_A")
    assert again.replayed
    assert again.entry.id == bought.entry.id
    check(client)
    client.debit(ACCT, 200, action="chat_message")
    check(client)

    # A partial refund of 250: all of it is still unspent.
    part = client.revoke(ACCT, "purchase:pi_A", 250, reason="refund", idempotency_key="re_1")
    assert (part.revoked, part.unrecoverable, part.balance) == (250, 0, 50)
    assert part.entry is not None
    assert part.entry.type == EntryType.REVOKE
    assert part.entry.ref == bought.entry.id
    assert decode_draws(part.entry.lots) == [(bought.entry.id, 250)]
    assert [(g.grant_id, g.remaining) for g in check(client)] == [(bought.entry.id, 50)]

    # The rest (default: all the lot still owes): 50 left, 200 were spent.
    rest = client.revoke(ACCT, bought.entry.id, idempotency_key="re_2")
    assert (rest.revoked, rest.unrecoverable, rest.balance) == (50, 200, 0)
    assert check(client) == []
    # Nothing left: nothing taken, no entry, the balance never negative.
    none = client.revoke(ACCT, bought.entry.id, 10, idempotency_key="dp_1")
    assert (none.revoked, none.unrecoverable, none.entry) == (0, 10, None)
    assert client.get_balance(ACCT) == 0
    # Each key once: replays give the first outcome, other parameters conflict.
    replay = client.revoke(ACCT, "purchase:pi_A", 250, idempotency_key="re_1")
    assert replay.replayed
    assert replay.revoked == 250
    assert replay.entry.id == part.entry.id
    assert client.revoke(ACCT, bought.entry.id, 10, idempotency_key="dp_1").replayed
    with pytest.raises(IdempotencyConflictError):
        client.revoke(ACCT, "purchase:pi_A", 249, idempotency_key="re_1")
    assert client.usage(ACCT, days=1).total == 200  # a revoke is not usage
    check(client)


def test_allocate_rolls_over_at_and_over_the_cap(client: Any) -> None:
    client.initialize_user(ACCT, 0)
    first = client.allocate(
        ACCT, 1000, period_id="sub_1:p1", expires_at=later(33), rollover_cap=300
    )
    assert (first.rolled_over, first.expired, first.balance) == (0, 0, 1000)
    assert [g.grant_id for g in check(client)] == [first.grant_id]
    client.debit(ACCT, 700, action="chat_message")  # 300 left: exactly the cap

    second = client.allocate(
        ACCT, 1000, period_id="sub_1:p2", expires_at=later(63), rollover_cap=300
    )
    assert (second.rolled_over, second.expired, second.balance) == (300, 0, 1300)
    lots = check(client)
    # The rollover lot has the new expiry and priority and is older: spent first.
    assert [(g.remaining, g.source) for g in lots] == [
        (300, "subscription"),
        (1000, "subscription"),
    ]
    assert lots[1].grant_id == second.grant_id
    assert lots[0].expires_at == lots[1].expires_at
    client.debit(ACCT, 100, action="chat_message")  # 1200 left of this source

    third = client.allocate(
        ACCT, 1000, period_id="sub_1:p3", expires_at=later(93), rollover_cap=300
    )
    assert (third.rolled_over, third.expired, third.balance) == (300, 900, 1300)
    assert [g.remaining for g in check(client)] == [300, 1000]
    lapsed = client.history(ACCT, types=[EntryType.LOT_EXPIRE]).entries
    assert sum(e.delta for e in lapsed) == -900
    rollovers = client.history(ACCT, types=[EntryType.ROLLOVER]).entries
    assert sum(e.delta for e in rollovers) == 0
    assert len(rollovers) == 4
    assert client.usage(ACCT, days=1).total == 800  # rollovers and lapses are not usage

    # Once per period, ever: the same call replays; other parameters conflict.
    before = state(client)
    replay = client.allocate(
        ACCT, 1000, period_id="sub_1:p2", expires_at=lots[1].expires_at, rollover_cap=300
    )
    assert replay.replayed
    assert replay.grant_id == second.grant_id
    assert (replay.rolled_over, replay.expired) == (300, 0)
    with pytest.raises(IdempotencyConflictError):
        client.allocate(ACCT, 999, period_id="sub_1:p2", expires_at=later(63), rollover_cap=300)
    assert state(client) == before

    # A purchase is another source: an allocation never rolls it over or lapses it.
    client.purchase(ACCT, 50, payment_id="pi_B")
    fourth = client.allocate(ACCT, 10, period_id="sub_1:p4", expires_at=later(123))
    assert (fourth.rolled_over, fourth.expired) == (0, 1300)
    assert sorted(g.source for g in check(client)) == ["purchase", "subscription"]
    # A clawback finds an allocation by its period too.
    taken = client.revoke(ACCT, "allocate:sub_1:p4", idempotency_key="void_p4")
    assert taken.revoked == 10
    check(client)


def test_full_repair_rebuilds_lots_and_once_keys(raw_redis: redis.Redis, redis_url: str) -> None:
    """The repair is the same procedure on every backend: one real server suffices."""
    with CreditsClient(redis_url) as client:
        client.initialize_user(ACCT, 0)
        bought = client.purchase(ACCT, 400, payment_id="pi_R")
        client.allocate(ACCT, 100, period_id="p1", expires_at=later(30), rollover_cap=50)
        client.debit(ACCT, 120, action="chat_message")
        client.revoke(ACCT, "purchase:pi_R", 100, idempotency_key="re_R")
        client.allocate(ACCT, 100, period_id="p2", expires_at=later(60), rollover_cap=50)
        want = [(g.grant_id, g.remaining) for g in check(client)]

        # Lose every piece of derived lot state; the ledger alone brings it back.
        keys = KeySpace().account(ACCT)
        raw_redis.delete(keys.lots, keys.lot_order, keys.lot_expiry, keys.once)
        repaired = client.reconcile(ACCT, full=True, repair=True)
        assert repaired.lots_rebuilt > 0
        assert [(g.grant_id, g.remaining) for g in check(client)] == want
        assert client.purchase(ACCT, 400, payment_id="pi_R").replayed
        assert client.revoke(ACCT, "purchase:pi_R", 100, idempotency_key="re_R").replayed
        # The tally of what revokes took is back: "all" asks for what the lot still owes.
        rest = client.revoke(ACCT, bought.entry.id, idempotency_key="re_R2")
        assert rest.revoked + rest.unrecoverable == 300
        check(client)


BAD_CALLS = [
    ("revoke", ("1-0",), {}, EntryNotFoundError),
    ("revoke", ("purchase:pi_none",), {}, EntryNotFoundError),
    ("revoke", ("user_x",), {}, ValidationError),
    ("revoke", ("purchase:",), {}, ValidationError),
    ("revoke", ("purchase:pi_S", 0), {}, ValidationError),
    ("revoke", ("purchase:pi_S", -5), {}, ValidationError),
    ("revoke", ("purchase:pi_S", 1.5), {}, ValidationError),
    ("revoke", ("purchase:pi_S",), {"idempotency_key": "has space"}, ValidationError),
    ("allocate", (0,), {"period_id": "p", "expires_at": later(1)}, ValidationError),
    ("allocate", (10,), {"period_id": "p", "expires_at": None}, ValidationError),
    ("allocate", (10,), {"period_id": "", "expires_at": later(1)}, ValidationError),
    ("allocate", (10,), {"period_id": "p q", "expires_at": later(1)}, ValidationError),
    ("allocate", (10,), {"period_id": "p", "expires_at": later(-1)}, ValidationError),
    (
        "allocate",
        (10,),
        {"period_id": "p", "expires_at": later(1), "rollover_cap": -1},
        ValidationError,
    ),
    (
        "allocate",
        (10,),
        {"period_id": "p", "expires_at": later(1), "priority": 101},
        ValidationError,
    ),
    (
        "allocate",
        (10,),
        {"period_id": "p", "expires_at": later(1), "metadata": {"_sc": 1}},
        ValidationError,
    ),
    ("purchase", (10,), {"payment_id": ""}, ValidationError),
    ("purchase", (True,), {"payment_id": "pi_T"}, ValidationError),
    ("purchase", (10,), {"payment_id": "pi_S", "expires_at": later(-1)}, ValidationError),
]


def test_bad_inputs_are_refused_with_state_unchanged(client: Any) -> None:
    client.initialize_user(ACCT, 0)
    client.purchase(ACCT, 100, payment_id="pi_S")
    client.allocate(ACCT, 100, period_id="p", expires_at=later(5), rollover_cap=10)
    before = state(client)
    for name, args, kwargs, error in BAD_CALLS:
        with pytest.raises(error):
            getattr(client, name)(ACCT, *args, **kwargs)
        assert state(client) == before, (name, args, kwargs)
    # Conflicts are refusals too: the same payment or period with other terms.
    with pytest.raises(IdempotencyConflictError):
        client.purchase(ACCT, 101, payment_id="pi_S")
    with pytest.raises(IdempotencyConflictError):
        client.allocate(ACCT, 100, period_id="p", expires_at=later(6), rollover_cap=10)
    assert state(client) == before
    check(client)


def test_the_readme_block_runs_as_written(capsys: pytest.CaptureFixture[str]) -> None:
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    blocks = [
        b
        for b in re.findall(r"```python\n(.*?)```", readme, flags=re.S)
        if 'credits.purchase("user_2abc"' in b
    ]
    assert len(blocks) == 1
    from sparked_credits.backends.memory import reset_memory_store

    reset_memory_store()  # the block's memory:// is the process's default store
    exec(blocks[0], {})
    assert capsys.readouterr().out.split("\n")[:2] == ["300 100 0", "300 300 1300"]


def test_concurrent_repeats_apply_once(sync_credits: Any) -> None:
    """Eight threads deliver the same purchase, allocation and revoke at once."""
    from concurrent.futures import ThreadPoolExecutor

    client = sync_credits
    client.initialize_user(ACCT, 0)
    expires = later(30)

    def everything(_: int) -> tuple[bool, bool, bool]:
        bought = client.purchase(ACCT, 300, payment_id="pi_C")
        given = client.allocate(ACCT, 200, period_id="pc", expires_at=expires)
        taken = client.revoke(ACCT, "purchase:pi_C", 100, idempotency_key="re_C")
        return bought.replayed, given.replayed, taken.replayed

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(everything, range(8)))
    # Exactly one call applied each effect; the others replayed it.
    for i in range(3):
        assert sum(not r[i] for r in results) == 1, results
    assert client.get_balance(ACCT) == 400
    check(client)
