"""The PostgreSQL archive: every entry copied exactly once, on every backend; migrations;
a kill -9 of the archiver mid-batch then a resume (no duplicate, no gap); --follow's
clean stop on SIGTERM; every primary of a cluster covered."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import psycopg
import pytest

from redis_servers import RedisCluster
from sparked_credits import CreditsClient
from sparked_credits._core.archived import ENTRIES, PROGRESS, SELECT_COLUMNS, entry_from_row
from sparked_credits.archive import MIGRATIONS, Archiver, migrate, schema_version
from sparked_credits.errors import ConfigurationError

pytestmark = pytest.mark.timeout(120)


def archived(url: str, account: str) -> list[Any]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            f"SELECT {SELECT_COLUMNS} FROM {ENTRIES} WHERE account = %s ORDER BY ms, seq",
            (account,),
        ).fetchall()
    return [entry_from_row(r) for r in rows]


def ledger(client: Any, account: str) -> list[Any]:
    entries, cursor = [], None
    while True:
        page = client.history(account, limit=1000, cursor=cursor)
        entries.extend(page.entries)
        if page.next_cursor is None:
            return entries[::-1]
        cursor = page.next_cursor


def busy_account(client: Any, account: str, n: int) -> None:
    client.initialize_user(account, 1000)
    for i in range(n):
        client.debit(account, 1 + i % 3, action="chat_message", metadata={"i": i, "s": "a\tb\\c"})
    client.credit(account, 50, source="purchase", reason="line one\nline two")
    hold = client.reserve(account, 20, action="video_generation")
    client.settle(account, hold.hold_id, 12)


def test_every_entry_once_on_every_backend(sync_credits: CreditsClient, archive_url: str) -> None:
    accounts = [f"user_{i}" for i in range(4)]
    for i, account in enumerate(accounts):
        busy_account(sync_credits, account, 5 + i)
    with Archiver(sync_credits, archive_url, batch=7, group=2) as archiver:
        first = archiver.run_once()
        assert first.accounts == 4
        assert first.entries == sum(len(ledger(sync_credits, a)) for a in accounts)
        for account in accounts:
            # The archive's entries are the ledger's, field for field (metadata with tabs
            # and backslashes, reasons with newlines, lots records).
            assert archived(archive_url, account) == ledger(sync_credits, account)
        assert archiver.run_once().entries == 0
        sync_credits.debit(accounts[0], 1, action="chat_message")
        again = archiver.run_once()
        assert (again.entries, again.accounts_archived) == (1, 1)
    assert archived(archive_url, accounts[0]) == ledger(sync_credits, accounts[0])
    with psycopg.connect(archive_url) as conn:
        progress = dict(conn.execute(f"SELECT account, balance FROM {PROGRESS}").fetchall())
    assert progress == {a: sync_credits.get_balance(a) for a in accounts}


def test_migrations_apply_once_and_refuse_a_newer_schema(archive_url: str) -> None:
    with psycopg.connect(archive_url, autocommit=True) as conn:
        assert migrate(conn) == [m.version for m in MIGRATIONS]
        assert migrate(conn) == []
        assert schema_version(conn) == MIGRATIONS[-1].version
        conn.execute(
            "INSERT INTO sparked_credits.schema_migrations (version, name) VALUES (999, 'x')"
        )
        with pytest.raises(ConfigurationError, match="newer"):
            migrate(conn)


@pytest.mark.parametrize("server_line", ["redis7"], indirect=True)
def test_two_archivers_at_once_copy_each_entry_once(redis_url: str, archive_url: str) -> None:
    with CreditsClient(redis_url, app="app.sparked.world") as client:
        for i in range(6):
            busy_account(client, f"user_{i}", 30)
        errors: list[BaseException] = []

        def run() -> None:
            try:
                with CreditsClient(redis_url) as c, Archiver(c, archive_url, batch=20) as a:
                    a.run_once()
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=run) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        for i in range(6):
            assert archived(archive_url, f"user_{i}") == ledger(client, f"user_{i}")


def test_every_primary_of_a_cluster_is_covered(
    redis_cluster: RedisCluster, cluster_url: str, archive_url: str
) -> None:
    with CreditsClient(cluster_url) as client:
        accounts = [f"user_{i}" for i in range(12)]
        nodes = {redis_cluster.node_for_key("txs:{" + a + "}").port for a in accounts}
        assert len(nodes) == 3  # the accounts' ledgers sit on every primary
        for account in accounts:
            client.initialize_user(account)
            client.debit(account, 5, action="chat_message")
        with Archiver(client, archive_url) as archiver:
            assert archiver.run_once().entries == 24
        for account in accounts:
            assert archived(archive_url, account) == ledger(client, account)


def _cli(redis_url: str, archive_url: str, *args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "REDIS_URL": redis_url, "SPARKED_CREDITS_ARCHIVE_URL": archive_url}
    return subprocess.Popen(
        [sys.executable, "-m", "sparked_credits", "archive", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _copying(conn: Any) -> bool:
    """The archiver is inside a COPY: rows sent, the transaction not committed."""
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = "
        "'sparked-credits archive' AND state = 'active' AND query LIKE 'COPY%' "
        "AND datname = current_database()"
    ).fetchone()
    return bool(row and row[0])


def _fill(url: str, accounts: int, per: int) -> None:
    """Many entries fast: the SDK's own debit script calls, pipelined."""
    import secrets

    import redis as redis_py

    raw = redis_py.Redis.from_url(url)
    with CreditsClient(url, app="app.sparked.world") as client:
        for a in range(accounts):
            account = f"user_{a}"
            client.initialize_user(account, 10**9)
            request = client._ops.debit(account, 2, action="chat_message").request
            sha = raw.script_load(request.script.source)
            keys, tail = list(request.keys), list(request.args[1:])
            pipe = raw.pipeline(transaction=False)
            for _ in range(per - 1):
                pipe.evalsha(sha, len(keys), *keys, secrets.token_urlsafe(12), *tail)
            pipe.execute()
    raw.close()


