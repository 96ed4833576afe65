"""Money in: credit purchases, refunds and disputes, subscriptions with period allocations.

* :mod:`.payments`: the provider-agnostic part, and the contract a payment provider's
  adapter implements (verify a delivery, translate each event into a
  :data:`~.payments.PaymentEvent`); :func:`~.payments.run_payment_event` applies one,
  exactly once per payment effect, through the SDK's once-ever calls (``purchase``,
  ``revoke``, ``allocate``).
* :mod:`.stripe`: the Stripe adapter (the ``stripe`` extra), and Checkout Session creation.
"""

from __future__ import annotations

from .payments import (
    CustomerLinked,
    DisputeWon,
    Ignored,
    Outcome,
    PaymentDisputed,
    PaymentEvent,
    PaymentOutcome,
    PaymentRefunded,
    PaymentSucceeded,
    PeriodPaid,
    SubscriptionEnded,
    apply_payment_event,
    arun_payment_event,
    purchase_ref,
    run_payment_event,
)

__all__ = [
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
    "purchase_ref",
    "run_payment_event",
]
