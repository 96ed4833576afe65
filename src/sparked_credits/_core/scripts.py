"""The Lua scripts, loaded once from package data.

Each mutation is one script file under ``lua/``; the shared helpers live in
``lua/prelude.lua`` (with the credit-lot functions of ``lua/lots.lua`` at its ``@lots``
line) and are prepended at load time, so every script sent to Redis is
self-contained and its SHA1 is known before the first call (EVALSHA first, EVAL on NOSCRIPT).

Each script carries only the prelude functions it reaches (``_prune``): Redis runs a
script's whole chunk on every call, and every ``local function`` in it is a closure made
anew each time, so unused helpers are per-call cost (about a third of the prelude's time
on a debit, measured in BENCHMARKS.md).

Every script's first line declares the ledger format's shared constants from their Python
declarations (:func:`.ledger_format.lua_constants`), so the Lua states none of them.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from importlib import resources

from .ledger_format import lua_constants
from .protocol import SPECS

__all__ = ["SCRIPTS", "Script"]


@dataclass(frozen=True, slots=True)
class Script:
    """A Lua script and its SHA1, as EVALSHA needs it."""

    name: str
    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())


def _read(name: str) -> str:
    return (
        resources.files("sparked_credits")
        .joinpath("lua")
        .joinpath(f"{name}.lua")
        .read_text("utf-8")
    )


_LOTS_MARK = "-- @lots: scripts.py puts lua/lots.lua here.\n"


def _prelude() -> str:
    """The prelude with lua/lots.lua at its '@lots' line: the credit-lot functions come
    after the ledger helpers they use and before the units that move credits."""
    prelude = _read("prelude")
    if _LOTS_MARK not in prelude:
        raise RuntimeError("lua/prelude.lua lost its '@lots' line")
    return prelude.replace(_LOTS_MARK, _read("lots") + "\n")


# A top-level function of the prelude: 'local function name(' at column 0 up to the first
# line that is exactly 'end' (the prelude's style; nested functions are indented).
_FUNCTION = re.compile(r"^local function (\w+)\(.*?^end\n", re.M | re.S)
_NAME = re.compile(r"[A-Za-z_]\w*")
_COMMENT = re.compile(r"--[^\n]*")


def _names(code: str) -> set[str]:
    """Every identifier-like word of `code` outside comments (strings included: a name
    seen too many times only keeps a function, never drops one)."""
    return set(_NAME.findall(_COMMENT.sub("", code)))


def _prune(prelude: str, body: str) -> str:
    """The prelude without the top-level functions `body` does not reach, directly or
    through the kept code. Everything that is not such a function stays as written, in
    order, so what remains behaves exactly as the whole prelude does for this script."""
    functions = {m.group(1): m for m in _FUNCTION.finditer(prelude)}
    rest = _FUNCTION.sub("", prelude)
    wanted: set[str] = set()
    todo = _names(body) | _names(rest)
    while todo:
        name = todo.pop()
        if name in functions and name not in wanted:
            wanted.add(name)
            todo |= _names(functions[name].group(0))
    return _FUNCTION.sub(lambda m: m.group(0) if m.group(1) in wanted else "", prelude)


_FAST = re.compile(r"^-- @fast:.*?^-- @end fast\n", re.M | re.S)
# The prelude's line (and its comment) where a script's fast block goes.
_FAST_MARK = re.compile(r"^-- @fast: scripts\.py puts a script's.*?\n(?:--.*\n)*", re.M)
_CONSTANTS = lua_constants()


def _split_fast(body: str) -> tuple[str, str]:
    """A script's ``-- @fast`` block (``''`` if none) and the body without it.

    The block goes at the prelude's '@fast' line: after the few helpers that write an
    entry, before the many the general path needs, so a common case returns without
    paying for their closures yet writes through the same helpers (see lua/debit.lua)."""
    found = _FAST.search(body)
    if found is None:
        return "", body
    return found.group(0), body[: found.start()] + body[found.end() :]


def _assemble(fast: str, body: str) -> str:
    """The prelude (pruned for the fast block and the body) with the fast block at its
    '@fast' line, then the body."""
    prelude = _prune(_PRELUDE, fast + body)
    if _FAST_MARK.search(prelude) is None:
        raise RuntimeError("lua/prelude.lua lost its '@fast' line")
    prelude = _FAST_MARK.sub(lambda _: fast, prelude, count=1)
    return prelude + "\n" + body


def _load(name: str) -> Script:
    fast, body = _split_fast(_read(name))
    return Script(name=name, source=_assemble(fast, body))


def general_only(name: str) -> Script:
    """The script without its ``-- @fast`` block: the general path alone, which the tests
    run beside the real script to prove the fast block writes what it would."""
    _, body = _split_fast(_read(name))
    return Script(name=name, source=_assemble("", body))


_PRELUDE = _CONSTANTS + _prelude()
"""The constants line (from the Python declarations), then the prelude with lots.lua."""


class _Scripts:
    """Every declared script (``protocol.SPECS``), loaded once: ``SCRIPTS["debit"]`` or
    ``SCRIPTS.debit``."""

    def __init__(self) -> None:
        self._by_name = {name: _load(name) for name in SPECS}

    def __getitem__(self, name: str) -> Script:
        return self._by_name[name]

    def __getattr__(self, name: str) -> Script:
        try:
            return self._by_name[name]
        except KeyError:
            raise AttributeError(name) from None

    def all(self) -> tuple[Script, ...]:
        return tuple(self._by_name.values())


SCRIPTS = _Scripts()
