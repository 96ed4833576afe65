"""The archive's PostgreSQL schema, as numbered migrations the archiver applies itself.

Each migration runs once, in order, in one transaction with the row that records it
(``schema_migrations``), under a transaction-scoped advisory lock, so two archivers
starting at once against a fresh database apply each migration exactly once. A database
migrated by a newer version (a version this one does not know) is refused rather than
written to with an older idea of its tables.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from .._core.archived import ENTRIES, MIGRATIONS_TABLE, PROGRESS, SCHEMA
from ..errors import ConfigurationError

__all__ = ["MIGRATIONS", "Migration", "migrate", "schema_version"]


class Migration(NamedTuple):
    version: int
    name: str
    sql: str


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "entries and per-account archive progress",
        f"""
        CREATE TABLE {ENTRIES} (
            account       text    NOT NULL,
            ms            bigint  NOT NULL,
            seq           bigint  NOT NULL,
            type          text    NOT NULL,
            delta         bigint  NOT NULL,
            balance_after bigint  NOT NULL,
            action        text,
            app           text,
            reason        text,
            ref           text,
            idem          text,
            meta          text,
            at timestamptz GENERATED ALWAYS AS (to_timestamp(ms / 1000.0)) STORED,
            PRIMARY KEY (account, ms, seq)
        );
        COMMENT ON TABLE {ENTRIES} IS
            'Every ledger entry once; (ms, seq) is its Redis stream id, meta its raw JSON.';
        -- Time-range scans over all accounts (the report): entries arrive in time order,
        -- so a BRIN index is a few pages and costs COPY almost nothing.
        CREATE INDEX entries_ms_brin ON {ENTRIES} USING brin (ms);
        CREATE TABLE {PROGRESS} (
            account    text        PRIMARY KEY,
            last_ms    bigint      NOT NULL DEFAULT 0,
            last_seq   bigint      NOT NULL DEFAULT 0,
            entries    bigint      NOT NULL DEFAULT 0,
            balance    bigint,
            updated_at timestamptz NOT NULL DEFAULT now()
        );
        COMMENT ON TABLE {PROGRESS} IS
            'Per account: the last archived stream id, written in the transaction of its rows.';
        """,
    ),
    Migration(
        2,
        "indexes for the report",
        f"""
        -- Purchases in a time window, without reading every other entry of it.
        CREATE INDEX entries_purchases ON {ENTRIES} (ms)
            WHERE type = 'credit' AND action = 'purchase';
        -- The accounts that opened an expiring lot (the report replays only those).
        CREATE INDEX entries_expiring_lots ON {ENTRIES} (account)
            WHERE type IN ('credit', 'init', 'adjust') AND meta LIKE '%"l":"+%:%';
        -- Accounts below a balance threshold.
        CREATE INDEX archive_progress_balance ON {PROGRESS} (balance);
        """,
    ),
)
"""Every migration, oldest first. Never edit one that shipped: add the next."""


def schema_version(conn: Any) -> int:
    """The newest migration applied to the database behind ``conn`` (0: none)."""
    found = conn.execute(
        "SELECT to_regclass(%s) IS NOT NULL", (MIGRATIONS_TABLE,)
    ).fetchone()
    if not found[0]:
        return 0
    row = conn.execute(f"SELECT coalesce(max(version), 0) FROM {MIGRATIONS_TABLE}").fetchone()
    return int(row[0])


def migrate(conn: Any) -> list[int]:
    """Bring the schema up to date on a psycopg connection; returns the versions applied."""
    applied: list[int] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"{SCHEMA}.migrate",))
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} ("
            "version integer PRIMARY KEY, name text NOT NULL, "
            "applied_at timestamptz NOT NULL DEFAULT now())"
        )
        current = schema_version(conn)
        newest = MIGRATIONS[-1].version
        if current > newest:
            raise ConfigurationError(
                f"the archive's schema is at version {current}, newer than this version of "
                f"sparked-credits knows ({newest}): upgrade sparked-credits"
            )
        for migration in MIGRATIONS:
            if migration.version <= current:
                continue
            conn.execute(migration.sql)
            conn.execute(
                f"INSERT INTO {MIGRATIONS_TABLE} (version, name) VALUES (%s, %s)",
                (migration.version, migration.name),
            )
            applied.append(migration.version)
    return applied
