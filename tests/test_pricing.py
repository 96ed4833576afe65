"""The pricing layer: default prices, exact rounding, bad usage, and file overrides."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import pydantic
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from sparked_credits._core.validation import MAX_CREDITS
from sparked_credits.errors import ConfigurationError, ValidationError
from sparked_credits.pricing import (
    DEFAULT_TABLE,
    MAX_USAGE,
    PRICING_ENV_VAR,
    FixedPrice,
    MeteredPrice,
    PriceTable,
    active_price_table,
    calculate_cost,
    load_price_table,
    set_price_table,
)

FILE_SETTINGS = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
UNITS = ("second", "minute", "hour")
UNIT_SECONDS = {"second": 1, "minute": 60, "hour": 3600}
ROUNDINGS = ("ceil", "floor", "round_half_up")


@pytest.fixture(autouse=True)
def _fresh_active_table(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test starts with no env override and no cached active table."""
    monkeypatch.delenv(PRICING_ENV_VAR, raising=False)
    previous = set_price_table(None)
    yield
    set_price_table(previous)


def exact(value: Any) -> Fraction:
    """The test's own exact reading of a usage value (floats via their decimal text)."""
    return Fraction(str(value)) if isinstance(value, float) else Fraction(value)


# -- the default table -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "usage", "expected"),
    [
        ("chat_message", {}, 10),
        ("canvas_simple", {}, 50),
        ("canvas_complex", {}, 75),
        ("video_generation", {"seconds": 2.3}, 23),
        ("video_generation", {"seconds": Decimal("2.3")}, 23),
        ("video_generation", {"seconds": Fraction(23, 10)}, 23),
        ("video_generation", {"seconds": 60}, 600),
        ("video_generation", {"seconds": 0.01}, 1),
        ("video_generation", {"seconds": 0}, 0),
        ("model_training", {"gpu_hours": 0.025}, 34),  # 1.5 min -> 2 min -> 33.3 -> 34
        ("model_training", {"gpu_hours": Fraction(3, 120)}, 34),
        ("model_training", {"gpu_hours": 1}, 1000),
        ("model_training", {"gpu_hours": Fraction(61, 60)}, 1017),  # 61 min
        ("model_training", {"gpu_hours": 61 / 60}, 1017),
        ("model_training", {"gpu_hours": Fraction(1, 3600)}, 17),  # 1 s -> 1 started minute
        ("model_training", {"gpu_hours": Fraction(1, 60)}, 17),
        ("model_training", {"gpu_hours": 0}, 0),
    ],
)
def test_default_prices(action: str, usage: dict[str, Any], expected: int) -> None:
    assert DEFAULT_TABLE.calculate_cost(action, **usage) == expected
    assert calculate_cost(action, **usage) == expected


def test_default_table_shape() -> None:
    assert DEFAULT_TABLE.actions == (
        "canvas_complex",
        "canvas_simple",
        "chat_message",
        "model_training",
        "video_generation",
    )
    video = DEFAULT_TABLE.rule("video_generation")
    assert isinstance(video, MeteredPrice)
    assert (video.rate, video.unit, video.usage, video.billing_increment, video.rounding) == (
        Decimal(10),
        "second",
        "seconds",
        None,
        "ceil",
    )
    training = DEFAULT_TABLE["model_training"]
    assert isinstance(training, MeteredPrice)
    assert (training.rate, training.unit, training.usage, training.billing_increment) == (
        Decimal(1000),
        "hour",
        "gpu_hours",
        "minute",
    )
    assert DEFAULT_TABLE["chat_message"] == FixedPrice(credits=10)
    assert "chat_message" in DEFAULT_TABLE
    assert "nope" not in DEFAULT_TABLE
    assert len(DEFAULT_TABLE) == 5
    assert active_price_table() is DEFAULT_TABLE  # no env var -> the defaults themselves


