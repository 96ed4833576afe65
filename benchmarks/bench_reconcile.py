"""Reconcile one account with a large ledger: the SDK's cheap reconcile (block sums) vs a
client-side XRANGE sum, in the same run against the same real redis-server.

    python benchmarks/bench_reconcile.py                      # 1,000,000 entries, redis6
    python benchmarks/bench_reconcile.py --server redis7 --entries 200000

The ledger is written the way the SDK writes it: raw EVALSHA of the debit script with the
KEYS/ARGV the SDK builds (fresh idempotency key per call), pipelined, so the block sums
beside the stream are the ones every debit keeps. Then, each side in its own child
process (so its peak RSS is its own), client and redis-server pinned to one CPU:

1. SDK ``reconcile()`` with the block sums as the debits wrote them;
2. the client-side XRANGE sum (10,000 entries a page);
3. SDK ``reconcile()`` reading entries (the block sums dropped: an account from before
   them, or one the TypeScript SDK writes to), the path every mismatch falls back to.

Also: an incremental reconcile after 1,000 new debits, and the server time the block
update adds to one debit (SLOWLOG p10 of the debit script vs the same script without
``ledger_block_add``, interleaved rounds).
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import secrets
import statistics
import subprocess
import sys
import time
from pathlib import Path

import redis

from sparked_credits import CreditsClient
from sparked_credits._core.scripts import general_only

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "support"))
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_debit import pin_cpus  # noqa: E402  (after the sys.path lines)
from redis_servers import SERVER_LINES, RedisServer  # noqa: E402

ACCT = "user_bench"
APP = "app.sparked.world"
FUNDS = 10**12


def debit_call(client: CreditsClient, account: str) -> tuple[str, list[str], list[str]]:
    """The debit script's source, KEYS and ARGV after the idempotency key, as the SDK
    builds them."""
    request = client._ops.debit(account, 1, action="chat_message").request
    return request.script.source, list(request.keys), list(request.args[1:])


def populate(url: str, n: int) -> None:
    """An initialized account and n - 1 debits, by pipelined raw EVALSHA."""
    client = CreditsClient(url, app=APP)
    client.initialize_user(ACCT, FUNDS)
    source, keys, tail = debit_call(client, ACCT)
    r = redis.Redis.from_url(url)
    sha = r.script_load(source)
    batch = 5_000
    for start in range(1, n, batch):
        pipe = r.pipeline(transaction=False)
        for _ in range(start, min(start + batch, n)):
            pipe.evalsha(sha, len(keys), *keys, secrets.token_urlsafe(12), *tail)
        pipe.execute()
    client.close()
    r.close()


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(mode: str, url: str) -> None:
    """Run one side in this (child) process and print a JSON result."""
    import redis as redis_py

    baseline = peak_rss_mb()
    r = redis_py.Redis.from_url(url)
    entries = int(r.xlen(f"txs:{ACCT}"))
    started = time.perf_counter()
    warm = None
    if mode in ("blocks", "entries"):
        with CreditsClient(url) as client:
            result = client.reconcile(ACCT)
            read, ok = result.entries_read, result.matched
            if mode == "blocks":  # again, the script now cached by the server
                t = time.perf_counter()
                ok = ok and client.reconcile(ACCT).matched
                warm = time.perf_counter() - t
    else:
        total, read, last = 0, 0, "-"
        while True:
            page = r.xrange(f"txs:{ACCT}", last, "+", count=10_000)
            if not page:
                break
            for _, fields in page:
                total += int(fields[b"delta"])
            read += len(page)
            last = "(" + page[-1][0].decode()
        ok = total == int(r.get(f"balance:{ACCT}") or 0)
    elapsed = time.perf_counter() - started - (warm or 0)
    print(json.dumps({"mode": mode, "seconds": elapsed, "warm_seconds": warm,
                      "entries": entries, "read": read,
                      "matched": ok, "rss_above_baseline_mb": peak_rss_mb() - baseline}))


def run_child(mode: str, url: str) -> dict[str, float]:
    out = subprocess.run([sys.executable, __file__, "--child", mode, "--url", url],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)  # type: ignore[no-any-return]


_BLOCK_FN = re.compile(r"^local BLOCK = 1024\n.*?^local function ledger_block_add\(.*?^end\n",
                       re.M | re.S)


def without_blocks(source: str) -> str:
    """The debit script without the block update (function and call)."""
    stripped = _BLOCK_FN.sub("", source)
    stripped = stripped.replace("  ledger_block_add(delta)\n", "")
    if stripped == source or "ledger_block_add" in stripped:
        raise SystemExit("could not find ledger_block_add in the debit script")
    return stripped


_ADD_FN = re.compile(r"^local BLOCK = 1024\n.*?^local function ledger_block_add\(.*?^end\n",
                     re.M | re.S)


def isolated_cost(url: str, source: str, runs: int = 40, loop: int = 2000) -> dict[str, float]:
    """ledger_block_add as the prelude has it, called `loop` times in one script on a meta
    hash of a few fields, against the same loop calling an empty function: the per-update
    server time without a debit's noise around it (median of `runs` SLOWLOG durations)."""
    found = _ADD_FN.search(source)
    if found is None:
        raise SystemExit("no ledger_block_add in the debit script")
    head = ("local K_META = KEYS[1]\n"
            "local function fmt(n) return string.format('%d', n) end\n")
    body = f"for i = 1, {loop} do ledger_block_add(-1) end\nreturn 1\n"
    empty = "local function ledger_block_add(delta) end\n"
    r = redis.Redis.from_url(url)
    r.hset("account:{cost}", mapping={"init": "1-0", "ckpt_id": "1-1", "opened": "1"})
    shas = {"with": r.script_load(head + found.group(0) + body),
            "empty": r.script_load(head + empty + body)}
    out: dict[str, list[int]] = {label: [] for label in shas}
    r.config_set("slowlog-log-slower-than", 0)
    for _ in range(runs):
        for label, sha in shas.items():
            r.slowlog_reset()
            r.evalsha(sha, 1, "account:{cost}")
            out[label] += [e["duration"] for e in r.slowlog_get(10)
                           if e["command"].startswith(b"EVALSHA")]
    r.config_set("slowlog-log-slower-than", 10000)
    r.close()
    per = {label: statistics.median(d) / loop for label, d in out.items()}
    return {"isolated us": per["with"] - per["empty"]}


