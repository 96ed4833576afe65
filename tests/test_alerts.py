"""Low-balance alerts: recorded by the same script that takes the balance below the
threshold, once per crossing (re-armed when the balance is back at or above it), read by a
consumer cursor on every backend, sync and async; and the command line."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from typing import Any

import pytest

from conftest import LINES, _flushed
from sparked_credits import CreditsClient, ValidationError

ACCT = "user_low"


def test_one_alert_per_crossing_rearmed_on_rise(client: Any) -> None:
    client.initialize_user(ACCT, 100)
    client.set_tier(ACCT, None, low_balance=50)
    client.debit(ACCT, 40, action="chat_message")  # 60: above
    assert client.alerts("mailer") == []
    crossing = client.debit(ACCT, 20, action="chat_message")  # 40: crosses
    client.debit(ACCT, 10, action="chat_message")  # 30: still below, no new alert
    hold = client.reserve(ACCT, 10, action="video_generation")  # 20
    found = client.alerts("mailer")
    assert [(a.account, a.balance, a.threshold, a.entry_id) for a in found] == [
        (ACCT, 40, 50, crossing.entry.id)
    ]
    assert found[0].alert_id == f"{ACCT}/{found[0].alert_id.rsplit('/', 1)[1]}"
    client.release(ACCT, hold.hold_id)  # 30
    client.credit(ACCT, 30)  # 60: back above, re-armed
    client.adjust(ACCT, -15)  # 45: a second crossing, by an admin adjustment
    second = client.alerts("mailer")
    assert [a.balance for a in second] == [40, 45]
    assert second[1].at >= second[0].at


def test_consumer_cursor_ack_and_redelivery(client: Any) -> None:
    for n in range(3):
        account = f"user_low_{n}"
        client.initialize_user(account, 100)
        client.set_tier(account, None, low_balance=90)
        client.debit(account, 20, action="chat_message")
    first = client.alerts("webhook", count=2)
    assert len(first) == 2
    # A worker that crashed before acknowledging gets the same alerts again.
    assert [a.alert_id for a in client.alerts("webhook", count=2)] == [a.alert_id for a in first]
    assert client.ack_alerts("webhook", [a.alert_id for a in first]) == 2
    rest = client.alerts("webhook")
    assert len(rest) == 1
    assert rest[0].alert_id not in {a.alert_id for a in first}
    # Another consumer has its own cursor; acknowledging an old id never moves one back.
    assert len(client.alerts("audit")) == 3
    client.ack_alerts("webhook", [rest[0].alert_id])
    client.ack_alerts("webhook", [first[0].alert_id])
    assert client.alerts("webhook") == []
    before = client.alerts("audit")
    for bad in (
        lambda: client.ack_alerts("audit", ["nope"]),
        lambda: client.ack_alerts("audit", "user_low_0/1-0"),
        lambda: client.ack_alerts("audit", [f"{ACCT}/1-0", "user_low_0/x"]),
        lambda: client.ack_alerts("bad consumer", [before[0].alert_id]),
        lambda: client.alerts("audit", count=0),
        lambda: client.alerts("audit", count=True),
    ):
        with pytest.raises(ValidationError):
            bad()
    assert client.alerts("audit") == before


def test_concurrent_debits_cross_once(make_client: Any) -> None:
    setup = make_client()
    setup.initialize_user(ACCT, 200)
    setup.set_tier(ACCT, None, low_balance=100)
    clients = [make_client() for _ in range(4)]

    def spend(c: Any) -> None:
        for _ in range(5):
            c.debit(ACCT, 10, action="chat_message")

    threads = [threading.Thread(target=spend, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert setup.get_balance(ACCT) == 0
    found = setup.alerts("once")
    assert [(a.balance, a.threshold) for a in found] == [(90, 100)]


def _cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sparked_credits", "--url", url, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_command_line(server_pool: Any) -> None:
    # One server line: the command line adds nothing the client tests do not cover per line.
    redis_url = _flushed(server_pool.server(LINES[-1]))
    with CreditsClient(redis_url, app="t") as client:
        client.initialize_user(ACCT, 100)
        client.initialize_user("user_other", 0)
    done = _cli(redis_url, "tier", ACCT, "--none", "--low-balance", "80", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["low_balance"] == 80
    done = _cli(redis_url, "transfer", ACCT, "user_other", "30", "--idempotency-key", "k1")
    assert "moved 30" in done.stdout
    listed = json.loads(_cli(redis_url, "alerts", "ops", "--json", "--ack").stdout)["alerts"]
    assert [(a["account"], a["balance"]) for a in listed] == [(ACCT, 70)]
    assert json.loads(_cli(redis_url, "alerts", "ops", "--json").stdout)["alerts"] == []
    done = _cli(redis_url, "tier", ACCT, "gold")
    assert done.returncode == 2
    assert "unknown tier" in done.stderr
