"""How long Redis keeps entries once they are archived: ``--retain 90d``.

Retention trims an account's ledger in Redis up to the oldest of three points: the
retention's cutoff (entries older than it may go), the archive's progress (only what is
committed in PostgreSQL may go) and the last reconciliation checkpoint (which the trim
itself never passes; a cheap reconcile runs first to move it up to the head, proving
balance == ledger before anything leaves). Open holds' reserve entries stay, as always.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from .._core.archived import PROGRESS, next_id
from ..errors import ConfigurationError

if TYPE_CHECKING:
    from ..client import CreditsClient

__all__ = ["Retention", "parse_duration"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^\s*(\d{1,6})\s*([smhdw])\s*$")


def parse_duration(value: str) -> timedelta:
    """'90d', '12h', '30m', '45s', '2w' as a timedelta."""
    found = _DURATION.match(value) if isinstance(value, str) else None
    if not found:
        raise ConfigurationError(
            f"a retention is a number and a unit (s, m, h, d, w), like 90d, not {value!r}"
        )
    return timedelta(seconds=int(found.group(1)) * _UNITS[found.group(2)])


@dataclass(frozen=True)
class Retention:
    """Keep entries in Redis for ``keep`` after they are written (once archived)."""

    keep: timedelta

    @classmethod
    def parse(cls, value: timedelta | str) -> Retention:
        keep = value if isinstance(value, timedelta) else parse_duration(value)
        if keep < timedelta(0):
            raise ConfigurationError("a retention cannot be negative")
        return cls(keep)

    def cutoff_id(self, now: float | None = None) -> str:
        """The stream id before which entries are old enough to leave."""
        now_ms = int((time.time() if now is None else now) * 1000)
        return f"{now_ms - int(self.keep.total_seconds() * 1000)}-0"

    def apply(
        self,
        client: CreditsClient,
        conn: Any,
        accounts: Sequence[str],
        *,
        stop: threading.Event | None = None,
    ) -> int:
        """Trim each account up to min(cutoff, archived); returns the entries removed."""
        if not accounts:
            return 0
        cutoff_ms = int(self.cutoff_id().split("-")[0])
        rows = conn.execute(
            f"SELECT account, last_ms, last_seq FROM {PROGRESS} "
            "WHERE account = ANY(%s) AND (last_ms, last_seq) <> (0, 0)",
            (list(accounts),),
        ).fetchall()
        removed = 0
        for account, ms, seq in rows:
            if stop is not None and stop.is_set():
                break
            before = f"{cutoff_ms}-0" if (cutoff_ms, 0) <= (ms, seq + 1) else next_id(ms, seq)
            # The trim never passes the checkpoint: move it to the head first (a check
            # that balance == ledger; a mismatch leaves the checkpoint where it was).
            client.reconcile(account)
            removed += client.trim_ledger(account, before=before).removed
        return removed