# The archiver's crash safety is PostgreSQL's and its own, not a Redis line's: one line.
@pytest.mark.parametrize("server_line", ["redis7"], indirect=True)
def test_kill_9_mid_batch_then_resume(redis_url: str, archive_url: str) -> None:
    _fill(redis_url, 4, 5000)
    with psycopg.connect(archive_url, autocommit=True) as watch:
        migrate(watch)
        kills = 0
        for _ in range(8):
            proc = _cli(redis_url, archive_url, "--batch", "500")
            deadline = time.monotonic() + 30
            # Kill it mid-COPY: rows sent (or being sent), the transaction not committed.
            while proc.poll() is None and not _copying(watch):
                assert time.monotonic() < deadline
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                kills += 1
            proc.wait(timeout=30)
            if kills == 3:
                break
        assert kills >= 2
        count = watch.execute(f"SELECT coalesce(sum(entries), 0) FROM {PROGRESS}").fetchone()
        rows = watch.execute(f"SELECT count(*) FROM {ENTRIES}").fetchone()
        assert rows[0] == count[0] < 20_000  # the killed batches left nothing behind
    finish = _cli(redis_url, archive_url)
    _, errors = finish.communicate(timeout=60)
    assert finish.returncode == 0, errors.decode()
    with CreditsClient(redis_url) as client:
        for a in range(4):
            # No duplicate (the primary key would have refused one: the run succeeded)
            # and no gap: the archive is the ledger, entry for entry.
            assert archived(archive_url, f"user_{a}") == ledger(client, f"user_{a}")


@pytest.mark.parametrize("server_line", ["redis7"], indirect=True)
def test_follow_archives_new_entries_and_stops_cleanly_on_sigterm(
    redis_url: str, archive_url: str
) -> None:
    with CreditsClient(redis_url, app="app.sparked.world") as client:
        client.initialize_user("user_f")
        with psycopg.connect(archive_url, autocommit=True) as conn:
            migrate(conn)
        proc = _cli(redis_url, archive_url, "--follow", "--interval", "0.05")
        try:
            for i in range(20):
                client.debit("user_f", 1, action="chat_message")
                time.sleep(0.01 * (i % 3))
            deadline = time.monotonic() + 30
            while len(archived(archive_url, "user_f")) < 21 and time.monotonic() < deadline:
                time.sleep(0.05)
            proc.send_signal(signal.SIGTERM)
            out, errors = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 0, errors.decode()
        assert b"following" in errors
        assert b"archived 21 entries" in out
        assert archived(archive_url, "user_f") == ledger(client, "user_f")


