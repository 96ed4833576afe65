"""Automatic top-up: an account that falls below its low-balance threshold buys a pack
off-session, with the card it saved at Stripe.

Why it is built on the alert outbox: the debit script already records exactly one
low-balance alert per crossing of the threshold, so a worker reading the outbox (its own
consumer cursor, ``"topup"`` by default) sees each crossing once, and again after a crash
before it acknowledged it. For each crossing of an account with top-up settings it:

1. takes the account's guard ``topupguard:stripe:<account>`` (``SET NX PX <cool-off>``,
   valued with the alert's id). The guard is held for the whole cool-off, so a burst of
   debits (or a second crossing soon after a top-up) never starts a second payment; a
   crossing while the guard is held starts nothing. A worker that finds the guard holding
   its own alert's id is the redelivery after a crash, and goes on.
2. creates one off-session PaymentIntent (``confirm=true``, ``off_session=true``) with the
   Stripe idempotency key ``topup:<alert id>``: a redelivery gets the same PaymentIntent
   back from Stripe, never a second charge.
3. on ``succeeded``: credits the pack through the purchase path
   (:func:`~.payments.run_payment_event` with a :class:`~.payments.PaymentSucceeded`,
   keyed by the PaymentIntent): once per payment, whoever brings it (this worker, its
   redelivery, or the ``payment_intent.succeeded`` webhook).
4. on a decline (or a card that needs its owner): records an alert of its own,
   ``kind="topup_failed"`` with the PaymentIntent's id as ``entry_id``, in the account's
   outbox, where the alert workers deliver it like a low-balance alert: once per crossing,
   checked and written in one script with the crossing's mark (topup_failed.lua).

The alert is acknowledged for the consumer only after all of that.

Whose card: a top-up charges the saved card of the customer its settings name, so
:func:`configure_topup` refuses a customer the billing directory links to another account
(:class:`TopUpCustomerError`, HTTP 409). A customer is linked by Stripe's own word: a
subscription checkout, or a pack bought with a customer (the purchase path links it, first
link wins). ``require_linked_customer=True`` (what an app's settings route should pass, as
the example app does) refuses a customer not linked to the account at all, so a user can
never name someone else's customer and card.
"""

from __future__ import annotations

from collections.abc import Generator
from datetime import datetime, timezone
from importlib import resources
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .._core import validation as v
from .._core.keys import KeySpace
from .._core.requests import CommandCall, Operation, ScriptCall
from .._core.scripts import Script
from .._drive import drive, drive_async
from ..control_models import Alert
from ..errors import CreditsError
from ..pricing import Catalog
from .payments import (
    Call,
    Outcome,
    PaymentSucceeded,
    _directory_key,
    _text,
    apply_payment_event,
    call_on,
)
from .stripe import _stripe

__all__ = [
    "TOPUP_FAILED",
    "TopUpCustomerError",
    "TopUpOutcome",
    "TopUpSettings",
    "aconfigure_topup",
    "aget_topup",
    "arun_topups",
    "configure_topup",
    "get_topup",
    "run_topups",
    "topup_pass",
]

TOPUP_FAILED = "topup_failed"
"""The ``Alert.kind`` of a top-up payment that failed."""

_FAILED_SCRIPT = Script(
    name="topup_failed",
    source=resources.files(__package__).joinpath("topup_failed.lua").read_text("utf-8"),
)
"""The failure alert's check and write (see :func:`_failed`)."""

_STRIPE_ID = r"^[A-Za-z0-9][A-Za-z0-9_]{0,254}$"
_PROVIDER = "stripe"


class TopUpSettings(BaseModel):
    """What an account's automatic top-up buys, and with which saved card."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    customer: str = Field(pattern=_STRIPE_ID, description="The Stripe customer (cus_...).")
    payment_method: str = Field(
        pattern=_STRIPE_ID, description="Its saved payment method (pm_...), set up off-session."
    )
    pack: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,63}$", description="A pack id.")


class TopUpCustomerError(CreditsError):
    """The top-up settings name a Stripe customer that is not this account's, and nothing
    was saved (HTTP 409). ``reason`` is ``other_account`` (the billing directory links it
    to another account) or ``not_linked`` (``require_linked_customer=True`` and nothing
    links it to this one yet: buy a pack with the card saved first)."""

    http_status = 409
    code = "topup_customer_refused"

    def __init__(self, account: str, customer: str, reason: str, message: str) -> None:
        super().__init__(message)
        self.account = account
        self.customer = customer
        self.reason = reason

    def to_dict(self) -> dict[str, Any]:
        return {
            **super().to_dict(),
            "account": self.account,
            "customer": self.customer,
            "reason": self.reason,
        }


class TopUpOutcome(BaseModel):
    """What the worker did for one alert."""

    model_config = ConfigDict(frozen=True)

    alert_id: str
    account: str
    result: Literal["credited", "failed", "pending", "skipped", "not_configured", "other_kind"]
    payment_id: str | None = None
    credits: int = 0
    replayed: bool = False
    """The payment had been credited before (a redelivery): nothing changed now."""
    detail: str = ""


class _Pay:
    """A step that asks Stripe for the PaymentIntent (run by the driver, sync or async)."""

    __slots__ = ("options", "params")

    def __init__(self, params: dict[str, Any], options: dict[str, Any]) -> None:
        self.params, self.options = params, options


_Steps = Generator["Call | _Pay", Any, Any]


def _cmd(*args: str) -> Call:
    return Call("run_request_step", op=Operation("topup", CommandCall(tuple(args)), _raw))


def _raw(reply: Any) -> Any:
    return reply


def _key(client: Any, kind: str, account: str) -> str:
    """``<prefix><kind>:stripe:<account>``: the billing directory's key shape."""
    return _directory_key(client, kind, _PROVIDER, account)