def test_rules_are_frozen() -> None:
    rule = DEFAULT_TABLE["video_generation"]
    with pytest.raises(pydantic.ValidationError):
        rule.rate = Decimal(1)  # type: ignore[misc]
    with pytest.raises(TypeError):
        DEFAULT_TABLE["x"] = FixedPrice(credits=1)  # type: ignore[index]


def test_rates_stay_exact() -> None:
    rule = MeteredPrice(rate=0.1, unit="second", usage="seconds")  # type: ignore[arg-type]
    assert rule.rate == Decimal("0.1")
    assert rule.exact_cost(0.3) == Fraction(3, 100)
    assert MeteredPrice(rate="0.125", unit="second", usage="s").rate == Decimal("0.125")  # type: ignore[arg-type]
    # 0.1 + 0.2 != 0.3 in floats; here 3 s at 0.1 + 0.2 credits/s is exactly 0.9, floor 0.
    rule = MeteredPrice(rate=Decimal("0.3"), unit="second", usage="s", rounding="floor")
    assert rule.cost(3) == 0
    assert rule.cost(Fraction(10, 3)) == 1


def test_minimum_applies_even_to_zero_usage() -> None:
    rule = MeteredPrice(rate=Decimal(1), unit="second", usage="s", minimum=5)
    assert [rule.cost(u) for u in (0, 1, 5, 6)] == [5, 5, 5, 6]


def test_cost_above_max_credits_is_rejected() -> None:
    rule = MeteredPrice(rate=Decimal(MAX_CREDITS), unit="second", usage="seconds")
    assert rule.cost(1) == MAX_CREDITS
    with pytest.raises(ValidationError) as err:
        rule.cost(2)
    assert err.value.field == "seconds"


# -- errors on calls ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        -1,
        -0.5,
        Decimal("-1"),
        Fraction(-1, 2),
        float("nan"),
        float("inf"),
        float("-inf"),
        Decimal("NaN"),
        Decimal("sNaN"),
        Decimal("Infinity"),
        True,
        False,
        "1",
        "",
        None,
        [1],
        b"1",
        1 + 0j,
        MAX_USAGE + 1,
        float(MAX_USAGE) * 10,
        Decimal("1e13"),
        Decimal("1e999999999"),
        Decimal("1e-999999999"),  # would need a billion-digit denominator
        pytest.param(10**5000, id="huge-int"),  # str() of it would raise
        pytest.param(-(10**5000), id="huge-negative-int"),
        pytest.param(Fraction(10**5000, 3), id="huge-fraction"),
    ],
)
@pytest.mark.parametrize(
    ("action", "field"), [("video_generation", "seconds"), ("model_training", "gpu_hours")]
)
def test_bad_usage_is_rejected(action: str, field: str, bad: object) -> None:
    with pytest.raises(ValidationError) as err:
        DEFAULT_TABLE.calculate_cost(action, **{field: bad})
    assert err.value.field == field
    assert err.value.message.startswith(f"{field}: ")


@given(bad=st.one_of(st.text(), st.none(), st.booleans(), st.binary(), st.lists(st.integers())))
def test_non_numeric_usage_is_rejected(bad: object) -> None:
    with pytest.raises(ValidationError, match=r"^seconds: must be a number") as err:
        DEFAULT_TABLE.calculate_cost("video_generation", seconds=bad)
    assert err.value.field == "seconds"


@given(
    bad=st.one_of(
        st.integers(max_value=-1),
        st.floats(max_value=-1e-300, allow_infinity=False),
        st.fractions(max_value=Fraction(-1, 10**9)),
    )
)
def test_negative_usage_is_rejected(bad: object) -> None:
    with pytest.raises(ValidationError, match="must not be negative") as err:
        DEFAULT_TABLE.calculate_cost("model_training", gpu_hours=bad)
    assert err.value.field == "gpu_hours"


def test_unknown_action_lists_known_ones() -> None:
    with pytest.raises(ValidationError) as err:
        calculate_cost("video_gen", seconds=1)
    assert err.value.field == "action"
    assert "'video_gen'" in err.value.message
    for action in DEFAULT_TABLE.actions:
        assert action in err.value.message


