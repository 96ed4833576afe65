"""The ledger format's shared constants, declared once, for Python and the Lua scripts.

The scripts do not repeat them: ``scripts.py`` writes :func:`lua_constants` as the first
line of every script, so a change here reaches both sides (tests/test_ledger_format.py
checks that no Lua file states one of them itself).
"""

from __future__ import annotations

from collections.abc import Mapping

from .lots import DEFAULT_PRIORITY, SPAN
from .options import MAX_RETRIES, MAX_TIMEOUT
from .validation import MAX_CREDITS

__all__ = ["BLOCK_SIZE", "LUA_CONSTANTS", "MAX_CALL_MS", "RESEND_WINDOW_MS", "lua_constants"]

BLOCK_SIZE = 1024
"""Entries per block of the block sums (prelude.lua, 'Block sums'; reconcile.lua)."""

MAX_CALL_MS = (MAX_RETRIES + 1) * 4 * 3 * int(MAX_TIMEOUT * 1000) + 60_000
"""The longest one SDK call can last, re-sends included: ``retries + 1`` attempts, each
of up to four sends (redis-py's cluster client re-sends up to three times after a
connection error), each of three socket operations (connect, send, read) of at most
``timeout``, plus the backoff (under 6 s). 11 hours at the largest options."""

RESEND_WINDOW_MS = 24 * 3600 * 1000
"""A key the SDK made for one call (nonce '*') is met again only by that call's own
re-send, within :data:`MAX_CALL_MS` of its first delivery. So in an idempotency
generation older than this, the first delivery's record can only be in that generation,
never in the previous one: lua/debit.lua's fast block then skips reading the previous
generation (one Redis command fewer per debit)."""

assert RESEND_WINDOW_MS > MAX_CALL_MS

LUA_CONSTANTS: Mapping[str, int] = {
    "MAX_CREDITS": MAX_CREDITS,  # 2^53 - 1: Lua numbers are doubles
    "BLOCK": BLOCK_SIZE,
    "LOT_SPAN": SPAN,  # 2^45 ms: the expiry part of a lot's order score (lots.lua)
    "DEFAULT_PRIORITY": DEFAULT_PRIORITY,  # of a lot opened without one (init, adjust)
    "RESEND_WINDOW": RESEND_WINDOW_MS,
}
"""Lua name -> value, as every script receives them."""


def lua_constants() -> str:
    """One Lua line declaring :data:`LUA_CONSTANTS` as locals (integers, written exactly)."""
    names = ", ".join(LUA_CONSTANTS)
    values = ", ".join(str(int(v)) for v in LUA_CONSTANTS.values())
    return f"local {names} = {values}\n"
