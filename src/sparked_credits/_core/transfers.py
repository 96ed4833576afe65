"""Operations on two accounts: transfers and referral rewards, as procedures of keyed steps.

Two accounts are two hash slots on a cluster, so no one script can move credits between
them. Each is a procedure (see ``steps``) of one-slot script calls, each keyed so that a
repeat replays it, whose entries point at each other:

Transfer ``K`` from A to B:

1. ``HSETNX xfer:{A} K <intent>``: the intent (to, amount, reason, when), so a crash after
   this point is found by :func:`recover_transfers` (``reconcile_all`` runs it).
2. ``adjust`` A by -amount, key ``transfer:K:out``, metadata ``{"transfer": {"to": B,
   "key": K}}``: takes the credits in consumption order and records the lots drawn.
3. one ``credit`` on B per (expiry, priority) of the lots drawn, key ``transfer:K:in:<i>``,
   source ``transfer``, metadata ``{"transfer": {"from": A, "entry": <out id>, "key": K}}``:
   the credits keep their expiry (a lot never outlives its source). A source lot that
   expired in between lapses instead (``lapsed``).
4. ``HDEL xfer:{A} K``.

Recovery rule: a repeat of the call with the same key finishes it (every step replays or
applies once). An intent older than a grace period whose step 2 left no idempotency record
never took anything: it is dropped (the transfer did not happen); one whose step 2 applied
is finished (steps 3 and 4). The idempotency records live as long as the client's
idempotency retention, so a transfer is finished well within it.

Referral rewards: the referred account's side first (``lua/referral.lua`` records
``referred_by`` in its referrals hash for good: once per referred account, ever), then the
referrer's (marked there for good, capped per UTC month). A repeat replays both sides, so
a crash between them is finished by sending the call again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from typing import Any

from ..control_models import ReferralResult, TransferResult
from ..errors import CreditsError, IdempotencyConflictError, ReferralError, ValidationError
from ..models import MutationResult
from . import validation as v
from .decoding import text
from .lots import DEFAULT_PRIORITY, IMPLICIT, decode_draws, parse_record
from .operations import Extras, Operations
from .protocol import SPECS
from .requests import CommandCall, Operation
from .steps import Steps

__all__ = [
    "MAX_TRANSFER_KEY_LENGTH",
    "TRANSFER_ACTION",
    "recover_transfers",
    "reward_referral",
    "transfer",
]

TRANSFER_ACTION = "transfer"
"""The out entry's action and the arriving lots' source."""

MAX_TRANSFER_KEY_LENGTH = v.MAX_IDEMPOTENCY_KEY_LENGTH - 24
"""Room for the steps' own keys (``transfer:<key>:in:<n>``)."""

_CREDIT, _REFERRAL = SPECS["credit"], SPECS["referral"]


def _command(
    name: str, *args: str, decode: Callable[[Any], Any] = lambda raw: raw
) -> Operation[Any]:
    return Operation(name=name, request=CommandCall(args=args), decode=decode)


def _intent(to_account: str, amount: int, reason: str, now_ms: int) -> str:
    return json.dumps({"to": to_account, "amount": amount, "reason": reason, "at": now_ms})


def _same_transfer(stored: str, to_account: str, amount: int, reason: str) -> bool:
    try:
        found = json.loads(stored)
    except ValueError:
        return False
    return bool(
        found.get("to") == to_account
        and found.get("amount") == amount
        and found.get("reason") == reason
    )