@pytest.mark.parametrize("action", ["", "has space", "-x", "x" * 65, None, 5])
def test_malformed_action_is_rejected(action: Any) -> None:
    with pytest.raises(ValidationError) as err:
        DEFAULT_TABLE.calculate_cost(action)
    assert err.value.field == "action"


def test_missing_usage_keyword() -> None:
    with pytest.raises(ValidationError, match="is required for video_generation") as err:
        DEFAULT_TABLE.calculate_cost("video_generation")
    assert err.value.field == "seconds"


def test_unexpected_usage_keyword() -> None:
    with pytest.raises(ValidationError, match="takes seconds=") as err:
        DEFAULT_TABLE.calculate_cost("video_generation", second=3)
    assert err.value.field == "second"
    with pytest.raises(ValidationError) as err:
        DEFAULT_TABLE.calculate_cost("video_generation", seconds=3, gpu_hours=1)
    assert err.value.field == "gpu_hours"


def test_fixed_actions_take_no_usage() -> None:
    with pytest.raises(ValidationError, match="fixed price") as err:
        DEFAULT_TABLE.calculate_cost("chat_message", tokens=100)
    assert err.value.field == "tokens"


def test_action_may_be_a_usage_keyword_name() -> None:
    # `action` is positional-only, so a rule may meter a keyword of that name.
    table = PriceTable({"x": MeteredPrice(rate=Decimal(2), unit="second", usage="action")})
    assert table.calculate_cost("x", action=3) == 6


# -- properties of every rule ------------------------------------------------------------------

rates = st.one_of(
    st.integers(min_value=1, max_value=10**6),
    st.decimals(min_value=Decimal("0.000001"), max_value=10**6, places=6),
).map(Decimal)
usages = st.one_of(
    st.integers(min_value=0, max_value=10**6),
    st.fractions(min_value=0, max_value=10**6, max_denominator=10**6),
    st.decimals(min_value=0, max_value=10**6, places=9),
    st.floats(min_value=0, max_value=10**6),
)


@st.composite
def metered_rules(draw: st.DrawFn, *, minimum: bool = True) -> MeteredPrice:
    unit = draw(st.sampled_from(UNITS))
    smaller = [u for u in UNITS if UNIT_SECONDS[u] <= UNIT_SECONDS[unit]]
    return MeteredPrice(
        rate=draw(rates),
        unit=unit,
        usage="u",
        billing_increment=draw(st.none() | st.sampled_from(smaller)),
        rounding=draw(st.sampled_from(ROUNDINGS)),
        minimum=draw(st.integers(0, 1000)) if minimum else 0,
    )


def variant(rule: MeteredPrice, **changes: Any) -> MeteredPrice:
    return MeteredPrice.model_validate({**rule.model_dump(), **changes})


@given(rule=metered_rules(), usage=usages)
def test_cost_is_a_whole_nonnegative_int(rule: MeteredPrice, usage: Any) -> None:
    cost = rule.cost(usage)
    assert type(cost) is int
    assert rule.minimum <= cost <= MAX_CREDITS
    assert PriceTable({"a": rule}).calculate_cost("a", u=usage) == cost


@given(rule=metered_rules(), a=usages, b=usages)
def test_cost_is_monotonic_in_usage(rule: MeteredPrice, a: Any, b: Any) -> None:
    low, high = sorted((a, b), key=exact)
    assert rule.cost(low) <= rule.cost(high)


@given(rule=metered_rules(minimum=False), usage=usages)
def test_rounding_modes_bracket_the_exact_cost(rule: MeteredPrice, usage: Any) -> None:
    true_cost = rule.billable_usage(usage) * Fraction(rule.rate)
    ceil = variant(rule, rounding="ceil").cost(usage)
    floor = variant(rule, rounding="floor").cost(usage)
    half_up = variant(rule, rounding="round_half_up").cost(usage)
    assert floor <= true_cost <= ceil
    assert ceil - floor <= 1
    assert floor <= half_up <= ceil
    assert abs(half_up - true_cost) <= Fraction(1, 2)
    if true_cost - floor == Fraction(1, 2):
        assert half_up == ceil


