"""The example app's per-member spend limits inside an organization's account (with
``CREDITS_ORG_BALANCES=1``), written only against the public API.

* ``GET /api/org/credits/limits``: the signed-in member's limits in the active
  organization's account and what the member spent there today and this month.
* ``PUT /api/org/credits/limits {"user_id": "user_..." | null, "daily_limit": n | null,
  "monthly_limit": n | null}``: an org admin (``org:admin``) sets one member's own limits
  (``user_id``) or every member's (``null``); both limits null removes them. Idempotent
  like the other routes; a bad body is a 4xx and changes nothing.

The organization's spending routes record the member in each entry's metadata, so a
member past a limit gets a 429 (``window``: ``member_daily`` or ``member_monthly``).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from controls_routes import ORG_ADMIN
from sparked_credits import CreditsClient
from sparked_credits.clerk import ClerkPrincipal
from sparked_credits.integrations.fastapi import (
    CreditsRoute,
    IdempotentRequest,
    get_clerk_user,
    get_credits,
    idempotent,
)
from sparked_credits.integrations.http_errors import HTTPRefusal

Credits = Annotated[CreditsClient, Depends(get_credits)]
User = Annotated[ClerkPrincipal, Depends(get_clerk_user)]


class MemberLimitRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    user_id: str | None = Field(
        default=None, min_length=1, max_length=128, pattern=r"^user_[A-Za-z0-9]{1,120}$"
    )
    daily_limit: int | None = Field(default=None, gt=0, le=2**53 - 1)
    monthly_limit: int | None = Field(default=None, gt=0, le=2**53 - 1)


def member_routes(*, org_balances: bool) -> APIRouter:
    router = APIRouter(route_class=CreditsRoute)

    def org_of(user: ClerkPrincipal) -> str:
        if not (org_balances and user.org_id):
            raise HTTPRefusal(404, "no_organization", "no active organization in the session")
        return user.org_id

    @router.get("/api/org/credits/limits")
    def read(user: User, credits: Credits) -> dict[str, Any]:
        found = credits.get_member_controls(org_of(user), user.user_id)
        return found.model_dump(mode="json")

    @router.put("/api/org/credits/limits")
    @idempotent("member_limit")
    def save(
        body: MemberLimitRequest, user: User, credits: Credits, req: IdempotentRequest
    ) -> dict[str, Any]:
        org = org_of(user)
        if user.org_role != ORG_ADMIN:
            raise HTTPRefusal(403, "forbidden", "only an organization admin may set limits")
        found = credits.set_member_limit(
            org, body.user_id, daily_limit=body.daily_limit, monthly_limit=body.monthly_limit
        )
        return found.model_dump(mode="json")

    return router