@pytest.mark.parametrize("server_line", ["redis7"], indirect=True)
def test_retention_trims_only_what_is_archived_and_old(
    redis_url: str, archive_url: str
) -> None:
    import redis as redis_py

    raw = redis_py.Redis.from_url(redis_url)
    with CreditsClient(redis_url, app="app.sparked.world") as client:
        busy_account(client, "user_r", 20)
        n = len(ledger(client, "user_r"))
        # Fresh entries are younger than an hour: archived, none trimmed.
        with Archiver(client, archive_url, retain="1h") as archiver:
            assert (archiver.run_once().trimmed, raw.xlen("txs:user_r")) == (0, n)
        # Only what is archived goes: three new debits are not, and stay.
        for _ in range(3):
            client.debit("user_r", 1, action="chat_message")
        with Archiver(client, archive_url, retain="0s") as archiver:
            assert archiver.retention is not None
            removed = archiver.retention.apply(client, archiver._conn, ["user_r"])
        assert (removed, raw.xlen("txs:user_r")) == (n, 3)
        # Never past the checkpoint: a balance that does not add up stops it where the
        # last clean reconcile left it (the newest of the three), so that entry stays.
        raw.incrby("balance:user_r", 5)
        client.debit("user_r", 1, action="chat_message")
        with Archiver(client, archive_url, retain="0s") as archiver:
            report = archiver.run_once()
        assert (report.entries, report.trimmed, raw.xlen("txs:user_r")) == (4, 2, 2)
        with CreditsClient(redis_url, archive=archive_url) as reader:
            assert archived(archive_url, "user_r") == ledger(reader, "user_r")
    raw.close()


@pytest.mark.parametrize("server_line", ["redis7"], indirect=True)
def test_readme_archive_block_as_written(redis_url: str, archive_url: str) -> None:
    """The README's archive block, run by bash with the test's Redis and PostgreSQL in
    the variables it reads."""
    import json
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    blocks = [b for b in re.findall(r"```bash\n(.*?)```", readme, flags=re.S)
              if "sparked-credits archive --to" in b]
    assert len(blocks) == 1
    with CreditsClient(redis_url, app="app.sparked.world") as client:
        busy_account(client, "user_readme", 3)
    env = {**os.environ, "REDIS_URL": redis_url, "SPARKED_CREDITS_ARCHIVE_URL": archive_url,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", blocks[0]], env=env,
                          capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    out = done.stdout.decode()
    assert "archived 7 entries of 1 account(s)" in out
    totals = json.loads(out[out.index("{"): out.index("}\n") + 1])
    assert totals["entries"] == 0
    assert "outstanding credits (liability)" in out


@pytest.mark.parametrize("server_line", ["redis7"], indirect=True)
def test_a_ledger_trimmed_before_it_was_archived_is_reported(
    redis_url: str, archive_url: str
) -> None:
    with CreditsClient(redis_url, app="app.sparked.world") as client:
        busy_account(client, "user_g", 4)
        busy_account(client, "user_ok", 2)
        entries = ledger(client, "user_g")
        client.reconcile("user_g")
        assert client.trim_ledger("user_g", before=entries[3].id).removed == 3
        client.debit("user_g", 1, action="chat_message")
        proc = _cli(redis_url, archive_url, "--json")
        out, errors = proc.communicate(timeout=60)
        assert proc.returncode == 1, errors.decode()
        assert b"trimmed from Redis before their entries were archived: user_g" in errors
        assert json.loads(out)["gaps"] == ["user_g"]
        # What Redis still held is archived; the next run finds no new gap.
        assert archived(archive_url, "user_g") == ledger(client, "user_g")
        with Archiver(client, archive_url) as archiver:
            assert archiver.run_once().gaps == []
            client.trim_ledger("user_ok", before=ledger(client, "user_ok")[-1].id)
            client.reconcile("user_ok")
            client.debit("user_ok", 1, action="chat_message")
            assert archiver.run_once().gaps == []  # trimmed, but only what was archived
            client.debit("user_g", 1, action="chat_message")  # not archived, then trimmed
            newest = client.debit("user_g", 1, action="chat_message").entry.id
            client.reconcile("user_g")  # the checkpoint: the newest
            assert client.trim_ledger("user_g", before=newest).removed > 0
            assert archiver.run_once().gaps == ["user_g"]