def _settings(raw: Any) -> TopUpSettings | None:
    text = _text(raw)
    return None if text is None else TopUpSettings.model_validate_json(text)


def _configure(
    client: Any,
    catalog: Catalog,
    account: str,
    settings: TopUpSettings | None,
    require_linked_customer: bool,
) -> Generator[Call, Any, None]:
    """Check, then save or remove the settings (the procedure both clients drive)."""
    account = v.account(account)
    key = _key(client, "topup", account)
    if settings is None:
        yield _cmd("DEL", key)
        return
    catalog.pack(settings.pack)
    linked = _text(
        (yield _cmd("GET", _directory_key(client, "customer", _PROVIDER, settings.customer)))
    )
    if linked is not None and linked != account:
        raise TopUpCustomerError(
            account,
            settings.customer,
            "other_account",
            f"customer {settings.customer!r} belongs to another account: nothing saved",
        )
    if linked is None and require_linked_customer:
        raise TopUpCustomerError(
            account,
            settings.customer,
            "not_linked",
            f"customer {settings.customer!r} is not linked to {account!r} (a purchase or "
            "subscription with that customer links it): nothing saved",
        )
    yield _cmd("SET", key, settings.model_dump_json())


def configure_topup(
    client: Any,
    catalog: Catalog,
    account: str,
    settings: TopUpSettings | None,
    *,
    require_linked_customer: bool = False,
) -> None:
    """Save (or, with None, remove) ``account``'s top-up settings. An unknown pack raises
    ValidationError, a customer of another account (or, with
    ``require_linked_customer=True``, one not linked to this account)
    :class:`TopUpCustomerError`; either saves nothing."""
    drive(_configure(client, catalog, account, settings, require_linked_customer), call_on(client))


async def aconfigure_topup(
    client: Any,
    catalog: Catalog,
    account: str,
    settings: TopUpSettings | None,
    *,
    require_linked_customer: bool = False,
) -> None:
    """:func:`configure_topup` with an AsyncCreditsClient."""
    await drive_async(
        _configure(client, catalog, account, settings, require_linked_customer), call_on(client)
    )


def get_topup(client: Any, account: str) -> TopUpSettings | None:
    """The account's top-up settings, None when it has none."""
    op = _cmd("GET", _key(client, "topup", v.account(account))).op
    return _settings(client.run_request_step(op))


async def aget_topup(client: Any, account: str) -> TopUpSettings | None:
    """:func:`get_topup` with an AsyncCreditsClient."""
    op = _cmd("GET", _key(client, "topup", v.account(account))).op
    return _settings(await client.run_request_step(op))


def run_topups(
    client: Any,
    stripe_client: Any,
    catalog: Catalog,
    *,
    consumer: str = "topup",
    cooloff_seconds: float = 600.0,
    count: int = 100,
) -> list[TopUpOutcome]:
    """One pass of the worker with a CreditsClient: every unacknowledged alert of
    ``consumer``, oldest first (see the module). Run it in a loop; several workers may run
    at once. A Stripe error other than a decline (the network, an outage) propagates with
    the alert unacknowledged: the next pass tries it again with the same idempotency key."""
    run = call_on(client)

    def step(item: _Pay | Call) -> Any:
        if isinstance(item, _Pay):
            return _intents(stripe_client).create(params=item.params, options=item.options)
        return run(item)

    return drive(topup_pass(client, catalog, consumer, cooloff_seconds, count), step)