def transfer(
    ops: Operations,
    from_account: str,
    to_account: str,
    amount: int,
    *,
    idempotency_key: str,
    reason: str | None,
    now_ms: int,
) -> Steps[TransferResult]:
    """Move ``amount`` credits from one account to another, exactly once per key."""
    src = v.account(from_account)
    dst = v.account(to_account)
    if src == dst:
        raise ValidationError("to_account", "must be another account than from_account")
    credits = v.amount(amount)
    key = v.idempotency_key(idempotency_key)
    if len(key) > MAX_TRANSFER_KEY_LENGTH:
        raise ValidationError(
            "idempotency_key", f"must be at most {MAX_TRANSFER_KEY_LENGTH} characters"
        )
    why = v.reason(reason)
    pending = ops.keys.account(src).transfers
    while True:
        created = yield _command(
            "transfer", "HSETNX", pending, key, _intent(dst, credits, why, now_ms), decode=int
        )
        if created:
            break
        stored = yield _command("transfer", "HGET", pending, key)
        if stored is None:
            continue  # finished (and removed) by another call in between: write it again
        if not _same_transfer(text(stored), dst, credits, why):
            raise IdempotencyConflictError(src, key)
        break
    result: TransferResult = yield from _finish(ops, src, dst, credits, key, why, created == 1)
    return result


def _finish(
    ops: Operations, src: str, dst: str, amount: int, key: str, reason: str, fresh: bool
) -> Steps[TransferResult]:
    """Steps 2 to 4 (see the module's docstring); ``fresh``: this call wrote the intent, so
    a refusal of step 2 (nothing taken) removes it."""
    src_keys = ops.keys.account(src)
    try:
        out: MutationResult = yield ops.adjust(
            src,
            -amount,
            allow_overdraft=False,
            action=TRANSFER_ACTION,
            extras=Extras(
                reason=reason or None,
                metadata={"transfer": {"to": dst, "key": key}},
                idempotency_key=f"transfer:{key}:out",
            ),
        )
    except CreditsError as exc:
        if fresh and exc.http_status < 500:
            yield _command("transfer", "HDEL", src_keys.transfers, key)
        raise
    draws = decode_draws(out.entry.lots)
    tracked = [lot_id for lot_id, _ in draws if lot_id != IMPLICIT]
    records: list[Any] = []
    if tracked:
        records = yield _command("transfer", "HMGET", src_keys.lots, *tracked)
    found = dict(zip(tracked, records, strict=True))
    groups: dict[tuple[int | None, int], int] = {}
    for lot_id, n in draws:
        raw = found.get(lot_id)
        if raw is None:  # the implicit lot, or a record gone: never expiring
            shape: tuple[int | None, int] = (None, DEFAULT_PRIORITY)
        else:
            lot = parse_record(lot_id, text(raw))
            shape = (lot.expires_ms, lot.priority)
        groups[shape] = groups.get(shape, 0) + n
    arrived: list[MutationResult] = []
    lapsed = 0
    metadata = v.metadata({"transfer": {"from": src, "entry": out.entry.id, "key": key}})
    for index, ((expires_ms, priority), n) in enumerate(groups.items()):
        values = _CREDIT.values(
            amount=str(n),
            source=TRANSFER_ACTION,
            reason=reason,
            metadata=metadata,
            priority=str(priority),
            expires_ms="" if expires_ms is None else str(expires_ms),
        )
        try:
            # Built here, not by ops.credit: its expiry check against this machine's clock
            # must not stop the replay of a lot that arrived before it expired.
            arrived.append(
                (
                    yield ops._mutation(
                        _CREDIT,
                        dst,
                        values,
                        idempotency_key=f"transfer:{key}:in:{index}",
                        action=TRANSFER_ACTION,
                    )
                )
            )
        except ValidationError as exc:
            if exc.field != "expires_at":
                raise
            lapsed += n
    yield _command("transfer", "HDEL", src_keys.transfers, key)
    return TransferResult(
        from_account=src,
        to_account=dst,
        amount=amount,
        idempotency_key=key,
        out=out,
        arrived=arrived,
        lapsed=lapsed,
        replayed=out.replayed,
    )


