"""Money in, provider-agnostic: what a payment provider's events do to the ledger.

An adapter for a provider (``billing/stripe.py``; a PayPal one would be the second) does
two things and nothing else:

1. verify a delivery (the provider's signature over the raw body) and parse it;
2. translate each event into one of the :data:`PaymentEvent` models below (or
   :class:`Ignored`), with the provider's own ids in it.

Everything else is here, once: :func:`apply_payment_event` maps a PaymentEvent onto the
SDK's once-ever calls, so that each **payment** is credited exactly once whichever event
type, delivery or process brings it, in any order:

* :class:`PaymentSucceeded` -> ``purchase()``: a lot keyed ``purchase:<provider>:<payment
  id>`` (the same payment can never be credited twice), after the paid amount and currency
  are checked against the catalog pack (a mismatch credits nothing and is reported).
* :class:`PaymentRefunded` -> ``revoke()`` of the refunded share of that lot's credits:
  the credits for the payment's cumulative refunded amount, rounded DOWN (the buyer keeps a
  fraction of a credit), less those for the amount refunded before this refund; a full
  refund takes everything the lot still owes. Keyed by the cumulative amount, so each
  partial refund is revoked once, in any order.
* :class:`PaymentDisputed` -> ``revoke()`` of the disputed share, keyed by the dispute;
  :class:`DisputeWon` -> the same revoke (a replay, or its first run when the close
  arrives first) and a new purchase lot of what it took, keyed by the dispute.
* :class:`PeriodPaid` -> ``allocate()`` of the plan's credits for that period, expiring
  at the period's end plus the plan's grace days, with the plan's rollover cap; once per
  (subscription, period start).
  When the plan names a ``tier``, ``set_plan_tier`` too: once per period, never by an
  older period than the one that set it last (see :func:`_plan_tier`).
* :class:`SubscriptionEnded` -> no ledger entry: later periods of that subscription are
  not allocated; the current allocation runs to its end.
* :class:`CustomerLinked` -> remembers which account a provider customer is.

What a refund or a dispute needs to find (the account, the credits bought, the amount paid)
is written to a small directory beside the ledger before the purchase
(``payment:<provider>:<payment id>``); an event that arrives before the purchase it refers
to is answered :attr:`Outcome.pending` (HTTP 409), so the provider delivers it again later.

The procedure is a generator of client calls (:class:`Call`), driven by
:func:`run_payment_event` (sync client) or :func:`arun_payment_event` (async client).
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from datetime import datetime, timedelta, timezone
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .._core import validation as v
from .._core.requests import CommandCall, Operation
from .._drive import drive, drive_async
from ..control_models import PlanTierResult
from ..errors import EntryNotFoundError, IdempotencyConflictError, ValidationError
from ..models import AllocationResult, MutationResult, RevokeResult
from ..pricing import Catalog

__all__ = [
    "Call",
    "CustomerLinked",
    "DisputeWon",
    "Ignored",
    "Outcome",
    "PaymentDisputed",
    "PaymentEvent",
    "PaymentOutcome",
    "PaymentRefunded",
    "PaymentSucceeded",
    "PeriodPaid",
    "SubscriptionEnded",
    "apply_payment_event",
    "arun_payment_event",
    "run_payment_event",
]

_ID = r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,63}$"


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    provider: str = Field(pattern=r"^[a-z][a-z0-9_]{0,15}$", description="'stripe', 'paypal'")


class PaymentSucceeded(_Event):
    """A one-time payment for a pack was captured."""

    kind: Literal["payment_succeeded"] = "payment_succeeded"
    payment_id: str = Field(pattern=_ID)
    account: str
    pack: str = Field(pattern=_ID)
    amount: int = Field(ge=0, description="Paid, in the currency's smallest unit.")
    currency: str
    paid_at: datetime
    customer_id: str | None = Field(
        default=None,
        pattern=_ID,
        description="The provider's customer who paid, if any: linked to the account (first "
        "link wins), which is what lets automatic top-up use that customer's card.",
    )


class PaymentRefunded(_Event):
    """Part or all of a payment was refunded; ``refunded_total`` is cumulative."""

    kind: Literal["payment_refunded"] = "payment_refunded"
    payment_id: str = Field(pattern=_ID)
    refunded_total: int = Field(ge=1)
    refunded_before: int | None = Field(
        default=None, ge=0, description="Cumulative before this refund; None: not known."
    )
    amount_paid: int = Field(ge=1)


class PaymentDisputed(_Event):
    """The buyer disputed the payment (a chargeback): take the credits back now."""

    kind: Literal["payment_disputed"] = "payment_disputed"
    payment_id: str = Field(pattern=_ID)
    dispute_id: str = Field(pattern=_ID)
    amount: int = Field(ge=1)


class DisputeWon(_Event):
    """The merchant won the dispute: give back what the dispute took."""

    kind: Literal["dispute_won"] = "dispute_won"
    payment_id: str = Field(pattern=_ID)
    dispute_id: str = Field(pattern=_ID)
    amount: int = Field(ge=1)


class PeriodPaid(_Event):
    """A subscription's billing period was paid (its first, or a renewal)."""

    kind: Literal["period_paid"] = "period_paid"
    subscription_id: str = Field(pattern=_ID)
    account: str | None = None
    customer_id: str | None = Field(default=None, pattern=_ID)
    price: str = Field(pattern=_ID)
    period_start: datetime
    period_end: datetime


