"""Typed results of the account controls: transfers, referral rewards, low-balance alerts,
and an account's tier and spend windows.

Frozen pydantic models, like :mod:`sparked_credits.models`, so a route returns them as JSON.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from .models import MutationResult

__all__ = [
    "AccountControls",
    "Alert",
    "MemberControls",
    "PlanTierResult",
    "ReferralResult",
    "TransferResult",
]


class TransferResult(BaseModel):
    """A transfer: one entry out of ``from_account``, one credit lot in ``to_account`` per
    expiry (and priority) of the lots the credits came from, each pointing at the other."""

    model_config = ConfigDict(frozen=True)

    from_account: str
    to_account: str
    amount: int
    idempotency_key: str
    out: MutationResult = Field(description="The 'adjust' entry that took the credits.")
    arrived: list[MutationResult] = Field(
        description="The 'credit' entries (source 'transfer') that gave them, each lot "
        "expiring when its source lot does."
    )
    lapsed: int = Field(
        default=0,
        description="Credits whose source lot expired before they arrived (they lapse, as "
        "they would have on the source account).",
    )
    replayed: bool = Field(
        default=False, description="The key had been applied before: nothing was moved now."
    )


class ReferralResult(BaseModel):
    """A referral reward: a lot of source 'referral' on each side, once per referred
    account ever."""

    model_config = ConfigDict(frozen=True)

    referrer: str
    referred: str
    referred_reward: MutationResult
    referrer_reward: MutationResult | None = Field(
        default=None,
        description="None when the referrer reached its monthly cap (the referred account "
        "is still rewarded).",
    )
    capped: bool = False
    replayed: bool = Field(
        default=False, description="The referral had been rewarded before: nothing new."
    )


class Alert(BaseModel):
    """One low-balance alert: the balance went below the threshold (once per crossing)."""

    model_config = ConfigDict(frozen=True)

    alert_id: str = Field(description="'<account>/<outbox entry id>': pass to ack_alerts().")
    account: str
    balance: int = Field(description="The balance right after the crossing.")
    threshold: int
    at: datetime = Field(description="When (Redis server time).")
    entry_id: str = Field(description="The ledger entry that crossed the threshold.")
    kind: str = Field(
        default="low_balance",
        description="'low_balance', or 'topup_failed' (an automatic top-up's payment failed; "
        "entry_id is then the payment's id).",
    )


class AccountControls(BaseModel):
    """An account's tier, limits, threshold and what it spent in the current windows."""

    model_config = ConfigDict(frozen=True)

    account: str
    tier: str | None = None
    daily_limit: int | None = None
    monthly_limit: int | None = None
    low_balance: int | None = None
    spent_today: int = 0
    spent_this_month: int = 0


class PlanTierResult(BaseModel):
    """A paid period's plan tier (``set_plan_tier``): set at most once per period, and
    never by a period older than the one that set the tier last."""

    model_config = ConfigDict(frozen=True)

    account: str
    tier: str
    period_id: str
    outcome: Literal["set", "repeat", "older"] = Field(
        description="'set': the account is on the tier now; 'repeat': this period set it "
        "before (nothing changed: an operator's change since stays); 'older': a later "
        "period set the tier already (nothing changed)."
    )
    controls: AccountControls = Field(description="The account's controls after the call.")

    @property
    def applied(self) -> bool:
        return self.outcome == "set"


class MemberControls(BaseModel):
    """A member's own spend limits inside an organization's account, and what the member
    spent there in the current windows (the entries whose metadata names the member)."""

    model_config = ConfigDict(frozen=True)

    account: str = Field(description="The organization's account.")
    member: str | None = Field(description="None: the limits every member has.")
    daily_limit: int | None = None
    monthly_limit: int | None = None
    own: bool = Field(
        default=False, description="The member has limits of its own (over every member's)."
    )
    spent_today: int = 0
    spent_this_month: int = 0
