"""What closing the account controls' gaps costs a debit, in the same run.

    .venv/bin/python benchmarks/bench_controls_gaps.py [--base REV] [--n 2000] [--rounds 7]

The debit script now carries the hold expiry's window give-back and reads one more field
of the controls hash (the member-limit mark); an organization with per-member limits adds
a decode of the entry's metadata and one HMGET/HSET of the member's window. For each
server line found, one redis-server pinned with this process to one CPU
(bench_debit.pin_cpus), series alternating round by round, each a raw redis-py EVALSHA
with exactly the KEYS/ARGV the SDK builds (fresh idempotency key per call):

* ``plain``: an account without controls (the fast block);
* ``tier (REV)``: a tiered account, with the debit script as commit REV built it (default:
  the branch point from main), loaded beside the current one;
* ``tier``: the same account, the current script;
* ``member limit``: an organization's account with every member capped, the debit naming
  the member in its metadata (the current script);
* ``member limit, SDK``: ``CreditsClient.debit`` of the same.

Server time per script (INFO commandstats usec_per_call), lowest and median of the rounds,
and their ratios.
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from io import BytesIO
from pathlib import Path
from typing import Any

import redis

from sparked_credits import CreditsClient
from sparked_credits._core.operations import Extras

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "support"))
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_debit import pin_cpus  # noqa: E402  (after the sys.path lines)
from redis_servers import SERVER_LINES, RedisServer  # noqa: E402

APP = "app.sparked.world"
FUNDS = 10**12
MEMBER = {"member": "user_bench"}


def base_debit_source(rev: str) -> str:
    """The debit script as commit ``rev`` assembled it (its package, in a scratch dir)."""
    archive = subprocess.run(
        ["git", "archive", rev, "src"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    with tempfile.TemporaryDirectory() as scratch:
        with tarfile.open(fileobj=BytesIO(archive)) as tar:
            tar.extractall(scratch, filter="data")
        code = "from sparked_credits._core.scripts import SCRIPTS; print(SCRIPTS['debit'].source)"
        return subprocess.run(
            [sys.executable, "-c", code],
            env={"PYTHONPATH": str(Path(scratch) / "src")},
            capture_output=True,
            text=True,
            check=True,
        ).stdout


def raw_caller(
    raw: redis.Redis,
    client: CreditsClient,
    account: str,
    source: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> Callable[[int], None]:
    extras = Extras(metadata=metadata)
    request: Any = client._ops.debit(account, 1, action="chat_message", extras=extras).request
    sha = raw.script_load(source or request.script.source)
    keys, tail = list(request.keys), list(request.args[1:])

    def run(n: int) -> None:
        for _ in range(n):
            raw.evalsha(sha, len(keys), *keys, secrets.token_urlsafe(12), *tail)

    return run


def sdk_caller(client: CreditsClient, account: str) -> Callable[[int], None]:
    def run(n: int) -> None:
        for _ in range(n):
            client.debit(account, 1, action="chat_message", metadata=MEMBER)

    return run


def bench_line(binary: str, name: str, base: str, rev: str, n: int, rounds: int) -> Any:
    with RedisServer(binary=binary) as server:
        assert server._proc is not None
        pinned = pin_cpus("same", server._proc.pid)
        raw = redis.Redis.from_url(server.url)
        version = raw.info("server")["redis_version"]
        client = CreditsClient(server.url, app=APP)
        for account in ("plain", "tiered", "org_bench"):
            client.initialize_user(account, FUNDS)
        client.set_tier("tiered", None, daily_limit=10**15, monthly_limit=10**15, low_balance=10)
        client.set_member_limit("org_bench", None, daily_limit=10**15)
        series = {
            "plain": raw_caller(raw, client, "plain"),
            f"tier ({rev})": raw_caller(raw, client, "tiered", base),
            "tier": raw_caller(raw, client, "tiered"),
            "member limit": raw_caller(raw, client, "org_bench", metadata=MEMBER),
            "member limit, SDK": sdk_caller(client, "org_bench"),
        }
        for run in series.values():
            run(200)
        usec: dict[str, list[float]] = {k: [] for k in series}
        ops: dict[str, list[float]] = {k: [] for k in series}
        for _ in range(rounds):
            for label, run in series.items():
                raw.config_resetstat()
                start = time.perf_counter()
                run(n)
                ops[label].append(n / (time.perf_counter() - start))
                usec[label].append(
                    float(raw.info("commandstats")["cmdstat_evalsha"]["usec_per_call"])
                )
        low = {k: min(v) for k, v in usec.items()}
        med_ops = {k: statistics.median(v) for k, v in ops.items()}
        spent = client.get_member_controls("org_bench", "user_bench").spent_today
        client.close()
        raw.close()
        return {
            "server": f"{name} {version}",
            "pinned": pinned,
            "server_usec": {
                k: {"min": round(v, 2), "median": round(statistics.median(usec[k]), 2)}
                for k, v in low.items()
            },
            "ops_per_s_median": {k: round(v) for k, v in med_ops.items()},
            "ratios_server_usec_min": {
                f"tier / tier ({rev})": low["tier"] / low[f"tier ({rev})"],
                "tier / plain": low["tier"] / low["plain"],
                "member limit / tier": low["member limit"] / low["tier"],
                "member limit / plain": low["member limit"] / low["plain"],
            },
            "ratio_sdk_over_raw_member_limit_median": med_ops["member limit, SDK"]
            / med_ops["member limit"],
            "member_spent_today_counted": spent,
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--base", default="main", help="the commit to compare the script with")
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    rev = subprocess.run(
        ["git", "merge-base", "HEAD", args.base],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()[:10]
    base = base_debit_source(rev)
    for line in SERVER_LINES:
        binary = line.binary()
        if binary is None:
            print(f"{line.name}: no binary, skipped ({line.install})")
            continue
        print(json.dumps(bench_line(binary, line.name, base, rev, args.n, args.rounds), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
