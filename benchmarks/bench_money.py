"""Money-in calls against the raw client, in the same run.

    .venv/bin/python benchmarks/bench_money.py [--n 2000]

One redis-server 7 (REDIS7_SERVER_BIN, or redis-server on the PATH) is started here and
stopped at the end. Series, median ops/s of 3 rounds:

* ``raw``: the setup guide's minimal write, INCRBY + XADD in one MULTI (redis-py);
* ``credit``: ``CreditsClient.credit`` (a lot, an entry);
* ``purchase``: ``CreditsClient.purchase`` with a new payment id each call (the once-ever
  key, read and written);
* ``revoke``: ``CreditsClient.revoke`` of 1 credit from one big purchase lot, a caller's
  key each call (kept forever);
* ``allocate``: ``CreditsClient.allocate`` of a new period each call, carrying the last
  period's credits over (two rollover entries, one lapse, the allocation: four entries).
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import redis

from sparked_credits import CreditsClient

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "support"))
from redis_servers import RedisServer  # noqa: E402


def rate(fn: Callable[[], None], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2000)
    args = parser.parse_args()
    binary = shutil.which("redis-server") or "redis-server"
    with RedisServer(binary=binary) as server:
        raw = redis.Redis.from_url(server.url)
        client = CreditsClient(server.url, app="bench")
        client.initialize_user("u_raw", 0)
        client.purchase("u_rev", 10**12, payment_id="pi_big")
        ids = itertools.count()
        expires = datetime.now(timezone.utc) + timedelta(days=365)

        def raw_write() -> None:
            pipe = raw.pipeline(transaction=True)
            pipe.incrby("balance:u_raw", 1)
            pipe.xadd("txs:u_raw", {"type": "credit", "delta": "1"})
            pipe.execute()

        def allocate() -> None:
            i = next(ids)
            client.allocate(
                "u_alloc",
                100,
                period_id=f"p{i}",
                expires_at=expires + timedelta(seconds=i),
                rollover_cap=50,
            )
            client.debit("u_alloc", 10, action="chat")

        series: dict[str, Callable[[], None]] = {
            "raw": raw_write,
            "credit": lambda: client.credit("u_credit", 1),
            "purchase": lambda: client.purchase("u_buy", 1, payment_id=f"pi_{next(ids)}"),
            "revoke": lambda: client.revoke(
                "u_rev", "purchase:pi_big", 1, idempotency_key=f"re_{next(ids)}"
            ),
            "allocate (+ a debit)": allocate,
        }
        results: dict[str, list[float]] = {name: [] for name in series}
        for _ in range(3):
            for name, fn in series.items():
                results[name].append(rate(fn, args.n))
        base = statistics.median(results["raw"])
        for name, values in results.items():
            median = statistics.median(values)
            print(f"{name:22} {median:9.0f} ops/s  {median / base:5.2f} x raw")
        client.close()
        raw.close()


if __name__ == "__main__":
    main()
