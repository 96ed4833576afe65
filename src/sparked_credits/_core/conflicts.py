"""Which parameters of a call differ from the first call of its idempotency key.

The scripts compare a fingerprint (a hash): enough to refuse a different call, not to say
what differs. On that refusal only (never on the hot path), :func:`explain_conflict`
reads the key's record and the first call's ledger entry (two reads) and compares what
the entry keeps of each fingerprint parameter with the call's: the amount, action or
source, reason, metadata, the refunded entry or hold, a grant's priority and expiry, a
reservation's ttl. What an entry does not keep (the flags, a settle's actual amount) is
named only when nothing it does keep differs: "one of these".
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import IdempotencyConflictError
from ..models import LedgerEntry
from .decoding import entry_from_fields, text
from .keys import KeySpace
from .protocol import SPECS
from .requests import CommandCall, Operation, ScriptCall
from .steps import Steps

__all__ = ["differences", "explain_conflict"]

_OWN_ARGS_AT = 8
"""A script's own arguments start at ARGV[9]: after the key, the fingerprint, the four
per-client values, the nonce and the legacy fingerprint."""

PUBLIC_NAMES = {
    "expires_ms": "expires_at",
    "ttl_ms": "ttl",
    "entry_id": "entry_id",
}
"""Script argument -> the name the caller passed it as."""

_EXPIRY = re.compile(r'"x":(\d+)')


def _metadata(value: str) -> Any:
    return json.loads(value) if value else {}


def _opened(entry: LedgerEntry) -> tuple[str, str]:
    """(priority, expires ms) of the lot an entry opened ('+priority[:expires]')."""
    record = entry.lots or ""
    if not record.startswith("+"):
        return "", ""
    priority, _, expires = record[1:].partition(":")
    return priority, expires


_Check = Callable[[str, LedgerEntry, str], bool | None]


def _same_amount(value: str, entry: LedgerEntry, _raw: str) -> bool | None:
    return None if value == "" else int(value) == abs(entry.delta)


def _same_text(field: str) -> _Check:
    def check(value: str, entry: LedgerEntry, _raw: str) -> bool | None:
        return value == (getattr(entry, field) or "")

    return check


def _same_ttl(value: str, entry: LedgerEntry, raw_meta: str) -> bool | None:
    found = _EXPIRY.search(raw_meta)
    if not found or not value:
        return None
    # The hold's expiry is the server time at the reserve plus its ttl: compare the ttl
    # within the clock's millisecond (a different ttl differs by far more).
    ttl = int(found.group(1)) - int(entry.id.split("-", 1)[0])
    return abs(ttl - int(value)) <= 1


_CHECKS: Mapping[str, _Check] = {
    "amount": _same_amount,
    "delta": lambda value, entry, _: int(value) == entry.delta,
    "credits": _same_amount,
    "action": _same_text("action"),
    "source": _same_text("action"),
    "reason": _same_text("reason"),
    "metadata": lambda value, entry, _: _metadata(value) == entry.metadata,
    "entry_id": _same_text("ref"),
    "hold_id": _same_text("ref"),
    "priority": lambda value, entry, _: value == _opened(entry)[0],
    "expires_ms": lambda value, entry, _: value == _opened(entry)[1],
    "ttl_ms": _same_ttl,
}
"""How each fingerprint argument is found in the first call's entry (None: not kept)."""

_TYPES = {"close": "close_account"}


def differences(
    operation: str, named: Mapping[str, str], fingerprint: tuple[str, ...], entry: LedgerEntry,
    raw_meta: str,
) -> list[str]:
    """The caller-facing names of the parameters that differ between this call
    (``named``: its script arguments) and the first call's ``entry``."""
    if _TYPES.get(entry.type_name, entry.type_name) != operation:
        return ["operation"]
    differ: list[str] = []
    unknown: list[str] = []
    for name in fingerprint:
        check = _CHECKS.get(name)
        same = None if check is None else check(named.get(name, ""), entry, raw_meta)
        public = PUBLIC_NAMES.get(name, name)
        if same is None:
            unknown.append(public)
        elif not same:
            differ.append(public)
    return differ or unknown


def _read(*args: str) -> Operation[Any]:
    return Operation(name="idempotency_conflict", request=CommandCall(args), decode=_raw)


def _raw(reply: Any) -> Any:
    return reply


def explain_conflict(
    keys: KeySpace, op: Operation[Any], error: IdempotencyConflictError
) -> Steps[IdempotencyConflictError]:
    """The same error, naming what differs (``error.differs``); reads the key's record
    and its entry. An error it cannot explain (the entry is gone) comes back as it was."""
    call = op.request
    if not isinstance(call, ScriptCall):
        return error
    spec = SPECS.get(call.script.name)
    if spec is None or not spec.keyed:
        return error
    account_keys = keys.account(error.account)
    key = call.args[0]
    record = yield _read("HGET", account_keys.idempotency, key)
    if record is None:
        record = yield _read("HGET", account_keys.idempotency_previous, key)
    if record is None:
        return error
    entry_id = text(record).partition("|")[2]
    found = yield _read("XRANGE", account_keys.ledger, entry_id, entry_id)
    if not found:
        return error
    raw_id, fields = found[0]
    entry = entry_from_fields(raw_id, fields)
    raw_fields = fields if isinstance(fields, dict) else dict(
        zip([text(k) for k in fields[::2]], fields[1::2], strict=True)
    )
    raw_meta = next((text(v) for k, v in raw_fields.items() if text(k) == "meta"), "")
    values = call.args[_OWN_ARGS_AT:]
    named = dict(zip(spec.args, values, strict=False))
    fingerprint = spec.fingerprint or spec.args
    differs = differences(spec.operation, named, fingerprint, entry, raw_meta)
    return IdempotencyConflictError(error.account, error.idempotency_key, differs=differs,
                                    first_entry=entry.id)
