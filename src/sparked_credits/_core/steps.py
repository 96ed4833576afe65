"""Procedures: what takes more than one round trip, written once for both clients.

Anything that takes more than one round trip (a reconcile in chunks, a hold sweep, a
history page with filters, a retry after a failure, every account of ``reconcile_all``) is
written once, as a generator: it yields steps and receives their results. A step is a
request for the client or backend to carry out, :class:`Sleep`, or :class:`Fanout` (run
several procedures at once). An exception a step raised is thrown back into the procedure,
which may handle it. The two drivers (``sparked_credits._drive``) carry the steps out, one
with blocking calls and threads, one with awaits and tasks.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = ["Fanout", "Sleep", "Steps"]

T = TypeVar("T")

Steps = Generator[Any, Any, T]
"""A procedure: yields steps, receives each step's result (or has its exception thrown in)."""


@dataclass(frozen=True, slots=True)
class Sleep:
    """Wait this long before the next step."""

    seconds: float


@dataclass(frozen=True, slots=True)
class Fanout:
    """Run these procedures, at most ``concurrency`` at a time; the result is the list of
    their results in order. A procedure's exception propagates (catch it inside it to
    collect it instead)."""

    procedures: tuple[Steps[Any], ...]
    concurrency: int
