"""Copy every account's ledger into PostgreSQL, exactly once per entry.

Progress is per account (the last archived stream id) and lives in PostgreSQL, written in
the same transaction as the rows it covers: a run killed at any point (between the COPY
and the commit, mid-COPY, between accounts) leaves either the rows and the progress that
covers them or neither, and the next run reads on from the progress. The progress rows of
a transaction's accounts are locked (``FOR UPDATE``, in account order) before Redis is
read, so two archivers running at once wait for each other instead of copying an entry
twice; the entries table's primary key (account, ms, seq) would refuse a second copy
anyway.

Accounts are found by the same SCAN as ``reconcile_all`` (one cursor per primary on a
cluster, so every primary is covered). The entries travel as raw bytes from the Redis reply
into COPY text lines: no decoding in the hot loop.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from .._core import reconciliation
from .._core.archived import COLUMNS, ENTRIES, PROGRESS, copy_lines, id_parts
from .._core.decoding import field_values, text
from .._core.keys import KeySpace
from .._core.operations import Operations
from .._core.requests import CommandCall, Operation
from .._drive import drive
from ..errors import ConfigurationError
from .models import ArchiveReport
from .retention import Retention
from .schema import migrate

if TYPE_CHECKING:
    from ..client import CreditsClient

__all__ = ["INSTALL_HINT", "Archiver", "connect"]

INSTALL_HINT = "pip install 'sparked-credits[archive]'"
APPLICATION_NAME = "sparked-credits archive"

RETENTION_SWEEP = 600.0
"""Seconds between retention passes over every account while following."""

_COPY = f"COPY {ENTRIES} ({', '.join(COLUMNS)}) FROM STDIN"


def connect(url: str, application_name: str = APPLICATION_NAME) -> Any:
    """A psycopg connection (autocommit: transactions are explicit) to ``url``."""
    if not url.startswith(("postgresql://", "postgres://")):
        raise ConfigurationError(f"the archive needs a postgresql:// URL, not {url.split(':')[0]}")
    try:
        import psycopg
    except ImportError:
        raise ConfigurationError(
            f"the PostgreSQL archive needs psycopg 3: {INSTALL_HINT}"
        ) from None
    try:
        return psycopg.connect(url, autocommit=True, application_name=application_name)
    except psycopg.OperationalError as exc:
        raise ConfigurationError(f"cannot connect to the archive: {exc}".strip()) from exc


def _raw(reply: Any) -> Any:
    return reply


class Archiver:
    """Archives a client's ledgers into the PostgreSQL database at ``to``.

    >>> with Archiver(credits, "postgresql://localhost/credits") as archiver:  # doctest: +SKIP
    ...     archiver.run_once().entries
    """

    def __init__(
        self,
        client: CreditsClient,
        to: str,
        *,
        retain: timedelta | str | None = None,
        batch: int = 20_000,
        group: int = 64,
    ) -> None:
        if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= 1_000_000:
            raise ConfigurationError("batch must be an int between 1 and 1000000")
        if isinstance(group, bool) or not isinstance(group, int) or not 1 <= group <= 10_000:
            raise ConfigurationError("group must be an int between 1 and 10000")
        self.client = client
        self.batch = batch
        self.group = group
        self.retention = Retention.parse(retain) if retain is not None else None
        self._ops = Operations(client.options)
        self._keys = KeySpace(prefix=client.options.key_prefix, hash_tags=client.options.hash_tags)
        self.gaps: list[str] = []
        """Accounts found trimmed past the archive's progress (entries lost to it)."""
        self._conn = connect(to)
        migrate(self._conn)

    # -- Redis reads ----------------------------------------------------------------------

    def _run(self, op: Operation[Any]) -> Any:
        return self.client.run_request_step(op)

    def accounts(self) -> list[str]:
        """Every account with a ledger (SCAN; every primary on a cluster)."""
        found: list[str] = drive(reconciliation.find_accounts(self._ops), self._run)
        return found

    def _read(self, account: str, start: str, count: int) -> list[Any]:
        op: Operation[Any] = Operation(
            name="archive",
            request=CommandCall(
                args=("XRANGE", self._keys.ledger(account), start, "+", "COUNT", str(count))
            ),
            decode=_raw,
        )
        reply: list[Any] = self._run(op)
        return reply

    def _trim_base(self, account: str) -> tuple[int, int] | None:
        """(ms, seq) of the account's trim base: the newest entry trimmed from Redis."""
        op: Operation[Any] = Operation(
            name="archive",
            request=CommandCall(args=("HGET", self._keys.account(account).meta, "base_id")),
            decode=_raw,
        )
        base = self._run(op)
        return None if base is None else id_parts(text(base))

    # -- one transaction ------------------------------------------------------------------

    def archive_group(self, accounts: Sequence[str]) -> tuple[int, list[str], list[str]]:
        """Archive the next entries of ``accounts`` in one transaction (at most ``batch``
        in all); returns (entries archived, the accounts that had some, those with more).

        An account whose ledger was trimmed past what is archived (by ``trim_ledger``
        without the archive, or before it existed) has lost entries nobody can copy now:
        it is listed in :attr:`gaps` and archiving goes on from what Redis still holds."""
        names = sorted(set(accounts))
        per = max(100, self.batch // max(1, len(names)))
        total, more = 0, []
        with self._conn.transaction(), self._conn.cursor() as cur:
            cur.execute(
                f"INSERT INTO {PROGRESS} (account) SELECT unnest(%s::text[]) "
                "ON CONFLICT (account) DO NOTHING",
                (names,),
            )
            cur.execute(
                f"SELECT account, last_ms, last_seq FROM {PROGRESS} "
                "WHERE account = ANY(%s) ORDER BY account FOR UPDATE",
                (names,),
            )
            done: list[tuple[str, int, int, int, int]] = []
            # Each account's lines go into the COPY as soon as they are read: PostgreSQL
            # ingests one account's rows while the next account's are read from Redis.
            progress = cur.fetchall()
            with cur.copy(_COPY) as copy:
                for account, ms, seq in progress:
                    start = "-" if (ms, seq) == (0, 0) else f"({ms}-{seq}"
                    raw = self._read(account, start, per)
                    if not raw:
                        continue
                    base = self._trim_base(account)
                    if base is not None and base > (ms, seq):
                        self.gaps.append(account)
                    copy.write(copy_lines(account, raw))
                    last_id, last_fields = raw[-1]
                    lms, lseq = id_parts(text(last_id))
                    balance = int(text(field_values(last_fields)[2]) or 0)
                    done.append((account, lms, lseq, len(raw), balance))
                    if len(raw) == per:
                        more.append(account)
            if done:
                cur.execute(
                    f"UPDATE {PROGRESS} p SET last_ms = v.ms, last_seq = v.seq, "
                    "entries = p.entries + v.n, balance = v.balance, updated_at = now() "
                    "FROM unnest(%s::text[], %s::bigint[], %s::bigint[], %s::bigint[], "
                    "%s::bigint[]) AS v(account, ms, seq, n, balance) "
                    "WHERE p.account = v.account",
                    tuple(list(col) for col in zip(*done, strict=True)),
                )
                total = sum(d[3] for d in done)
        return total, [d[0] for d in done], more

    # -- runs -----------------------------------------------------------------------------

    def run_once(
        self,
        accounts: Iterable[str] | None = None,
        *,
        stop: threading.Event | None = None,
        on_progress: Callable[[int], None] | None = None,
        trim_all: bool = True,
    ) -> ArchiveReport:
        """Archive everything the ledgers hold now (every account, or those given), in
        transactions of at most ``batch`` entries; then, with a retention, trim Redis
        behind it. ``stop`` is checked between transactions."""
        started = time.monotonic()
        seen_gaps = len(self.gaps)
        names = sorted(set(accounts)) if accounts is not None else self.accounts()
        entries = 0
        archived: set[str] = set()
        pending = list(names)
        while pending and not (stop is not None and stop.is_set()):
            due: list[str] = []
            for i in range(0, len(pending), self.group):
                if stop is not None and stop.is_set():
                    break
                chunk = pending[i : i + self.group]
                n, some, more = self.archive_group(chunk)
                entries += n
                archived.update(some)
                if n and on_progress is not None:
                    on_progress(n)
                due.extend(more)
            pending = due
        trimmed = 0
        if self.retention is not None and not (stop is not None and stop.is_set()):
            # ``trim_all=False`` (a follow round): only the accounts that had new entries.
            due = names if trim_all else sorted(archived)
            trimmed = self.retention.apply(self.client, self._conn, due, stop=stop)
        return ArchiveReport(
            accounts=len(names),
            accounts_archived=len(archived),
            entries=entries,
            trimmed=trimmed,
            duration_seconds=time.monotonic() - started,
            gaps=sorted(set(self.gaps[seen_gaps:])),
        )

    def follow(
        self,
        *,
        stop: threading.Event,
        interval: float = 1.0,
        on_round: Callable[[ArchiveReport], None] | None = None,
        on_progress: Callable[[int], None] | None = None,
    ) -> ArchiveReport:
        """Archive continuously until ``stop`` is set (a sidecar: the CLI sets it on
        SIGTERM), waiting ``interval`` seconds after a round that found nothing new. A
        stop takes effect between transactions: what was committed stays, nothing is
        half-written. Returns the totals."""
        started = time.monotonic()
        entries = trimmed = rounds = accounts = 0
        swept = 0.0  # when the retention last went over every account
        while not stop.is_set():
            # Entries age past the retention without traffic: every account is trimmed
            # once per RETENTION_SWEEP seconds, the active ones every round.
            sweep = time.monotonic() - swept >= RETENTION_SWEEP
            if sweep:
                swept = time.monotonic()
            report = self.run_once(stop=stop, on_progress=on_progress, trim_all=sweep)
            rounds += 1
            entries += report.entries
            trimmed += report.trimmed
            accounts = max(accounts, report.accounts)
            if on_round is not None:
                on_round(report)
            if report.entries == 0:
                stop.wait(interval)
        return ArchiveReport(
            accounts=accounts,
            accounts_archived=accounts,
            entries=entries,
            trimmed=trimmed,
            duration_seconds=time.monotonic() - started,
            rounds=rounds,
            gaps=sorted(set(self.gaps)),
        )

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Archiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
