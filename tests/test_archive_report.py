"""sparked-credits report: every figure checked against a ledger built here, computed
from the ledger's own entries (read through the SDK), not from the report's queries."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest

from sparked_credits import CreditsClient
from sparked_credits.archive import Archiver
from sparked_credits.archive.report import build
from sparked_credits.backends.memory import reset_memory_store
from sparked_credits.cli import main

pytestmark = pytest.mark.timeout(120)

SPENT = {"debit", "refund", "reserve", "settle", "release", "expire"}


def entries(client: CreditsClient, account: str) -> list[Any]:
    out, cursor = [], None
    while True:
        page = client.history(account, 1000, cursor)
        out.extend(page.entries)
        if page.next_cursor is None:
            return out
        cursor = page.next_cursor


def build_ledgers(client: CreditsClient) -> list[str]:
    soon = datetime.now(timezone.utc) + timedelta(seconds=1)
    later = datetime.now(timezone.utc) + timedelta(days=10)
    accounts = ["user_a", "user_b", "user_c", "user_d"]
    for i, account in enumerate(accounts):
        client.initialize_user(account, 50 + 10 * i)
    client.credit("user_a", 500, source="purchase", metadata={"amount": 999,
                                                                 "currency": "usd"})
    client.credit("user_b", 200, source="purchase", metadata={"amount": 450,
                                                                 "currency": "eur"})
    client.credit("user_b", 40, source="promo", priority=5, expires_at=later)
    client.credit("user_c", 30, source="promo", priority=5, expires_at=soon)
    spent = client.debit("user_a", 120, action="chat_message")
    client.refund("user_a", spent.entry.id, amount=20)
    client.debit("user_b", 25, action="video_generation")  # from the expiring promo first
    hold = client.reserve("user_c", 15, action="video_generation")
    client.settle("user_c", hold.hold_id, 9)
    client.adjust("user_d", 7, reason="goodwill")
    client.adjust("user_d", -60, allow_overdraft=True, reason="chargeback")
    time.sleep(1.2)
    client.sweep_expired("user_c")  # the 1-second promo lapses: a lot_expire entry
    return accounts


def test_report_figures_match_the_ledger(archive_url: str, tmp_path: Any) -> None:
    name = f"report-{time.monotonic_ns()}"
    try:
        with CreditsClient(f"memory://{name}", app="app.sparked.world") as client:
            accounts = build_ledgers(client)
            with Archiver(client, archive_url) as archiver:
                archiver.run_once()
            by_account = {a: entries(client, a) for a in accounts}
            ledger = [e for a in accounts for e in by_account[a]]
            balances = {a: client.get_balance(a) for a in accounts}
            expiring = sum(
                g.remaining for a in accounts for g in client.grants(a)
                if g.expires_at is not None
                and g.expires_at <= datetime.now(timezone.utc) + timedelta(days=30)
            )
        with psycopg.connect(archive_url) as conn:
            figures = build(conn, days=3, low_balance=60)
    finally:
        reset_memory_store(name)
    today = figures.days[-1]
    assert [d.day for d in figures.days][-1] == datetime.now(timezone.utc).date()
    assert today.granted == sum(
        e.delta for e in ledger
        if e.type_name in ("init", "credit") or (e.type_name == "adjust" and e.delta > 0)
    )
    assert today.spent == -sum(e.delta for e in ledger if e.type_name in SPENT)
    assert today.refunded == sum(e.delta for e in ledger if e.type_name == "refund") == 20
    assert today.expired == -sum(e.delta for e in ledger if e.type_name == "lot_expire") > 0
    spend: dict[tuple[str, str], int] = {}
    for e in ledger:
        if e.type_name in SPENT:
            key = (e.app or "(none)", e.action or "(none)")
            spend[key] = spend.get(key, 0) - e.delta
    assert {(r.app, r.action): r.credits for r in figures.spend} == {
        k: v for k, v in spend.items() if v
    }
    assert (figures.purchases.count, figures.purchases.credits) == (2, 700)
    assert figures.purchases.revenue == {"EUR": 450, "USD": 999}
    assert figures.outstanding == sum(balances.values())
    assert figures.accounts == 4
    assert figures.expiring_30d == expiring == 15  # user_b's promo: 40 less the 25 spent
    per_account = {
        a: -sum(e.delta for e in es if e.type_name in SPENT) for a, es in by_account.items()
    }
    assert [(t.account, t.credits) for t in figures.top_accounts] == sorted(
        ((a, c) for a, c in per_account.items() if c > 0), key=lambda x: (-x[1], x[0])
    )
    assert [(a.account, a.credits) for a in figures.low_balance] == sorted(
        ((a, b) for a, b in balances.items() if b < 60), key=lambda x: (x[1], x[0])
    )
    # The command prints the same figures.
    code = main(["report", "--from", archive_url, "--days", "3", "--low-balance", "60",
                 "--json"])
    assert code == 0


def test_report_command_json(archive_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    name = f"report-cli-{time.monotonic_ns()}"
    try:
        with CreditsClient(f"memory://{name}", app="app.sparked.world") as client:
            client.initialize_user("user_x", 5)
            client.debit("user_x", 2, action="chat_message")
            with Archiver(client, archive_url) as archiver:
                archiver.run_once()
    finally:
        reset_memory_store(name)
    assert main(["report", "--from", archive_url, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["outstanding"] == 3
    assert data["days"][-1]["spent"] == 2
    assert data["low_balance"] == [{"account": "user_x", "credits": 3}]
    assert main(["report", "--from", archive_url]) == 0
    assert "outstanding credits (liability): 3" in capsys.readouterr().out
