"""The Lua scripts, loaded once from package data.

Each mutation is one script file under ``lua/``; the shared helpers live in
``lua/prelude.lua`` (with the credit-lot functions of ``lua/lots.lua`` at its ``@lots``
line) and are prepended at load time, so every script sent to Redis is
self-contained and its SHA1 is known before the first call (EVALSHA first, EVAL on NOSCRIPT).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from importlib import resources

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


def _load(name: str) -> Script:
    return Script(name=name, source=_PRELUDE + "\n" + _read(name))


_PRELUDE = _prelude()


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
