"""The two money routes in Flask, through the Flask integration (``flask`` and ``stripe``
extras): ``POST /api/credits/checkout`` and ``POST /api/webhooks/stripe``, with the same
bodies and outcomes as the FastAPI example app (examples/money_routes.py)::

    app = Flask(__name__)
    credits = CreditsClient.from_env(app="app.sparked.world")
    setup_credits(app, credits, auth=ClerkAuth(jwt_key=os.environ["CLERK_JWT_KEY"]))
    add_money_routes(app, credits, active_price_table().catalog,
                     webhook_secret=os.environ["STRIPE_WEBHOOK_SECRET"],
                     api_key=os.environ["STRIPE_API_KEY"])
"""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, request

from sparked_credits import ConfigurationError, CreditsClient
from sparked_credits.billing.stripe import (
    MAX_WEBHOOK_BYTES,
    CheckoutRequest,
    handle_stripe_webhook,
    make_stripe_client,
    start_checkout,
    webhook_answer,
)
from sparked_credits.integrations.flask import credits_route, current_user
from sparked_credits.integrations.http_errors import PayloadTooLargeError, dumps
from sparked_credits.pricing import Catalog


def add_money_routes(
    app: Flask,
    credits: CreditsClient,
    catalog: Catalog,
    *,
    webhook_secret: str | None,
    api_key: str | None,
    api_base: str | None = None,
) -> None:
    made: dict[str, Any] = {}

    def stripe_client() -> Any:
        if not api_key:
            raise ConfigurationError("STRIPE_API_KEY is not set")
        if "client" not in made:
            made["client"] = make_stripe_client(api_key, api_base=api_base)
        return made["client"]

    @app.post("/api/credits/checkout")
    @credits_route()
    def checkout() -> Any:
        body = CheckoutRequest.model_validate_json(request.get_data())
        origin = request.host_url.rstrip("/")
        return start_checkout(
            stripe_client(),
            catalog,
            account=current_user().user_id,
            pack=body.pack,
            origin=origin,
        )

    @app.post("/api/webhooks/stripe")
    def stripe_webhook() -> Response:
        if not webhook_secret:
            raise ConfigurationError("STRIPE_WEBHOOK_SECRET is not set")
        if (request.content_length or 0) > MAX_WEBHOOK_BYTES:
            raise PayloadTooLargeError(MAX_WEBHOOK_BYTES)
        raw = request.get_data()
        outcome = handle_stripe_webhook(
            credits, raw, request.headers.get("Stripe-Signature"), webhook_secret, catalog
        )
        status, body = webhook_answer(outcome)
        return Response(dumps(body), status=status, mimetype="application/json")
