"""Reconcile one account with a large ledger: SDK (sum inside Redis, chunked) vs a
client-side XRANGE sum, in the same run against the same real redis-server.

    python benchmarks/bench_reconcile.py            # 1,000,000 entries
    python benchmarks/bench_reconcile.py --entries 100000

Reports entries/second, peak client memory above baseline (each side runs in its own
child process, so its peak RSS is its own), the longest single Redis call (SLOWLOG), and
the cost of an incremental reconcile after 1,000 new entries.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import redis

from sparked_credits import CreditsClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from redis_servers import RedisServer

ACCT = "user_bench"


def populate(url: str, n: int) -> None:
    """n ledger entries in the SDK's field layout, and the matching balance."""
    r = redis.Redis.from_url(url)
    key = f"txs:{ACCT}"
    balance = 0
    batch = 10_000
    for start in range(0, n, batch):
        pipe = r.pipeline(transaction=False)
        for i in range(start, min(start + batch, n)):
            delta = 1_000_000_000 if i == 0 else -1
            balance += delta
            pipe.xadd(key, {"type": "init" if i == 0 else "debit", "delta": delta,
                            "balance": balance, "action": "chat_message",
                            "app": "app.sparked.world", "reason": "", "ref": "",
                            "idem": f"k{i:015d}", "meta": ""})
        pipe.execute()
    r.set(f"balance:{ACCT}", balance)
    r.close()


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(mode: str, url: str) -> None:
    """Run one side in this (child) process and print a JSON result."""
    import redis as redis_py

    baseline = peak_rss_mb()
    started = time.perf_counter()
    if mode == "sdk":
        with CreditsClient(url) as client:
            result = client.reconcile(ACCT)
        read, ok = result.entries_read, result.matched
    else:
        r = redis_py.Redis.from_url(url)
        total, read, last = 0, 0, "-"
        while True:
            page = r.xrange(f"txs:{ACCT}", last, "+", count=10_000)
            if last != "-":
                page = page[1:] if page and page[0][0].decode() == last[1:] else page
            if not page:
                break
            for _, fields in page:
                total += int(fields[b"delta"])
            read += len(page)
            last = "(" + page[-1][0].decode()
        ok = total == int(r.get(f"balance:{ACCT}") or 0)
    elapsed = time.perf_counter() - started
    print(json.dumps({"mode": mode, "seconds": elapsed, "entries": read, "matched": ok,
                      "rss_above_baseline_mb": peak_rss_mb() - baseline}))


def run_child(mode: str, url: str) -> dict[str, float]:
    out = subprocess.run([sys.executable, __file__, "--child", mode, "--url", url],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--child")
    parser.add_argument("--url")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.url)
        return
    with RedisServer() as server:
        r = redis.Redis.from_url(server.url)
        print(f"redis-server {r.info('server')['redis_version']}, python {sys.version.split()[0]}")
        t = time.perf_counter()
        populate(server.url, args.entries)
        print(f"populated {args.entries:,} entries in {time.perf_counter() - t:.1f}s")
        r.config_set("slowlog-log-slower-than", 0)
        r.config_set("slowlog-max-len", 100_000)
        r.slowlog_reset()
        sdk = run_child("sdk", server.url)
        slow = r.slowlog_get(100_000)
        longest_script_ms = max((e["duration"] for e in slow
                                 if e["command"].startswith(b"EVAL")), default=0) / 1000
        client_side = run_child("client", server.url)
        with CreditsClient(server.url) as client:
            for _ in range(1000):
                client.debit(ACCT, 1, action="chat_message")
            t = time.perf_counter()
            inc = client.reconcile(ACCT)
            inc_ms = (time.perf_counter() - t) * 1000
        r.close()
    rate = {s["mode"]: s["entries"] / s["seconds"] for s in (sdk, client_side)}
    print(json.dumps({"sdk": sdk, "client_side": client_side}, indent=2))
    print(f"SDK (in Redis, chunked): {rate['sdk']:,.0f} entries/s, matched={sdk['matched']}, "
          f"client peak +{sdk['rss_above_baseline_mb']:.1f} MB, longest script "
          f"{longest_script_ms:.2f} ms")
    print(f"client-side XRANGE sum:  {rate['client']:,.0f} entries/s, "
          f"client peak +{client_side['rss_above_baseline_mb']:.1f} MB")
    print(f"ratio SDK/client-side: {rate['sdk'] / rate['client']:.2f}x")
    print(f"incremental reconcile after 1,000 new entries: {inc.entries_read} read, "
          f"{inc_ms:.1f} ms, matched={inc.matched}")


if __name__ == "__main__":
    main()
