"""Turning script replies into typed results, and script refusals into typed errors.

One decoder: every entry, from a script's reply or from XRANGE, becomes the same dict of
raw values, which pydantic validates in one call together with the result around it (a
mutation's result and its entry are one ``model_validate``; no model is built around
pydantic's back). The fast path is reading by position: script replies always carry the
nine values in the scripts' field order, and stream entries written by this SDK (or the
TypeScript one) have that order too; only another writer's entry is read by name.
Refusals map to typed errors through :data:`.protocol.REFUSALS`, a table.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from functools import partial
from typing import Any

from pydantic import ValidationError as PydanticValidationError

from ..errors import CreditsError
from ..models import EntryType, Hold, HoldState, LedgerEntry, MutationResult
from . import validation as v
from .protocol import Context, refusal

_ENTRY_TYPES: dict[Any, EntryType] = {
    **{t.value: t for t in EntryType},
    **{t.value.encode(): t for t in EntryType},
}

__all__ = [
    "FIELDS",
    "decode_mutation",
    "entry_from_fields",
    "entry_from_values",
    "entry_type",
    "field_values",
    "hold_decoder",
    "mutation_decoder",
    "script_error",
    "stored_lots",
    "text",
    "user_metadata",
]


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# The field order this SDK's scripts write (see lua/prelude.lua, append()).
_FIELDS = ("type", "delta", "balance", "action", "app", "reason", "ref", "idem", "meta")
FIELDS = _FIELDS
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


field_values = _field_values
"""The nine values of a stream entry's fields, in the scripts' order (the archive's rows)."""


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
    known = _ENTRY_TYPES.get(value)
    if known is not None:
        return known
    typ = text(value)
    return _ENTRY_TYPES.get(typ, typ)


def _entry_dict(entry_id: Any, values: Sequence[Any], lots: Any = None) -> dict[str, Any]:
    """The fields of a LedgerEntry from its id and nine values in _FIELDS order, raw as
    the client returned them (bytes or str): pydantic converts them while it validates.
    ``lots`` is the scripts' 13th reply element (a fresh entry's reply carries the
    caller's meta, without '_sc'); a stored entry's lots are read from its meta."""
    typ, delta, balance, action, app, reason, ref, idem, meta = values
    return {
        "id": entry_id,
        "type": entry_type(typ or ""),
        "delta": delta,
        "balance_after": balance,
        "action": action or None,
        "app": app or None,
        "reason": reason or None,
        "ref": ref or None,
        "idempotency_key": idem or None,
        "metadata": user_metadata(meta),
        "lots": (text(lots) or None) if lots is not None else stored_lots(meta),
    }


def entry_from_values(entry_id: Any, values: Sequence[Any], lots: Any = None) -> LedgerEntry:
    """An entry from its id and its nine values in _FIELDS order (as the scripts reply),
    and its lots record (see _entry_dict)."""
    return LedgerEntry.model_validate(_entry_dict(entry_id, values, lots))


def script_error(status: str, raw: Sequence[Any], context: Context) -> CreditsError:
    """The typed error for a script's refusal (see protocol.REFUSALS)."""
    return refusal(status, raw[1:], context)


def decode_mutation(
    account: str,
    action: str | None,
    entry_id: str | None,
    idempotency_key: str | None,
    amount_field: str,
    raw: Sequence[Any],
) -> MutationResult:
    """A mutation's reply, ``{'ok', replayed, id, nine values, lots}``, as its result, or
    a refusal as its typed error. The call's context comes as plain arguments (bound with
    ``functools.partial`` by :func:`mutation_decoder`) and becomes a Context only for a
    refusal: every debit makes a decoder, few of them refuse."""
    status = raw[0]
    if status != b"ok" and status != "ok":
        context = Context(account, action, entry_id, idempotency_key, amount_field)
        raise script_error(text(status), raw, context)
    result = {
        "account": account,
        "balance": raw[5],
        "entry": _entry_dict(raw[2], raw[3:12], raw[12] if len(raw) > 12 else None),
        "replayed": raw[1] == b"1" or raw[1] == "1",
    }
    if len(raw) > 14:
        # Credits lapsed in the call (lots past their expiry, before the entry, or given
        # back to after it): the balance after the whole call, and what lapsed.
        result["balance"], result["lapsed"] = raw[13], raw[14]
    return MutationResult.model_validate(result)


def mutation_decoder(
    account: str,
    action: str | None = None,
    entry_id: str | None = None,
    idempotency_key: str | None = None,
    amount_field: str = "amount",
) -> Callable[[Any], MutationResult]:
    """The decoder of one mutation call (see decode_mutation): a partial, which costs a
    third of a closure over a Context to make."""
    return partial(decode_mutation, account, action, entry_id, idempotency_key, amount_field)


_HOLD_STATES = {
    "O": HoldState.OPEN,
    "S": HoldState.SETTLED,
    "R": HoldState.RELEASED,
    "E": HoldState.EXPIRED,
}


def hold_decoder(context: Context) -> Callable[[Any], Hold]:
    """Decode reserve's reply: the reserve entry (and its lots), then the hold's record
    ('O|amount|expires_ms|action|app' while open; 'S|...', 'R|...', 'E|...' once closed)."""
    account = context.account

    def decode(raw: Sequence[Any]) -> Hold:
        status = text(raw[0])
        if status != "ok":
            raise script_error(status, raw, context)
        entry = _entry_dict(raw[2], raw[3:12], raw[12] if len(raw) > 13 else None)
        record = text(raw[-1]).split("|")
        expires = None
        if record[0] == "O":
            expires = datetime.fromtimestamp(int(record[2]) / 1000, tz=timezone.utc)
        return Hold.model_validate(
            {
                "account": account,
                "hold_id": entry["id"],
                "amount": abs(int(entry["delta"])),
                "action": entry["action"],
                "app": entry["app"],
                "state": _HOLD_STATES.get(record[0], HoldState.EXPIRED),
                "expires_at": expires,
                "balance": entry["balance_after"],
                "entry": entry,
                "replayed": text(raw[1]) == "1",
            }
        )

    return decode
