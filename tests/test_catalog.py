"""The catalog ([packs.*], [plans.*]) in the price file: loaded with the prices, and a bad
value refused at load with its key named."""

from __future__ import annotations

from pathlib import Path

import pytest

from sparked_credits import ConfigurationError, ValidationError
from sparked_credits.pricing import DEFAULT_TABLE, load_price_table

GOOD = """
[chat_message]
kind = "fixed"
credits = 12

[packs.starter]            # pack id
credits = 500
price = "price_1Starter"   # the Stripe price id
amount = 500               # the price in the currency's smallest unit, checked on payment
currency = "usd"

[packs.big]
credits = 5000
price = "price_1Big"
amount = 4000
currency = "eur"
expires_in_days = 365
priority = 40

[plans.pro]                # plan id
credits = 5000             # per billing period
price = "price_1Pro"
rollover_cap = 2000
"""


def write(tmp_path: Path, text: str, name: str = "pricing.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_catalog_loads_with_the_prices(tmp_path: Path) -> None:
    table = load_price_table(write(tmp_path, GOOD))
    assert table.calculate_cost("chat_message") == 12
    assert "packs" not in table.actions
    starter = table.catalog.pack("starter")
    assert (starter.credits, starter.price, starter.amount, starter.currency) == (
        500,
        "price_1Starter",
        500,
        "usd",
    )
    assert (starter.expires_in_days, starter.priority) == (None, 50)
    assert table.catalog.pack("big").expires_in_days == 365
    found = table.catalog.plan_for_price("price_1Pro")
    assert found is not None
    plan_id, plan = found
    assert (plan_id, plan.credits, plan.rollover_cap, plan.grace_days) == ("pro", 5000, 2000, 3)
    assert table.catalog.plan_for_price("price_other") is None
    with pytest.raises(ValidationError) as err:
        table.catalog.pack("nope")
    assert err.value.field == "pack"
    assert not DEFAULT_TABLE.catalog


def test_catalog_in_json(tmp_path: Path) -> None:
    text = (
        '{"packs": {"s": {"credits": 1, "price": "p_1", "amount": 1, "currency": "usd"}},'
        ' "plans": {"p": {"credits": 2, "price": "p_2"}}}'
    )
    table = load_price_table(write(tmp_path, text, "pricing.json"))
    assert table.catalog.pack("s").credits == 1
    assert table.catalog.plans["p"].rollover_cap == 0


@pytest.mark.parametrize(
    ("section", "body", "named"),
    [
        ("packs.starter", 'credits = 0\nprice = "p"\namount = 1\ncurrency = "usd"', ".credits"),
        ("packs.starter", 'credits = 5\nprice = "p"\namount = 0\ncurrency = "usd"', ".amount"),
        ("packs.starter", 'credits = 5\nprice = "p"\namount = 5\ncurrency = "USD"', ".currency"),
        ("packs.starter", 'credits = 5\nprice = ""\namount = 5\ncurrency = "usd"', ".price"),
        ("packs.starter", 'credits = "5"\nprice = "p"\namount = 5\ncurrency = "usd"', ".credits"),
        ("packs.starter", 'credits = 5\nprice = "p"\ncurrency = "usd"', ".amount"),
        ("packs.starter", 'credits = 5\nprice = "p"\namount = 5\ncurrency = "usd"\nx = 1', ".x"),
        (
            "packs.starter",
            'credits = 5\nprice = "p"\namount = 5\ncurrency = "usd"\nexpires_in_days = 0',
            ".expires_in_days",
        ),
        (
            "packs.starter",
            'credits = 5\nprice = "p"\namount = 5\ncurrency = "usd"\npriority = 101',
            ".priority",
        ),
        ("plans.pro", 'credits = 5\nprice = "p"\nrollover_cap = -1', ".rollover_cap"),
        ("plans.pro", "credits = 5", ".price"),
        ("plans.pro", 'credits = 5.5\nprice = "p"', ".credits"),
        ('packs."bad id"', 'credits = 5\nprice = "p"\namount = 5\ncurrency = "usd"', ""),
    ],
)
def test_a_bad_value_is_refused_at_load_with_its_key(
    tmp_path: Path, section: str, body: str, named: str
) -> None:
    path = write(tmp_path, f"[{section}]\n{body}\n")
    with pytest.raises(ConfigurationError) as err:
        load_price_table(path)
    key = section.replace('"', "")
    assert f"[{key}]{named}" in str(err.value), str(err.value)
    assert str(path) in str(err.value)


def test_a_section_that_is_not_a_table_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"\[packs\]"):
        load_price_table(write(tmp_path, "packs = 3\n"))
