"""Archive throughput: the SDK's archiver vs a minimal raw copy, in the same run, against
the same real redis-server and a real PostgreSQL (fsync on, the server's defaults).

    python benchmarks/bench_archive.py                          # 100 accounts x 2,000
    python benchmarks/bench_archive.py --accounts 20 --entries 10000 --server redis7

The ledgers are written the way the SDK writes them (pipelined raw EVALSHA of the debit
script with the KEYS/ARGV the SDK builds, a fresh idempotency key per call). Then, each
into a fresh database:

1. the SDK's ``Archiver.run_once()``: COPY lines built from the reply's bytes, progress
   rows locked and updated in the same transaction (exactly once);
2. the raw baseline: redis-py XRANGE pages and psycopg ``copy.write_row`` of the decoded
   values into the same table, no progress, one transaction per page.

Also Redis bytes per account (MEMORY USAGE of every key of the account) before and after
a retention trim of everything archived.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import time
from pathlib import Path

import psycopg
import redis

from sparked_credits import CreditsClient
from sparked_credits._core.archived import COLUMNS, ENTRIES
from sparked_credits._core.decoding import field_values
from sparked_credits.archive import Archiver, migrate

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "support"))
from postgres_server import PostgresServer, find_pg_bin  # noqa: E402
from redis_servers import SERVER_LINES, RedisServer  # noqa: E402

APP = "app.sparked.world"


def populate(url: str, accounts: int, per: int) -> None:
    client = CreditsClient(url, app=APP)
    r = redis.Redis.from_url(url)
    for a in range(accounts):
        account = f"user_{a}"
        client.initialize_user(account, 10**12)
        request = client._ops.debit(account, 3, action="chat_message").request
        sha = r.script_load(request.script.source)
        keys, tail = list(request.keys), list(request.args[1:])
        pipe = r.pipeline(transaction=False)
        for _ in range(per - 1):
            pipe.evalsha(sha, len(keys), *keys, secrets.token_urlsafe(12), *tail)
        pipe.execute()
    client.close()
    r.close()


def fresh_db(admin_url: str, name: str) -> str:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name}")
    url = admin_url.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(url, autocommit=True) as conn:
        migrate(conn)
    return url


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def redis_cpu(r: redis.Redis) -> float:
    info = r.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def sdk(url: str, pg_url: str) -> tuple[int, float, dict[str, float]]:
    """The SDK's run, with the CPU seconds each of the three processes spent on it."""
    r = redis.Redis.from_url(url)
    with CreditsClient(url) as client, Archiver(client, pg_url) as archiver:
        backend = archiver._conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        cpu0 = (time.process_time(), redis_cpu(r), proc_cpu(backend))
        started = time.perf_counter()
        report = archiver.run_once()
        elapsed = time.perf_counter() - started
        cpu1 = (time.process_time(), redis_cpu(r), proc_cpu(backend))
    r.close()
    names = ("client", "redis", "postgres")
    return report.entries, elapsed, {k: b - a for k, a, b in zip(names, cpu0, cpu1, strict=True)}


def raw(url: str, pg_url: str, accounts: int) -> tuple[int, float]:
    r = redis.Redis.from_url(url)
    total = 0
    started = time.perf_counter()
    with psycopg.connect(pg_url) as conn:
        for a in range(accounts):
            account = f"user_{a}"
            last = "-"
            while True:
                page = r.xrange(f"txs:{account}", last, "+", count=20_000)
                if not page:
                    break
                with conn.transaction(), conn.cursor() as cur, cur.copy(
                    f"COPY {ENTRIES} ({', '.join(COLUMNS)}) FROM STDIN"
                ) as copy:
                    for eid, fields in page:
                        ms, seq = eid.decode().split("-")
                        v = [x.decode() or None for x in field_values(fields)]
                        copy.write_row((account, int(ms), int(seq), v[0], int(v[1]), int(v[2]),
                                        *v[3:9]))
                total += len(page)
                last = "(" + page[-1][0].decode()
    r.close()
    return total, time.perf_counter() - started


def account_bytes(r: redis.Redis, account: str) -> dict[str, int]:
    """MEMORY USAGE of each of the account's keys, by kind (txs, idem, lots, ...)."""
    out: dict[str, int] = {}
    for key in r.scan_iter(match=f"*{account}*", count=1000):
        name = key.decode()
        if name.endswith((f":{account}", "{" + account + "}")) or ("{" + account + "}") in name:
            kind = name.split(":", 1)[0]
            out[kind] = out.get(kind, 0) + int(r.memory_usage(key, samples=0) or 0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--accounts", type=int, default=100)
    parser.add_argument("--entries", type=int, default=2000, help="per account")
    parser.add_argument("--server", default="redis6", choices=[s.name for s in SERVER_LINES])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    binary = next(s for s in SERVER_LINES if s.name == args.server).binary()
    bin_dir = find_pg_bin()
    assert binary, "needs a redis-server binary"
    assert bin_dir, "needs PostgreSQL's binaries (apt-get install postgresql)"
    with RedisServer(binary=binary) as server, PostgresServer(bin_dir, durable=True) as pg:
        populate(server.url, args.accounts, args.entries)
        n = args.accounts * args.entries
        print(f"{args.accounts} accounts x {args.entries} entries = {n:,} ({args.server}, "
              "PostgreSQL fsync on)")
        for i in range(args.rounds):
            got, secs, cpu = sdk(server.url, fresh_db(pg.url, f"sdk{i}"))
            assert got == n, (got, n)
            rgot, rsecs = raw(server.url, fresh_db(pg.url, f"raw{i}"), args.accounts)
            assert rgot == n
            busiest = max(cpu.values())
            print(f"round {i + 1}: SDK archiver {got / secs:,.0f} entries/s ({secs:.2f}s); "
                  f"raw XRANGE + write_row {rgot / rsecs:,.0f} entries/s; "
                  f"SDK/raw {rsecs / secs:.2f}; load {os.getloadavg()[0]:.1f}")
            print("         CPU seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in cpu.items())
                  + f"; the busiest process alone allows {got / busiest:,.0f} entries/s")
        r = redis.Redis.from_url(server.url)
        before = account_bytes(r, "user_0")
        with CreditsClient(server.url) as client, Archiver(
            client, fresh_db(pg.url, "retain"), retain="0s"
        ) as archiver:
            archiver.run_once()
        after = account_bytes(r, "user_0")
        def show(sizes: dict[str, int]) -> str:
            return f"{sum(sizes.values()):,} (" + ", ".join(
                f"{k} {v:,}" for k, v in sorted(sizes.items())) + ")"

        print(f"Redis bytes per account ({args.entries} entries): before {show(before)}; "
              f"after archiving with --retain 0s {show(after)}")
        r.close()


if __name__ == "__main__":
    main()