@given(rule=metered_rules(), usage=usages)
def test_increment_never_bills_less_than_used(rule: MeteredPrice, usage: Any) -> None:
    billed = rule.billable_usage(usage)
    used = exact(usage)
    assert billed >= used
    if rule.billing_increment is None:
        assert billed == used
    else:
        step = Fraction(UNIT_SECONDS[rule.billing_increment], UNIT_SECONDS[rule.unit])
        assert billed - used < step
        assert (billed / step).denominator == 1  # whole increments
    assert rule.cost(usage) >= variant(rule, billing_increment=None).cost(usage)


@given(rule=metered_rules(minimum=False), usage=usages)
def test_exact_cost_without_increment_is_usage_times_rate(rule: MeteredPrice, usage: Any) -> None:
    rule = variant(rule, billing_increment=None)
    assert rule.exact_cost(usage) == exact(usage) * Fraction(rule.rate)


@given(rule=metered_rules())
def test_zero_usage_costs_the_minimum(rule: MeteredPrice) -> None:
    for zero in (0, 0.0, -0.0, Decimal(0), Decimal("0E-999999999"), Fraction(0)):
        assert rule.cost(zero) == rule.minimum


@given(value=st.floats(min_value=0, max_value=10**6))
def test_floats_are_read_as_their_decimal_text(value: float) -> None:
    assert DEFAULT_TABLE.calculate_cost("video_generation", seconds=value) == math.ceil(
        Decimal(str(value)) * 10
    )


@given(credits=st.integers(0, MAX_CREDITS))
def test_fixed_price_is_its_credits(credits: int) -> None:
    table = PriceTable({"a": FixedPrice(credits=credits)})
    assert table.calculate_cost("a") == credits


# -- tables and overrides in code --------------------------------------------------------------


def test_with_overrides_replaces_whole_rules_and_adds_new_ones() -> None:
    table = DEFAULT_TABLE.with_overrides(
        {
            "model_training": {
                "kind": "metered",
                "rate": 1000,
                "unit": "hour",
                "usage": "gpu_hours",
            },
            "voice_clone": {"kind": "fixed", "credits": 40},
        }
    )
    # The increment was not carried over: 1.5 min is billed exactly, 25 not 34.
    assert table.calculate_cost("model_training", gpu_hours=0.025) == 25
    assert table.calculate_cost("voice_clone") == 40
    assert table.calculate_cost("chat_message") == 10
    assert DEFAULT_TABLE.calculate_cost("model_training", gpu_hours=0.025) == 34  # untouched


def test_to_dict_round_trips_through_json(tmp_path: Path) -> None:
    path = tmp_path / "all.json"
    path.write_text(json.dumps(DEFAULT_TABLE.to_dict()))
    assert load_price_table(path, base=PriceTable()) == DEFAULT_TABLE
    assert DEFAULT_TABLE.to_dict()["video_generation"]["rate"] == "10"


def test_bad_rule_in_code_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match=r"^overrides: \[x\]\.rate: "):
        DEFAULT_TABLE.with_overrides(
            {"x": {"kind": "metered", "rate": 0, "unit": "second", "usage": "s"}}
        )


# -- override files ----------------------------------------------------------------------------

GOOD_TOML = """\
# prices for the spring promotion
[video_generation]
kind = "metered"
rate = 15
unit = "second"
usage = "seconds"

[chat_message]
kind = "fixed"
credits = 5

[voice_clone]
kind = "metered"
rate = 0.5
unit = "minute"
usage = "minutes"
billing_increment = "second"
rounding = "round_half_up"
minimum = 3
"""


