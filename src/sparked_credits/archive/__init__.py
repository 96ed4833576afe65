"""The PostgreSQL archive: every ledger entry copied once into PostgreSQL, Redis trimmed
behind it with a retention, and the cross-account report (``pip install
'sparked-credits[archive]'``; psycopg 3 is imported only when used)."""

from __future__ import annotations

from .archiver import Archiver, connect
from .models import ArchiveReport
from .retention import Retention, parse_duration
from .schema import MIGRATIONS, migrate, schema_version

__all__ = [
    "MIGRATIONS",
    "ArchiveReport",
    "Archiver",
    "Retention",
    "connect",
    "migrate",
    "parse_duration",
    "schema_version",
]
