"""What an action costs: price rules, the default table, and file overrides.

Pure arithmetic, no Redis: the apps ask "what does this cost?" before they debit, so the
answer must be the same in every app and every process. Three rules make that true:

* Costs are computed exactly. Usage becomes a :class:`~fractions.Fraction` (a float through
  its decimal text, so ``0.1`` stays one tenth), rates are :class:`~decimal.Decimal`, and the
  only rounding is the one the rule names. Float arithmetic would turn 2.3 s into 23.000000001
  credits and charge 24.
* A cost is always a whole, non-negative number of credits that never goes down as usage
  goes up: a longer video can never be cheaper.
* Prices are data. The default table mirrors the TypeScript SDK's ``PRICING_CONFIG``; a TOML
  or JSON file named by ``SPARKED_CREDITS_PRICING`` changes it without a rebuild, and a bad
  file fails loudly on load instead of pricing anything wrongly.

See PRICING.md for the table and the override format.
"""

from __future__ import annotations

import json
import keyword
import math
import os
import re
import sys
from collections.abc import Iterator, Mapping
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Annotated, Any, Literal, TypeAlias

import pydantic
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from ._core import validation
from ._core.validation import MAX_CREDITS
from .errors import ConfigurationError, ValidationError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 only
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

__all__ = [
    "CATALOG_SECTIONS",
    "DEFAULT_TABLE",
    "MAX_RATE_DECIMAL_PLACES",
    "MAX_USAGE",
    "PRICING_ENV_VAR",
    "Catalog",
    "FixedPrice",
    "MeteredPrice",
    "Pack",
    "Plan",
    "PriceRule",
    "PriceTable",
    "Rounding",
    "Tier",
    "Unit",
    "active_price_table",
    "calculate_cost",
    "load_price_table",
    "set_price_table",
]

PRICING_ENV_VAR = "SPARKED_CREDITS_PRICING"
"""Names a .toml or .json file whose rules override the defaults."""

MAX_USAGE = 10**12
"""Largest usage accepted, in the rule's unit: far beyond any real job, small enough that a
typo (milliseconds passed as seconds, a timestamp passed as a duration) is caught."""

MAX_RATE_DECIMAL_PLACES = 12
"""A rate like ``1e-999999999`` is a valid decimal whose exact fraction has a billion-digit
denominator; capping the places keeps every computation small and fast."""

_MAX_USAGE_DECIMAL_PLACES = 1000
# Same guard for Decimal usage; generous enough for Decimal(some_float) (~60 places) and any
# float's decimal text (at most ~340 places).

Unit = Literal["second", "minute", "hour"]
Rounding = Literal["ceil", "floor", "round_half_up"]

_UNIT_SECONDS: dict[str, int] = {"second": 1, "minute": 60, "hour": 3600}
# Usage keywords become Python keyword arguments, so they must be ASCII identifiers (Python
# NFKC-normalizes non-ASCII identifiers, which would make two spellings the same keyword).
_USAGE_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PLAIN_DECIMAL_RE = re.compile(r"[0-9]+(\.[0-9]+)?")


def _effective_places(value: Decimal) -> int:
    """Digits after the point once trailing zeros are dropped (``1.500`` -> 1, ``20`` -> 0)."""
    _, digits, exponent = value.as_tuple()
    if not isinstance(exponent, int) or exponent >= 0:
        return 0
    trailing = 0
    for digit in reversed(digits):
        if digit != 0:
            break
        trailing += 1
    if trailing == len(digits):  # the value is zero
        return 0
    return max(-exponent - trailing, 0)


def _rate_before(value: object) -> object:
    """Accept int, Decimal, float (via its decimal text) and plain decimal strings.

    Strings are allowed so a JSON or TOML file can write an exact decimal as ``"0.125"`` and
    so :meth:`PriceTable.to_dict` output loads back; anything else is a type error here rather
    than something pydantic might coerce.
    """
    if isinstance(value, bool):
        raise PydanticCustomError("rate_type", "Input should be a number, not a boolean")
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(str(value))  # nan/inf pass through and fail as "finite number"
    if isinstance(value, Decimal):
        return value
    if isinstance(value, str) and _PLAIN_DECIMAL_RE.fullmatch(value.strip()):
        return Decimal(value.strip())
    raise PydanticCustomError("rate_type", "Input should be an int or a decimal number like 0.5")


