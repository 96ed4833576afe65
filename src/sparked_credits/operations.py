"""The pure core: each operation as (validate -> one request -> decode), with no I/O.

Both clients call these builders and hand the request to their backend, so an operation's
rules live here once. A builder validates every argument before it builds anything, so a
rejected call never reaches Redis.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import secrets
from collections.abc import Callable, Sequence
from typing import Any

from . import validation as v
from .errors import (
    CreditsError,
    EntryNotFoundError,
    IdempotencyConflictError,
    InsufficientCreditsError,
    RefundError,
    ValidationError,
)
from .keys import AccountKeys, KeySpace
from .models import HistoryPage, InitResult, LedgerEntry, MutationResult
from .options import ClientOptions
from .requests import CommandCall, Operation, ScriptCall
from .scripts import SCRIPTS, Script

__all__ = ["Operations", "new_idempotency_key"]

_SEP = "\x1f"


def _fresh_prefix() -> None:
    global _key_prefix, _key_counter
    _key_prefix = secrets.token_urlsafe(9)  # 72 random bits, 12 characters
    _key_counter = itertools.count()


_key_prefix: str
_key_counter: itertools.count[int]
_fresh_prefix()
os.register_at_fork(after_in_child=_fresh_prefix)


def new_idempotency_key() -> str:
    """A fresh key for a call whose caller gave none.

    A random per-process prefix (drawn again in a forked child) and a counter: unique like
    a random key, but cheaper to make on every call, and short (it is stored in each entry).
    """
    return f"{_key_prefix}{next(_key_counter):x}"


def _fingerprint(*parts: str) -> str:
    """What the idempotency record remembers of a call's parameters (64 bits, 16 chars):
    enough to tell a replay from a different call reusing the key."""
    return hashlib.blake2b(_SEP.join(parts).encode(), digest_size=8).hexdigest()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# The field order this SDK's scripts write (see lua/prelude.lua, append()).
_FIELDS = ("type", "delta", "balance", "action", "app", "reason", "ref", "idem", "meta")
_FIELD_ORDERS = (_FIELDS, tuple(f.encode() for f in _FIELDS))


def _field_values(fields: Any) -> tuple[Any, ...]:
    """The nine entry values in _FIELDS order.

    Values stay as the client returned them (bytes or str): pydantic decodes them while it
    validates, cheaper than decoding each here. Entries in this SDK's own field order (all
    of them, unless another writer shares the stream) are read by position.
    """
    if isinstance(fields, dict):
        named = {_text(k): val for k, val in fields.items()}
    elif tuple(fields[::2]) in _FIELD_ORDERS:
        return tuple(fields[1::2])
    else:
        named = dict(zip([_text(k) for k in fields[::2]], fields[1::2], strict=True))
    return tuple(named.get(name) for name in _FIELDS)


def entry_from_fields(entry_id: Any, fields: Any) -> LedgerEntry:
    """Decode one stream entry as XRANGE/XREVRANGE return it."""
    return entry_from_values(entry_id, _field_values(fields))


def entry_from_values(entry_id: Any, values: Sequence[Any]) -> LedgerEntry:
    """An entry from its id and its nine values in _FIELDS order (as the scripts reply).

    Validated: pydantic-core's validation is faster than model_construct, and an entry
    written by another writer gets checked on the way in.
    """
    typ, delta, balance, action, app, reason, ref, idem, meta = values
    return LedgerEntry(
        id=entry_id,
        type=typ,
        delta=delta,
        balance_after=balance,
        action=action or None,
        app=app or None,
        reason=reason or None,
        ref=ref or None,
        idempotency_key=idem or None,
        metadata=v.as_dict(meta) if meta else {},
    )


class Operations:
    """Builds every operation for one client configuration."""

    def __init__(self, options: ClientOptions) -> None:
        self.options = options
        self.keys = KeySpace(prefix=options.key_prefix, hash_tags=options.hash_tags)
        self._app = options.app or ""
        self._account_keys: dict[str, AccountKeys] = {}
        # ARGV[3..6], the same for every mutation of this client.
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

    def _mutation(
        self,
        name: str,
        script: Script,
        account: str,
        idempotency_key: str | None,
        params: tuple[str, ...],
        action: str | None,
        entry_id: str | None = None,
        refund: bool = False,
    ) -> Operation[MutationResult]:
        key = (
            new_idempotency_key() if idempotency_key is None else v.idempotency_key(idempotency_key)
        )
        fp = _fingerprint(name, account, self._app, *params)
        keys = self._keys_of(account)
        return Operation(
            name=name,
            request=ScriptCall(
                script=script,
                keys=keys.refund_keys if refund else keys.script_keys,
                args=(key, fp, *self._argv_tail, *params),
            ),
            decode=_mutation_decoder(account, action, key, entry_id),
            idempotency_key=key,
        )

    # -- operations ---------------------------------------------------------------------

    def initialize_user(
        self, account: str, credits: int | None, reason: str | None
    ) -> Operation[InitResult]:
        account = v.account(account)
        amount = self.options.default_credits if credits is None else v.credits(credits)
        why = v.reason(reason)

        def decode(raw: Sequence[Any]) -> InitResult:
            status = _text(raw[0])
            if status == "ok":
                entry = entry_from_values(raw[2], raw[3:])
                return InitResult(
                    account=account, created=True, balance=entry.balance_after, entry=entry
                )
            if status == "exists":
                return InitResult(account=account, created=False, balance=int(_text(raw[1])))
            raise _script_error(status, raw, account, None, None)

        keys = self._keys_of(account)
        return Operation(
            name="initialize_user",
            request=ScriptCall(
                script=SCRIPTS.initialize,
                keys=keys.script_keys,
                args=("", "", *self._argv_tail, str(amount), why),
            ),
            decode=decode,
        )

    def get_balance(self, account: str) -> Operation[int]:
        account = v.account(account)
        unset = self.options.default_credits if self.options.auto_initialize else 0

        def decode(raw: Any) -> int:
            return unset if raw is None else int(raw)

        return Operation(
            name="get_balance",
            request=CommandCall(args=("GET", self.keys.balance(account))),
            decode=decode,
        )

    def debit(
        self,
        account: str,
        amount: int,
        action: str,
        reason: str | None,
        metadata: dict[str, Any] | None,
        idempotency_key: str | None,
    ) -> Operation[MutationResult]:
        account = v.account(account)
        params = (
            str(v.amount(amount)),
            v.label(action, "action", required=True),
            v.reason(reason),
            v.metadata(metadata),
        )
        return self._mutation("debit", SCRIPTS.debit, account, idempotency_key, params, action)

    def credit(
        self,
        account: str,
        amount: int,
        source: str | None,
        reason: str | None,
        metadata: dict[str, Any] | None,
        idempotency_key: str | None,
    ) -> Operation[MutationResult]:
        account = v.account(account)
        params = (
            str(v.amount(amount)),
            v.label(source, "source"),
            v.reason(reason),
            v.metadata(metadata),
        )
        return self._mutation("credit", SCRIPTS.credit, account, idempotency_key, params, source)

    def adjust(
        self,
        account: str,
        delta: int,
        allow_overdraft: bool,
        action: str | None,
        reason: str | None,
        metadata: dict[str, Any] | None,
        idempotency_key: str | None,
    ) -> Operation[MutationResult]:
        account = v.account(account)
        params = (
            str(v.signed_delta(delta)),
            "1" if v.flag(allow_overdraft, "allow_overdraft") else "0",
            v.label(action, "action"),
            v.reason(reason),
            v.metadata(metadata),
        )
        return self._mutation("adjust", SCRIPTS.adjust, account, idempotency_key, params, action)

    def refund(
        self,
        account: str,
        entry_id: str,
        amount: int | None,
        reason: str | None,
        metadata: dict[str, Any] | None,
        idempotency_key: str | None,
    ) -> Operation[MutationResult]:
        account = v.account(account)
        eid = v.entry_id(entry_id)
        params = (
            eid,
            "" if amount is None else str(v.amount(amount)),
            v.reason(reason),
            v.metadata(metadata),
        )
        if idempotency_key is None and amount is None:
            # A full refund happens at most once, so a key derived from the entry lets any
            # process retry it and get the first outcome back instead of an error.
            idempotency_key = f"refund:{eid}"
        return self._mutation(
            "refund",
            SCRIPTS.refund,
            account,
            idempotency_key,
            params,
            None,
            entry_id=eid,
            refund=True,
        )

    def history(self, account: str, limit: int, cursor: str | None) -> Operation[HistoryPage]:
        account = v.account(account)
        limit = v.history_limit(limit)
        start = "+" if cursor is None else "(" + v.entry_id(cursor, "cursor")

        def decode(raw: Sequence[Any]) -> HistoryPage:
            entries = [entry_from_fields(eid, fields) for eid, fields in raw[:limit]]
            more = len(raw) > limit
            return HistoryPage(
                account=account,
                entries=entries,
                next_cursor=entries[-1].id if more and entries else None,
            )

        return Operation(
            name="history",
            request=CommandCall(
                args=("XREVRANGE", self.keys.ledger(account), start, "-", "COUNT", str(limit + 1)),
            ),
            decode=decode,
        )


def _mutation_decoder(
    account: str, action: str | None, idempotency_key: str, entry_id: str | None
) -> Callable[[Any], MutationResult]:
    def decode(raw: Sequence[Any]) -> MutationResult:
        status = _text(raw[0])
        if status != "ok":
            raise _script_error(status, raw, account, action, entry_id, idempotency_key)
        entry = entry_from_values(raw[2], raw[3:])
        return MutationResult(
            account=account,
            balance=entry.balance_after,
            entry=entry,
            replayed=_text(raw[1]) == "1",
        )

    return decode


def _script_error(
    status: str,
    raw: Sequence[Any],
    account: str,
    action: str | None,
    entry_id: str | None,
    idempotency_key: str | None = None,
) -> CreditsError:
    """Map a script's refusal to the typed error a caller can act on."""
    args = [_text(x) for x in raw[1:]]
    if status == "insufficient":
        return InsufficientCreditsError(account, int(args[0]), int(args[1]), action)
    if status == "conflict":
        return IdempotencyConflictError(account, idempotency_key or "")
    if status == "overflow":
        return ValidationError(
            "amount", f"the balance {args[0]} plus {args[1]} would exceed {v.MAX_CREDITS}"
        )
    eid = entry_id or ""
    if status == "not_found":
        return EntryNotFoundError(account, eid)
    if status == "not_refundable":
        return RefundError(account, eid, f"a {args[0] or 'missing'} entry is not refundable")
    if status == "fully_refunded":
        return RefundError(account, eid, f"all {args[0]} credits were already refunded")
    if status == "refund_exceeds":
        return RefundError(
            account, eid, f"only {args[0]} credits are left to refund", refundable=int(args[0])
        )
    if status == "replay_gone":
        return CreditsError(
            f"the entry {args[0]} this idempotency key produced is no longer in the ledger"
        )
    return CreditsError(f"unexpected script reply {status!r}")
