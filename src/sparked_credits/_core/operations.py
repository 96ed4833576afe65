"""The pure core: each operation as (validate -> one request -> decode), with no I/O.

Both clients call these builders and hand the request to their backend, so an operation's
rules live here once. A builder validates every argument before it builds anything, so a
rejected call never reaches Redis.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import os
import secrets
from collections.abc import Callable, Generator, Sequence
from typing import Any, NamedTuple, TypeVar

from ..errors import ValidationError
from ..models import Grant, Hold, InitResult, LedgerEntry, MutationResult
from ..pricing import PriceTable, active_price_table
from . import validation as v
from .decoding import (
    entry_from_fields,
    entry_from_values,
    hold_decoder,
    mutation_decoder,
    script_error,
    text,
)
from .keys import AccountKeys, KeySpace
from .lots import DEFAULT_PRIORITY, grants_from_records
from .options import ClientOptions
from .protocol import SPECS, Context, ScriptSpec
from .requests import CommandCall, Operation, ScanCall, ScriptCall
from .scripts import SCRIPTS, Script

__all__ = ["NO_EXTRAS", "Extras", "Operations", "new_idempotency_key"]

_SEP = "\x1f"
T = TypeVar("T")


def _fresh_prefix() -> None:
    global _key_prefix, _key_counter, _nonce_prefix
    _key_prefix = secrets.token_urlsafe(9)  # 72 random bits, 12 characters
    _nonce_prefix = secrets.token_urlsafe(6)  # 48 random bits, 8 characters
    _key_counter = itertools.count()


_key_prefix: str
_nonce_prefix: str
_key_counter: itertools.count[int]
_fresh_prefix()
os.register_at_fork(after_in_child=_fresh_prefix)


def new_idempotency_key() -> str:
    """A fresh key for a call whose caller gave none.

    A random per-process prefix (drawn again in a forked child) and a counter: unique like
    a random key, but cheaper to make on every call, and short (it is stored in each entry).
    """
    return f"{_key_prefix}{next(_key_counter):x}"


def _call_nonce() -> str:
    """A token unique to one call of this process, kept in the entry it writes: it only has
    to tell apart calls that share one idempotency key, so it is shorter than a key."""
    return f"{_nonce_prefix}{next(_key_counter):x}"


def _fingerprint(*parts: str) -> str:
    """64 bits of BLAKE2b over the parts, as 16 hex characters: the form earlier versions
    stored in idempotency records (and still the record's, for their readers)."""
    return hashlib.blake2b(_SEP.join(parts).encode(), digest_size=8).hexdigest()


def _fingerprints(name: str, account: str, app: str, params: Sequence[str]) -> tuple[str, str]:
    """(fingerprint, legacy fingerprint) of a call: enough to tell a replay from a
    different call reusing its key.

    The fingerprint covers what the operation *is*: its name, the account, and the
    parameters that decide the effect (amounts, action/source, reason, metadata, hold or
    entry id, flags), never the app that sent it, so a retry that reaches another app's
    process replays. The entry keeps it (meta ``_sc.f``; base64url, 11 characters for 64
    bits). The legacy one is what earlier versions computed (the calling app included):
    the script accepts it for records those versions wrote, so a replay is not a conflict
    during a rolling upgrade, and writes it into the record, so older readers still replay
    the records this version writes.
    """
    current = hashlib.blake2b(_SEP.join((name, account, *params)).encode(), digest_size=8)
    encoded = base64.urlsafe_b64encode(current.digest()).rstrip(b"=").decode()
    return encoded, _fingerprint(name, account, app, *params)


RESERVED_METADATA_KEY = "_sc"
"""The metadata member the scripts keep for themselves (fingerprint, call nonce, hold
expiry); readers drop it, callers may not use it."""


def _key_or_new(idempotency_key: str | None) -> tuple[str, str]:
    """(key, call nonce). A key made for this call cannot have been applied by anyone else,
    so its nonce is '*' ("any record of it is this call's"); a caller's key gets a fresh
    nonce, which the entry keeps: the SDK's own re-send of the call is then not a replay."""
    if idempotency_key is None:
        return new_idempotency_key(), "*"
    return v.idempotency_key(idempotency_key), _call_nonce()


def _record_fp(nonce: str, legacy: str) -> str:
    """The fingerprint an idempotency record keeps (ARGV[8]). A key the SDK made for one
    call (nonce '*') stands for that call alone, whatever parameters a retry with it
    carries, from whichever app: its record says '*', exactly what the full repair
    rebuilds from an entry that keeps no fingerprint, so a rebuilt record behaves as the
    original. A caller's key keeps the legacy fingerprint (for earlier versions'
    readers); the entry's own '_sc.f' is what the script compares."""
    return "*" if nonce == "*" else legacy


def _metadata(metadata: dict[str, Any] | None) -> str:
    if isinstance(metadata, dict) and RESERVED_METADATA_KEY in metadata:
        raise ValidationError(
            "metadata", f"the key {RESERVED_METADATA_KEY!r} is reserved for the SDK"
        )
    return v.metadata(metadata)


class Extras(NamedTuple):
    """What every mutation call takes besides its own arguments, built by keyword so two
    of them cannot swap places unnoticed (a NamedTuple: frozen, and cheap to make)."""

    reason: str | None = None
    metadata: dict[str, Any] | None = None
    idempotency_key: str | None = None


NO_EXTRAS = Extras()

_DEBIT, _CREDIT, _ADJUST = SPECS["debit"], SPECS["credit"], SPECS["adjust"]
_REFUND, _RESERVE, _SETTLE = SPECS["refund"], SPECS["reserve"], SPECS["settle"]
_RELEASE, _CLOSE, _INIT = SPECS["release"], SPECS["close"], SPECS["initialize"]


class Operations:
    """Builds every operation for one client configuration. Every builder takes its
    arguments by keyword (after the account and, where there is one, the amount)."""

    def __init__(self, options: ClientOptions, pricing: PriceTable | None = None) -> None:
        self.options = options
        self._pricing = pricing
        self.keys = KeySpace(prefix=options.key_prefix, hash_tags=options.hash_tags)
        self._app = options.app or ""
        self._account_keys: dict[str, AccountKeys] = {}
        # debit's memo: (account, amount, action, reason) -> (script, KEYS, ARGV[2..6],
        # ARGV[8..] for a caller's key, ARGV[8..] for a key made for the call); a call adds
        # ARGV[1] (key) and ARGV[7] (nonce).
        self._debit_memo: dict[
            tuple[str, int, str, str | None],
            tuple[Script, tuple[str, ...], tuple[str, ...], tuple[str, ...], tuple[str, ...]],
        ] = {}
        # ARGV[3..6], the same for every call of this client.
        self._argv_tail = (
            str(options.idempotency_ttl_ms),
            "1" if options.auto_initialize else "0",
            str(options.default_credits),
            self._app,
        )

    # -- helpers ------------------------------------------------------------------------

    def _keys_of(self, account: str) -> AccountKeys:
        """An account's key names, built once per account (bounded memo)."""
        keys = self._account_keys.get(account)
        if keys is None:
            if len(self._account_keys) >= 4096:
                self._account_keys.clear()
            keys = self._account_keys[account] = self.keys.account(account)
        return keys

    def _script_keys(self, spec: ScriptSpec, account: str) -> tuple[str, ...]:
        keys = self._keys_of(account)
        if not spec.extra_keys:
            return keys.script_keys
        return (*keys.script_keys, *(getattr(keys, name) for name in spec.extra_keys))

    def _script_call(
        self,
        spec: ScriptSpec,
        account: str,
        *,
        key: str,
        nonce: str,
        values: tuple[str, ...],
        fps: tuple[str, str] | None = None,
    ) -> ScriptCall:
        """The one script call of a mutation: KEYS and the shared ARGV, then its own
        values. The fingerprint covers the spec's fingerprint arguments (what decides the
        effect: a webhook's second delivery with another reason is still the same settle)."""
        if fps is None:
            parts = spec.fingerprint_parts(values)
            fps = _fingerprints(spec.operation, account, self._app, parts)
        return ScriptCall(
            script=SCRIPTS[spec.name],
            keys=self._script_keys(spec, account),
            args=(key, fps[0], *self._argv_tail, nonce, _record_fp(nonce, fps[1]), *values),
        )

    def _mutation(
        self,
        spec: ScriptSpec,
        account: str,
        values: tuple[str, ...],
        *,
        idempotency_key: str | None,
        action: str | None,
        entry_id: str | None = None,
        amount_field: str = "amount",
        fps: tuple[str, str] | None = None,
    ) -> Operation[MutationResult]:
        key, nonce = _key_or_new(idempotency_key)
        call = self._script_call(spec, account, key=key, nonce=nonce, values=values, fps=fps)
        return Operation(
            name=spec.operation,
            request=call,
            decode=mutation_decoder(account, action, entry_id, key, amount_field),
            idempotency_key=key,
        )

    # -- operations ---------------------------------------------------------------------

    def initialize_user(
        self, account: str, *, credits: int | None, reason: str | None
    ) -> Operation[InitResult]:
        account = v.account(account)
        amount = self.options.default_credits if credits is None else v.credits(credits)
        values = _INIT.values(credits=str(amount), reason=v.reason(reason))
        context = Context(account)

        def decode(raw: Sequence[Any]) -> InitResult:
            status = text(raw[0])
            if status == "ok":
                entry = entry_from_values(raw[2], raw[3:12], raw[12] if len(raw) > 12 else None)
                return InitResult(
                    account=account, created=True, balance=entry.balance_after, entry=entry
                )
            if status == "exists":
                return InitResult(account=account, created=False, balance=int(text(raw[1])))
            raise script_error(status, raw, context)

        return Operation(
            name=_INIT.operation,
            request=ScriptCall(
                script=SCRIPTS[_INIT.name],
                keys=self._script_keys(_INIT, account),
                args=("", "", *self._argv_tail, "", "", *values),
            ),
            decode=decode,
        )

    def get_balance(self, account: str) -> Operation[int]:
        account = v.account(account)
        unset = self.options.default_credits if self.options.auto_initialize else 0

        def decode(raw: Sequence[Any]) -> int:
            # {'balance', n}: GET less the credits of lots past their expiry (one read-only
            # script); {'balance'}: never written.
            return unset if len(raw) < 2 else int(raw[1])

        op = self.maintenance("balance", account, decode=decode)
        assert isinstance(op.request, ScriptCall)
        op.request.read_only = True
        return op

    def debit(
        self, account: str, amount: int, *, action: str, extras: Extras = NO_EXTRAS
    ) -> Operation[MutationResult]:
        # The hot path: a debit like one seen before (same account, amount, action, reason,
        # no metadata) reuses its checked call: keys, values, fingerprints and script. Exact
        # types are part of the test, so True never passes for 1 and a str subclass is
        # checked afresh. Only the idempotency key and nonce are new per call.
        reason, metadata, idempotency_key = extras
        memo_key: tuple[str, int, str, str | None] | None = None
        if (
            metadata is None
            and type(account) is str
            and type(amount) is int
            and type(action) is str
            and (reason is None or type(reason) is str)
        ):
            memo_key = (account, amount, action, reason)
            hit = self._debit_memo.get(memo_key)
            if hit is not None:
                script, keys, head, tail, made_tail = hit
                key, nonce = _key_or_new(idempotency_key)
                return Operation(
                    "debit",
                    ScriptCall(
                        script, keys, (key, *head, nonce, *(made_tail if nonce == "*" else tail))
                    ),
                    mutation_decoder(account, action, None, key),
                    key,
                )
        account = v.account(account)
        values = _DEBIT.values(
            amount=str(v.amount(amount)),
            action=v.label(action, "action", required=True),
            reason=v.reason(reason),
            metadata=_metadata(metadata),
        )
        fps = _fingerprints(_DEBIT.operation, account, self._app, values)
        if memo_key is not None:
            if len(self._debit_memo) >= 4096:
                self._debit_memo.clear()
            self._debit_memo[memo_key] = (
                SCRIPTS[_DEBIT.name],
                self._script_keys(_DEBIT, account),
                (fps[0], *self._argv_tail),
                (fps[1], *values),
                (_record_fp("*", fps[1]), *values),
            )
        return self._mutation(
            _DEBIT, account, values, idempotency_key=idempotency_key, action=action, fps=fps
        )

    def price_table(self) -> PriceTable:
        """The client's table, or the active one (defaults, or the file named by
        SPARKED_CREDITS_PRICING, loaded on first use)."""
        return self._pricing if self._pricing is not None else active_price_table()

    def calculate_cost(self, action: str, usage: dict[str, object]) -> int:
        """Price ``action`` for ``usage``; a cost of 0 cannot be charged or reserved."""
        cost = self.price_table().calculate_cost(action, **usage)
        if cost == 0:
            raise ValidationError(
                "usage", f"{action} with {usage or 'no usage'} costs 0 credits: nothing to charge"
            )
        return cost

    def charge(
        self,
        account: str,
        *,
        action: str,
        usage: dict[str, object],
        extras: Extras = NO_EXTRAS,
    ) -> Operation[MutationResult]:
        account = v.account(account)
        action = v.label(action, "action", required=True)
        cost = self.calculate_cost(action, usage)
        return self.debit(account, cost, action=action, extras=extras)

    def credit(
        self,
        account: str,
        amount: int,
        *,
        source: str | None,
        expires_at: object = None,
        priority: object = DEFAULT_PRIORITY,
        extras: Extras = NO_EXTRAS,
    ) -> Operation[MutationResult]:
        """Open a credit lot. Its priority and expiry decide the effect, so they are part
        of the fingerprint (a retry with another expiry is a conflict, not a replay)."""
        account = v.account(account)
        label = v.source(source)
        expires_ms = v.expires_at(expires_at)
        values = _CREDIT.values(
            amount=str(v.amount(amount)),
            source=label,
            reason=v.reason(extras.reason),
            metadata=_metadata(extras.metadata),
            priority=str(v.priority(priority)),
            expires_ms="" if expires_ms is None else str(expires_ms),
        )
        return self._mutation(
            _CREDIT, account, values, idempotency_key=extras.idempotency_key, action=label
        )

    def grants(
        self, account: str, batch: int = 100
    ) -> Generator[Operation[Any], Any, list[Grant]]:
        """The open lots in consumption order; each call first returns expired holds and
        lapses lots past expiry (``batch`` of each), and calls again while more are due."""
        account = v.account(account)

        def decode(raw: Sequence[Any]) -> tuple[int, list[Grant]]:
            flat = [text(x) for x in raw[4:]]
            records = list(zip(flat[::2], flat[1::2], strict=True))
            return int(raw[3]), grants_from_records(int(raw[1]), int(raw[2]), records)

        while True:
            due: int
            lots: list[Grant]
            due, lots = yield self.maintenance(
                "grants", account, decode=decode, limit=str(batch)
            )
            if due == 0:
                return lots

    def adjust(
        self,
        account: str,
        delta: int,
        *,
        allow_overdraft: bool,
        action: str | None,
        extras: Extras = NO_EXTRAS,
    ) -> Operation[MutationResult]:
        account = v.account(account)
        values = _ADJUST.values(
            delta=str(v.signed_delta(delta)),
            allow_overdraft="1" if v.flag(allow_overdraft, "allow_overdraft") else "0",
            action=v.label(action, "action"),
            reason=v.reason(extras.reason),
            metadata=_metadata(extras.metadata),
        )
        return self._mutation(
            _ADJUST,
            account,
            values,
            idempotency_key=extras.idempotency_key,
            action=action,
            amount_field="delta",
        )

    def refund(
        self,
        account: str,
        entry_id: str,
        *,
        amount: int | None,
        extras: Extras = NO_EXTRAS,
    ) -> Operation[MutationResult]:
        account = v.account(account)
        eid = v.entry_id(entry_id)
        values = _REFUND.values(
            entry_id=eid,
            amount="" if amount is None else str(v.amount(amount)),
            reason=v.reason(extras.reason),
            metadata=_metadata(extras.metadata),
        )
        key = extras.idempotency_key
        if key is None and amount is None:
            # A full refund happens at most once, so a key derived from the entry lets any
            # process retry it and get the first outcome back instead of an error.
            key = f"refund:{eid}"
        return self._mutation(
            _REFUND, account, values, idempotency_key=key, action=None, entry_id=eid
        )

    def reserve(
        self,
        account: str,
        amount: int | None,
        *,
        action: str,
        usage: dict[str, object] | None,
        ttl: object,
        extras: Extras = NO_EXTRAS,
    ) -> Operation[Hold]:
        account = v.account(account)
        label = v.label(action, "action", required=True)
        if amount is None:
            if usage is None:
                raise ValidationError("credits", "give credits, or usage to price the estimate")
            amount = self.calculate_cost(label, usage)
        elif usage is not None:
            raise ValidationError("usage", "give credits or usage, not both")
        values = _RESERVE.values(
            amount=str(v.amount(amount)),
            action=label,
            ttl_ms=str(v.ttl_ms(ttl)),
            reason=v.reason(extras.reason),
            metadata=_metadata(extras.metadata),
        )
        key, nonce = _key_or_new(extras.idempotency_key)
        return Operation(
            name=_RESERVE.operation,
            request=self._script_call(_RESERVE, account, key=key, nonce=nonce, values=values),
            decode=hold_decoder(Context(account, label, None, key)),
            idempotency_key=key,
        )

    def settle(
        self,
        account: str,
        hold_id: str,
        actual: int,
        *,
        allow_overage: bool,
        extras: Extras = NO_EXTRAS,
    ) -> Operation[MutationResult]:
        account = v.account(account)
        hid = v.entry_id(hold_id, "hold_id")
        values = _SETTLE.values(
            hold_id=hid,
            actual=str(v.credits(actual, "actual")),
            allow_overage="1" if v.flag(allow_overage, "allow_overage") else "0",
            reason=v.reason(extras.reason),
            metadata=_metadata(extras.metadata),
        )
        # One settle per hold: a provider webhook delivered three times settles once.
        key = f"settle:{hid}" if extras.idempotency_key is None else extras.idempotency_key
        return self._mutation(
            _SETTLE, account, values, idempotency_key=key, action=None, entry_id=hid
        )

    def release(
        self, account: str, hold_id: str, *, extras: Extras = NO_EXTRAS
    ) -> Operation[MutationResult]:
        account = v.account(account)
        hid = v.entry_id(hold_id, "hold_id")
        values = _RELEASE.values(
            hold_id=hid, reason=v.reason(extras.reason), metadata=_metadata(extras.metadata)
        )
        key = f"release:{hid}" if extras.idempotency_key is None else extras.idempotency_key
        return self._mutation(
            _RELEASE, account, values, idempotency_key=key, action=None, entry_id=hid
        )

    def close_account(
        self, account: str, *, reason: str | None, metadata: dict[str, Any] | None
    ) -> Operation[MutationResult]:
        """Close an account for new debits, once: a 0-delta ``close`` entry records when,
        why and by which app, and the account's meta hash points at it."""
        account = v.account(account)
        values = _CLOSE.values(reason=v.reason(reason), metadata=_metadata(metadata))
        # Once per account by the script itself (it replays the first close entry); the key
        # only labels the entry.
        return self._mutation(_CLOSE, account, values, idempotency_key="close", action=None)

    def maintenance(
        self, script: str, account: str, *, decode: Callable[[Any], T], **args: str
    ) -> Operation[T]:
        """A call of a script without an idempotency key (its effect is the same however
        often it runs: sweeping expired holds, reconciling, trimming), its own arguments by
        name as its declaration lists them."""
        spec = SPECS[script]
        values = spec.values(**args)
        return Operation(
            name=spec.operation,
            request=ScriptCall(
                script=SCRIPTS[spec.name],
                keys=self._script_keys(spec, v.account(account)),
                args=("", "", *self._argv_tail, "", "", *values),
            ),
            decode=decode,
        )

    def sweep(self, account: str, *, limit: int) -> Operation[tuple[int, int]]:
        """Return up to ``limit`` expired holds and lapse up to ``limit`` expired lots;
        decodes to (returned or lapsed, still due)."""

        def decode(raw: Sequence[Any]) -> tuple[int, int]:
            return int(raw[1]), int(raw[2])

        return self.maintenance("sweep", account, decode=decode, limit=str(limit))

    def sweep_expired(
        self, account: str | None, batch: int = 100
    ) -> Generator[Operation[Any], Any, int]:
        """Several round trips, as a generator both clients drive: find the accounts with
        holds or expiring lots (SCAN, when no account is given), then return each one's
        expired holds and lapse its expired lots in batches, each batch one atomic script
        call. Yields operations, returns the count. The account search is one ScanCall per
        key kind: a cursor belongs to one server, so walking it (once per primary on a
        cluster) is the backend's job."""
        if account is None:
            with_holds: list[str] = yield self.scan_accounts("holdexp", "sweep_expired")
            with_lots: list[str] = yield self.scan_accounts("lotexp", "sweep_expired")
            accounts = sorted({*with_holds, *with_lots})
        else:
            accounts = [v.account(account)]
        total = 0
        for acct in dict.fromkeys(accounts):
            while True:
                returned, still_due = yield self.sweep(acct, limit=batch)
                total += returned
                if still_due == 0:
                    break
        return total

    def scan_accounts(self, kind: str, name: str) -> Operation[list[str]]:
        """The accounts that have a ``<kind>:<account>`` key (either key layout), by one
        ScanCall: a cursor belongs to one server, so walking it (once per primary on a
        cluster) is the backend's job."""
        head = f"{self.keys.prefix}{kind}:"

        def decode(raw: Sequence[Any]) -> list[str]:
            names = [text(k)[len(head) :] for k in raw]
            return sorted({n[1:-1] if n.startswith("{") and n.endswith("}") else n for n in names})

        return Operation(name=name, request=ScanCall(match=head + "*", count=1000), decode=decode)

    def read_entries(
        self, account: str, start: str, end: str, count: int, newest_first: bool
    ) -> Operation[list[LedgerEntry]]:
        """One XRANGE/XREVRANGE of up to ``count`` entries between two stream ids
        (``(`` marks an exclusive bound, ``-``/``+`` the ends)."""

        def decode(raw: Sequence[Any]) -> list[LedgerEntry]:
            return [entry_from_fields(eid, fields) for eid, fields in raw]

        command = "XREVRANGE" if newest_first else "XRANGE"
        bounds = (start, end) if not newest_first else (end, start)
        return Operation(
            name="history",
            request=CommandCall(
                args=(command, self.keys.ledger(account), *bounds, "COUNT", str(count))
            ),
            decode=decode,
        )
