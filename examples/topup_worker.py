"""Automatic top-ups: buy a pack off-session for every account that fell below its
low-balance threshold and saved top-up settings (``PUT /api/credits/topup``).

    REDIS_URL=redis://localhost:6379/0 STRIPE_API_KEY=sk_test_... \\
    SPARKED_CREDITS_PRICING=pricing.toml python examples/topup_worker.py

One pass (:func:`run_once`) is ``sparked_credits.billing.topup.run_topups``: it reads the
low-balance alerts with its own consumer cursor (``"topup"``), so each crossing of the
threshold starts at most one PaymentIntent (a guard with a cool-off stops a burst of
debits from starting two), the pack's credits arrive through the purchase path (once per
payment, whether this worker or the ``payment_intent.succeeded`` webhook brings them), and
a declined card is an alert of its own (``kind="topup_failed"``) that
``examples/alert_worker.py`` delivers like the others. Several workers may run at once; a
worker killed mid-pass is finished by the next pass (the same Stripe idempotency key).
``STRIPE_API_BASE`` points the ``stripe`` library at another server (a local stand-in).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from sparked_credits import CreditsClient
from sparked_credits.billing.stripe import make_stripe_client
from sparked_credits.billing.topup import TopUpOutcome, run_topups
from sparked_credits.pricing import Catalog, active_price_table

logger = logging.getLogger("topup_worker")


def run_once(
    credits: CreditsClient,
    stripe_client: Any,
    catalog: Catalog,
    *,
    consumer: str = "topup",
    cooloff_seconds: float = 600.0,
) -> list[TopUpOutcome]:
    """One pass over the crossings ``consumer`` has not handled; logs what each did."""
    done = run_topups(
        credits, stripe_client, catalog, consumer=consumer, cooloff_seconds=cooloff_seconds
    )
    for outcome in done:
        logger.info(
            "%s %s %s %s", outcome.account, outcome.result, outcome.payment_id or "-",
            outcome.detail,
        )
    return done


def main() -> None:  # pragma: no cover - a loop for a process manager to run
    logging.basicConfig(level=logging.INFO)
    stripe_client = make_stripe_client(
        os.environ["STRIPE_API_KEY"], api_base=os.environ.get("STRIPE_API_BASE") or None
    )
    catalog = active_price_table().catalog
    cooloff = float(os.environ.get("TOPUP_COOLOFF_SECONDS", "600"))
    with CreditsClient.from_env(app="topup-worker") as credits:
        while True:
            try:
                run_once(credits, stripe_client, catalog, cooloff_seconds=cooloff)
            except Exception:  # a Stripe outage: the alerts stay unacknowledged, next pass
                logger.exception("top-up pass failed; trying again")
            time.sleep(5)


if __name__ == "__main__":  # pragma: no cover
    main()
