"""Money in, at the core: purchases, revokes and period allocations as operations.

Provider-agnostic: a purchase is a credit lot keyed by the payment provider's payment id
(``lua/purchase.lua``), once ever; a clawback (refund, dispute) revokes the unspent part of
that lot, found by the same key (``lua/revoke.lua``); a subscription period's credits are an
allocation, once ever per (account, period), that carries the previous period's unused
credits up to a cap and lapses the rest in the same script (``lua/allocate.lua``). Each is
one script call in the account's slot; adapters for a provider (``billing/``) only map its
events onto these calls. Built like :mod:`.operations` (validate, one request, decode).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from ..errors import ValidationError
from ..models import AllocationResult, MutationResult, RevokeResult
from . import validation as v
from .decoding import _entry_dict, decode_mutation, script_error, text
from .lots import DEFAULT_PRIORITY
from .operations import Extras, Operations, _key_or_new, _metadata
from .protocol import SPECS, Context
from .requests import Operation

__all__ = [
    "LOT_KEY_KINDS",
    "allocate",
    "allocation_key",
    "grant_ref",
    "purchase",
    "purchase_key",
    "revoke",
]

_PURCHASE, _REVOKE, _ALLOCATE = SPECS["purchase"], SPECS["revoke"], SPECS["allocate"]

LOT_KEY_KINDS = ("purchase", "allocate")
"""The kinds of key that name a lot in place of its id: ``purchase:<payment id>`` and
``allocate:<period id>``."""

_STREAM_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")


def purchase_key(payment_id: str) -> str:
    """How revoke() names the lot a payment opened."""
    return f"purchase:{v.label(payment_id, 'payment_id', required=True)}"


def allocation_key(period_id: str) -> str:
    """How revoke() names the lot a period's allocation opened."""
    return f"allocate:{v.label(period_id, 'period_id', required=True)}"


def grant_ref(value: object) -> str:
    """A lot: its id ('<ms>-<seq>'), or the key that opened it (purchase:/allocate:)."""
    if isinstance(value, str) and _STREAM_ID.fullmatch(value):
        return v.entry_id(value, "grant_id")
    if isinstance(value, str):
        kind, _, rest = value.partition(":")
        if kind in LOT_KEY_KINDS and rest:
            v.label(rest, "grant_id", required=True)
            return value
    if not isinstance(value, str):
        raise ValidationError("grant_id", f"must be a str, got {type(value).__name__}")
    raise ValidationError(
        "grant_id", "must be a lot id like '1732406400000-0', 'purchase:<id>' or 'allocate:<id>'"
    )


def purchase(
    ops: Operations,
    account: str,
    amount: int,
    *,
    payment_id: str,
    source: str = "purchase",
    expires_at: object = None,
    priority: object = DEFAULT_PRIORITY,
    reason: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> Operation[MutationResult]:
    """A lot keyed by ``payment_id``, once ever (its key is ``purchase:<payment id>``)."""
    account = v.account(account)
    key = purchase_key(payment_id)
    expires_ms = v.expires_at(expires_at)
    values = _PURCHASE.values(
        amount=str(v.amount(amount)),
        payment_id=key.partition(":")[2],
        source=v.source(source),
        reason=v.reason(reason),
        metadata=_metadata(metadata),
        priority=str(v.priority(priority)),
        expires_ms="" if expires_ms is None else str(expires_ms),
    )
    return ops._mutation(_PURCHASE, account, values, idempotency_key=key, action=source)


def revoke(
    ops: Operations,
    account: str,
    grant_id: str,
    amount: int | None,
    *,
    extras: Extras,
) -> Operation[RevokeResult]:
    """Take back up to ``amount`` (None: all the lot still owes) of a lot's unspent credits.
    A caller's idempotency key is kept forever (refunds and disputes arrive for days)."""
    account = v.account(account)
    ref = grant_ref(grant_id)
    given = extras.idempotency_key is not None
    values = _REVOKE.values(
        grant_id=ref,
        amount="" if amount is None else str(v.amount(amount)),
        reason=v.reason(extras.reason),
        metadata=_metadata(extras.metadata),
        once="1" if given else "0",
    )
    key, nonce = _key_or_new(extras.idempotency_key)
    context = Context(account, None, ref, key)

    def decode(raw: Sequence[Any]) -> RevokeResult:
        status = text(raw[0])
        if status != "revoked":
            raise script_error(status, raw, context)
        entry = None
        if len(raw) > 5:
            entry = _entry_dict(raw[7], raw[8:17], raw[17] if len(raw) > 17 else None)
        return RevokeResult.model_validate(
            {
                "account": account,
                "revoked": raw[2],
                "unrecoverable": raw[3],
                "balance": raw[4],
                "entry": entry,
                "replayed": text(raw[1]) == "1",
            }
        )

    return Operation(
        name=_REVOKE.operation,
        request=ops._script_call(_REVOKE, account, key=key, nonce=nonce, values=values),
        decode=decode,
        idempotency_key=key,
    )


def allocate(
    ops: Operations,
    account: str,
    amount: int,
    *,
    period_id: str,
    expires_at: object,
    rollover_cap: int,
    source: str,
    priority: object,
    reason: str | None,
    metadata: dict[str, Any] | None,
) -> Operation[AllocationResult]:
    """One period's credits, once ever per (account, period_id); its key is
    ``allocate:<period id>``, so a second call replays and other parameters conflict."""
    account = v.account(account)
    key = allocation_key(period_id)
    if expires_at is None:
        raise ValidationError("expires_at", "is required: an allocation ends with its period")
    expires_ms = v.expires_at(expires_at)
    values = _ALLOCATE.values(
        amount=str(v.amount(amount)),
        period_id=key.partition(":")[2],
        expires_ms=str(expires_ms),
        rollover_cap=str(v.credits(rollover_cap, "rollover_cap")),
        source=v.source(source),
        priority=str(v.priority(priority)),
        reason=v.reason(reason),
        metadata=_metadata(metadata),
    )
    key, nonce = _key_or_new(key)
    context = Context(account, source, None, key)

    def decode(raw: Sequence[Any]) -> AllocationResult:
        status = text(raw[0])
        if status != "allocated":
            raise script_error(status, raw, context)
        mutation = decode_mutation(account, source, None, key, "amount", raw[6:])
        return AllocationResult.model_validate(
            {
                "account": account,
                "grant_id": text(raw[2]),
                "rolled_over": raw[3],
                "expired": raw[4],
                "balance": raw[5],
                "entry": mutation.entry,
                "replayed": text(raw[1]) == "1",
            }
        )

    return Operation(
        name=_ALLOCATE.operation,
        request=ops._script_call(_ALLOCATE, account, key=key, nonce=nonce, values=values),
        decode=decode,
        idempotency_key=key,
    )
