"""Each shared constant of the ledger format is stated once, in Python
(``_core/ledger_format.py``), and reaches every Lua script from there: no Lua file states
one itself, and every script's first line declares them with the Python values."""

from __future__ import annotations

import re
from importlib import resources

import pytest

from sparked_credits._core import lots, validation
from sparked_credits._core.ledger_format import BLOCK_SIZE, LUA_CONSTANTS, lua_constants
from sparked_credits._core.scripts import SCRIPTS, general_only

LUA_DIR = resources.files("sparked_credits").joinpath("lua")


def _code(text: str) -> str:
    """Lua without its comments (prose may name a value)."""
    return "\n".join(line.split("--", 1)[0] for line in text.splitlines())


def _lua_files() -> list[str]:
    return sorted(p.name for p in LUA_DIR.iterdir() if p.name.endswith(".lua"))


@pytest.mark.parametrize("name", _lua_files())
def test_no_lua_file_states_a_shared_constant(name: str) -> None:
    code = _code(LUA_DIR.joinpath(name).read_text("utf-8"))
    for value in (validation.MAX_CREDITS, lots.SPAN, BLOCK_SIZE):
        assert not re.search(rf"\b{value}\b", code), (name, value)
    assert "2^53" not in code
    assert "2^45" not in code
    # The default priority: a literal where a lot is opened or a priority defaulted.
    assert not re.search(r"lots_open(ing)?\([^)]*\b50\b|priority[^\n]*\b50\b", code), name
    for constant in LUA_CONSTANTS:
        assert not re.search(rf"local[^=\n]*\b{constant}\b\s*=", code), (name, constant)


def test_every_script_receives_them_from_python() -> None:
    assert LUA_CONSTANTS == {
        "MAX_CREDITS": 2**53 - 1,
        "BLOCK": 1024,
        "LOT_SPAN": 2**45,
        "DEFAULT_PRIORITY": lots.DEFAULT_PRIORITY,
        "RESEND_WINDOW": 24 * 3600 * 1000,
    }
    line = lua_constants()
    assert line == (
        "local MAX_CREDITS, BLOCK, LOT_SPAN, DEFAULT_PRIORITY, RESEND_WINDOW = "
        f"{2**53 - 1}, 1024, {2**45}, {lots.DEFAULT_PRIORITY}, {24 * 3600 * 1000}\n"
    )
    for script in (*SCRIPTS.all(), general_only("debit")):
        assert script.source.startswith(line), script.name


def test_the_fast_block_writes_through_the_prelude_helpers() -> None:
    """The debit's fast block states no entry field, '_sc' member, block-sum field or lots
    summary layout of its own: it calls the prelude's helpers that the general path
    calls."""
    text = LUA_DIR.joinpath("debit.lua").read_text("utf-8")
    fast = _code(text[text.index("-- @fast:") : text.index("-- @end fast")])
    helpers = ("append_counted(", "idem_put(", "lots_summary_text(", "reply_entry(", "sc_meta(")
    for helper in helpers:
        assert helper in fast, helper
    # It reads the block fields with its marks ('n', 'bo'), but never writes them.
    for private in ("'XADD'", '"_sc"', "'HSET', K_META", "'bf'", "'type'", "'delta'"):
        assert private not in fast, private
    source = SCRIPTS.debit.source
    # The block sits after the helpers it calls, before the general path's ones.
    at = source.index("-- @fast:")
    assert source.index("local function append_counted(") < at
    assert source.index("local function idem_lookup(") > at
