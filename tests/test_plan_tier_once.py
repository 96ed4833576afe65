"""A plan's tier in one script with its period's marker (lua/plan_tier.lua): deliveries of
one invoice racing on threads and in two processes set the tier once; an older invoice
delivered after a newer one never sets the older plan's tier; bad input changes nothing.
Every backend, sync and async, through the Stripe adapter with events signed as Stripe
signs them."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

import stripe_events as se
from sparked_credits import CreditsClient, ValidationError
from sparked_credits.billing import Outcome
from sparked_credits.billing.stripe import handle_stripe_webhook
from sparked_credits.pricing import PriceTable, load_price_table

DAY = 86400
ACCT = "user_plan_once"
PRICE_FILE = f"""
[tiers.free]
daily_limit = 200
low_balance = 20

[tiers.pro]
monthly_limit = 100000
low_balance = 50

[plans.pro]
credits = 1000
price = "{se.PRICE_PRO}"
tier = "pro"

[plans.team]
credits = 5000
price = "{se.PRICE_TEAM}"
tier = "free"
"""


@pytest.fixture(scope="module")
def table_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("plan_once") / "pricing.toml"
    path.write_text(PRICE_FILE)
    return path


@pytest.fixture(scope="module")
def table(table_path: Path) -> PriceTable:
    return load_price_table(table_path)


def deliver(client: Any, table: PriceTable, body: bytes) -> Any:
    return handle_stripe_webhook(client, body, se.sign(body), se.SECRET, table.catalog)


def _periods() -> tuple[int, int, int]:
    now = int(time.time())
    return now - DAY, now + 30 * DAY, now + 60 * DAY


def test_an_older_invoice_after_a_newer_one_never_sets_its_tier(
    make_client: Any, table: PriceTable
) -> None:
    client = make_client(pricing=table)
    client.initialize_user(ACCT, 0)
    p1, p2, p3 = _periods()
    older = se.invoice_paid("sub_o", "in_o1", start=p1, end=p2, customer="cus_o", account=ACCT)
    newer = se.invoice_paid(
        "sub_o", "in_o2", start=p2, end=p3, price=se.PRICE_TEAM, customer="cus_o", account=ACCT
    )
    assert deliver(client, table, newer).tier == "free"  # upgraded to team: its tier
    late = deliver(client, table, older)  # the pro period, delivered late
    assert late.outcome is Outcome.allocated
    assert late.tier is None
    assert "a later period set the tier already" in late.detail
    assert client.get_controls(ACCT).tier == "free"
    # The newer invoice again: a repeat, nothing changes either.
    assert deliver(client, table, newer).tier is None
    assert client.get_controls(ACCT).tier == "free"


def test_set_plan_tier_outcomes_and_bad_input(make_client: Any, table: PriceTable) -> None:
    client = make_client(pricing=table)
    client.initialize_user(ACCT, 0)
    jan = datetime(2026, 1, 1, tzinfo=timezone.utc)
    feb = datetime(2026, 2, 1, tzinfo=timezone.utc)
    first = client.set_plan_tier(ACCT, "pro", period_id="stripe:sub:feb", period_start=feb)
    assert (first.outcome, first.applied, first.controls.tier) == ("set", True, "pro")
    again = client.set_plan_tier(ACCT, "pro", period_id="stripe:sub:feb", period_start=feb)
    assert (again.outcome, again.applied) == ("repeat", False)
    old = client.set_plan_tier(ACCT, "free", period_id="stripe:sub:jan", period_start=jan)
    assert (old.outcome, old.controls.tier) == ("older", "pro")
    before = client.get_controls(ACCT)
    for bad in (
        lambda: client.set_plan_tier(ACCT, "gold", period_id="p:x", period_start=feb),
        lambda: client.set_plan_tier(ACCT, "free", period_id="", period_start=feb),
        lambda: client.set_plan_tier(ACCT, "free", period_id="bad id", period_start=feb),
        lambda: client.set_plan_tier(ACCT, "free", period_id="p:y", period_start="2026-03"),
        lambda: client.set_plan_tier(
            ACCT, "free", period_id="p:y", period_start=datetime(2026, 3, 1)  # naive
        ),
        lambda: client.set_plan_tier("bad account", "free", period_id="p:y", period_start=feb),
        lambda: client.set_plan_tier(ACCT, None, period_id="p:y", period_start=feb),
    ):
        with pytest.raises(ValidationError):
            bad()
    assert client.get_controls(ACCT) == before
    # The later period still applies.
    march = datetime(2026, 3, 1, tzinfo=timezone.utc)
    later = client.set_plan_tier(ACCT, "free", period_id="stripe:sub:mar", period_start=march)
    assert (later.outcome, later.controls.tier) == ("set", "free")


_WORKER = """
import sys
from pathlib import Path
import stripe_events as se
from sparked_credits import CreditsClient
from sparked_credits.billing.stripe import handle_stripe_webhook
from sparked_credits.pricing import load_price_table

url, path, body = sys.argv[1], Path(sys.argv[2]), sys.argv[3].encode()
table = load_price_table(path)
sys.stdin.readline()  # the start signal
with CreditsClient(url, app="t", pricing=table) as client:
    tiers = []
    for _ in range(3):
        out = handle_stripe_webhook(client, body, se.sign(body), se.SECRET, table.catalog)
        tiers.append(out.tier or "-")
print(" ".join(tiers))
"""


def test_racing_deliveries_set_the_tier_once(
    redis_url: str, table: PriceTable, table_path: Path
) -> None:
    """One invoice delivered by 6 threads and 2 processes at once: one of them sets the
    tier; an operator's change made right after is never undone by the stragglers."""
    p1, p2, _ = _periods()
    body = se.invoice_paid("sub_r", "in_r1", start=p1, end=p2, customer="cus_r", account=ACCT)
    with CreditsClient(redis_url, app="t", pricing=table) as client:
        client.initialize_user(ACCT, 0)
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent / "support")}
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", _WORKER, redis_url, str(table_path), body.decode()],
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        tiers: list[str | None] = []
        barrier = threading.Barrier(6)

        def racer() -> None:
            with CreditsClient(redis_url, app="t", pricing=table) as mine:
                barrier.wait()
                for _ in range(3):
                    tiers.append(deliver(mine, table, body).tier)

        threads = [threading.Thread(target=racer) for _ in range(6)]
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        outs = [p.communicate(timeout=60)[0].split() for p in procs]
        set_now = [t for t in tiers if t] + [t for out in outs for t in out if t != "-"]
        assert set_now == ["pro"]
        assert len(tiers) + sum(len(o) for o in outs) == 24
        assert client.get_balance(ACCT) == 1000  # allocated once too
        client.set_tier(ACCT, "free")  # an operator's change
        assert deliver(client, table, body).tier is None
        assert client.get_controls(ACCT).tier == "free"
