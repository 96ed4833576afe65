"""A real client driven against a pure-Python model of the ledger (hypothesis, stateful).

The model keeps, per account: the balance, whether the account is initialized, the list of
entries, what each debit took and how much of it was refunded, and every idempotency key
that produced an entry (with the call's parameters and outcome). Each rule predicts the
outcome from the model (success, replay, conflict, or which refusal) before calling the
client; after every step the store must agree with the model: get_balance, the full history
(types, deltas, ids, balance_after as a running sum) and ``ledger_sum``.

It runs on memory:// (fakeredis) and on the real redis-server, each with auto_initialize
drawn per example.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from conftest import ledger_sum
from sparked_credits import (
    CreditsClient,
    EntryNotFoundError,
    EntryType,
    IdempotencyConflictError,
    InsufficientCreditsError,
    MutationResult,
    RefundError,
)
from sparked_credits.backends.memory import reset_memory_store

ACCOUNTS = ("acct_a", "acct_b")
APP = "app.stateful"
DEFAULT_CREDITS = 100
MEMORY_STORE = "stateful-model"

SETTINGS = settings(max_examples=40, stateful_step_count=30, deadline=None)

accounts = st.sampled_from(ACCOUNTS)
reasons = st.sampled_from([None, "r"])
metadatas = st.sampled_from([None, {"n": 1}, {"n": 2, "tag": "x"}])
# None: the client makes a random key; FRESH: a new caller key; k0: one shared key,
# so keys get reused across operations and accounts (conflicts on one account, independent
# on the other).
FRESH = "<fresh>"
keys = st.sampled_from([None, None, FRESH, FRESH, "k0"])


# Amounts relative to the state: exactly what is there ("all"), or one more ("all+1").
edges = st.sampled_from(["all", "all+1"])


def _resolve(amount: int | str, available: int) -> int:
    if isinstance(amount, int):
        return amount
    base = max(available, 1)
    return base if amount == "all" or available < 1 else base + 1


def _meta(value: dict[str, Any] | None) -> str:
    return "" if value is None else json.dumps(value, sort_keys=True)


@dataclass
class Call:
    """A successful mutation, remembered under the idempotency key it was recorded with."""

    method: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    fingerprint: tuple[Any, ...]
    key: str
    derived_key: bool  # a keyless full refund: the SDK chose "refund:<entry id>"
    entry_id: str
    balance: int
    made_key: bool = False  # no key given: the SDK made one for this call


@dataclass
class ModelEntry:
    type: EntryType
    delta: int
    id: str | None  # None until the invariant reads it back (auto-initialization entries)


@dataclass
class Account:
    balance: int = 0
    initialized: bool = False
    overdrawn: bool = False  # an adjust with allow_overdraft=True took it below zero
    entries: list[ModelEntry] = field(default_factory=list)
    debits: dict[str, tuple[int, str]] = field(default_factory=dict)  # id -> (taken, action)
    refunded: dict[str, int] = field(default_factory=dict)
    idem: dict[str, Call] = field(default_factory=dict)


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self, url: str, wipe: Callable[[], None]) -> None:
        super().__init__()
        self.url = url
        self.wipe = wipe
        self.client: CreditsClient | None = None
        self.auto = False
        self.model = {name: Account() for name in ACCOUNTS}
        self.counter = itertools.count()

    # -- set-up -------------------------------------------------------------------------

    @initialize(auto=st.booleans())
    def open_client(self, auto: bool) -> None:
        self.wipe()
        self.auto = auto
        self.client = CreditsClient(
            self.url, app=APP, default_credits=DEFAULT_CREDITS, auto_initialize=auto
        )

    def teardown(self) -> None:
        if self.client is not None:
            self.client.close()

    # -- helpers ------------------------------------------------------------------------

    @property
    def c(self) -> CreditsClient:
        assert self.client is not None
        return self.client

    def _key(self, drawn: str | None) -> str | None:
        return f"f{next(self.counter)}" if drawn == FRESH else drawn

    def _invoke(self, account: str, call: Call, key: str | None, **changes: Any) -> Any:
        kwargs = {**call.kwargs, **changes, "idempotency_key": key}
        return getattr(self.c, call.method)(account, *call.args, **kwargs)

    def _idempotent(self, account: str, key: str | None, call: Call) -> bool:
        """If ``key`` already produced an entry, check the replay or conflict and say so."""
        recorded = self.model[account].idem.get(key) if key is not None else None
        if recorded is None:
            return False
        pass_key = None if call.derived_key else key
        if recorded.fingerprint == call.fingerprint:
            self._check_replay(account, recorded, self._invoke(account, call, pass_key))
        else:
            with pytest.raises(IdempotencyConflictError) as info:
                self._invoke(account, call, pass_key)
            assert info.value.account == account
            assert info.value.idempotency_key == key
        return True

    def _check_replay(self, account: str, recorded: Call, result: MutationResult) -> None:
        assert result.replayed is True
        assert result.account == account
        assert result.entry.id == recorded.entry_id
        assert result.balance == recorded.balance
        assert result.entry.idempotency_key == recorded.key

    def _starting_balance(self, account: str) -> tuple[int, bool]:
        """What a debit/credit/adjust script starts from, and whether it auto-initializes."""
        a = self.model[account]
        needs_init = self.auto and not a.initialized
        return a.balance + (DEFAULT_CREDITS if needs_init else 0), needs_init

    def _auto_initialized(self, account: str) -> None:
        a = self.model[account]
        a.balance += DEFAULT_CREDITS
        a.initialized = True
        a.entries.append(ModelEntry(EntryType.INIT, DEFAULT_CREDITS, None))

    def _commit(
        self, account: str, call: Call, result: MutationResult, typ: EntryType, delta: int
    ) -> None:
        a = self.model[account]
        after = a.balance + delta
        entry = result.entry
        assert result.replayed is False
        assert result.account == account
        assert result.balance == after
        assert entry.type is typ
        assert entry.delta == delta
        assert entry.balance_after == after
        assert entry.app == APP
        assert entry.idempotency_key is not None
        if call.key:  # a caller key, or the one derived for a keyless full refund
            assert entry.idempotency_key == call.key
        a.balance = after
        a.entries.append(ModelEntry(typ, delta, entry.id))
        call.made_key = not call.key
        call.key = entry.idempotency_key
        call.entry_id = entry.id
        call.balance = after
        a.idem[call.key] = call

    @staticmethod
    def _call(
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        key: str | None,
        fingerprint: tuple[Any, ...],
        derived_key: bool = False,
    ) -> Call:
        return Call(method, args, kwargs, fingerprint, key or "", derived_key, "", 0)

    # -- rules --------------------------------------------------------------------------

    @rule(account=accounts, credits=st.none() | st.integers(0, 200))
    def initialize_user(self, account: str, credits: int | None) -> None:
        a = self.model[account]
        result = self.c.initialize_user(account, credits)
        assert result.account == account
        if a.initialized:
            assert result.created is False
            assert result.entry is None
            assert result.balance == a.balance
            return
        granted = DEFAULT_CREDITS if credits is None else credits
        a.balance += granted
        a.initialized = True
        assert result.created is True
        assert result.balance == a.balance
        assert result.entry is not None
        assert result.entry.type is EntryType.INIT
        assert result.entry.delta == granted
        assert result.entry.balance_after == a.balance
        a.entries.append(ModelEntry(EntryType.INIT, granted, result.entry.id))

    @rule(
        account=accounts,
        amount=st.integers(1, 40) | st.integers(41, 250) | edges,
        action=st.sampled_from(["chat_message", "image.generate"]),
        reason=reasons,
        metadata=metadatas,
        key=keys,
    )
    def debit(
        self,
        account: str,
        amount: int | str,
        action: str,
        reason: str | None,
        metadata: dict[str, Any] | None,
        key: str | None,
    ) -> None:
        key = self._key(key)
        start, needs_init = self._starting_balance(account)
        amount = _resolve(amount, start)
        kwargs = {"action": action, "reason": reason, "metadata": metadata}
        fp = ("debit", amount, action, reason or "", _meta(metadata))
        call = self._call("debit", (amount,), kwargs, key, fp)
        if self._idempotent(account, key, call):
            return
        if start < amount:
            with pytest.raises(InsufficientCreditsError) as info:
                self._invoke(account, call, key)
            exc = info.value
            assert (exc.account, exc.balance, exc.required, exc.action) == (
                account,
                start,
                amount,
                action,
            )
            return
        result = self._invoke(account, call, key)
        if needs_init:
            self._auto_initialized(account)
        self._commit(account, call, result, EntryType.DEBIT, -amount)
        assert result.entry.action == action
        self.model[account].debits[result.entry.id] = (amount, action)

    @rule(
        account=accounts,
        amount=st.integers(1, 100),
        source=st.sampled_from([None, "purchase"]),
        reason=reasons,
        metadata=metadatas,
        key=keys,
    )
    def credit(
        self,
        account: str,
        amount: int,
        source: str | None,
        reason: str | None,
        metadata: dict[str, Any] | None,
        key: str | None,
    ) -> None:
        key = self._key(key)
        kwargs = {"source": source, "reason": reason, "metadata": metadata}
        fp = ("credit", amount, source or "", reason or "", _meta(metadata))
        call = self._call("credit", (amount,), kwargs, key, fp)
        if self._idempotent(account, key, call):
            return
        _, needs_init = self._starting_balance(account)
        result = self._invoke(account, call, key)
        if needs_init:
            self._auto_initialized(account)
        self._commit(account, call, result, EntryType.CREDIT, amount)
        assert result.entry.action == (source or "grant")  # a credit's default source

    @rule(
        account=accounts,
        delta=st.integers(-150, 150).filter(bool) | edges,
        allow_overdraft=st.booleans(),
        action=st.sampled_from([None, "correction"]),
        reason=reasons,
        key=keys,
    )
    def adjust(
        self,
        account: str,
        delta: int | str,
        allow_overdraft: bool,
        action: str | None,
        reason: str | None,
        key: str | None,
    ) -> None:
        key = self._key(key)
        start, needs_init = self._starting_balance(account)
        if isinstance(delta, str):  # down to exactly zero, or one below
            delta = -_resolve(delta, start)
        kwargs = {"allow_overdraft": allow_overdraft, "action": action, "reason": reason}
        fp = ("adjust", delta, allow_overdraft, action or "", reason or "", "")
        call = self._call("adjust", (delta,), kwargs, key, fp)
        if self._idempotent(account, key, call):
            return
        after = start + delta
        # Only a taking adjustment can overdraw; one that adds may leave a negative balance
        # less negative without allow_overdraft.
        if delta < 0 and after < 0 and not allow_overdraft:
            with pytest.raises(InsufficientCreditsError) as info:
                self._invoke(account, call, key)
            exc = info.value
            assert (exc.account, exc.balance, exc.required, exc.action) == (
                account,
                start,
                -delta,
                action,
            )
            return
        result = self._invoke(account, call, key)
        if needs_init:
            self._auto_initialized(account)
        self._commit(account, call, result, EntryType.ADJUST, delta)
        if after < 0:
            self.model[account].overdrawn = True

    @precondition(lambda self: any(a.debits for a in self.model.values()))
    @rule(
        data=st.data(),
        amount=st.none() | st.integers(1, 12) | edges,
        reason=reasons,
        metadata=metadatas,
        key=keys,
    )
    def refund(
        self,
        data: st.DataObject,
        amount: int | str | None,
        reason: str | None,
        metadata: dict[str, Any] | None,
        key: str | None,
    ) -> None:
        """Refund one of an account's debits, in full or in part (or too much, or again)."""
        debits = [(name, eid) for name, a in self.model.items() for eid in a.debits]
        # Mostly debits with something left to refund, the path that writes.
        open_ = [
            (n, e)
            for n, e in debits
            if self.model[n].refunded.get(e, 0) < self.model[n].debits[e][0]
        ]
        pool = open_ if open_ and data.draw(st.integers(0, 3), label="prefer open") else debits
        account, eid = data.draw(st.sampled_from(pool), label="debit")
        if isinstance(amount, str):  # all that is left, or one more
            taken, _ = self.model[account].debits[eid]
            amount = _resolve(amount, taken - self.model[account].refunded.get(eid, 0))
        self._refund(account, "debit", eid, amount, reason, metadata, key)

    @precondition(lambda self: any(a.entries for a in self.model.values()))
    @rule(
        account=accounts,
        data=st.data(),
        amount=st.none() | st.integers(1, 12),
        key=keys,
    )
    def refund_wrong_entry(
        self, account: str, data: st.DataObject, amount: int | None, key: str | None
    ) -> None:
        """Refund an entry that is not a debit, or a debit of the other account."""
        a = self.model[account]
        targets = [("not_debit", e.id) for e in a.entries if e.id and e.type is not EntryType.DEBIT]
        for other, b in self.model.items():
            if other != account:
                targets += [("foreign", eid) for eid in b.debits]
        if not targets:
            return
        kind, eid = data.draw(st.sampled_from(targets), label="target")
        self._refund(account, kind, eid, amount, None, None, key)

    def _refund(
        self,
        account: str,
        kind: str,
        eid: str,
        amount: int | None,
        reason: str | None,
        metadata: dict[str, Any] | None,
        key: str | None,
    ) -> None:
        key = self._key(key)
        derived = key is None and amount is None
        if derived:
            # A keyless full refund gets the key "refund:<id>", so retrying it replays the
            # first outcome.
            key = f"refund:{eid}"
        kwargs = {"amount": amount, "reason": reason, "metadata": metadata}
        # A refund's fingerprint covers what decides its effect (entry, amount) only: the
        # same refund again with another reason or metadata replays the first one.
        fp = ("refund", eid, amount or "")
        call = self._call("refund", (eid,), kwargs, key, fp, derived_key=derived)
        if self._idempotent(account, key, call):
            return
        pass_key = None if derived else key
        a = self.model[account]
        if kind == "foreign":
            # Stream ids are per account, so another account's id can also be one of ours
            # (same millisecond and sequence): then it names our own entry.
            for e in a.entries:
                if e.id == eid:
                    kind = "debit" if e.type is EntryType.DEBIT else "not_debit"
        if kind == "foreign":
            with pytest.raises(EntryNotFoundError) as info:
                self._invoke(account, call, pass_key)
            assert (info.value.account, info.value.entry_id) == (account, eid)
            return
        if kind == "not_debit":
            with pytest.raises(RefundError) as info:
                self._invoke(account, call, pass_key)
            assert (info.value.account, info.value.entry_id) == (account, eid)
            return
        taken, action = a.debits[eid]
        left = taken - a.refunded.get(eid, 0)
        if left <= 0 or (amount is not None and amount > left):
            with pytest.raises(RefundError) as info:
                self._invoke(account, call, pass_key)
            assert (info.value.account, info.value.entry_id) == (account, eid)
            if left > 0:
                assert info.value.refundable == left
            return
        given = left if amount is None else amount
        result = self._invoke(account, call, pass_key)
        self._commit(account, call, result, EntryType.REFUND, given)
        assert result.entry.ref == eid
        assert result.entry.action == action
        a.refunded[eid] = a.refunded.get(eid, 0) + given

    @precondition(lambda self: any(a.idem for a in self.model.values()))
    @rule(data=st.data())
    def replay(self, data: st.DataObject) -> None:
        """An earlier call again, same key and parameters: its first outcome, nothing new."""
        recorded = [(name, call) for name, a in self.model.items() for call in a.idem.values()]
        account, call = data.draw(st.sampled_from(recorded), label="call")
        result = self._invoke(account, call, None if call.derived_key else call.key)
        self._check_replay(account, call, result)

    @precondition(
        lambda self: any(not c.derived_key for a in self.model.values() for c in a.idem.values())
    )
    @rule(data=st.data(), change=st.sampled_from(["effect", "reason"]))
    def conflict(self, data: st.DataObject, change: str) -> None:
        """An earlier key again with other parameters: a conflict, nothing written (except a
        refund with only another reason, which replays, and a key the SDK made for its
        call, which stands for that call: its first outcome, whatever the parameters)."""
        recorded = [
            (name, call)
            for name, a in self.model.items()
            for call in a.idem.values()
            if not call.derived_key
        ]
        account, call = data.draw(st.sampled_from(recorded), label="call")
        if change == "reason":
            if call.method == "refund":
                result = self._invoke(account, call, call.key, reason="a different reason")
                self._check_replay(account, call, result)
                return
            changed = call.kwargs | {"reason": "a different reason"}
            other = Call(**{**call.__dict__, "kwargs": changed})
        elif call.method == "refund":
            amount = call.kwargs["amount"]
            changed = call.kwargs | {"amount": 1 if amount is None else amount + 1}
            other = Call(**{**call.__dict__, "kwargs": changed})
        else:
            (n,) = call.args
            other = Call(**{**call.__dict__, "args": (n + 1 if n != -1 else -2,)})
        if call.made_key:
            self._check_replay(account, call, self._invoke(account, other, call.key))
            return
        with pytest.raises(IdempotencyConflictError) as info:
            self._invoke(account, other, call.key)
        assert (info.value.account, info.value.idempotency_key) == (account, call.key)

    @rule(account=accounts, limit=st.integers(1, 4))
    def paginate(self, account: str, limit: int) -> None:
        """Paging with a small limit gives the same entries as one big page."""
        ids, cursor = [], None
        while True:
            page = self.c.history(account, limit=limit, cursor=cursor)
            assert len(page.entries) <= limit
            ids += [e.id for e in page.entries]
            if page.next_cursor is None:
                break
            assert page.next_cursor == page.entries[-1].id
            cursor = page.next_cursor
        assert ids == [e.id for e in self.c.history(account, limit=1000).entries]

    # -- invariants -----------------------------------------------------------------------

    @invariant()
    def store_matches_model(self) -> None:
        if self.client is None:
            return
        for name, a in self.model.items():
            unset = self.auto and not a.initialized
            assert self.c.get_balance(name) == (DEFAULT_CREDITS if unset else a.balance)
            assert a.balance >= 0 or a.overdrawn

            page = self.c.history(name, limit=1000)
            assert page.next_cursor is None
            entries = list(reversed(page.entries))  # oldest first
            assert [(e.type, e.delta) for e in entries] == [(m.type, m.delta) for m in a.entries]
            running = 0
            for entry, expected in zip(entries, a.entries, strict=True):
                if expected.id is None:
                    expected.id = entry.id
                assert entry.id == expected.id
                running += entry.delta
                assert entry.balance_after == running
            stream_ids = [tuple(int(p) for p in e.id.split("-")) for e in entries]
            assert stream_ids == sorted(set(stream_ids))
            assert running == a.balance
            assert ledger_sum(self.c, name) == a.balance


