"""Turning script replies into typed results, and script refusals into typed errors.

Pure functions shared by every operation builder; no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any, TypeVar

from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from . import validation as v
from .errors import (
    AccountClosedError,
    CreditsError,
    EntryNotFoundError,
    HoldExpiredError,
    HoldNotFoundError,
    HoldOverageError,
    IdempotencyConflictError,
    InsufficientCreditsError,
    RefundError,
    ValidationError,
)
from .models import EntryType, Hold, HoldState, LedgerEntry, MutationResult

M = TypeVar("M", bound=BaseModel)

_ENTRY_TYPES = {t.value: t for t in EntryType}

__all__ = [
    "entry_from_fields",
    "entry_from_values",
    "entry_type",
    "hold_decoder",
    "mutation_decoder",
    "script_error",
    "text",
    "user_metadata",
]


def text(value: Any) -> str:
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
        named = {text(k): val for k, val in fields.items()}
    elif tuple(fields[::2]) in _FIELD_ORDERS:
        return tuple(fields[1::2])
    else:
        named = dict(zip([text(k) for k in fields[::2]], fields[1::2], strict=True))
    return tuple(named.get(name) for name in _FIELDS)


def entry_from_fields(entry_id: Any, fields: Any) -> LedgerEntry:
    """Decode one stream entry as XRANGE/XREVRANGE return it.

    An entry some other writer put in the stream (an unknown type, a non-integer delta)
    becomes a CreditsError naming the entry, not a pydantic error from deep inside.
    """
    try:
        return entry_from_values(entry_id, _field_values(fields))
    except PydanticValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise CreditsError(
            f"ledger entry {text(entry_id)} is not in this SDK's format ({problems})"
        ) from None


_SC_MARK = '"_sc"'


def user_metadata(meta: Any) -> dict[str, Any]:
    """The caller's metadata of a stored entry: its JSON without the scripts' own ``_sc``
    member (fingerprint, call nonce, hold expiry; see lua/prelude.lua)."""
    if not meta:
        return {}
    raw = meta.decode() if type(meta) is bytes else meta
    parsed = v.as_dict(raw)
    if _SC_MARK in raw:
        parsed.pop("_sc", None)
    return parsed


_LOTS_RE = re.compile(r'^\{"_sc":\{[^}]*"l":"([^"]*)"')


def stored_lots(meta: Any) -> str | None:
    """The credit-lots record of a stored entry (its meta's ``_sc.l``), None without one."""
    if not meta:
        return None
    raw = meta.decode() if type(meta) is bytes else meta
    found = _LOTS_RE.match(raw)
    return (found.group(1) or None) if found else None


def entry_type(value: Any) -> EntryType | str:
    """A known type as its EntryType; a type this version does not know (written by a
    newer SDK in another app) as its raw text, never an error."""
    typ = text(value)
    return _ENTRY_TYPES.get(typ, typ)


def entry_from_values(entry_id: Any, values: Sequence[Any], lots: Any = None) -> LedgerEntry:
    """An entry from its id and its nine values in _FIELDS order (as the scripts reply),
    and its lots record (the scripts' 13th reply element; else read from a stored meta).

    Validated: pydantic-core's validation is faster than model_construct, and an entry
    written by another writer gets checked on the way in.
    """
    typ, delta, balance, action, app, reason, ref, idem, meta = values
    return LedgerEntry(
        id=entry_id,
        type=entry_type(typ or ""),
        delta=delta,
        balance_after=balance,
        action=action or None,
        app=app or None,
        reason=reason or None,
        ref=ref or None,
        idempotency_key=idem or None,
        metadata=user_metadata(meta),
        lots=(text(lots) or None) if lots is not None else stored_lots(meta),
    )


def _trusted(cls: type[M], fields: dict[str, Any]) -> M:
    """A model built from values this SDK's own scripts wrote, without re-validating them.

    A debit's reply is decoded on every call; validating two models costs more than the
    rest of the client's work on the hot path. This is what ``model_construct`` does, minus
    its per-field default handling; :data:`_TRUSTED_OK` checks at import that the result
    equals a validated model, and the validated path is used if pydantic ever differs.
    """
    obj = object.__new__(cls)
    object.__setattr__(obj, "__dict__", fields)
    object.__setattr__(obj, "__pydantic_fields_set__", _FIELD_SETS[cls])
    object.__setattr__(obj, "__pydantic_extra__", None)
    object.__setattr__(obj, "__pydantic_private__", None)
    return obj


_FIELD_SETS: dict[type[BaseModel], frozenset[str]] = {
    LedgerEntry: frozenset(LedgerEntry.model_fields),
    MutationResult: frozenset(MutationResult.model_fields),
}


def _own_entry(entry_id: Any, values: Sequence[Any], lots: Any = None) -> LedgerEntry:
    """An entry from one of this SDK's script replies (trusted), else validated."""
    if _TRUSTED_OK:
        try:
            typ, delta, balance, action, app, reason, ref, idem, meta = [
                x.decode() if type(x) is bytes else x for x in values
            ]
            return _trusted(
                LedgerEntry,
                {
                    "id": entry_id.decode() if type(entry_id) is bytes else entry_id,
                    "type": _ENTRY_TYPES[typ],
                    "delta": int(delta),
                    "balance_after": int(balance),
                    "action": action or None,
                    "app": app or None,
                    "reason": reason or None,
                    "ref": ref or None,
                    "idempotency_key": idem or None,
                    "metadata": user_metadata(meta),
                    "lots": (
                        ((lots.decode() if type(lots) is bytes else lots) or None)
                        if lots is not None
                        else stored_lots(meta)
                    ),
                },
            )
        except (KeyError, ValueError):
            pass  # not what our scripts write (another writer's entry): validate it
    return entry_from_values(entry_id, values, lots)


def _self_check() -> bool:
    values = ("debit", "-10", "90", "chat_message", "app", "", "", "k", '{"a":1}')
    entry = entry_from_values("1-0", values, "1-0:10")
    result = MutationResult(account="a", balance=90, entry=entry, replayed=False)
    try:
        fast = _trusted(LedgerEntry, dict(entry.__dict__))
        fast_result = _trusted(
            MutationResult, {"account": "a", "balance": 90, "entry": fast, "replayed": False}
        )
    except Exception:  # pragma: no cover - a pydantic without these internals
        return False
    return (
        fast == entry
        and fast_result == result
        and repr(fast) == repr(entry)
        and fast.model_dump() == entry.model_dump()
    )


_TRUSTED_OK = _self_check()


def mutation_decoder(
    account: str,
    action: str | None,
    idempotency_key: str,
    entry_id: str | None,
    amount_field: str = "amount",
) -> Callable[[Any], MutationResult]:
    def decode(raw: Sequence[Any]) -> MutationResult:
        status = text(raw[0])
        if status != "ok":
            raise script_error(
                status, raw, account, action, entry_id, idempotency_key, amount_field
            )
        entry = _own_entry(raw[2], raw[3:12], raw[12])
        fields: dict[str, Any] = {
            "account": account,
            "balance": entry.balance_after,
            "entry": entry,
            "replayed": raw[1] in (b"1", "1"),
        }
        if _TRUSTED_OK:
            return _trusted(MutationResult, fields)
        return MutationResult(**fields)

    return decode


def script_error(
    status: str,
    raw: Sequence[Any],
    account: str,
    action: str | None,
    entry_id: str | None,
    idempotency_key: str | None = None,
    amount_field: str = "amount",
) -> CreditsError:
    """Map a script's refusal to the typed error a caller can act on."""
    args = [text(x) for x in raw[1:]]
    if status == "insufficient":
        return InsufficientCreditsError(account, int(args[0]), int(args[1]), action)
    if status == "closed":
        return AccountClosedError(account, action)
    if status == "conflict":
        return IdempotencyConflictError(account, idempotency_key or "")
    if status == "overflow":
        return ValidationError(
            amount_field,
            f"the balance {args[0]} plus {args[1]} would leave the range of ±{v.MAX_CREDITS}",
        )
    if status == "expires_past":
        return ValidationError("expires_at", "must be in the future (by the server's clock)")
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
    if status == "hold_not_found":
        return HoldNotFoundError(account, args[0])
    if status == "hold_expired":
        return HoldExpiredError(account, args[0])
    if status == "hold_closed":
        return HoldNotFoundError(account, args[0], _HOLD_STATES[args[1]].value)
    if status == "overage":
        return HoldOverageError(account, entry_id or "", int(args[0]), int(args[1]))
    if status == "replay_gone":
        return CreditsError(
            f"the entry {args[0]} this idempotency key produced is no longer in the ledger"
        )
    return CreditsError(f"unexpected script reply {status!r}")


_HOLD_STATES = {
    "O": HoldState.OPEN,
    "S": HoldState.SETTLED,
    "R": HoldState.RELEASED,
    "E": HoldState.EXPIRED,
}


def hold_decoder(account: str, action: str, idempotency_key: str) -> Callable[[Any], Hold]:
    """Decode reserve's reply: the reserve entry, then the hold's record
    ('O|amount|expires_ms|action|app' while open; 'S|...', 'R|...', 'E|...' once closed)."""

    def decode(raw: Sequence[Any]) -> Hold:
        status = text(raw[0])
        if status != "ok":
            raise script_error(status, raw, account, action, None, idempotency_key)
        entry = entry_from_values(raw[2], raw[3:12], raw[12])
        record = text(raw[13]).split("|")
        expires = None
        if record[0] == "O":
            expires = datetime.fromtimestamp(int(record[2]) / 1000, tz=timezone.utc)
        return Hold(
            account=account,
            hold_id=entry.id,
            amount=entry.amount,
            action=entry.action,
            app=entry.app,
            state=_HOLD_STATES.get(record[0], HoldState.EXPIRED),
            expires_at=expires,
            balance=entry.balance_after,
            entry=entry,
            replayed=text(raw[1]) == "1",
        )

    return decode
