"""Ledger entries as the PostgreSQL archive holds them: pure conversions, no I/O.

The archive keeps every entry once, keyed by (account, ms, seq), the parts of its stream
id, with the same nine values the stream holds, raw (``meta`` is the stored JSON, with the
scripts' own ``_sc`` member: the archive is a copy of the commit record, not a view of it).
The archiver writes rows as COPY text lines built straight from the bytes Redis returns
(no decoding: this is its hot loop); the readers turn rows back into the same
:class:`LedgerEntry` the stream gives, through the same decoders.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Sequence
from typing import Any

from ..models import LedgerEntry
from .decoding import FIELDS, entry_from_values, field_values
from .requests import ArchiveQuery, Operation

__all__ = [
    "COLUMNS",
    "ENTRIES",
    "MIGRATIONS_TABLE",
    "PROGRESS",
    "SCHEMA",
    "ArchiveQuery",
    "copy_lines",
    "entries_between",
    "entry_from_row",
    "history_page",
    "id_parts",
    "next_id",
    "totals_upto",
]

SCHEMA = "sparked_credits"
"""The PostgreSQL schema every archive table lives in."""
ENTRIES = f"{SCHEMA}.entries"
PROGRESS = f"{SCHEMA}.archive_progress"
MIGRATIONS_TABLE = f"{SCHEMA}.schema_migrations"

COLUMNS = (
    "account", "ms", "seq", "type", "delta", "balance_after",
    "action", "app", "reason", "ref", "idem", "meta",
)
"""The entries table's columns in COPY order (``at`` is generated from ``ms``)."""

SELECT_COLUMNS = (
    "ms, seq, type, delta, balance_after, action, app, reason, ref, idem, meta"
)
"""What readers select, in :func:`entry_from_row`'s order."""

_SPECIAL = re.compile(rb"[\\\t\n\r]")
_ESCAPES = ((b"\\", b"\\\\"), (b"\t", b"\\t"), (b"\n", b"\\n"), (b"\r", b"\\r"))
_PICK = operator.itemgetter(*(name.encode() for name in FIELDS))


def id_parts(entry_id: str | bytes) -> tuple[int, int]:
    """(ms, seq) of a stream id."""
    raw = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = raw.partition("-")
    return int(ms), int(seq or 0)


def next_id(ms: int, seq: int) -> str:
    """The smallest stream id after (ms, seq): an exclusive bound XTRIM MINID accepts."""
    return f"{ms}-{seq + 1}"


def _as_bytes(value: Any) -> bytes:
    if value is None:
        return b""
    return value if type(value) is bytes else str(value).encode()


def _values_of(fields: Any) -> list[bytes]:
    return [_as_bytes(x) for x in field_values(fields)]


def copy_lines(account: str, entries: Sequence[Any]) -> bytes:
    """Entries rows as COPY text, from an XRANGE reply as the client returned it.

    The values stay the bytes Redis sent (delta and balance are already decimal text):
    each line is one C-level field lookup, one join, one scan for bytes COPY must escape
    (a backslash, tab or line break: in metadata JSON, in a reason) and one replace. NUL
    joins the values first: PostgreSQL text cannot hold NUL, so no value contains one. An
    empty value is stored as '' (the stream does not tell empty from absent either).
    """
    acct = account.encode()
    out: list[bytes] = []
    append = out.append
    search = _SPECIAL.search
    for entry_id, fields in entries:
        # redis-py's reply: a dict of bytes (the fast path); anything else (another
        # client's list, str values, another writer's missing field): by field_values.
        try:
            values = _PICK(fields)
            line = b"\x00".join((acct, *entry_id.split(b"-"), *values))
        except (KeyError, TypeError, AttributeError):
            eid = entry_id if type(entry_id) is bytes else str(entry_id).encode()
            line = b"\x00".join((acct, *eid.split(b"-"), *_values_of(fields)))
        if search(line):
            for old, new in _ESCAPES:
                line = line.replace(old, new)
        append(line.replace(b"\x00", b"\t"))
    append(b"")
    return b"\n".join(out)


def entry_from_row(row: Sequence[Any]) -> LedgerEntry:
    """A LedgerEntry from a row selected as :data:`SELECT_COLUMNS`: the same decoder as
    a stream entry (metadata without ``_sc``, lots read from the meta)."""
    ms, seq, *values = row
    return entry_from_values(f"{ms}-{seq}", [("" if x is None else x) for x in values])


# -- reading the archive ------------------------------------------------------------------


def _entries(rows: Sequence[Sequence[Any]]) -> list[LedgerEntry]:
    return [entry_from_row(r) for r in rows]


def history_page(
    account: str,
    before: str | None,
    count: int,
    types: Sequence[str] | None,
    action: str | None,
    app: str | None,
) -> Operation[list[LedgerEntry]]:
    """Up to ``count`` archived entries older than ``before`` (an entry id; None: from
    the newest), newest first, filtered in SQL (the primary key serves the order)."""
    where: list[str] = ["account = %s"]
    params: list[Any] = [account]
    if before is not None:
        ms, seq = id_parts(before)
        where.append("(ms, seq) < (%s, %s)")
        params += [ms, seq]
    if types is not None:
        where.append("type = ANY(%s)")
        params.append(list(types))
    if action is not None:
        where.append("action = %s")
        params.append(action)
    if app is not None:
        where.append("app = %s")
        params.append(app)
    sql = (
        f"SELECT {SELECT_COLUMNS} FROM {ENTRIES} WHERE {' AND '.join(where)} "
        f"ORDER BY ms DESC, seq DESC LIMIT {int(count)}"
    )
    return Operation(name="history", request=ArchiveQuery(sql, tuple(params)), decode=_entries)


def entries_between(
    account: str, since_ms: int, before: str | None, count: int, after: str | None = None
) -> Operation[list[LedgerEntry]]:
    """Up to ``count`` archived entries written at or after ``since_ms`` and older than
    ``before`` (None: no bound), oldest first, after entry id ``after`` (paging)."""
    where: list[str] = ["account = %s", "ms >= %s"]
    params: list[Any] = [account, since_ms]
    if before is not None:
        ms, seq = id_parts(before)
        where.append("(ms, seq) < (%s, %s)")
        params += [ms, seq]
    if after is not None:
        ms, seq = id_parts(after)
        where.append("(ms, seq) > (%s, %s)")
        params += [ms, seq]
    sql = (
        f"SELECT {SELECT_COLUMNS} FROM {ENTRIES} WHERE {' AND '.join(where)} "
        f"ORDER BY ms, seq LIMIT {int(count)}"
    )
    return Operation(name="usage", request=ArchiveQuery(sql, tuple(params)), decode=_entries)


def totals_upto(account: str, last: str) -> Operation[tuple[int, int]]:
    """(count, sum of deltas) of the archived entries up to and including entry ``last``:
    what a trim base that ends there must hold."""
    ms, seq = id_parts(last)

    def decode(rows: Sequence[Sequence[Any]]) -> tuple[int, int]:
        return (int(rows[0][0]), int(rows[0][1])) if rows else (0, 0)

    return Operation(
        name="reconcile",
        request=ArchiveQuery(
            f"SELECT count(*), coalesce(sum(delta), 0) FROM {ENTRIES} "
            "WHERE account = %s AND (ms, seq) <= (%s, %s)",
            (account, ms, seq),
        ),
        decode=decode,
    )