async def arun_topups(
    client: Any,
    stripe_client: Any,
    catalog: Catalog,
    *,
    consumer: str = "topup",
    cooloff_seconds: float = 600.0,
    count: int = 100,
) -> list[TopUpOutcome]:
    """:func:`run_topups` with an AsyncCreditsClient (and the ``stripe`` client's async
    calls)."""
    run = call_on(client)

    def step(item: _Pay | Call) -> Any:
        if isinstance(item, _Pay):
            return _intents(stripe_client).create_async(params=item.params, options=item.options)
        return run(item)

    return await drive_async(topup_pass(client, catalog, consumer, cooloff_seconds, count), step)


def _intents(stripe_client: Any) -> Any:
    return (
        stripe_client.v1.payment_intents
        if hasattr(stripe_client, "v1")
        else stripe_client.payment_intents
    )


def topup_pass(client: Any, catalog: Catalog, consumer: str, cooloff: float, count: int) -> _Steps:
    """The procedure of one pass, as steps for :func:`run_topups` / :func:`arun_topups`."""
    done: list[TopUpOutcome] = []
    alerts: list[Alert] = yield Call("alerts", consumer, count=count)
    for alert in alerts:
        outcome = yield from _one(client, catalog, alert, cooloff)
        done.append(outcome)
        yield Call("ack_alerts", consumer, [alert.alert_id])
    return done


def _one(client: Any, catalog: Catalog, alert: Alert, cooloff: float) -> _Steps:
    def answer(result: Any, **fields: Any) -> TopUpOutcome:
        return TopUpOutcome(alert_id=alert.alert_id, account=alert.account, result=result, **fields)

    if alert.kind != "low_balance":
        return answer("other_kind")
    settings = _settings((yield _cmd("GET", _key(client, "topup", alert.account))))
    if settings is None:
        return answer("not_configured")
    pack = catalog.packs.get(settings.pack)
    if pack is None:  # removed from the price file since: never a stuck alert
        return answer("not_configured", detail=f"pack {settings.pack!r} is not for sale")
    guard = _key(client, "topupguard", alert.account)
    taken = yield _cmd("SET", guard, alert.alert_id, "NX", "PX", str(int(cooloff * 1000)))
    # A refused NX is None (redis-py) or False (upstash-redis).
    if not taken and _text((yield _cmd("GET", guard))) != alert.alert_id:
        return answer("skipped", detail="a top-up is in flight or cooling off")
    params = {
        "amount": pack.amount,
        "currency": pack.currency,
        "customer": settings.customer,
        "payment_method": settings.payment_method,
        "off_session": True,
        "confirm": True,
        "metadata": {"account": alert.account, "pack": settings.pack, "topup": alert.alert_id},
    }
    stripe = _stripe()
    try:
        intent = yield _Pay(params, {"idempotency_key": f"topup:{alert.alert_id}"})
    except stripe.CardError as exc:
        failed = exc.error.payment_intent if exc.error else None
        payment_id = str(failed.id) if failed is not None else ""
        yield from _failed(client, alert, payment_id, str(exc.code or "card_error"))
        return answer("failed", payment_id=payment_id or None, detail=str(exc.code))
    payment_id = str(intent.id)
    if intent.status != "succeeded":
        if intent.status in ("requires_payment_method", "requires_action", "canceled"):
            yield from _failed(client, alert, payment_id, str(intent.status))
            return answer("failed", payment_id=payment_id, detail=str(intent.status))
        # processing: the payment_intent.succeeded webhook credits it.
        return answer("pending", payment_id=payment_id)
    event = PaymentSucceeded(
        provider=_PROVIDER,
        payment_id=payment_id,
        account=alert.account,
        pack=settings.pack,
        amount=int(intent.amount),
        currency=str(intent.currency),
        paid_at=datetime.fromtimestamp(int(intent.created), tz=timezone.utc),
        customer_id=settings.customer,
    )
    outcome = yield from apply_payment_event(client, event, catalog)
    return answer(
        "credited" if outcome.outcome is Outcome.credited else "failed",
        payment_id=payment_id,
        credits=outcome.credits,
        replayed=outcome.replayed,
        detail=outcome.detail,
    )


def _failed(client: Any, alert: Alert, payment_id: str, reason: str) -> _Steps:
    """The failure's own alert, in the account's outbox, once per crossing: one script
    (billing/topup_failed.lua) checks the crossing's mark and writes the alert with it, in
    the account's slot, so two workers racing on the same crossing, or a worker's
    redelivery after a crash before its acknowledgement, record it once."""
    keys = KeySpace(prefix=client.options.key_prefix).account(alert.account)
    marks = f"{client.options.key_prefix}topupfail:{{{alert.account}}}"
    call = ScriptCall(
        _FAILED_SCRIPT,
        (keys.alerts, marks),
        (alert.alert_id, payment_id, reason, str(alert.balance), str(alert.threshold)),
    )
    yield Call("run_request_step", op=Operation("topup", call, _raw))