def _flush(url: str) -> None:
    raw = redis.Redis.from_url(url)
    try:
        raw.flushall()
    finally:
        raw.close()


@pytest.mark.parametrize("backend", ["memory", "redis6", "redis7"])
def test_client_matches_model(backend: str, request: pytest.FixtureRequest) -> None:
    if backend == "memory":
        url = f"memory://{MEMORY_STORE}"

        def wipe() -> None:
            reset_memory_store(MEMORY_STORE)
    else:
        url = request.getfixturevalue("server_pool").server(backend).url

        def wipe() -> None:
            _flush(url)

    try:
        run_state_machine_as_test(lambda: LedgerMachine(url, wipe), settings=SETTINGS)
    finally:
        reset_memory_store(MEMORY_STORE)


def test_positive_adjust_of_overdrawn_account(client: Any) -> None:
    """Regression: adjust.lua refused any adjustment leaving the balance below zero without
    allow_overdraft, even one that adds (InsufficientCreditsError with required=-10)."""
    client.initialize_user("user_1", 0)
    client.adjust("user_1", -50, allow_overdraft=True)
    result = client.adjust("user_1", 10)
    assert result.balance == -40
    assert ledger_sum(client, "user_1") == -40
    with pytest.raises(InsufficientCreditsError) as info:
        client.adjust("user_1", -1)
    assert (info.value.balance, info.value.required) == (-40, 1)
    assert client.get_balance("user_1") == -40
