"""A paid period's plan tier: ``set_plan_tier``, the call the payment path makes when a
plan names a tier (billing/payments.py).

One script (lua/plan_tier.lua) writes the controls and the period's marker together, in
the account's slot: a period sets the tier once, however many deliveries or workers race
on it, with no window between a check and a write; and a period that starts before the one
that set the tier last changes nothing, so an older invoice delivered after a newer one
never puts the older plan's tier back.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from ..control_models import PlanTierResult
from ..errors import ValidationError
from . import validation as v
from .controls import get_controls, tier_values
from .decoding import text
from .operations import Operations
from .steps import Steps

__all__ = ["set_plan_tier"]

_PERIOD = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/-]{0,199}")


def _period(value: object) -> str:
    """A period's id (billing's '<provider>:<subscription>:<start>'): an identifier-like
    tag of up to 200 characters."""
    if not isinstance(value, str) or _PERIOD.fullmatch(value) is None:
        raise ValidationError("period_id", "must be an id of up to 200 of [A-Za-z0-9_.:/-]")
    return value


def set_plan_tier(
    ops: Operations, account: str, tier: str, *, period_id: str, period_start: datetime
) -> Steps[PlanTierResult]:
    """Put ``account`` on ``tier`` for the paid period ``period_id`` starting at
    ``period_start``, once per period and never after a later period (see the module)."""
    account = v.account(account)
    if tier is None:
        raise ValidationError("tier", "a plan's tier is a tier name")
    period = _period(period_id)
    if not isinstance(period_start, datetime) or period_start.tzinfo is None:
        raise ValidationError("period_start", "must be a timezone-aware datetime")
    name, values, _ = tier_values(ops, tier, None, None, None)
    raw: Any = yield ops.maintenance(
        "plan_tier",
        account,
        decode=lambda r: r,
        tier=name,
        daily=values[0],
        monthly=values[1],
        low=values[2],
        period=period,
        start=str(int(period_start.timestamp() * 1000)),
    )
    outcome = text(raw[1])
    controls = yield from get_controls(ops, account)
    return PlanTierResult.model_validate(
        {
            "account": account,
            "tier": name,
            "period_id": period,
            "outcome": outcome,
            "controls": controls,
        }
    )
