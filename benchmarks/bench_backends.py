"""Backends benchmark: debits/second on a 3-primary Redis Cluster vs one Redis, in the same
run, and HTTP requests per operation on the Upstash path, counted at the test bridge.

    PYTHONPATH=src python benchmarks/bench_backends.py [--debits 3000] [--rounds 3] [--json f]

Every server is started here on loopback ports (the same redis-server binary for both),
and stopped at the end. Rounds alternate single/cluster so load from other processes on
the machine hits both alike; the median round is reported.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "support"))

import redis
import redis.cluster

from redis_servers import RedisCluster, RedisServer
from sparked_credits import AsyncCreditsClient, CreditsClient
from sparked_credits._core.operations import Operations
from sparked_credits._core.options import make_options
from sparked_credits._core.requests import ScriptCall
from sparked_credits.backends.cluster import parse
from upstash_bridge import TOKEN, UpstashBridge

CONCURRENCY = 50
ACCOUNTS = 100


def sync_debits(url: str, n: int) -> float:
    """Sequential debits on one account from one blocking client: debits/second."""
    with CreditsClient(url) as client:
        client.initialize_user("bench_seq", 10**12)
        for _ in range(50):
            client.debit("bench_seq", 1, action="warm_up")
        started = time.perf_counter()
        for _ in range(n):
            client.debit("bench_seq", 1, action="chat_message")
        return n / (time.perf_counter() - started)


def raw_debits(url: str, n: int) -> float:
    """The same debit script through the bare redis-py client (Redis or RedisCluster), its
    calls built before the clock starts: what the client library alone costs."""
    if url.startswith("redis+cluster://"):
        nodes = [redis.cluster.ClusterNode(h, p) for h, p in parse(url).nodes]
        raw: Any = redis.cluster.RedisCluster(startup_nodes=nodes)
    else:
        raw = redis.Redis.from_url(url)
    ops = Operations(make_options(hash_tags=True))
    calls = []
    for _ in range(n + 50):
        request = ops.debit("bench_raw", 1, action="chat_message").request
        assert isinstance(request, ScriptCall)
        calls.append(request)
    with CreditsClient(url, hash_tags=True) as client:
        client.initialize_user("bench_raw", 10**12)
        client.debit("bench_raw", 1, action="load_script")
    for call in calls[:50]:
        raw.execute_command("EVALSHA", call.script.sha, len(call.keys), *call.keys, *call.args)
    started = time.perf_counter()
    for call in calls[50:]:
        raw.execute_command("EVALSHA", call.script.sha, len(call.keys), *call.keys, *call.args)
    elapsed = time.perf_counter() - started
    raw.close()
    return n / elapsed


def async_debits(url: str, n: int) -> float:
    """``CONCURRENCY`` tasks debiting ``ACCOUNTS`` accounts (spread over every primary on
    the cluster) through one asyncio client: debits/second."""

    async def run() -> float:
        client = AsyncCreditsClient(url)
        accounts = [f"bench_{i}" for i in range(ACCOUNTS)]
        for acct in accounts:
            await client.initialize_user(acct, 10**12)
        per_task = n // CONCURRENCY

        async def worker(k: int) -> None:
            for j in range(per_task):
                await client.debit(accounts[(k + j) % ACCOUNTS], 1, action="chat_message")

        started = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(CONCURRENCY)))
        elapsed = time.perf_counter() - started
        await client.close()
        return per_task * CONCURRENCY / elapsed

    return asyncio.run(run())


def upstash_requests_per_op(bridge: UpstashBridge, n: int) -> dict[str, Any]:
    """Run a realistic mix through upstash-redis and count requests at the bridge."""
    with CreditsClient(bridge.url, token=TOKEN) as client:
        client.initialize_user("bench_up", 10**9)
        # Warm-up: the first EVALSHA of each script after a cold cache costs one extra
        # request (NOSCRIPT, then EVAL); count steady state, and the cold cost separately.
        cold_before = bridge.requests
        hold = client.reserve("bench_up", 10, action="model_training")
        client.settle("bench_up", hold.hold_id, 5)
        debit = client.debit("bench_up", 1, action="chat_message")
        client.credit("bench_up", 1, source="grant")
        client.refund("bench_up", debit.entry.id)
        cold = bridge.requests - cold_before
        mix: list[tuple[str, Callable[[], Any]]] = [
            ("debit", lambda: client.debit("bench_up", 1, action="chat_message")),
            ("credit", lambda: client.credit("bench_up", 1, source="grant")),
            ("get_balance", lambda: client.get_balance("bench_up")),
            ("history", lambda: client.history("bench_up", limit=20)),
        ]
        per_op: dict[str, float] = {}
        latency: dict[str, float] = {}
        for name, op in mix:
            before = bridge.requests
            started = time.perf_counter()
            for _ in range(n):
                op()
            latency[name] = (time.perf_counter() - started) / n * 1000
            per_op[name] = (bridge.requests - before) / n
        before = bridge.requests
        for _ in range(n // 10):
            held = client.reserve("bench_up", 10, action="model_training")
            client.settle("bench_up", held.hold_id, 5)
        per_op["reserve+settle (2 ops)"] = (bridge.requests - before) / (n // 10)
        return {
            "requests_per_op": per_op,
            "bridge_ms_per_op": latency,
            "cold_script_requests_for_5_ops": cold,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--debits", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    results: dict[str, Any] = {}
    with RedisServer() as single, RedisCluster(3) as cluster:
        seq: dict[str, list[float]] = {"single": [], "cluster": []}
        raw: dict[str, list[float]] = {"single": [], "cluster": []}
        conc: dict[str, list[float]] = {"single": [], "cluster": []}
        for _ in range(args.rounds):
            for name, url in (("single", single.url), ("cluster", cluster.url)):
                seq[name].append(sync_debits(url, args.debits))
                raw[name].append(raw_debits(url, args.debits))
                conc[name].append(async_debits(url, args.debits))
        for label, runs in (
            ("sync_sequential", seq),
            ("raw_redis_py_sync_sequential", raw),
            ("async_50_concurrent", conc),
        ):
            med = {k: statistics.median(v) for k, v in runs.items()}
            results[label] = {
                "single_debits_per_s": round(med["single"]),
                "cluster_debits_per_s": round(med["cluster"]),
                "cluster_over_single": round(med["cluster"] / med["single"], 3),
            }
        with UpstashBridge(single.port) as bridge:
            results["upstash_bridge"] = upstash_requests_per_op(bridge, 500)

    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
