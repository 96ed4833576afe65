"""The example app's routes for referrals, organization balances and account controls,
written only against the public API.

* ``GET /api/referrals/code``: the signed-in user's referral code, signed so that it needs
  no storage (``<user id, base64url>.<HMAC>``) and cannot be forged.
* ``POST /api/referrals/claim {"code": ...}``: the signed-in user was referred by the code's
  owner: both get a lot of source ``referral``, once per referred user ever, however often
  the claim is sent (idempotent like the other routes; a second code is a 409).
* ``GET /api/org/credits``: with ``CREDITS_ORG_BALANCES=1`` and an active organization in
  the session, the organization's balance and the member's own share of its recent usage.
* ``POST /api/org/credits/grant``: an org admin (Clerk role ``org:admin``) moves credits of
  the organization to a member's own account (a transfer, once per Idempotency-Key).
* ``GET /api/credits/controls``: the spending account's tier, limits, spending in the
  current windows and whether its balance is below the alert threshold (the credits page's
  low-balance banner).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from sparked_credits import CreditsClient, ValidationError
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

ORG_ADMIN = "org:admin"


def spending_account(org_balances: bool, user: ClerkPrincipal) -> tuple[str, dict[str, Any]]:
    """The account a request spends from and the metadata its entry carries: with org
    balances on and an active organization in the session, the organization's account,
    and the member who spent (so the org's usage shows who); else the user's own."""
    if org_balances and user.org_id:
        return user.org_id, {"member": user.user_id}
    return user.user_id, {}


def referral_code(secret: str, user_id: str) -> str:
    """``<user id, base64url>.<first 16 hex of HMAC-SHA256(secret, user id)>``."""
    ident = base64.urlsafe_b64encode(user_id.encode()).rstrip(b"=").decode()
    mac = hmac.new(secret.encode(), user_id.encode(), hashlib.sha256).hexdigest()[:16]
    return f"{ident}.{mac}"


def referrer_of(secret: str, code: str) -> str | None:
    """The user a code belongs to, or None for a code this app did not sign."""
    ident = code.partition(".")[0]
    try:
        user_id = base64.urlsafe_b64decode(ident + "=" * (-len(ident) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    if not user_id or not hmac.compare_digest(referral_code(secret, user_id), code):
        return None
    return user_id


class _Body(BaseModel):
    model_config = ConfigDict(allow_inf_nan=False, extra="forbid")


class ClaimRequest(_Body):
    code: str = Field(min_length=3, max_length=300)


class OrgGrantRequest(_Body):
    user_id: str = Field(min_length=1, max_length=128, pattern=r"^user_[A-Za-z0-9]{1,120}$")
    amount: int = Field(gt=0, le=2**53 - 1)
    reason: str | None = Field(default=None, max_length=500)


def controls_routes(
    *,
    org_balances: bool,
    referral_secret: str | None,
    referrer_credits: int,
    referred_credits: int,
    referral_cap: int | None,
) -> APIRouter:
    router = APIRouter(route_class=CreditsRoute)

    def secret() -> str:
        if not referral_secret:
            raise HTTPRefusal(404, "not_found", "referrals are not enabled")
        return referral_secret

    @router.get("/api/referrals/code")
    def code(user: User) -> dict[str, Any]:
        return {"code": referral_code(secret(), user.user_id)}

    @router.post("/api/referrals/claim")
    @idempotent("referral")
    def claim(
        body: ClaimRequest, user: User, credits: Credits, req: IdempotentRequest
    ) -> dict[str, Any]:
        referrer = referrer_of(secret(), body.code)
        if referrer is None:
            raise ValidationError("code", "not a referral code of this app")
        reward = credits.reward_referral(
            referrer,
            user.user_id,
            referrer_credits=referrer_credits,
            referred_credits=referred_credits,
            monthly_cap=referral_cap,
        )
        return {
            "credits": reward.referred_reward.entry.delta,
            "balance": credits.get_balance(user.user_id),
            "referrer_rewarded": reward.referrer_reward is not None,
        }

    @router.get("/api/org/credits")
    def org_credits(
        user: User, credits: Credits, limit: Annotated[int, Query(ge=1, le=1000)] = 200
    ) -> dict[str, Any]:
        """The organization's balance and, of its last ``limit`` entries, what this member
        spent (debits net of refunds) and what all members spent."""
        if not (org_balances and user.org_id):
            raise HTTPRefusal(404, "no_organization", "no active organization in the session")
        page = credits.history(user.org_id, limit=limit)
        mine = total = 0
        for entry in page.entries:
            if entry.type_name not in ("debit", "refund", "settle", "reserve", "release"):
                continue
            total -= entry.delta
            if entry.metadata.get("member") == user.user_id:
                mine -= entry.delta
        return {
            "org_id": user.org_id,
            "role": user.org_role,
            "balance": credits.get_balance(user.org_id),
            "spent_by_me": mine,
            "spent_by_members": total,
        }

    @router.post("/api/org/credits/grant")
    @idempotent("org_grant")
    def org_grant(
        body: OrgGrantRequest, user: User, credits: Credits, req: IdempotentRequest
    ) -> dict[str, Any]:
        if not (org_balances and user.org_id):
            raise HTTPRefusal(404, "no_organization", "no active organization in the session")
        if user.org_role != ORG_ADMIN:
            raise HTTPRefusal(403, "forbidden", "only an organization admin may grant")
        moved = credits.transfer(
            user.org_id,
            body.user_id,
            body.amount,
            idempotency_key=req.charge_key("org-grant"),
            reason=body.reason,
        )
        return {"org_balance": moved.out.balance, "replayed": moved.replayed}

    @router.get("/api/credits/controls")
    def controls(user: User, credits: Credits) -> dict[str, Any]:
        account, _ = spending_account(org_balances, user)
        found = credits.get_controls(account)
        balance = credits.get_balance(account)
        low = found.low_balance is not None and balance < found.low_balance
        return {**found.model_dump(mode="json"), "balance": balance, "low_balance_banner": low}

    return router
