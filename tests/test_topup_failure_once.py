"""A failed automatic top-up's own alert, once per crossing: the check and the write are
one script keyed by the crossing (billing/topup_failed.lua), so workers racing on the
same crossing (threads, two processes), a redelivery after a crash, and a torn write of
that script all end with one ``topup_failed`` alert."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import stripe_events as se
from lots_support import raw
from sparked_credits import CreditsClient
from sparked_credits.billing.stripe import make_stripe_client
from sparked_credits.billing.topup import TOPUP_FAILED, TopUpSettings, configure_topup, run_topups
from sparked_credits.pricing import Catalog, load_price_table
from stripe_standin import API_KEY, StripeStandIn

ACCT = "user_declined"
DECLINED = TopUpSettings(
    customer="cus_D1", payment_method="pm_card_chargeDeclined", pack="starter"
)


@pytest.fixture(scope="module")
def price_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path: Path = tmp_path_factory.mktemp("topup_once") / "pricing.toml"
    path.write_text(se.CATALOG_TOML)
    return path


@pytest.fixture(scope="module")
def catalog(price_file: Path) -> Catalog:
    return load_price_table(price_file).catalog


@pytest.fixture
def standin() -> Iterator[StripeStandIn]:
    server = StripeStandIn({se.PRICE_STARTER: (500, "usd")})
    yield server
    server.close()


class Together:
    """A worker's client that, having read the alerts, waits for the other workers: they
    all hold the same crossing before any of them acknowledges it."""

    def __init__(self, client: Any, barrier: threading.Barrier) -> None:
        self.client, self.barrier = client, barrier

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.client, name)
        if name != "alerts":
            return attr

        def read(*args: Any, **kwargs: Any) -> Any:
            found = attr(*args, **kwargs)
            self.barrier.wait(timeout=30)
            return found

        return read


def failures(client: Any) -> list[Any]:
    return [a for a in client.alerts("mailer", count=100) if a.kind == TOPUP_FAILED]


def _crossing(client: Any, catalog: Catalog) -> None:
    client.initialize_user(ACCT, 60)
    client.set_tier(ACCT, None, low_balance=50)
    configure_topup(client, catalog, ACCT, DECLINED)
    client.debit(ACCT, 20, action="chat_message")


def test_workers_racing_on_one_crossing_record_one_failure(
    make_client: Any, catalog: Catalog, standin: StripeStandIn
) -> None:
    client = make_client()
    _crossing(client, catalog)
    stripe_client = make_stripe_client(API_KEY, api_base=standin.url)
    barrier = threading.Barrier(4)
    results: list[Any] = []
    errors: list[BaseException] = []

    def worker(mine: Any) -> None:
        try:
            results.extend(run_topups(Together(mine, barrier), stripe_client, catalog))
        except BaseException as exc:
            errors.append(exc)

    # A client per worker (an async client's loop serves one thread), on one store.
    threads = [threading.Thread(target=worker, args=(make_client(),)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert {r.result for r in results} == {"failed"}
    [failure] = failures(client)
    assert failure.entry_id == results[0].payment_id
    assert len(standin.payment_intents) == 1
    # The crossing is done for the consumer (the failure alert starts nothing); a later
    # pass records nothing more.
    assert [o.result for o in run_topups(client, stripe_client, catalog)] == ["other_kind"]
    assert run_topups(client, stripe_client, catalog) == []
    assert len(failures(client)) == 1
    assert client.get_balance(ACCT) == 40


def test_a_torn_failure_write_is_not_repeated(
    make_client: Any, catalog: Catalog, standin: StripeStandIn
) -> None:
    """The alert written, its mark lost (a torn script), the crossing delivered again: the
    script finds the alert among the outbox's latest and writes none."""
    client = make_client()
    _crossing(client, catalog)
    stripe_client = make_stripe_client(API_KEY, api_base=standin.url)
    [crossing] = client.alerts("topup")
    first = run_topups(client, stripe_client, catalog)
    assert [o.result for o in first] == ["failed"]
    raw(client, "DEL", f"topupfail:{{{ACCT}}}")
    # Redelivered: the consumer's cursor moved back (a crash before the acknowledgement).
    raw(client, "ZREM", f"alertack:{{{ACCT}}}", "topup")
    again = run_topups(client, stripe_client, catalog)
    assert [o.result for o in again] == ["failed", "other_kind"]
    assert client.alerts("mailer")[0].alert_id == crossing.alert_id
    assert len(failures(client)) == 1


_WORKER = """
import sys, time
from sparked_credits import CreditsClient
from sparked_credits.billing.stripe import make_stripe_client
from sparked_credits.billing.topup import run_topups
from sparked_credits.pricing import load_price_table

url, api_base, key, path = sys.argv[1:5]
catalog = load_price_table(path).catalog


class Slow:
    # Having read the alerts, wait: every worker holds the crossing before one acks it.
    def __init__(self, client):
        self.client = client

    def __getattr__(self, name):
        attr = getattr(self.client, name)
        if name != "alerts":
            return attr

        def read(*args, **kwargs):
            found = attr(*args, **kwargs)
            time.sleep(1.0)
            return found

        return read


sys.stdin.readline()
with CreditsClient(url, app="t") as client:
    out = run_topups(Slow(client), make_stripe_client(key, api_base=api_base), catalog)
print(" ".join(o.result for o in out))
"""


def test_two_processes_and_threads_record_one_failure(
    redis_url: str, catalog: Catalog, standin: StripeStandIn, price_file: Path
) -> None:
    stripe_client = make_stripe_client(API_KEY, api_base=standin.url)
    with CreditsClient(redis_url, app="t") as client:
        _crossing(client, catalog)
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent / "support")}
        argv = [redis_url, standin.url, API_KEY, str(price_file)]
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", _WORKER, *argv],
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        time.sleep(0.5)  # both imported
        barrier = threading.Barrier(3)
        seen: list[str] = []

        def worker() -> None:
            with CreditsClient(redis_url, app="t") as mine:
                seen.extend(o.result for o in run_topups(Together(mine, barrier), stripe_client,
                                                           catalog))

        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        threads = [threading.Thread(target=worker) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        outs = [p.communicate(timeout=60)[0].split() for p in procs]
        assert [p.returncode for p in procs] == [0, 0]
        assert "failed" in seen + [r for out in outs for r in out]
        assert len(failures(client)) == 1
        assert len(standin.payment_intents) == 1
