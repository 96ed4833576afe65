"""The command line, run as a subprocess against a real redis-server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import redis

from sparked_credits import CreditsClient

EXE = str(Path(sys.executable).with_name("sparked-credits"))


def run(*args: str, env_url: str | None = None) -> subprocess.CompletedProcess[str]:
    import os

    env = {k: v for k, v in os.environ.items()
           if k not in ("REDIS_URL", "UPSTASH_REDIS_URL", "UPSTASH_REDIS_REST_URL")}
    env["COLUMNS"] = "200"
    if env_url:
        env["REDIS_URL"] = env_url
    return subprocess.run(
        [sys.executable, "-m", "sparked_credits", *args],
        capture_output=True, text=True, timeout=60, check=False, env=env,
    )


def test_balance_grant_history_usage(redis_url: str) -> None:
    with CreditsClient(redis_url, app="app.sparked.world") as client:
        client.initialize_user("user_1")
        client.charge("user_1", "chat_message")
    out = run("--url", redis_url, "balance", "user_1")
    assert out.returncode == 0, out.stderr
    assert "user_1: 90 credits" in out.stdout
    out = run("balance", "user_1", "--json", env_url=redis_url)  # storage from REDIS_URL
    assert json.loads(out.stdout) == {"account": "user_1", "balance": 90}
    out = run("--url", redis_url, "grant", "user_1", "25", "--reason", "support",
              "--idempotency-key", "ticket-9", "--json")
    assert json.loads(out.stdout)["balance"] == 115
    again = run("--url", redis_url, "grant", "user_1", "25", "--reason", "support",
                "--idempotency-key", "ticket-9")
    assert "replayed" in again.stdout
    out = run("--url", redis_url, "history", "user_1", "--json")
    page = json.loads(out.stdout)
    assert [e["type"] for e in page["entries"]] == ["credit", "debit", "init"]
    out = run("--url", redis_url, "history", "user_1", "--type", "debit")
    assert "chat_message" in out.stdout
    assert "init" not in out.stdout
    out = run("--url", redis_url, "usage", "user_1", "--days", "3")
    assert out.returncode == 0, out.stderr
    assert "█" in out.stdout
    assert "total: 10" in out.stdout
    usage = json.loads(run("--url", redis_url, "usage", "user_1", "--json").stdout)
    assert len(usage["days"]) == 7
    assert usage["days"][-1]["by"] == {"chat_message": 10}


def test_reconcile_exit_codes(redis_url: str) -> None:
    with CreditsClient(redis_url) as client:
        for acct in ("user_a", "user_b"):
            client.initialize_user(acct)
    ok = run("--url", redis_url, "reconcile", "--all")
    assert ok.returncode == 0, ok.stderr
    assert "checked 2, mismatched 0" in ok.stdout
    redis.Redis.from_url(redis_url).set("balance:user_b", "1")
    bad = run("--url", redis_url, "reconcile", "--all", "--json")
    assert bad.returncode == 1
    report = json.loads(bad.stdout)
    assert (report["checked"], report["mismatched"], report["repaired"]) == (2, 1, 0)
    one = run("--url", redis_url, "reconcile", "user_b")
    assert one.returncode == 1
    assert "MISMATCH" in one.stdout
    fixed = run("--url", redis_url, "reconcile", "user_b", "--repair")
    assert fixed.returncode == 0
    assert "repaired" in fixed.stdout
    assert run("--url", redis_url, "reconcile", "--all").returncode == 0


def test_errors_are_one_line_with_exit_2(redis_url: str) -> None:
    out = run("--url", redis_url, "grant", "user 1", "5")
    assert out.returncode == 2
    assert "account" in out.stderr
    assert "Traceback" not in out.stderr
    out = run("balance", "user_1")  # no storage configured
    assert out.returncode == 2
    assert "REDIS_URL" in out.stderr
    out = run("--url", redis_url, "reconcile")
    assert out.returncode == 2  # usage error: neither an account nor --all


def test_demo_on_memory_and_console_script() -> None:
    for cmd in ([sys.executable, "-m", "sparked_credits", "demo"], [EXE, "demo"]):
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
        assert out.returncode == 0, out.stderr
        assert "chat message (10 credits): balance 90" in out.stdout
        assert "HTTP 402" in out.stdout
        assert '"required": 600' in out.stdout
        assert "all checks passed" in out.stdout


def test_demo_against_real_redis(redis_url: str) -> None:
    out = run("demo", "--url", redis_url)
    assert out.returncode == 0, out.stderr
    assert "storage: redis://" in out.stdout
    unreachable = run("demo", "--url", "redis://127.0.0.1:9/0?socket_connect_timeout=0.2")
    assert unreachable.returncode == 2
    assert "Traceback" not in unreachable.stderr
