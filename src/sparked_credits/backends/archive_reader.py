"""Readers of the PostgreSQL archive for the clients' history and usage (``archive=``).

The twins only carry a query out: the SQL and its parameters come from the pure core
(:mod:`sparked_credits._core.archived`), like a Redis request. psycopg is imported when the
first query runs, so a client configured with an archive costs nothing until history
reaches it; a missing psycopg names the extra. One connection per reader (psycopg
serializes its use across threads), opened on first use and again after it breaks.
"""

from __future__ import annotations

import threading
from typing import Any

from .._core.archived import ArchiveQuery
from ..errors import BackendError, ConfigurationError

__all__ = ["AsyncArchiveReader", "SyncArchiveReader", "check_archive_url"]

_HINT = "pip install 'sparked-credits[archive]'"


def check_archive_url(url: str) -> str:
    if not isinstance(url, str) or not url.startswith(("postgresql://", "postgres://")):
        raise ConfigurationError("archive= must be a postgresql:// URL")
    return url


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError:
        raise ConfigurationError(f"reading the archive needs psycopg 3: {_HINT}") from None
    return psycopg


def _failed(exc: Exception) -> BackendError:
    return BackendError(
        f"the archive did not answer ({type(exc).__name__}: {exc})".strip(),
        operation="archive read",
        may_have_applied=False,
        retry_safe=True,
    )


class SyncArchiveReader:
    def __init__(self, url: str) -> None:
        self.url = check_archive_url(url)
        self._conn: Any = None
        self._lock = threading.Lock()

    def fetch(self, query: ArchiveQuery) -> list[Any]:
        psycopg = _psycopg()
        with self._lock:
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = psycopg.connect(self.url, autocommit=True)
                rows: list[Any] = self._conn.execute(query.sql, query.params).fetchall()
                return rows
            except psycopg.errors.UndefinedTable:
                return []  # no archive run yet: nothing is archived
            except psycopg.Error as exc:
                if self._conn is not None and self._conn.broken:
                    self._conn = None
                raise _failed(exc) from exc

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class AsyncArchiveReader:
    def __init__(self, url: str) -> None:
        self.url = check_archive_url(url)
        self._conn: Any = None

    async def fetch(self, query: ArchiveQuery) -> list[Any]:
        psycopg = _psycopg()
        try:
            if self._conn is None or self._conn.closed:
                self._conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True)
            cur = await self._conn.execute(query.sql, query.params)
            rows: list[Any] = await cur.fetchall()
            return rows
        except psycopg.errors.UndefinedTable:
            return []  # no archive run yet: nothing is archived
        except psycopg.Error as exc:
            if self._conn is not None and self._conn.broken:
                self._conn = None
            raise _failed(exc) from exc

    async def aclose(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None
