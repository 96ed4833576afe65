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
    return resources.files(__package__).joinpath("lua").joinpath(f"{name}.lua").read_text("utf-8")


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
    """Namespace of the loaded scripts (attribute access keeps call sites typo-proof)."""

    def __init__(self) -> None:
        self.initialize = _load("initialize")
        self.debit = _load("debit")
        self.credit = _load("credit")
        self.adjust = _load("adjust")
        self.refund = _load("refund")
        self.reserve = _load("reserve")
        self.settle = _load("settle")
        self.release = _load("release")
        self.sweep = _load("sweep")
        self.close = _load("close")
        self.reconcile = _load("reconcile")
        self.trim = _load("trim")
        self.grants = _load("grants")
        self.lots_dump = _load("lots_dump")
        self.lots_restore = _load("lots_restore")

    def all(self) -> tuple[Script, ...]:
        return (
            self.initialize,
            self.debit,
            self.credit,
            self.adjust,
            self.refund,
            self.reserve,
            self.settle,
            self.release,
            self.sweep,
            self.close,
            self.reconcile,
            self.trim,
            self.grants,
            self.lots_dump,
            self.lots_restore,
        )


SCRIPTS = _Scripts()
