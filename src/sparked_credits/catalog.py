"""What is for sale: credit packs and subscription plans, from the price file.

Part of the pricing layer (pure, no Redis). The price file's ``[packs.<id>]`` and
``[plans.<id>]`` tables (see PRICING.md) become a :class:`Catalog`, loaded and checked by
:func:`sparked_credits.pricing.load_price_table` with the price rules, in the same error
style: a pack or plan with a bad value stops startup with its key named, because a wrong
catalog credits wrong amounts for real money.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from ._core import validation
from ._core.validation import MAX_CREDITS
from .errors import ValidationError

__all__ = ["CATALOG_SECTIONS", "Catalog", "Pack", "Plan", "catalog_problems"]

CATALOG_SECTIONS = ("packs", "plans")
"""Top-level keys of the price file that hold the catalog, not price rules."""

_ID = r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,63}$"
_CURRENCY = r"^[a-z]{3}$"


class Pack(BaseModel):
    """A one-time purchase of ``credits`` for ``amount`` (smallest currency unit)."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    credits: int = Field(ge=1, le=MAX_CREDITS, description="Credits the pack grants.")
    price: str = Field(pattern=_ID, description="The payment provider's price id.")
    amount: int = Field(
        ge=1, le=10**12, description="What it costs, in the currency's smallest unit."
    )
    currency: str = Field(pattern=_CURRENCY, description="ISO 4217 code, lower case.")
    expires_in_days: int | None = Field(
        default=None, ge=1, le=36500, description="The lot lapses this long after payment."
    )
    priority: int = Field(default=50, ge=0, le=100, description="Lower is spent first.")
    name: str | None = Field(default=None, max_length=80, description="Shown to buyers.")


class Plan(BaseModel):
    """A subscription: ``credits`` per billing period, unused ones carried up to a cap."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    credits: int = Field(ge=1, le=MAX_CREDITS, description="Credits per billing period.")
    price: str = Field(pattern=_ID, description="The payment provider's price id.")
    rollover_cap: int = Field(
        default=0, ge=0, le=MAX_CREDITS, description="Unused credits carried into the next period."
    )
    grace_days: int = Field(
        default=3,
        ge=0,
        le=31,
        description="A period's credits last this long past its end (a late renewal).",
    )
    priority: int = Field(default=50, ge=0, le=100, description="Lower is spent first.")
    name: str | None = Field(default=None, max_length=80, description="Shown to buyers.")


class Catalog:
    """Packs and plans by id, and by the provider's price id."""

    __slots__ = ("packs", "plans")

    def __init__(
        self, packs: Mapping[str, Pack] | None = None, plans: Mapping[str, Plan] | None = None
    ) -> None:
        self.packs: Mapping[str, Pack] = dict(sorted((packs or {}).items()))
        self.plans: Mapping[str, Plan] = dict(sorted((plans or {}).items()))

    def __repr__(self) -> str:
        return f"Catalog(packs={list(self.packs)}, plans={list(self.plans)})"

    def __bool__(self) -> bool:
        return bool(self.packs or self.plans)

    def merged(self, other: Catalog) -> Catalog:
        """This catalog with ``other``'s packs and plans laid over it (whole entries)."""
        return Catalog({**self.packs, **other.packs}, {**self.plans, **other.plans})

    def pack(self, pack_id: object) -> Pack:
        """The pack ``pack_id``; an unknown one raises ValidationError on "pack"."""
        name = validation.label(pack_id, "pack", required=True)
        found = self.packs.get(name)
        if found is None:
            known = ", ".join(self.packs) or "(none)"
            raise ValidationError("pack", f"unknown pack {name!r}; known packs: {known}")
        return found

    def plan_for_price(self, price_id: str) -> tuple[str, Plan] | None:
        """The plan sold at the provider's ``price_id`` (id, plan), None for another."""
        for plan_id, plan in self.plans.items():
            if plan.price == price_id:
                return plan_id, plan
        return None


def catalog_problems(data: Mapping[str, Any]) -> tuple[Catalog, list[str]]:
    """The catalog of a parsed price file's ``packs``/``plans`` tables, and every problem
    as ``[packs.<id>].<field>: message (got value)``."""
    problems: list[str] = []
    found: dict[str, dict[str, Any]] = {"packs": {}, "plans": {}}
    for section, model in (("packs", Pack), ("plans", Plan)):
        entries = data.get(section)
        if entries is None:
            continue
        if not isinstance(entries, Mapping):
            problems.append(f"[{section}]: must be a table of {section[:-1]} tables")
            continue
        for key, value in entries.items():
            where = f"[{section}.{key}]"
            try:
                validation.label(key, section[:-1], required=True)
            except ValidationError as exc:
                problems.append(f"{where}: {exc.message}")
                continue
            if not isinstance(value, Mapping):
                problems.append(f"{where}: must be a table")
                continue
            try:
                found[section][key] = model.model_validate(dict(value))
            except pydantic.ValidationError as exc:
                for error in exc.errors(include_url=False):
                    loc = where + "".join(f".{part}" for part in error["loc"])
                    got = ""
                    if error["type"] not in ("missing", "extra_forbidden"):
                        got = f" (got {error['input']!r:.60})"
                    problems.append(f"{loc}: {error['msg']}{got}")
    return Catalog(found["packs"], found["plans"]), problems
