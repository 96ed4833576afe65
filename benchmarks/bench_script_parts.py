"""Where a debit script's server time goes: the script cut into parts, timed by the server.

    .venv/bin/python benchmarks/bench_script_parts.py [--n 2000] [--rounds 5]

For each server line found (as benchmarks/bench_lots.py), one redis-server pinned with
this process to one CPU, SLOWLOG on for every command, and these scripts called by raw
EVALSHA with the KEYS/ARGV the SDK builds, round by round:

* ``no lots``: the debit script just before credit lots (benchmarks/debit_without_lots.lua);
* ``1 lot``: this version's debit script on a 1-lot account (its ``-- @fast`` block
  takes this case before the prelude);
* ``1 lot, general path``: the same script without its fast block (scripts.general_only);
* ``prelude, no lots`` / ``prelude, 1 lot``: each script's prelude alone (its body replaced
  by ``return 1``): the per-call cost of defining the helpers (one closure per
  ``local function``, made anew on every call) plus TIME;
* ``empty``: ``return 1`` with the same KEYS/ARGV: the fixed cost of any EVALSHA.

Reported per script: the 10th percentile and the median of the SLOWLOG durations (the
server's own time for the command, least disturbed by other load on a shared machine),
then the in-script Redis commands per call (INFO commandstats) with their own time.
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import sys
from pathlib import Path

import redis

from sparked_credits import CreditsClient
from sparked_credits._core.scripts import general_only

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "support"))
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_debit import pin_cpus  # noqa: E402  (after the sys.path lines)
from redis_servers import SERVER_LINES, RedisServer  # noqa: E402

WITHOUT_LOTS = (ROOT / "benchmarks" / "debit_without_lots.lua").read_text()
FUNDS = 10**12


def _prelude_only(source: str, body_start: str) -> str:
    return source[: source.rindex(body_start)] + "\nreturn 1\n"


def bench_line(binary: str, name: str, n: int, rounds: int) -> None:
    with RedisServer(binary=binary) as server:
        assert server._proc is not None
        pinned = pin_cpus("same", server._proc.pid)
        raw = redis.Redis.from_url(server.url)
        client = CreditsClient(server.url, app="app.sparked.world")
        client.initialize_user("one_lot", FUNDS)
        raw.set("balance:no_lots", FUNDS)
        new = client._ops.debit("one_lot", 1, action="chat_message").request
        old = client._ops.debit("no_lots", 1, action="chat_message").request
        keys, tail = list(new.keys), list(new.args[1:])
        old_keys, old_tail = list(old.keys)[:7], list(old.args[1:])
        source = new.script.source
        general = general_only("debit").source
        scripts = {
            "no lots": (WITHOUT_LOTS, old_keys, old_tail),
            "1 lot": (source, keys, tail),
            "1 lot, general path": (general, keys, tail),
            "prelude, no lots": (
                _prelude_only(WITHOUT_LOTS, "-- debit: ARGV[9]"),
                old_keys,
                old_tail,
            ),
            "prelude, 1 lot": (_prelude_only(general, "--: argv"), keys, tail),
            "empty": ("return 1", keys, tail),
        }
        shas = {label: raw.script_load(s[0]) for label, s in scripts.items()}
        durations: dict[str, list[int]] = {label: [] for label in scripts}
        raw.config_set("slowlog-max-len", n + 100)
        raw.config_set("slowlog-log-slower-than", 0)
        for _ in range(rounds):
            for label, (_, k, t) in scripts.items():
                raw.slowlog_reset()
                for _ in range(n):
                    raw.evalsha(shas[label], len(k), *k, secrets.token_urlsafe(12), *t)
                durations[label] += [
                    e["duration"]
                    for e in raw.slowlog_get(n + 50)
                    if e["command"].startswith(b"EVALSHA")
                ]
        raw.config_set("slowlog-log-slower-than", 10000)
        version = raw.info("server")["redis_version"]
        print(f"\n{name} {version} ({pinned}), n={n}, rounds={rounds}")
        base = statistics.quantiles(durations["no lots"], n=10)[0]
        for label, d in durations.items():
            p10 = statistics.quantiles(d, n=10)[0]
            print(
                f"  {label:<20} p10 {p10:5.1f} µs  median {statistics.median(d):5.1f} µs"
                f"  (p10 / no lots {p10 / base:.2f})"
            )
        for label in ("no lots", "1 lot", "1 lot, general path"):
            _, k, t = scripts[label]
            raw.config_resetstat()
            for _ in range(n):
                raw.evalsha(shas[label], len(k), *k, secrets.token_urlsafe(12), *t)
            stats = raw.info("commandstats")
            inner = ", ".join(
                f"{c[8:]} {v['calls'] / n:.0f}x{v['usec_per_call']:.2f}"
                for c, v in sorted(stats.items())
                if c not in ("cmdstat_evalsha",) and not c.startswith("cmdstat_config")
            )
            print(f"  in-script commands per {label} debit (count x µs): {inner}")
        client.close()
        raw.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=2000, help="calls per round per script")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    for line in SERVER_LINES:
        binary = line.binary()
        if binary is None:
            print(f"{line.name}: not found ({line.install}); skipped")
            continue
        bench_line(binary, line.name, args.n, args.rounds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