def _format_decimal(value: Decimal) -> str:
    return format(value, "f")


_Rate = Annotated[
    Decimal,
    BeforeValidator(_rate_before),
    Field(gt=0, le=MAX_CREDITS, allow_inf_nan=False),
    PlainSerializer(_format_decimal, return_type=str, when_used="json"),
]


class FixedPrice(BaseModel):
    """The same number of credits on every call, whatever happened (a chat message)."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    kind: Literal["fixed"] = "fixed"
    credits: int = Field(ge=0, le=MAX_CREDITS, description="The price of one call.")

    def cost(self) -> int:
        return self.credits


class Tier(BaseModel):
    """A spending tier (``[tiers.<name>]`` in the price file): caps on the credits an
    account of the tier may spend per UTC day and per UTC calendar month, and the balance
    below which it gets a low-balance alert. Every key is optional."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    daily_limit: int | None = Field(default=None, ge=1, le=MAX_CREDITS)
    monthly_limit: int | None = Field(default=None, ge=1, le=MAX_CREDITS)
    low_balance: int | None = Field(default=None, ge=1, le=MAX_CREDITS)


class MeteredPrice(BaseModel):
    """``rate`` credits per ``unit`` of usage, passed as the keyword named by ``usage``.

    The usage is measured in ``unit`` (``gpu_hours=0.5`` with ``unit="hour"``). It is first
    rounded up to whole started ``billing_increment``s, then multiplied by ``rate``, then
    rounded to whole credits per ``rounding``, then raised to ``minimum``. Every step is
    exact and non-decreasing, so the cost is too.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    kind: Literal["metered"] = "metered"
    rate: _Rate = Field(description="Credits per unit: a positive int or exact decimal.")
    unit: Unit
    usage: str = Field(description="The keyword the usage is passed as, e.g. 'seconds'.")
    billing_increment: Unit | None = Field(
        default=None,
        description="Bill per started increment (usage rounded up); None bills exactly.",
    )
    rounding: Rounding = "ceil"
    minimum: int = Field(
        default=0,
        ge=0,
        le=MAX_CREDITS,
        description="The least any call costs, including a call with zero usage.",
    )

    @field_validator("rate")
    @classmethod
    def _rate_places(cls, value: Decimal) -> Decimal:
        if _effective_places(value) > MAX_RATE_DECIMAL_PLACES:
            raise PydanticCustomError(
                "rate_places",
                "Input should have at most {places} decimal places",
                {"places": MAX_RATE_DECIMAL_PLACES},
            )
        return value

    @field_validator("usage")
    @classmethod
    def _usage_name(cls, value: str) -> str:
        if (
            len(value) > validation.MAX_LABEL_LENGTH
            or not _USAGE_NAME_RE.fullmatch(value)
            or keyword.iskeyword(value)
        ):
            raise PydanticCustomError(
                "usage_name",
                "Input should be a Python identifier like 'seconds' (ASCII letters, digits "
                "and _, not a keyword, at most {max} characters)",
                {"max": validation.MAX_LABEL_LENGTH},
            )
        return value

    @field_validator("billing_increment")
    @classmethod
    def _increment_fits_unit(cls, value: Unit | None, info: ValidationInfo) -> Unit | None:
        # Billing per started hour on a per-minute rate would charge for time nobody used
        # and make the rate meaningless; a larger increment is almost surely a typo.
        unit = info.data.get("unit")
        if (
            value is not None
            and unit in _UNIT_SECONDS
            and _UNIT_SECONDS[value] > _UNIT_SECONDS[unit]
        ):
            raise PydanticCustomError(
                "increment_too_large",
                "Input should not be larger than unit '{unit}'",
                {"unit": unit},
            )
        return value

    def billable_usage(self, usage: object) -> Fraction:
        """The validated usage, in ``unit``, rounded up to whole started increments."""
        amount = _usage_fraction(usage, self.usage)
        if self.billing_increment is None:
            return amount
        step = Fraction(_UNIT_SECONDS[self.billing_increment], _UNIT_SECONDS[self.unit])
        return math.ceil(amount / step) * step

    def exact_cost(self, usage: object) -> Fraction:
        """Billable usage times rate: the cost before rounding and the minimum."""
        return self.billable_usage(usage) * Fraction(self.rate)

    def cost(self, usage: object) -> int:
        """Whole credits for ``usage``; rejects costs above ``MAX_CREDITS`` (undebitable)."""
        total = max(self.minimum, _round(self.exact_cost(usage), self.rounding))
        if total > MAX_CREDITS:
            raise ValidationError(
                self.usage, f"costs {total} credits, more than the maximum {MAX_CREDITS}"
            )
        return total


PriceRule: TypeAlias = Annotated[FixedPrice | MeteredPrice, Field(discriminator="kind")]
"""Either rule, told apart by ``kind`` ("fixed" or "metered")."""

_RULE_MODELS: dict[str, type[FixedPrice] | type[MeteredPrice]] = {
    "fixed": FixedPrice,
    "metered": MeteredPrice,
}


def _round(value: Fraction, mode: Rounding) -> int:
    if mode == "ceil":
        return math.ceil(value)
    if mode == "floor":
        return math.floor(value)
    return math.floor(value + Fraction(1, 2))  # round_half_up; value is never negative


def _usage_fraction(value: object, field: str) -> Fraction:
    """Validate one usage value and convert it exactly.

    bool is refused although it is an int: ``seconds=True`` is a bug, not one second.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal, Fraction)):
        raise ValidationError(
            field, f"must be a number (int, float, Decimal or Fraction), got {_kind(value)}"
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise ValidationError(field, f"must be a finite number, got {value}")
    if isinstance(value, Decimal) and not value.is_finite():
        raise ValidationError(field, f"must be a finite number, got {_describe(value)}")
    # Range first: Decimal compares cheaply even with an absurd exponent.
    if value < 0:
        raise ValidationError(field, f"must not be negative, got {_describe(value)}")
    if value > MAX_USAGE:
        raise ValidationError(field, f"must be at most {MAX_USAGE}, got {_describe(value)}")
    if isinstance(value, Decimal):
        if _effective_places(value) > _MAX_USAGE_DECIMAL_PLACES:
            raise ValidationError(
                field, f"must have at most {_MAX_USAGE_DECIMAL_PLACES} decimal places"
            )
        return Fraction(value)
    if isinstance(value, float):
        return Fraction(str(value))  # the decimal the float prints as: 0.1 -> 1/10
    return Fraction(value)


# -- the catalog: what is for sale -------------------------------------------------------------
# The price file's [packs.<id>] and [plans.<id>] tables, loaded and checked by
# load_price_table with the price rules, in the same error style: a pack or plan with a bad
# value stops startup with its key named, because a wrong catalog credits wrong amounts for
# real money. See PRICING.md, "The catalog".

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
    tier: str | None = Field(
        default=None,
        pattern=_ID,
        description="The spending tier (``[tiers.<name>]``) a paid period puts the account on.",
    )


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


def _unknown_plan_tiers(catalog: Catalog, tiers: Mapping[str, Tier]) -> list[str]:
    """A plan naming a tier the table does not have: refused at load, because a paid
    period would otherwise fail to apply it long after the deploy."""
    known = ", ".join(sorted(tiers)) or "(none)"
    return [
        f"[plans.{plan_id}].tier: unknown tier {plan.tier!r}; known tiers: {known}"
        for plan_id, plan in catalog.plans.items()
        if plan.tier is not None and plan.tier not in tiers
    ]


def _kind(value: object) -> str:
    return "None" if value is None else type(value).__name__


class PriceTable(Mapping[str, FixedPrice | MeteredPrice]):
    """An immutable mapping of action name -> price rule.

    Rules given as plain mappings (parsed TOML/JSON) are validated here, and a bad one raises
    :class:`ConfigurationError` naming ``source``, the action and the field: a price table is
    configuration, and a wrong price must stop startup, not a request.
    """

    __slots__ = ("_catalog", "_rules", "_tiers")

    def __init__(
        self,
        rules: Mapping[str, PriceRule | Mapping[str, Any]] | None = None,
        *,
        source: str = "price table",
        catalog: Catalog | None = None,
        tiers: Mapping[str, Tier | Mapping[str, Any]] | None = None,
    ) -> None:
        self._catalog = catalog or Catalog()
        checked: dict[str, FixedPrice | MeteredPrice] = {}
        problems: list[str] = []  # all of them at once: one fix-and-retry round, not many
        for action, rule in (rules or {}).items():
            try:
                name = _action_name(action)
                checked[name] = _rule_from_data(name, rule)
            except _RuleProblem as exc:
                problems.append(str(exc))
        tier_rules = _tiers_from_data(tiers or {}, problems)
        problems.extend(_unknown_plan_tiers(self._catalog, tier_rules))
        if problems:
            raise ConfigurationError(f"{source}: " + "; ".join(problems))
        self._rules: Mapping[str, FixedPrice | MeteredPrice] = dict(sorted(checked.items()))
        self._tiers: Mapping[str, Tier] = dict(sorted(tier_rules.items()))

    def __getitem__(self, action: str) -> FixedPrice | MeteredPrice:
        return self._rules[action]

    def __iter__(self) -> Iterator[str]:
        return iter(self._rules)

    def __len__(self) -> int:
        return len(self._rules)

    def __repr__(self) -> str:
        return f"PriceTable({dict(self._rules)!r})"

    @property
    def catalog(self) -> Catalog:
        """The packs and plans for sale (the price file's ``[packs.*]``/``[plans.*]``)."""
        return self._catalog

    def tiers(self) -> Mapping[str, Tier]:
        """The spending tiers by name (``[tiers.<name>]``), sorted."""
        return self._tiers

    def tier(self, name: str) -> Tier:
        """The tier called ``name``; an unknown one raises ValidationError on "tier"."""
        label = validation.label(name, "tier", required=True)
        found = self._tiers.get(label)
        if found is None:
            known = ", ".join(self._tiers) or "(none)"
            raise ValidationError("tier", f"unknown tier {label!r}; known tiers: {known}")
        return found

    @property
    def actions(self) -> tuple[str, ...]:
        """The priced action names, sorted."""
        return tuple(self._rules)

    def rule(self, action: str) -> FixedPrice | MeteredPrice:
        """The rule for ``action``; an unknown action raises ValidationError on "action"."""
        name = validation.label(action, "action", required=True)
        found = self._rules.get(name)
        if found is None:
            known = ", ".join(self._rules) or "(none)"
            raise ValidationError("action", f"unknown action {name!r}; known actions: {known}")
        return found

    def calculate_cost(self, action: str, /, **usage: object) -> int:
        """Whole credits for one ``action``.

        Fixed actions take no usage; metered ones take exactly their usage keyword
        (``calculate_cost("video_generation", seconds=2.3) == 23``). Anything else raises
        ValidationError naming the offending keyword.
        """
        rule = self.rule(action)
        if isinstance(rule, FixedPrice):
            if usage:
                raise ValidationError(
                    next(iter(usage)), f"{action} has a fixed price and takes no usage keywords"
                )
            return rule.cost()
        for name in usage:
            if name != rule.usage:
                raise ValidationError(
                    name, f"unexpected usage keyword for {action}; it takes {rule.usage}="
                )
        if rule.usage not in usage:
            raise ValidationError(rule.usage, f"is required for {action}")
        return rule.cost(usage[rule.usage])

    def with_overrides(
        self,
        rules: Mapping[str, PriceRule | Mapping[str, Any]],
        *,
        source: str = "overrides",
        tiers: Mapping[str, Tier | Mapping[str, Any]] | None = None,
    ) -> PriceTable:
        """A new table: each given rule replaces the whole rule of its action, or adds one.

        Whole-rule replacement (not a field-by-field merge) means an override file reads
        complete on its own: what it says is exactly what is charged. An action that is
        not in the table and is one edit away from one that is (``chat_mesage``) is
        refused with "did you mean", unless its table says ``new = true``: a typo would
        otherwise add an action and leave the old price charged.
        """
        rules = _checked_new_actions(self._rules, rules, source)
        overrides = PriceTable(rules, source=source, tiers=tiers)
        return PriceTable(
            {**self._rules, **overrides._rules},
            source=source,
            catalog=self._catalog,
            tiers={**self._tiers, **overrides._tiers},
        )

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """JSON-ready rules (rates as decimal strings); loads back via a .json file."""
        rules: dict[str, dict[str, Any]] = {
            action: rule.model_dump(mode="json", exclude_none=True)
            for action, rule in self._rules.items()
        }
        if self._tiers:
            rules["tiers"] = {
                name: tier.model_dump(mode="json", exclude_none=True)
                for name, tier in self._tiers.items()
            }
        return rules


NEW_ACTION_FIELD = "new"
"""The rule field that declares an action new on purpose (not a typo of a known one)."""


def one_edit_apart(a: str, b: str) -> bool:
    """One insertion, deletion, substitution or swap of neighbours turns ``a`` into ``b``."""
    if a == b or abs(len(a) - len(b)) > 1:
        return False
    if len(a) > len(b):
        a, b = b, a
    i = 0
    while i < len(a) and a[i] == b[i]:
        i += 1
    if len(a) < len(b):
        return a[i:] == b[i + 1 :]
    if a[i + 1 :] == b[i + 1 :]:
        return True
    return i + 1 < len(a) and a[i] == b[i + 1] and a[i + 1] == b[i] and a[i + 2 :] == b[i + 2 :]


def _checked_new_actions(
    known: Mapping[str, PriceRule],
    rules: Mapping[str, PriceRule | Mapping[str, Any]],
    source: str,
) -> dict[str, PriceRule | Mapping[str, Any]]:
    """``rules`` without their ``new`` flags; ConfigurationError for an action that looks
    like a typo of a known one and is not declared new, or a known one declared new."""
    out: dict[str, PriceRule | Mapping[str, Any]] = {}
    problems: list[str] = []
    for action, data in rules.items():
        declared = False
        if isinstance(data, Mapping) and NEW_ACTION_FIELD in data:
            flag = data[NEW_ACTION_FIELD]
            data = {k: v for k, v in data.items() if k != NEW_ACTION_FIELD}
            if not isinstance(flag, bool):
                problems.append(f"{_section(action)}.new: must be true or false")
            declared = flag is True
        out[action] = data
        if not isinstance(action, str):
            continue
        if action in known:
            if declared:
                problems.append(
                    f"{_section(action)}.new: {action} is a known action, not a new one "
                    "(its table replaces its price): remove 'new = true'"
                )
            continue
        close = sorted(k for k in known if one_edit_apart(action, k))
        if close and not declared:
            names = " or ".join(f"[{k}]" for k in close)
            problems.append(
                f"{_section(action)}: not a known action; did you mean {names}? "
                "(to add it as a new action, put 'new = true' in its table)"
            )
    if problems:
        raise ConfigurationError(f"{source}: {'; '.join(problems)}")
    return out


class _RuleProblem(Exception):
    """One bad entry, as ``[action].field: message``; PriceTable adds the source."""


def _action_name(action: object) -> str:
    try:
        return validation.label(action, "action", required=True)
    except ValidationError as exc:
        raise _RuleProblem(f"{_section(action)}: {exc.message}") from None


def _section(action: object) -> str:
    """The action as a TOML table header: ``[video_generation]`` or ``["bad name"]``."""
    if isinstance(action, str) and _USAGE_NAME_RE.fullmatch(action):
        return f"[{action}]"
    text = json.dumps(action, ensure_ascii=False) if isinstance(action, str) else repr(action)
    return f"[{text[:80]}{'...' if len(text) > 80 else ''}]"


def _describe(value: object) -> str:
    """A short rendering of a bad value for an error message.

    Never expands it: ``format(Decimal("1e-999999999"), "f")`` is a billion characters, and
    ``str()`` of an int over 4300 digits raises.
    """
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return "a huge integer"
    if isinstance(value, Fraction):
        if max(value.numerator.bit_length(), value.denominator.bit_length()) > 128:
            return "a huge fraction"
        return str(value)
    text = str(value) if isinstance(value, Decimal) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _rule_from_data(action: str, data: object) -> FixedPrice | MeteredPrice:
    if isinstance(data, (FixedPrice, MeteredPrice)):
        return data
    where = _section(action)
    if not isinstance(data, Mapping):
        raise _RuleProblem(f"{where}: must be a table of rule fields, got {_describe(data)}")
    kind = data.get("kind")
    model = _RULE_MODELS.get(kind) if isinstance(kind, str) else None
    if model is None:
        got = (
            "it is missing (each entry is a complete rule)"
            if "kind" not in data
            else f"got {_describe(kind)}"
        )
        raise _RuleProblem(f'{where}.kind: must be "fixed" or "metered"; {got}')
    try:
        return model.model_validate(dict(data))
    except pydantic.ValidationError as exc:
        raise _RuleProblem(_pydantic_errors(action, exc)) from None


TIERS_KEY = "tiers"
"""The price file's top-level key of the spending tiers (``[tiers.<name>]``): not an action."""


def _tiers_from_data(data: object, problems: list[str]) -> dict[str, Tier]:
    """The tiers of a price file's ``tiers`` table; each bad one adds to ``problems``."""
    if not isinstance(data, Mapping):
        problems.append(f"[{TIERS_KEY}]: must be a table of tier tables, got {_describe(data)}")
        return {}
    tiers: dict[str, Tier] = {}
    for name, fields in data.items():
        where = f"[{TIERS_KEY}.{name}]" if isinstance(name, str) else f"[{TIERS_KEY}]"
        try:
            label = validation.label(name, "tier", required=True)
        except ValidationError as exc:
            problems.append(f"{where}: {exc.message}")
            continue
        if isinstance(fields, Tier):
            tiers[label] = fields
            continue
        if not isinstance(fields, Mapping):
            problems.append(f"{where}: must be a table, got {_describe(fields)}")
            continue
        try:
            tiers[label] = Tier.model_validate(dict(fields))
        except pydantic.ValidationError as exc:
            problems.append(
                _pydantic_errors(f"{TIERS_KEY}.{label}", exc).replace('["', "[").replace('"]', "]")
            )
    return tiers


def _pydantic_errors(action: str, exc: pydantic.ValidationError) -> str:
    """pydantic's report as ``[action].field: message (got value)``, ``; ``-joined."""
    section = _section(action)
    parts = []
    for error in exc.errors(include_url=False):
        loc = section + "".join(f".{part}" for part in error["loc"])
        got = ""
        if error["type"] not in ("missing", "extra_forbidden"):
            got = f" (got {_describe(error['input'])})"
        parts.append(f"{loc}: {error['msg']}{got}")
    return "; ".join(parts)


# -- the defaults ------------------------------------------------------------------------------

DEFAULT_TABLE = PriceTable(
    {
        "chat_message": FixedPrice(credits=10),
        "canvas_simple": FixedPrice(credits=50),
        "canvas_complex": FixedPrice(credits=75),
        # TS: Math.ceil(seconds * 10); exact here, so 2.3 s is 23, never 24.
        "video_generation": MeteredPrice(rate=Decimal(10), unit="second", usage="seconds"),
        # 1000 per GPU hour, billed per started minute: 1.5 min -> 2 min -> 34 credits.
        "model_training": MeteredPrice(
            rate=Decimal(1000), unit="hour", usage="gpu_hours", billing_increment="minute"
        ),
    },
    source="DEFAULT_TABLE",
)
"""The built-in prices, mirroring the TypeScript SDK's PRICING_CONFIG (see PRICING.md)."""


# -- overrides from a file ---------------------------------------------------------------------


class _DuplicateKeyError(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json.loads keeps the last of two equal keys silently; in a price file that hides a typo.
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKeyError(key)
        result[key] = value
    return result


def _parse_file(path: Path, source: str) -> object:
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".json"):
        raise ConfigurationError(f"{source}: pricing file must end in .toml or .json")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise ConfigurationError(f"{source}: cannot read pricing file: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigurationError(f"{source}: not valid UTF-8: {exc.reason}") from None
    try:
        if suffix == ".toml":
            # parse_float=Decimal keeps `rate = 0.1` exact from the file onwards.
            return tomllib.loads(text, parse_float=Decimal)
        return json.loads(text, parse_float=Decimal, object_pairs_hook=_no_duplicates)
    except tomllib.TOMLDecodeError as exc:  # its message carries "(at line L, column C)"
        raise ConfigurationError(f"{source}: invalid TOML: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ConfigurationError(
            f"{source}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None
    except _DuplicateKeyError as exc:
        raise ConfigurationError(f"{source}: invalid JSON: duplicate key {exc.key!r}") from None
    except RecursionError:
        raise ConfigurationError(f"{source}: nested too deeply") from None
    except ValueError as exc:  # e.g. an integer literal over Python's 4300-digit limit
        raise ConfigurationError(f"{source}: invalid {suffix[1:].upper()}: {exc}") from None


def load_price_table(
    path: str | Path | None = None,
    *,
    env_var: str = PRICING_ENV_VAR,
    base: PriceTable = DEFAULT_TABLE,
) -> PriceTable:
    """``base`` with the rules of a .toml or .json file laid over it.

    The file is ``path``, or when that is None the path in ``env_var``; with neither, ``base``
    is returned unchanged. Each action in the file replaces its whole rule or adds a new one.
    Everything is validated now: any problem raises ConfigurationError naming the file and the
    action and field (or, for a syntax error, the line), so a bad deploy fails at startup.
    """
    if path is None:
        path = os.environ.get(env_var, "").strip() or None
        if path is None:
            return base
    file = Path(path)
    source = str(path)
    data = _parse_file(file, source)
    if not isinstance(data, Mapping):
        raise ConfigurationError(
            f"{source}: must map action names to rule tables, got {_describe(data)}"
        )
    # [packs.*] and [plans.*] are the catalog, checked here in the same style.
    catalog, problems = catalog_problems(data)
    if problems:
        raise ConfigurationError(f"{source}: " + "; ".join(problems))
    rules = {k: v for k, v in data.items() if k not in (*CATALOG_SECTIONS, TIERS_KEY)}
    table = base.with_overrides(rules, source=source, tiers=data.get(TIERS_KEY))
    return PriceTable(
        table._rules,
        source=source,
        catalog=base.catalog.merged(catalog),
        tiers=table._tiers,
    )


# -- the active table --------------------------------------------------------------------------

_active: PriceTable | None = None


def active_price_table() -> PriceTable:
    """The table :func:`calculate_cost` uses: set explicitly, else loaded once from the env.

    Loaded lazily (on first use, not at import) so importing the SDK never fails because of a
    pricing file, and cached so a request never re-reads it.
    """
    global _active
    if _active is None:
        _active = load_price_table()
    return _active


def set_price_table(table: PriceTable | None) -> PriceTable | None:
    """Make ``table`` the active one; None forgets it so the next use reloads from the env.

    Returns the previous active table (None if none was loaded yet), for restoring in tests.
    """
    global _active
    previous, _active = _active, table
    return previous


def calculate_cost(action: str, /, **usage: object) -> int:
    """Whole credits for ``action`` in the active table (see :meth:`PriceTable.calculate_cost`).

    >>> calculate_cost("video_generation", seconds=2.3)  # doctest: +SKIP
    23
    """
    return active_price_table().calculate_cost(action, **usage)