def check_good_table(table: PriceTable) -> None:
    assert table.calculate_cost("video_generation", seconds=2.3) == 35  # 34.5 -> ceil
    assert table.calculate_cost("chat_message") == 5
    assert table.calculate_cost("voice_clone", minutes=0) == 3
    assert table.calculate_cost("voice_clone", minutes=13) == 7  # 6.5 -> round half up
    assert table.calculate_cost("voice_clone", minutes=12.9) == 6  # 6.45 -> 6
    assert table.calculate_cost("canvas_complex") == 75  # not in the file: the default
    voice = table.rule("voice_clone")
    assert isinstance(voice, MeteredPrice)
    assert voice.rate == Decimal("0.5")


def test_good_toml_file(tmp_path: Path) -> None:
    path = tmp_path / "pricing.toml"
    path.write_text(GOOD_TOML)
    check_good_table(load_price_table(path))
    check_good_table(load_price_table(str(path)))


def test_good_json_file(tmp_path: Path) -> None:
    path = tmp_path / "pricing.JSON"
    path.write_text(
        json.dumps(
            {
                "video_generation": {
                    "kind": "metered",
                    "rate": 15,
                    "unit": "second",
                    "usage": "seconds",
                },
                "chat_message": {"kind": "fixed", "credits": 5},
                "voice_clone": {
                    "kind": "metered",
                    "rate": "0.5",
                    "unit": "minute",
                    "usage": "minutes",
                    "billing_increment": "second",
                    "rounding": "round_half_up",
                    "minimum": 3,
                },
            }
        )
    )
    check_good_table(load_price_table(path))