class SubscriptionEnded(_Event):
    """No further periods: the current allocation runs to its end."""

    kind: Literal["subscription_ended"] = "subscription_ended"
    subscription_id: str = Field(pattern=_ID)
    ended_at: datetime


class CustomerLinked(_Event):
    """A provider customer belongs to an account (a subscription checkout)."""

    kind: Literal["customer_linked"] = "customer_linked"
    customer_id: str = Field(pattern=_ID)
    account: str


class Ignored(BaseModel):
    """An event that writes nothing (irrelevant type, unpaid session...): acknowledged."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["ignored"] = "ignored"
    reason: str


PaymentEvent = (
    PaymentSucceeded
    | PaymentRefunded
    | PaymentDisputed
    | DisputeWon
    | PeriodPaid
    | SubscriptionEnded
    | CustomerLinked
    | Ignored
)


class Outcome(str, Enum):
    """What applying an event did."""

    credited = "credited"
    revoked = "revoked"
    restored = "restored"
    allocated = "allocated"
    recorded = "recorded"
    """Directory only (a customer link, a subscription's end): no ledger entry."""
    ignored = "ignored"
    mismatch = "mismatch"
    """The payment does not match the catalog (amount, currency, unknown pack or plan):
    nothing credited; reported for a person to look at."""
    pending = "pending"
    """It refers to a payment or customer not seen yet: deliver it again later (409)."""


class PaymentOutcome(BaseModel):
    """The result of one event: the HTTP edge answers 409 for ``pending``, else 200."""

    model_config = ConfigDict(frozen=True)

    outcome: Outcome
    detail: str = ""
    account: str | None = None
    credits: int = 0
    """Credits added (purchase, allocation, restore) or taken back (revoke)."""
    unrecoverable: int = 0
    """Credits a refund or dispute asked for that were already spent."""
    rolled_over: int = 0
    expired: int = 0
    balance: int | None = None
    replayed: bool = False
    """True when this payment effect had already been applied: nothing changed now."""
    tier: str | None = None
    """The spending tier a paid period's plan put the account on now (None: no change)."""

    @property
    def http_status(self) -> int:
        return 409 if self.outcome is Outcome.pending else 200


class Call:
    """One step of the procedure: a client method and its arguments, or a directory
    command (``op``) run through ``run_request_step``."""

    __slots__ = ("args", "kwargs", "method", "op")

    def __init__(
        self,
        method: str,
        *args: Any,
        op: Operation[Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self.method, self.args, self.kwargs, self.op = method, args, kwargs, op


Steps = Generator[Call, Any, PaymentOutcome]


# -- the directory: what refunds and renewals need to find ---------------------------------


def _directory_key(client: Any, kind: str, provider: str, ident: str) -> str:
    prefix: str = client.options.key_prefix
    return f"{prefix}{kind}:{provider}:{ident}"


def _text(raw: Any) -> str | None:
    if raw is None:
        return None
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def _get(client: Any, kind: str, provider: str, ident: str) -> Call:
    op = Operation(
        "billing_directory",
        CommandCall(("GET", _directory_key(client, kind, provider, ident))),
        _text,
    )
    return Call("run_request_step", op=op)


def _set(client: Any, kind: str, provider: str, ident: str, value: str) -> Call:
    key = _directory_key(client, kind, provider, ident)
    # The same value whoever writes it: safe to repeat, and never expires (refunds and
    # disputes arrive months later).
    op = Operation("billing_directory", CommandCall(("SET", key, value)), _text)
    return Call("run_request_step", op=op)


def _link(client: Any, provider: str, customer: str, account: str) -> Call:
    """Link a customer to the account that paid with it, unless it is linked already (a
    customer is one account's: a link is never moved by a payment)."""
    key = _directory_key(client, "customer", provider, customer)
    op = Operation("billing_directory", CommandCall(("SET", key, account, "NX")), _text)
    return Call("run_request_step", op=op)


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _share(credits: int, part: int, whole: int) -> int:
    """The credits for ``part`` of a payment of ``whole``: rounded down."""
    return credits * min(part, whole) // whole


def purchase_ref(provider: str, payment_id: str) -> str:
    """How ``revoke()`` names the lot of a provider's payment."""
    return f"purchase:{provider}:{payment_id}"


# -- the procedure --------------------------------------------------------------------------


def apply_payment_event(client: Any, event: PaymentEvent, catalog: Catalog) -> Steps:
    """The client calls that apply ``event``, once per payment effect (see the module)."""
    if isinstance(event, Ignored):
        return PaymentOutcome(outcome=Outcome.ignored, detail=event.reason)
    if isinstance(event, PaymentSucceeded):
        return (yield from _purchase(client, event, catalog))
    if isinstance(event, PaymentRefunded):
        return (yield from _refund(client, event))
    if isinstance(event, PaymentDisputed | DisputeWon):
        return (yield from _dispute(client, event))
    if isinstance(event, PeriodPaid):
        return (yield from _period(client, event, catalog))
    if isinstance(event, SubscriptionEnded):
        yield _set(
            client, "subend", event.provider, event.subscription_id, str(_ms(event.ended_at))
        )
        return PaymentOutcome(outcome=Outcome.recorded, detail="no further allocations")
    account = v.account(event.account)
    yield _set(client, "customer", event.provider, event.customer_id, account)
    return PaymentOutcome(outcome=Outcome.recorded, account=account, detail="customer linked")


def _purchase(client: Any, event: PaymentSucceeded, catalog: Catalog) -> Steps:
    account = v.account(event.account)
    pack = catalog.packs.get(event.pack)
    if pack is None:
        return PaymentOutcome(
            outcome=Outcome.mismatch, account=account, detail=f"unknown pack {event.pack!r}"
        )
    if (event.amount, event.currency.lower()) != (pack.amount, pack.currency):
        return PaymentOutcome(
            outcome=Outcome.mismatch,
            account=account,
            detail=f"paid {event.amount} {event.currency}, pack {event.pack!r} costs "
            f"{pack.amount} {pack.currency}: nothing credited",
        )
    expires = None
    if pack.expires_in_days is not None:
        expires = event.paid_at + timedelta(days=pack.expires_in_days)
        if expires <= datetime.now(timezone.utc):
            return PaymentOutcome(
                outcome=Outcome.ignored, account=account, detail="the pack's credits expired"
            )
    record = "|".join(
        (
            account,
            str(pack.credits),
            str(event.amount),
            str(_ms(expires) if expires else ""),
            str(pack.priority),
        )
    )
    yield _set(client, "payment", event.provider, event.payment_id, record)
    if event.customer_id is not None:
        yield _link(client, event.provider, event.customer_id, account)
    try:
        result: MutationResult = yield Call(
            "purchase",
            account,
            pack.credits,
            payment_id=f"{event.provider}:{event.payment_id}",
            expires_at=expires,
            priority=pack.priority,
            reason=f"pack {event.pack}",
            metadata={
                "provider": event.provider,
                "payment": event.payment_id,
                "pack": event.pack,
                "amount": event.amount,
                "currency": event.currency,
            },
        )
    except IdempotencyConflictError:
        return PaymentOutcome(
            outcome=Outcome.credited,
            account=account,
            replayed=True,
            detail="already credited (with the catalog as it was then)",
        )
    return PaymentOutcome(
        outcome=Outcome.credited,
        account=account,
        credits=pack.credits,
        balance=result.balance,
        replayed=result.replayed,
    )


class _Paid:
    """A payment's directory record: account|credits|amount|expires ms|priority."""

    def __init__(self, raw: str) -> None:
        parts = raw.split("|")
        self.account, self.credits, self.amount = parts[0], int(parts[1]), int(parts[2])
        self.expires_ms = int(parts[3]) if len(parts) > 3 and parts[3] else None
        self.priority = int(parts[4]) if len(parts) > 4 else 50


def _paid(client: Any, provider: str, payment_id: str) -> Generator[Call, Any, _Paid | None]:
    raw = yield _get(client, "payment", provider, payment_id)
    return _Paid(raw) if raw else None


def _pending(what: str) -> PaymentOutcome:
    return PaymentOutcome(outcome=Outcome.pending, detail=f"{what} not seen yet: deliver again")


def _revoked(result: RevokeResult, account: str) -> PaymentOutcome:
    return PaymentOutcome(
        outcome=Outcome.revoked,
        account=account,
        credits=result.revoked,
        unrecoverable=result.unrecoverable,
        balance=result.balance,
        replayed=result.replayed,
    )


def _refund(client: Any, event: PaymentRefunded) -> Steps:
    paid = yield from _paid(client, event.provider, event.payment_id)
    if paid is None:
        return _pending(f"payment {event.payment_id}")
    whole = paid.amount or event.amount_paid
    full = event.refunded_total >= whole
    amount: int | None
    if event.refunded_before is None:
        if not full:
            raise ValidationError(
                "previous_attributes", "a partial refund must say what was refunded before it"
            )
        amount, key = None, f"{event.provider}:refund:{event.payment_id}:full"
    else:
        amount = _share(paid.credits, event.refunded_total, whole) - _share(
            paid.credits, event.refunded_before, whole
        )
        key = f"{event.provider}:refund:{event.payment_id}:{event.refunded_total}"
        if amount <= 0:
            return PaymentOutcome(
                outcome=Outcome.ignored,
                account=paid.account,
                detail="the refunded share is less than one credit",
            )
    try:
        result: RevokeResult = yield Call(
            "revoke",
            paid.account,
            purchase_ref(event.provider, event.payment_id),
            amount,
            reason=f"refund: {event.refunded_total} of {whole} refunded",
            metadata={
                "provider": event.provider,
                "payment": event.payment_id,
                "refunded_total": event.refunded_total,
            },
            idempotency_key=key,
        )
    except EntryNotFoundError:
        return _pending(f"the purchase of payment {event.payment_id}")
    return _revoked(result, paid.account)


def _dispute(client: Any, event: PaymentDisputed | DisputeWon) -> Steps:
    paid = yield from _paid(client, event.provider, event.payment_id)
    if paid is None:
        return _pending(f"payment {event.payment_id}")
    amount = _share(paid.credits, event.amount, paid.amount)
    if amount <= 0:
        return PaymentOutcome(
            outcome=Outcome.ignored, detail="the disputed share is under a credit"
        )
    try:
        # The same call for the dispute's opening and for its close (a replay then, or the
        # first run when the close arrives first): what it took is what a win restores.
        taken: RevokeResult = yield Call(
            "revoke",
            paid.account,
            purchase_ref(event.provider, event.payment_id),
            amount,
            reason=f"dispute {event.dispute_id}",
            metadata={
                "provider": event.provider,
                "payment": event.payment_id,
                "dispute": event.dispute_id,
            },
            idempotency_key=f"{event.provider}:dispute:{event.dispute_id}",
        )
    except EntryNotFoundError:
        return _pending(f"the purchase of payment {event.payment_id}")
    if isinstance(event, PaymentDisputed):
        return _revoked(taken, paid.account)
    if taken.revoked == 0:
        return PaymentOutcome(
            outcome=Outcome.restored, account=paid.account, detail="the dispute took nothing"
        )
    expires = None
    if paid.expires_ms is not None:
        expires = datetime.fromtimestamp(paid.expires_ms / 1000, tz=timezone.utc)
        if expires <= datetime.now(timezone.utc):
            return PaymentOutcome(
                outcome=Outcome.restored, account=paid.account, detail="the credits expired"
            )
    back: MutationResult = yield Call(
        "purchase",
        paid.account,
        taken.revoked,
        payment_id=f"{event.provider}:won:{event.dispute_id}",
        expires_at=expires,
        priority=paid.priority,
        reason=f"dispute {event.dispute_id} won",
        metadata={
            "provider": event.provider,
            "payment": event.payment_id,
            "dispute": event.dispute_id,
        },
    )
    return PaymentOutcome(
        outcome=Outcome.restored,
        account=paid.account,
        credits=taken.revoked,
        balance=back.balance,
        replayed=back.replayed,
    )


def _period(client: Any, event: PeriodPaid, catalog: Catalog) -> Steps:
    found = catalog.plan_for_price(event.price)
    if found is None:
        return PaymentOutcome(
            outcome=Outcome.mismatch, detail=f"no plan sells price {event.price!r}"
        )
    plan_id, plan = found
    account = event.account
    if account is None and event.customer_id is not None:
        account = yield _get(client, "customer", event.provider, event.customer_id)
    if account is None:
        return _pending(f"the account of customer {event.customer_id}")
    account = v.account(account)
    ended = yield _get(client, "subend", event.provider, event.subscription_id)
    if ended is not None and int(ended) <= _ms(event.period_start):
        return PaymentOutcome(outcome=Outcome.ignored, account=account, detail="subscription ended")
    expires = event.period_end + timedelta(days=plan.grace_days)
    if expires <= datetime.now(timezone.utc):
        return PaymentOutcome(outcome=Outcome.ignored, account=account, detail="period is over")
    period = f"{event.provider}:{event.subscription_id}:{int(event.period_start.timestamp())}"
    try:
        result: AllocationResult = yield Call(
            "allocate",
            account,
            plan.credits,
            period_id=period,
            expires_at=expires,
            rollover_cap=plan.rollover_cap,
            priority=plan.priority,
            reason=f"plan {plan_id}, period from {event.period_start.date().isoformat()}",
            metadata={
                "provider": event.provider,
                "subscription": event.subscription_id,
                "plan": plan_id,
            },
        )
    except IdempotencyConflictError:
        return PaymentOutcome(
            outcome=Outcome.allocated,
            account=account,
            replayed=True,
            detail="this period was already allocated (plan changes apply from the next one)",
        )
    tier, detail = None, ""
    if plan.tier is not None:
        tier, detail = yield from _plan_tier(
            client, event.provider, period, event.period_start, account, plan.tier
        )
    return PaymentOutcome(
        outcome=Outcome.allocated,
        account=account,
        credits=plan.credits,
        rolled_over=result.rolled_over,
        expired=result.expired,
        balance=result.balance,
        replayed=result.replayed,
        tier=tier,
        detail=detail,
    )


def _plan_tier(
    client: Any, provider: str, period: str, start: datetime, account: str, tier: str
) -> Generator[Call, Any, tuple[str | None, str]]:
    """Put the account on its plan's tier, once per paid period (invoice).

    ``set_plan_tier`` writes the tier and the period's marker in one script, in the
    account's slot (lua/plan_tier.lua): two deliveries of one invoice racing set it once,
    a redelivery after an operator's change leaves that change, and an older invoice
    delivered after a newer one (its period starts before the one that set the tier)
    changes nothing. A period an earlier version marked with its directory key
    ``plantier:<provider>:<period>`` (two steps) counts as applied.
    Returns (the tier set now or None, a detail for the answer)."""
    done = yield _get(client, "plantier", provider, period)
    if done is not None:
        return None, ""
    try:
        result: PlanTierResult = yield Call(
            "set_plan_tier", account, tier, period_id=period, period_start=start
        )
    except ValidationError as exc:
        # The client's price table lacks the tier the catalog names (a table loaded from
        # another file): the credits are allocated; the tier waits for a redelivery.
        return None, f"tier {tier!r} not set: {exc.message}"
    if result.outcome == "older":
        return None, f"tier {tier!r} not set: a later period set the tier already"
    return (tier, "") if result.outcome == "set" else (None, "")


# -- drivers --------------------------------------------------------------------------------


def call_on(client: Any) -> Callable[[Call], Any]:
    """How a driver runs one :class:`Call` on ``client``: the same for both clients, since
    the asyncio client's methods return the awaitables its driver awaits."""

    def run(call: Call) -> Any:
        if call.op is not None:
            return client.run_request_step(call.op)
        return getattr(client, call.method)(*call.args, **call.kwargs)

    return run


def run_payment_event(client: Any, event: PaymentEvent, catalog: Catalog) -> PaymentOutcome:
    """Apply ``event`` with a :class:`~sparked_credits.CreditsClient`."""
    return drive(apply_payment_event(client, event, catalog), call_on(client))


async def arun_payment_event(client: Any, event: PaymentEvent, catalog: Catalog) -> PaymentOutcome:
    """Apply ``event`` with an :class:`~sparked_credits.AsyncCreditsClient`."""
    return await drive_async(apply_payment_event(client, event, catalog), call_on(client))
