"""Every script's declaration (``_core.protocol.SPECS``) against its Lua file: the header
repeats the declaration, and the code uses exactly the ARGV and KEYS it declares and
answers only the statuses it declares. Adding a script or an argument without the other
half fails here."""

from __future__ import annotations

import re
from importlib import resources

import pytest

from sparked_credits._core.operations import Operations
from sparked_credits._core.options import make_options
from sparked_credits._core.protocol import (
    MUTATION_REFUSALS,
    REFUSALS,
    REPLY_STATUSES,
    SHARED_ARGS,
    SPECS,
    Context,
    parse_header,
    refusal,
)
from sparked_credits._core.scripts import SCRIPTS
from sparked_credits.errors import CreditsError

LUA = resources.files("sparked_credits").joinpath("lua")
# lots.lua is part of the prelude (scripts.py puts it at the prelude's '@lots' line).
PRELUDE = LUA.joinpath("prelude.lua").read_text("utf-8") + LUA.joinpath("lots.lua").read_text(
    "utf-8"
)


def _source(name: str) -> str:
    return LUA.joinpath(f"{name}.lua").read_text("utf-8")


def test_every_script_file_is_declared() -> None:
    files = {p.name[:-4] for p in LUA.iterdir() if p.name.endswith(".lua")} - {"prelude", "lots"}
    assert files == set(SPECS)
    assert {s.name for s in SCRIPTS.all()} == set(SPECS)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_declaration_matches_the_lua_header_and_code(name: str) -> None:
    spec = SPECS[name]
    header = parse_header(_source(name))
    assert header.argv == spec.args, "the --: argv header"
    assert header.keys == spec.extra_keys, "the --: keys header"
    assert header.reply == spec.reply, "the --: reply header"
    assert set(header.refusals) == set(spec.refusals), "the --: refusals header"
    # The code reads its last declared argument and nothing beyond.
    assert header.argv_used == (len(SHARED_ARGS) + len(spec.args) if spec.args else 0)
    assert header.keys_used <= len(spec.keys)
    if spec.extra_keys:
        assert header.keys_used == len(spec.keys)
    # It answers only declared statuses, and every declared refusal exists in the Lua.
    assert header.statuses <= set(spec.refusals) | REPLY_STATUSES[spec.reply]
    for status in spec.refusals:
        assert re.search(rf"'{status}'", _source(name) + PRELUDE), status
    if spec.keyed and spec.reply in ("mutation", "hold"):
        assert set(MUTATION_REFUSALS) <= set(spec.refusals)


def test_every_refusal_has_a_typed_error() -> None:
    samples = {"hold_closed": ["1-0", "S"], "spend_limit": ["daily", "200", "190", "20000", "20"]}
    for status in REFUSALS:
        error = refusal(status, samples.get(status, ["7", "9"]), Context("user_1", "chat"))
        assert isinstance(error, CreditsError)
        assert type(error) is not CreditsError or status == "replay_gone"
    assert "unexpected script reply" in str(refusal("nope", [], Context("user_1")))


def test_builders_take_named_arguments_only() -> None:
    spec = SPECS["debit"]
    with pytest.raises(TypeError, match="missing"):
        spec.values(amount="1", action="a", reason="")
    with pytest.raises(TypeError, match="unknown"):
        spec.values(amount="1", action="a", reason="", metadata="", colour="red")
    ops = Operations(make_options())
    with pytest.raises(TypeError):
        ops.debit("user_1", 1, "chat_message")  # type: ignore[misc]


@pytest.mark.parametrize("name", sorted(SPECS))
def test_calls_follow_the_declaration(name: str) -> None:
    """The call a builder makes has the declared number of KEYS and ARGV."""
    spec = SPECS[name]
    ops = Operations(make_options())
    args = {arg: "1" for arg in spec.args}
    op = ops.maintenance(name, "user_1", decode=lambda raw: raw, **args)
    assert len(op.request.keys) == len(spec.keys)  # type: ignore[union-attr]
    assert len(op.request.args) == len(SHARED_ARGS) + len(spec.args)  # type: ignore[union-attr]