def test_file_decimals_are_exact(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(
        '[a]\nkind = "metered"\nrate = 0.1\nunit = "second"\nusage = "s"\nrounding = "floor"\n'
    )
    # 30 s at 0.1 credits/s is exactly 3; float arithmetic would give 3.0000000000000004.
    assert load_price_table(path).calculate_cost("a", s=30) == 3


def test_env_var_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "pricing.toml"
    path.write_text(GOOD_TOML)
    monkeypatch.setenv(PRICING_ENV_VAR, str(path))
    check_good_table(load_price_table())
    # The module-level calculate_cost picks it up lazily, once.
    assert calculate_cost("video_generation", seconds=2.3) == 35
    path.write_text("")
    assert calculate_cost("video_generation", seconds=2.3) == 35  # cached
    set_price_table(None)
    assert calculate_cost("video_generation", seconds=2.3) == 23  # reloaded: empty file


def test_custom_env_var_and_base(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "p.json"
    path.write_text('{"a": {"kind": "fixed", "credits": 1}}')
    monkeypatch.setenv("MY_PRICES", str(path))
    table = load_price_table(env_var="MY_PRICES", base=PriceTable())
    assert table.actions == ("a",)
    assert load_price_table() is DEFAULT_TABLE  # the default env var is unset


@pytest.mark.parametrize("value", ["", "   "])
def test_blank_env_var_means_defaults(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PRICING_ENV_VAR, value)
    assert load_price_table() is DEFAULT_TABLE


def test_bad_env_file_fails_on_first_use(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "missing.toml"
    monkeypatch.setenv(PRICING_ENV_VAR, str(missing))
    with pytest.raises(ConfigurationError, match="cannot read") as err:
        calculate_cost("chat_message")
    assert str(missing) in err.value.message


@pytest.mark.parametrize(
    ("name", "content", "fragment"),
    [
        ("p.yaml", b"a: 1", "must end in .toml or .json"),
        ("p.toml", b"\xff\xfe", "not valid UTF-8"),
        ("p.json", b"[1, 2]", "must map action names to rule tables, got an array"),
        ("p.json", b'{"a": {"kind": "fixed", "credits": 1}, "a": {}}', "duplicate key 'a'"),
        (
            "p.json",
            b'{"a": {"kind": "fixed", "credits": 1, "credits": 2}}',
            "duplicate key 'credits'",
        ),
        ("p.json", b"[" * 100_000, "p.json: "),
        ("p.toml", b"a = 5", "[a]: must be a table of rule fields, got 5"),
        ("p.toml", b'[a]\nkind = "fixed"\ncredits = 1.0', "[a].credits: Input should be"),
        (
            "p.json",
            b'{"a": {"kind": "metered", "rate": NaN, "unit": "second", "usage": "s"}}',
            "[a].rate: Input should be a finite number",
        ),
        (
            "p.toml",
            b'[a]\nkind = "metered"\nrate = 1e-999999999\nunit = "second"\nusage = "s"',
            "[a].rate: Input should have at most 12 decimal places",
        ),
        (
            "p.toml",
            b'[a]\nkind = "metered"\nunit = "second"\nusage = "s"',
            "[a].rate: Field required",
        ),
        ("p.toml", b'[a]\nkind = "fixed"\ncredits = ' + b"9" * 5000, "invalid TOML: "),
        ("p.json", b'{"a": {"kind": "fixed", "credits": ' + b"9" * 5000 + b"}}", "invalid JSON: "),
        (
            "p.json",
            b'{"a": {"kind": "fixed", "credits": ' + b"9" * 4000 + b"}}",
            "[a].credits: Input should be less than or equal to 9007199254740991 "
            "(got a huge integer)",
        ),
    ],
    ids=lambda v: v[:40] if isinstance(v, str) else None,
)
def test_bad_files(tmp_path: Path, name: str, content: bytes, fragment: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ConfigurationError) as err:
        load_price_table(path)
    assert err.value.message.startswith(f"{path}: ")
    assert fragment in err.value.message


def test_error_message_format(tmp_path: Path) -> None:
    path = tmp_path / "pricing.toml"
    path.write_text(
        '[video_generation]\nkind = "metered"\nrate = -1\nunit = "second"\nusage = "seconds"\n'
    )
    with pytest.raises(ConfigurationError) as err:
        load_price_table(path)
    assert err.value.message == (
        f"{path}: [video_generation].rate: Input should be greater than 0 (got -1)"
    )


# Hypothesis-generated bad files. Each case is (action, rule, fragment the message must hold).

printable = st.characters(
    min_codepoint=0x20, max_codepoint=0xFFFF, exclude_categories=("Cs",), exclude_characters="\x7f"
)
text = st.text(printable, max_size=12)
Case = tuple[str, Any, str]


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            return str(value).lower().replace("infinity", "inf")  # nan, inf, -inf
        out = format(value, "f")
        return out if "." in out else out + ".0"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    assert isinstance(value, dict)
    return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


def toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def to_toml(data: dict[str, Any]) -> str:
    lines = [f"{toml_key(k)} = {toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for action, rule in data.items():
        if isinstance(rule, dict):
            lines += ["", f"[{toml_key(action)}]"]
            lines += [f"{toml_key(k)} = {toml_value(v)}" for k, v in rule.items()]
    return "\n".join(lines) + "\n"


def to_json(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, default=float)


@st.composite
def good_rules(draw: st.DrawFn) -> dict[str, Any]:
    if draw(st.booleans()):
        return {"kind": "fixed", "credits": draw(st.integers(0, 1000))}
    unit = draw(st.sampled_from(UNITS))
    rule: dict[str, Any] = {
        "kind": "metered",
        "rate": draw(st.integers(1, 100)),
        "unit": unit,
        "usage": draw(st.sampled_from(["seconds", "gpu_hours", "n"])),
    }
    if draw(st.booleans()):
        rule["billing_increment"] = draw(
            st.sampled_from([u for u in UNITS if UNIT_SECONDS[u] <= UNIT_SECONDS[unit]])
        )
    if draw(st.booleans()):
        rule["rounding"] = draw(st.sampled_from(ROUNDINGS))
    return rule


def metered(**fields: Any) -> dict[str, Any]:
    return {"kind": "metered", "rate": 10, "unit": "second", "usage": "seconds", **fields}


def field_case(field: str, values: st.SearchStrategy[Any], fixed: bool = False) -> Any:
    base = {"kind": "fixed", "credits": 1} if fixed else metered()
    return values.map(lambda v: ("bad_action", {**base, field: v}, f"[bad_action].{field}: "))


wrong_types = st.one_of(
    st.booleans(),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.sampled_from("ab"), st.integers(), max_size=1),
)
not_a_decimal_string = text.filter(lambda s: not re.fullmatch(r"[0-9]+(\.[0-9]+)?", s.strip()))
non_positive = st.one_of(
    st.integers(max_value=0), st.decimals(max_value=0, places=3, allow_nan=False)
)


@st.composite
def larger_increment(draw: st.DrawFn) -> Case:
    unit, inc = draw(
        st.sampled_from([(u, i) for u in UNITS for i in UNITS if UNIT_SECONDS[i] > UNIT_SECONDS[u]])
    )
    return (
        "t",
        metered(unit=unit, billing_increment=inc),
        f"[t].billing_increment: Input should not be larger than unit '{unit}'",
    )


@st.composite
def missing_field(draw: st.DrawFn) -> Case:
    rule = metered() if draw(st.booleans()) else {"kind": "fixed", "credits": 1}
    field = draw(st.sampled_from(sorted(set(rule) - {"kind"})))
    del rule[field]
    return ("t", rule, f"[t].{field}: Field required")


@st.composite
def extra_field(draw: st.DrawFn) -> Case:
    rule = metered() if draw(st.booleans()) else {"kind": "fixed", "credits": 1}
    field = draw(
        st.from_regex(r"[a-z_]{1,12}", fullmatch=True).filter(
            lambda f: f not in MeteredPrice.model_fields
        )
    )
    return ("t", {**rule, field: 1}, f"[t].{field}: Extra inputs are not permitted")


@st.composite
def bad_kind(draw: st.DrawFn) -> Case:
    rule = metered()
    if draw(st.booleans()):
        del rule["kind"]
    else:
        rule["kind"] = draw(
            st.one_of(
                text.filter(lambda s: s not in ("fixed", "metered")), st.integers(), st.booleans()
            )
        )
    return ("t", rule, '[t].kind: must be "fixed" or "metered"')


bad_action_names = st.one_of(
    st.sampled_from(["", " lead", "has space", "-dash", ".dot", "x" * 65, "a{b}", "é", "a\tb"]),
    text.filter(lambda s: not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.:/-]{0,63}", s)),
)

bad_cases: st.SearchStrategy[Case] = st.one_of(
    # wrong types
    field_case("rate", st.one_of(wrong_types, not_a_decimal_string)),
    field_case("unit", st.one_of(wrong_types, st.integers())),
    field_case("usage", st.one_of(wrong_types, st.integers())),
    field_case("rounding", st.one_of(wrong_types, st.integers())),
    field_case("minimum", st.one_of(wrong_types, text, st.decimals(places=2, allow_nan=False))),
    field_case(
        "credits", st.one_of(wrong_types, text, st.decimals(places=2, allow_nan=False)), fixed=True
    ),
    # out of range
    field_case("rate", non_positive),
    field_case("rate", st.decimals(min_value=Decimal("1e-20"), max_value=Decimal("1e-13"))),
    field_case("rate", st.integers(min_value=MAX_CREDITS + 1)),
    field_case("minimum", st.integers(max_value=-1)),
    field_case(
        "credits",
        st.one_of(st.integers(max_value=-1), st.integers(min_value=MAX_CREDITS + 1)),
        fixed=True,
    ),
    # unknown enum values
    field_case("unit", text.filter(lambda s: s not in UNITS)),
    field_case("billing_increment", text.filter(lambda s: s not in UNITS)),
    field_case("rounding", text.filter(lambda s: s not in ROUNDINGS)),
    field_case(
        "usage",
        st.one_of(
            st.sampled_from(["", "1s", "has space", "class", "sec-onds", "x" * 65, "é"]),
            text.filter(lambda s: not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,63}", s)),
        ),
    ),
    larger_increment(),
    missing_field(),
    extra_field(),
    bad_kind(),
    # a rule that is not a table, and bad action names
    st.one_of(st.integers(), text, st.lists(st.integers(), max_size=2)).map(
        lambda v: ("t", v, "[t]: must be a table of rule fields")
    ),
    st.tuples(bad_action_names, good_rules()).map(lambda p: (p[0], p[1], ": action: ")),
)


@FILE_SETTINGS
@given(
    case=bad_cases,
    good=st.dictionaries(
        st.sampled_from(["g1", "g2", "video_generation"]), good_rules(), max_size=2
    ),
    fmt=st.sampled_from(["toml", "json"]),
)
def test_generated_bad_files_name_file_and_field(
    tmp_path: Path, case: Case, good: dict[str, Any], fmt: str
) -> None:
    action, rule, fragment = case
    assume(action not in good)
    data = {**good, action: rule}
    path = tmp_path / f"pricing.{fmt}"
    path.write_text(to_toml(data) if fmt == "toml" else to_json(data), encoding="utf-8")
    with pytest.raises(ConfigurationError) as err:
        load_price_table(path)
    message = err.value.message
    assert message.startswith(f"{path}: "), message
    assert fragment in message, message


@FILE_SETTINGS
@given(
    good=st.dictionaries(
        st.sampled_from(["g1", "g2", "video_generation"]), good_rules(), max_size=3
    ),
    fmt=st.sampled_from(["toml", "json"]),
)
def test_generated_good_files_load(tmp_path: Path, good: dict[str, Any], fmt: str) -> None:
    path = tmp_path / f"pricing.{fmt}"
    path.write_text(to_toml(good) if fmt == "toml" else to_json(good), encoding="utf-8")
    table = load_price_table(path)
    for action, rule in good.items():
        assert table[action].model_dump(exclude_defaults=True) == {
            k: v for k, v in rule.items() if k != "kind" and (k, v) != ("rounding", "ceil")
        }
    assert set(table.actions) == set(DEFAULT_TABLE.actions) | set(good)


@FILE_SETTINGS
@given(
    good=st.dictionaries(
        st.sampled_from(["g1", "g2", "video_generation"]), good_rules(), max_size=3
    ),
    fmt=st.sampled_from(["toml", "json"]),
    junk=st.sampled_from(["@@@", "!", "\\x", "<<<"]),
    where=st.integers(min_value=0),
)
def test_syntax_errors_name_the_line(
    tmp_path: Path, good: dict[str, Any], fmt: str, junk: str, where: int
) -> None:
    lines = (to_toml(good) if fmt == "toml" else to_json(good)).splitlines()
    index = where % (len(lines) + 1)
    lines.insert(index, junk)
    path = tmp_path / f"pricing.{fmt}"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(ConfigurationError) as err:
        load_price_table(path)
    message = err.value.message
    assert message.startswith(f"{path}: invalid {fmt.upper()}"), message
    assert f"line {index + 1}," in message, message


def test_every_bad_entry_is_reported_at_once(tmp_path: Path) -> None:
    path = tmp_path / "pricing.toml"
    path.write_text(
        '[video_generation]\nkind = "metered"\nrate = -1\nunit = "second"\nusage = "seconds"\n'
        '\n[model_training]\nkind = "metered"\nrate = 1000\nunit = "minute"\nusage = "gpu_hours"\n'
        'billing_increment = "hour"\n\n["voice clone"]\nkind = "fixed"\ncredits = 5\n'
        "\n[chat_message]\nrate = 15\n"
    )
    with pytest.raises(ConfigurationError) as err:
        load_price_table(path)
    assert err.value.message == (
        f"{path}: [video_generation].rate: Input should be greater than 0 (got -1); "
        "[model_training].billing_increment: Input should not be larger than unit 'minute' "
        "(got 'hour'); "
        '["voice clone"]: action: must start with a letter or digit and use only letters, '
        "digits and _.:/-; "
        '[chat_message].kind: must be "fixed" or "metered"; it is missing '
        "(each entry is a complete rule)"
    )


def test_bad_action_key_in_code() -> None:
    with pytest.raises(ConfigurationError, match=r"^price table: \[5\]: action: must be a str"):
        PriceTable({5: FixedPrice(credits=1)})  # type: ignore[dict-item]
