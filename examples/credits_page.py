"""The credits page: balance badge, history, 7-day usage chart, spending buttons and the
insufficient-credits dialog, served by the example app (``GET /credits``).

Server-rendered with Jinja2 (the ``page`` extra); the page's script and style are static
files served by the app itself, so it works offline (no CDN). The script reads the data
through the same public JSON routes as any client (``/api/credits/balance``,
``/api/credits/history``, ``/api/credits/usage``) and spends through the apps' routes
(``/api/chat``, ``/api/generate``, ``/api/video/generate``), with the session token as a
Bearer header: from the dev sign-in when it is on, else from Clerk's frontend
(``window.Clerk.session.getToken()``) or its ``__session`` cookie on your domain.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2  # noqa: F401  (the page extra; an ImportError here leaves the page out)
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from sparked_credits import CreditsClient
from sparked_credits.pricing import Catalog

HERE = Path(__file__).resolve().parent
templates = Jinja2Templates(directory=HERE / "templates")

STATIC_URL = "/static/credits"


def _prices(client: CreditsClient) -> dict[str, int]:
    """What each button costs, from the client's price table (overrides included)."""
    return {
        "chat_message": client.calculate_cost("chat_message"),
        "canvas_simple": client.calculate_cost("canvas_simple"),
        "canvas_complex": client.calculate_cost("canvas_complex"),
        "video_per_second": client.calculate_cost("video_generation", seconds=1),
    }


def _packs(catalog: Catalog | None) -> list[dict[str, Any]]:
    """The packs for the Buy credits list (the price file's [packs.*])."""
    if catalog is None:
        return []
    return [
        {
            "id": pack_id,
            "name": pack.name or pack_id,
            "credits": pack.credits,
            "price": f"{pack.amount / 100:.2f} {pack.currency.upper()}",
        }
        for pack_id, pack in catalog.packs.items()
    ]


def mount_credits_page(
    app: FastAPI,
    client: CreditsClient,
    *,
    app_name: str,
    dev_signin: bool,
    catalog: Catalog | None = None,
) -> None:
    """Serve the page at ``/credits`` (``/`` redirects there), the buy-credits placeholder
    at ``/credits/buy`` and the page's static files under ``/static/credits``."""
    app.mount(STATIC_URL, StaticFiles(directory=HERE / "static"), name="credits-static")
    router = APIRouter(include_in_schema=False)
    prices = _prices(client)
    packs = _packs(catalog)

    @router.get("/")
    def index() -> RedirectResponse:
        return RedirectResponse("/credits")

    @router.get("/credits", response_class=HTMLResponse)
    def credits_page(request: Request) -> HTMLResponse:
        config: dict[str, Any] = {
            "devSignin": dev_signin,
            "devSigninUrl": "/api/dev/signin",
            "pageSize": 10,
            "days": 7,
            "prices": prices,
            "buyUrl": "/credits/buy",
            "checkoutUrl": "/api/credits/checkout",
        }
        return templates.TemplateResponse(
            request,
            "credits.html",
            {
                "app_name": app_name,
                "prices": prices,
                "packs": packs,
                "config": config,
                "dev_signin": dev_signin,
                "static": STATIC_URL,
            },
        )

    @router.get("/credits/buy", response_class=HTMLResponse)
    def buy_credits(request: Request) -> HTMLResponse:
        """PLACEHOLDER: send the user to your checkout (e.g. Stripe Checkout) here."""
        return templates.TemplateResponse(
            request, "buy.html", {"app_name": app_name, "static": STATIC_URL, "packs": packs}
        )

    app.include_router(router)
