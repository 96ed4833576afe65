"""What a client asks a backend to do: one script call or one plain command.

These are plain data, built by the pure core (:mod:`sparked_credits._core.operations`) and carried
out by a backend in exactly one round trip. Keeping them I/O-free is what lets the sync and
async clients, and every backend, share one implementation of each operation. They are not
frozen: one is built on every call, and a frozen dataclass costs several times more to make.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from .scripts import Script

__all__ = ["ArchiveQuery", "CommandCall", "Operation", "Request", "ScanCall", "ScriptCall"]

T = TypeVar("T")


@dataclass(slots=True)
class ScriptCall:
    """EVALSHA of ``script`` with ``keys`` as KEYS[] and ``args`` as ARGV[]."""

    script: Script
    keys: tuple[str, ...]
    args: tuple[str, ...]
    read_only: bool = False
    """The script writes nothing (get_balance's): a failure never may have applied."""


@dataclass(slots=True)
class CommandCall:
    """One read-only Redis command, e.g. ``("GET", "balance:user_1")``."""

    args: tuple[str, ...]


@dataclass(slots=True)
class ScanCall:
    """Every key matching ``match``, over the whole keyspace.

    A SCAN cursor belongs to one server, so the walk itself is the backend's job: a single
    Redis follows one cursor, a cluster follows one cursor per primary. Several round trips,
    all reads, so safe to repeat; only maintenance (the expiry sweep) uses it.
    """

    match: str
    count: int = 500


@dataclass(slots=True)
class ArchiveQuery:
    """One SELECT on the PostgreSQL archive (history and usage reading on past what Redis
    holds): the client's archive reader runs it, never a Redis backend."""

    sql: str
    params: tuple[Any, ...]


Request = ScriptCall | CommandCall | ScanCall | ArchiveQuery


@dataclass(slots=True)
class Operation(Generic[T]):
    """A request plus the function that turns its raw reply into a typed result or error."""

    name: str
    request: Request
    decode: Callable[[Any], T]
    idempotency_key: str | None = None