def block_cost(url: str, n: int, rounds: int) -> dict[str, float]:
    """SLOWLOG p10/median of a debit's general path with and without the block update (µs)."""
    r = redis.Redis.from_url(url)
    with CreditsClient(url, app=APP) as client:
        out: dict[str, float] = {}
        variants = {}
        for label in ("with blocks", "without blocks"):
            account = "user_cost_" + str(len(variants))
            client.initialize_user(account, FUNDS)
            _, keys, tail = debit_call(client, account)
            # The general path: lua/debit.lua's fast block writes the block sums itself
            # (one HSET, its n/bo read folded into its marks' HMGET), so stripping the
            # prelude's function measures only the general path's update.
            source = general_only("debit").source
            if label == "without blocks":
                source = without_blocks(source)
            variants[label] = (r.script_load(source), keys, tail)
        durations: dict[str, list[int]] = {label: [] for label in variants}
        r.config_set("slowlog-max-len", n + 100)
        for i in range(rounds):
            order = list(variants.items())
            for label, (sha, keys, tail) in order if i % 2 else reversed(order):
                r.config_set("slowlog-log-slower-than", 0)
                r.slowlog_reset()
                for _ in range(n):
                    r.evalsha(sha, len(keys), *keys, secrets.token_urlsafe(12), *tail)
                durations[label] += [e["duration"] for e in r.slowlog_get(n + 50)
                                     if e["command"].startswith(b"EVALSHA")]
        r.config_set("slowlog-log-slower-than", 10000)
        for label, d in durations.items():
            out[f"{label} p10"] = statistics.quantiles(d, n=10)[0]
            out[f"{label} median"] = statistics.median(d)
        # The in-script commands' own time per debit (INFO commandstats), which the load
        # on a shared machine disturbs less than a script's whole duration.
        for label, (sha, keys, tail) in variants.items():
            r.config_resetstat()
            for _ in range(n):
                r.evalsha(sha, len(keys), *keys, secrets.token_urlsafe(12), *tail)
            stats = r.info("commandstats")
            inner = {c[8:]: v for c, v in stats.items()
                     if c != "cmdstat_evalsha" and not c.startswith("cmdstat_config")}
            out[f"{label} commands"] = sum(v["calls"] for v in inner.values()) / n
            out[f"{label} commands us"] = sum(v["usec"] for v in inner.values()) / n
        out.update(isolated_cost(url, debit_call(client, "user_cost_0")[0]))
    r.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--server", choices=[x.name for x in SERVER_LINES],
                        default=SERVER_LINES[0].name)
    parser.add_argument("--cost-n", type=int, default=2000, help="debits per cost round")
    parser.add_argument("--cost-rounds", type=int, default=5)
    parser.add_argument("--cost-only", action="store_true",
                        help="only the block update's cost per debit")
    parser.add_argument("--child")
    parser.add_argument("--url")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.url)
        return
    line = next(x for x in SERVER_LINES if x.name == args.server)
    binary = line.binary()
    if binary is None:
        raise SystemExit(f"no {line.name} server: {line.install}")
    with RedisServer(binary=binary) as server:
        assert server._proc is not None
        pinned = pin_cpus("same", server._proc.pid)
        r = redis.Redis.from_url(server.url)
        print(f"{line.name}: redis-server {r.info('server')['redis_version']}, "
              f"python {sys.version.split()[0]}, {pinned}")
        if args.cost_only:
            report_cost(block_cost(server.url, args.cost_n, args.cost_rounds))
            r.close()
            return
        t = time.perf_counter()
        populate(server.url, args.entries)
        print(f"populated {args.entries:,} entries (SDK debit script, pipelined EVALSHA) "
              f"in {time.perf_counter() - t:.1f}s; meta hash {r.hlen(f'account:{{{ACCT}}}')} "
              "fields")
        r.config_set("slowlog-log-slower-than", 0)
        r.config_set("slowlog-max-len", 100_000)
        r.slowlog_reset()
        blocks = run_child("blocks", server.url)
        slow = r.slowlog_get(100_000)
        longest_blocks_ms = max((e["duration"] for e in slow
                                 if e["command"].startswith(b"EVAL")), default=0) / 1000
        calls = [f"{e['command'].split()[0].decode()} {e['duration'] / 1000:.2f} ms"
                 for e in reversed(slow) if e["command"].startswith(b"EVAL")]
        print(f"block-sum reconcile, script calls: {', '.join(calls)} (an EVAL after "
              "NOSCRIPT compiles the script: once per server)")
        client_side = run_child("client", server.url)
        meta = f"account:{{{ACCT}}}"
        r.hdel(meta, "n", "bo", "ckpt_id", "ckpt_sum", "ckpt_count")
        entries = run_child("entries", server.url)  # (it seeds the block sums again)
        r.config_set("slowlog-log-slower-than", 10000)
        with CreditsClient(server.url) as client:
            for _ in range(1000):
                client.debit(ACCT, 1, action="chat_message")
            t = time.perf_counter()
            inc = client.reconcile(ACCT)
            inc_ms = (time.perf_counter() - t) * 1000
        cost = block_cost(server.url, args.cost_n, args.cost_rounds)
        r.close()
    rate = {s["mode"]: s["entries"] / s["seconds"] for s in (blocks, client_side, entries)}
    print(json.dumps({"blocks": blocks, "client_side": client_side, "entries": entries,
                      "block_update_us": cost}, indent=2))
    print(f"SDK, block sums:         {rate['blocks']:>13,.0f} entries/s "
          f"({blocks['read']:,} read), matched={blocks['matched']}, client peak "
          f"+{blocks['rss_above_baseline_mb']:.1f} MB, longest script {longest_blocks_ms:.2f} ms")
    print(f"SDK, block sums, warm:   {blocks['entries'] / blocks['warm_seconds']:>13,.0f} "
          f"entries/s ({blocks['warm_seconds'] * 1000:.2f} ms for the account)")
    print(f"client-side XRANGE sum:  {rate['client']:>13,.0f} entries/s, "
          f"client peak +{client_side['rss_above_baseline_mb']:.1f} MB")
    print(f"SDK, reading entries:    {rate['entries']:>13,.0f} entries/s, "
          f"matched={entries['matched']}, client peak +{entries['rss_above_baseline_mb']:.1f} MB")
    print(f"ratio blocks/client-side: {rate['blocks'] / rate['client']:.1f}x; "
          f"entries/client-side: {rate['entries'] / rate['client']:.2f}x")
    print(f"incremental reconcile after 1,000 new debits: {inc.entries_read} read, "
          f"{inc_ms:.1f} ms, matched={inc.matched}")
    report_cost(cost)


def report_cost(cost: dict[str, float]) -> None:
    with_p10, without_p10 = cost["with blocks p10"], cost["without blocks p10"]
    print(f"debit server time (SLOWLOG p10): {with_p10:.1f} µs with the block update, "
          f"{without_p10:.1f} µs without: +{with_p10 - without_p10:.1f} µs "
          f"({with_p10 / without_p10:.3f}x); medians {cost['with blocks median']:.1f} / "
          f"{cost['without blocks median']:.1f} µs")
    print(f"one block update alone (2000 in one script, median of 40, minus an empty loop): "
          f"{cost['isolated us']:.2f} µs")
    print(f"in-script commands per debit: {cost['with blocks commands']:.1f} taking "
          f"{cost['with blocks commands us']:.2f} µs with the block update, "
          f"{cost['without blocks commands']:.1f} taking "
          f"{cost['without blocks commands us']:.2f} µs without")


if __name__ == "__main__":
    main()
