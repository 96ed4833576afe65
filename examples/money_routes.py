"""Selling credits: ``POST /api/credits/checkout`` and ``POST /api/webhooks/stripe``.

The packs are the price file's ``[packs.*]`` (``SPARKED_CREDITS_PRICING``, see PRICING.md).
``STRIPE_API_KEY`` creates Checkout Sessions (``STRIPE_API_BASE`` points the ``stripe``
library at another server: the tests' local stand-in), ``STRIPE_WEBHOOK_SECRET`` verifies
Stripe's deliveries. Each payment is credited once, whichever event, delivery or process
brings it (``sparked_credits.billing``).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from sparked_credits import ConfigurationError, CreditsClient
from sparked_credits.billing.stripe import (
    CheckoutRequest,
    handle_stripe_webhook,
    make_stripe_client,
    start_checkout,
    webhook_answer,
)
from sparked_credits.clerk import ClerkPrincipal
from sparked_credits.integrations.fastapi import (
    CreditsRoute,
    get_clerk_user,
    get_credits,
    read_body_limited,
)
from sparked_credits.pricing import Catalog

Credits = Annotated[CreditsClient, Depends(get_credits)]
User = Annotated[ClerkPrincipal, Depends(get_clerk_user)]


def money_routes(
    catalog: Catalog,
    *,
    webhook_secret: str | None,
    api_key: str | None,
    api_base: str | None = None,
) -> APIRouter:
    """The two routes, each only when configured (an app without Stripe has neither: a
    404, never a 500); the Stripe client is made once, on the first checkout."""
    router = APIRouter(route_class=CreditsRoute)
    made: dict[str, Any] = {}

    def stripe_client() -> Any:
        if not api_key:
            raise ConfigurationError("STRIPE_API_KEY is not set")
        if "client" not in made:
            made["client"] = make_stripe_client(api_key, api_base=api_base)
        return made["client"]

    if api_key:
        _checkout_route(router, catalog, stripe_client)
    if webhook_secret:
        _webhook_route(router, catalog, webhook_secret)
    return router


def _checkout_route(router: APIRouter, catalog: Catalog, stripe_client: Any) -> None:
    @router.post("/api/credits/checkout")
    def checkout(body: CheckoutRequest, user: User, request: Request) -> dict[str, Any]:
        """A Stripe Checkout Session for one pack, for the signed-in user: its URL."""
        origin = f"{request.url.scheme}://{request.url.netloc}"
        return start_checkout(
            stripe_client(), catalog, account=user.user_id, pack=body.pack, origin=origin
        )


def _webhook_route(router: APIRouter, catalog: Catalog, webhook_secret: str) -> None:
    @router.post("/api/webhooks/stripe")
    async def stripe_webhook(request: Request, credits: Credits) -> JSONResponse:
        """Stripe's deliveries: verified over the raw body, applied once per payment."""
        raw = await read_body_limited(request)  # 413 past 1 MiB, before reading it whole
        signature = request.headers.get("stripe-signature")
        outcome = await run_in_threadpool(
            handle_stripe_webhook, credits, raw, signature, webhook_secret, catalog
        )
        status, body = webhook_answer(outcome)
        return JSONResponse(body, status_code=status)