def recover_transfers(
    ops: Operations, account: str | None, *, older_than_ms: int, now_ms: int
) -> Steps[int]:
    """Finish or drop the transfers out of ``account`` (None: every account with one, by
    SCAN) whose intent is older than ``older_than_ms``; returns how many were settled."""
    if account is None:
        accounts: list[str] = yield ops.scan_accounts("xfer", "recover_transfers")
    else:
        accounts = [v.account(account)]
    settled = 0
    for src in accounts:
        keys = ops.keys.account(src)
        flat: Sequence[Any] = yield _command("recover_transfers", "HGETALL", keys.transfers)
        pairs = _pairs(flat)
        for key, stored in pairs:
            try:
                intent = json.loads(stored)
                dst, amount = str(intent["to"]), int(intent["amount"])
                reason, at = str(intent.get("reason") or ""), int(intent["at"])
            except (ValueError, KeyError, TypeError):
                continue
            if now_ms - at < older_than_ms:
                continue
            out_key = f"transfer:{key}:out"
            applied = yield _command("recover_transfers", "HGET", keys.idempotency, out_key)
            if applied is None:
                applied = yield _command(
                    "recover_transfers", "HGET", keys.idempotency_previous, out_key
                )
            if applied is None:
                yield _command("recover_transfers", "HDEL", keys.transfers, key)
            else:
                yield from _finish(ops, src, dst, amount, key, reason, False)
            settled += 1
    return settled


def _pairs(flat: Any) -> list[tuple[str, str]]:
    """HGETALL's reply as (field, value) pairs, whether flat (RESP2) or a dict (RESP3)."""
    if isinstance(flat, dict):
        return [(text(k), text(v_)) for k, v_ in flat.items()]
    items = [text(x) for x in flat]
    return list(zip(items[::2], items[1::2], strict=True))


def reward_referral(
    ops: Operations,
    referrer: str,
    referred: str,
    *,
    referrer_credits: int,
    referred_credits: int,
    expires_at: object,
    monthly_cap: int | None,
) -> Steps[ReferralResult]:
    """Reward a referral on both sides, once per referred account ever (see the module's
    docstring)."""
    by = v.account(referrer)
    new = v.account(referred)
    if by == new:
        raise ValidationError("referred", "an account cannot refer itself")
    for_new = v.amount(referred_credits, "referred_credits")
    for_by = v.amount(referrer_credits, "referrer_credits")
    expires_ms = v.expires_at(expires_at)
    cap = 0 if monthly_cap is None else v.amount(monthly_cap, "monthly_cap")
    expires = "" if expires_ms is None else str(expires_ms)
    first: MutationResult = yield _referral_side(
        ops, new, "referred", by, for_new, expires, 0, {"referral": {"referrer": by}}, new
    )
    second: MutationResult | None
    try:
        second = yield _referral_side(
            ops,
            by,
            "referrer",
            new,
            for_by,
            expires,
            cap,
            {"referral": {"referred": new, "entry": first.entry.id}},
            new,
        )
    except ReferralError as exc:
        if exc.reason != "capped":
            raise
        second = None
    return ReferralResult(
        referrer=by,
        referred=new,
        referred_reward=first,
        referrer_reward=second,
        capped=second is None,
        replayed=first.replayed and (second is None or second.replayed),
    )


def _referral_side(
    ops: Operations,
    account: str,
    role: str,
    other: str,
    amount: int,
    expires_ms: str,
    cap: int,
    metadata: dict[str, Any],
    referred: str,
) -> Operation[MutationResult]:
    values = _REFERRAL.values(
        role=role,
        other=other,
        amount=str(amount),
        expires_ms=expires_ms,
        cap=str(cap),
        reason="",
        metadata=v.metadata(metadata),
    )
    # The key only labels the entries (the controls hash's marks decide): short, so any
    # account id fits.
    label = hashlib.blake2b(referred.encode(), digest_size=9).hexdigest()
    return ops._mutation(
        _REFERRAL, account, values, idempotency_key=f"referral:{label}", action="referral"
    )
