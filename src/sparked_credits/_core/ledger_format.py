"""The ledger format's shared constants, declared once, for Python and the Lua scripts.

The scripts do not repeat them: ``scripts.py`` writes :func:`lua_constants` as the first
line of every script, so a change here reaches both sides (tests/test_ledger_format.py
checks that no Lua file states one of them itself).
"""

from __future__ import annotations

from collections.abc import Mapping

from .lots import DEFAULT_PRIORITY, SPAN
from .validation import MAX_CREDITS

__all__ = ["BLOCK_SIZE", "LUA_CONSTANTS", "lua_constants"]

BLOCK_SIZE = 1024
"""Entries per block of the block sums (prelude.lua, 'Block sums'; reconcile.lua)."""

LUA_CONSTANTS: Mapping[str, int] = {
    "MAX_CREDITS": MAX_CREDITS,  # 2^53 - 1: Lua numbers are doubles
    "BLOCK": BLOCK_SIZE,
    "LOT_SPAN": SPAN,  # 2^45 ms: the expiry part of a lot's order score (lots.lua)
    "DEFAULT_PRIORITY": DEFAULT_PRIORITY,  # of a lot opened without one (init, adjust)
}
"""Lua name -> value, as every script receives them."""


def lua_constants() -> str:
    """One Lua line declaring :data:`LUA_CONSTANTS` as locals (integers, written exactly)."""
    names = ", ".join(LUA_CONSTANTS)
    values = ", ".join(str(int(v)) for v in LUA_CONSTANTS.values())
    return f"local {names} = {values}\n"
