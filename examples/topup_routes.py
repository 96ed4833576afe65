"""The example app's automatic top-up settings, written only against the public API.

* ``GET /api/credits/topup``: the spending account's top-up settings (``null`` for none),
  its low-balance threshold (a top-up starts when the balance falls below it) and the packs
  it may buy.
* ``PUT /api/credits/topup {"customer", "payment_method", "pack"}``: save them. The
  customer and payment method are Stripe's ids from a SetupIntent the page confirmed
  off-session (Stripe.js), the pack one of the price file's ``[packs.*]``. Idempotent like
  the other routes (the ``Idempotency-Key`` header); a bad body or an unknown pack is a 4xx
  and saves nothing.
* ``DELETE /api/credits/topup``: no more automatic top-ups.

With ``CREDITS_ORG_BALANCES=1`` and an active organization, the settings are the
organization's, and only an org admin may change them. The payments themselves are made
by ``examples/topup_worker.py`` (or ``sparked-credits topup run``).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from controls_routes import ORG_ADMIN, spending_account
from sparked_credits import CreditsClient
from sparked_credits.billing.topup import TopUpSettings, configure_topup, get_topup
from sparked_credits.clerk import ClerkPrincipal
from sparked_credits.integrations.fastapi import (
    CreditsRoute,
    IdempotentRequest,
    get_clerk_user,
    get_credits,
    idempotent,
)
from sparked_credits.integrations.http_errors import HTTPRefusal
from sparked_credits.pricing import Catalog

Credits = Annotated[CreditsClient, Depends(get_credits)]
User = Annotated[ClerkPrincipal, Depends(get_clerk_user)]

_STRIPE_ID = r"^[A-Za-z0-9][A-Za-z0-9_]{0,254}$"


class TopUpRequest(BaseModel):
    """The body of ``PUT /api/credits/topup`` (the SDK's TopUpSettings, at the edge)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    customer: str = Field(pattern=r"^cus_[A-Za-z0-9_]{1,250}$", max_length=255)
    payment_method: str = Field(pattern=_STRIPE_ID, max_length=255)
    pack: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,63}$", max_length=64)


def topup_routes(catalog: Catalog, *, org_balances: bool) -> APIRouter:
    router = APIRouter(route_class=CreditsRoute)

    def account_of(user: ClerkPrincipal, changing: bool) -> str:
        account, _ = spending_account(org_balances, user)
        if changing and account != user.user_id and user.org_role != ORG_ADMIN:
            raise HTTPRefusal(403, "forbidden", "only an organization admin may change this")
        return account

    def answer(credits: CreditsClient, account: str) -> dict[str, Any]:
        settings = get_topup(credits, account)
        return {
            "account": account,
            "settings": None if settings is None else settings.model_dump(mode="json"),
            "low_balance": credits.get_controls(account).low_balance,
            "packs": sorted(catalog.packs),
        }

    @router.get("/api/credits/topup")
    def read(user: User, credits: Credits) -> dict[str, Any]:
        return answer(credits, account_of(user, False))

    @router.put("/api/credits/topup")
    @idempotent("topup_settings")
    def save(
        body: TopUpRequest, user: User, credits: Credits, req: IdempotentRequest
    ) -> dict[str, Any]:
        account = account_of(user, True)
        settings = TopUpSettings(**body.model_dump())
        # An unknown pack: 422; a customer not linked to this account (by a purchase or a
        # subscription with it): 409. Either saves nothing.
        configure_topup(credits, catalog, account, settings, require_linked_customer=True)
        return answer(credits, account)

    @router.delete("/api/credits/topup")
    @idempotent("topup_settings_off")
    def remove(user: User, credits: Credits, req: IdempotentRequest) -> dict[str, Any]:
        account = account_of(user, True)
        configure_topup(credits, catalog, account, None)
        return answer(credits, account)

    return router
