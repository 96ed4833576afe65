"""Automatic top-up in the example app and on the command line: the settings routes
(pydantic at the edge, idempotent, a 4xx changes nothing), the worker in examples/
against the local Stripe stand-in, the operator's CLI commands, and schemathesis over the
new routes (no 5xx, no change on a 4xx). One server line: these are edges, not scripts."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner
from starlette.testclient import TestClient

import stripe_events as se
import topup_worker
from clerk_keys import ORIGIN, KeyPair
from conftest import LINES, _flushed
from credits_app import Settings, create_app
from route_fuzz import fuzz_routes
from sparked_credits import CreditsClient
from sparked_credits.billing import CustomerLinked, run_payment_event
from sparked_credits.billing.stripe import make_stripe_client
from sparked_credits.cli.commands import cli
from sparked_credits.pricing import load_price_table, set_price_table
from stripe_standin import API_KEY, StripeStandIn
from test_fuzz_http import ledger_state

KEYS = KeyPair("ins_topup")
ORG, ADMIN, MEMBER = "org_topup", "user_topadmin", "user_topmember"
USER = "user_topper"
ROUTE = "/api/credits/topup"
CARD = {"customer": "cus_T1", "payment_method": "pm_card_visa", "pack": "starter"}


@pytest.fixture(scope="module")
def price_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path: Path = tmp_path_factory.mktemp("topup_app") / "pricing.toml"
    path.write_text(se.CATALOG_TOML)
    previous = set_price_table(load_price_table(path))
    yield path
    set_price_table(previous)


@pytest.fixture
def url(server_pool: Any) -> str:
    return _flushed(server_pool.server(LINES[-1]))


@pytest.fixture
def http(url: str, price_file: Path) -> Iterator[TestClient]:
    app = create_app(
        Settings(
            storage_url=url,
            clerk_jwt_key=KEYS.public_pem,
            authorized_parties=(ORIGIN,),
            rate_limit=None,
            org_balances=True,
        )
    )
    with TestClient(app) as client:
        yield client


@pytest.fixture
def standin() -> Iterator[StripeStandIn]:
    server = StripeStandIn({se.PRICE_STARTER: (500, "usd")})
    yield server
    server.close()


def auth(user: str, role: str | None = None, key: str | None = None) -> dict[str, str]:
    claims: dict[str, Any] = {"sub": user}
    if role:
        claims["o"] = {"id": ORG, "rol": role, "slg": "topup"}
    headers = {"Authorization": f"Bearer {KEYS.token(**claims)}"}
    if key:
        headers["Idempotency-Key"] = key
    return headers


def state(url: str) -> dict[bytes, Any]:
    """The ledgers and balances, and every saved top-up setting."""
    found = ledger_state(url)
    raw = redis.Redis.from_url(url)
    try:
        for key in raw.scan_iter(match="topup:*"):
            found[key] = raw.get(key)
    finally:
        raw.close()
    return found


def link(url: str, customer: str, account: str) -> None:
    """What a subscription checkout (or a pack bought with the customer) tells the app."""
    event = CustomerLinked(provider="stripe", customer_id=customer, account=account)
    with CreditsClient(url) as credits:
        run_payment_event(credits, event, load_price_table(None).catalog)


def test_save_read_and_remove_settings(http: TestClient, url: str) -> None:
    link(url, "cus_T1", USER)
    link(url, "cus_theirs", "user_someone_else")
    empty = http.get(ROUTE, headers=auth(USER)).json()
    assert (empty["settings"], empty["account"]) == (None, USER)
    assert "starter" in empty["packs"]
    for _ in range(2):  # a repeat of the key answers the first response
        saved = http.put(ROUTE, json=CARD, headers=auth(USER, key="save-1"))
        assert saved.status_code == 200, saved.text
    assert saved.headers.get("Idempotent-Replayed") == "true"
    assert saved.json()["settings"] == CARD
    # Bad input: a 4xx and nothing saved.
    before = state(url)
    bad_bodies = [
        {**CARD, "pack": "no_such_pack"},
        {**CARD, "customer": "not a customer"},
        {**CARD, "extra": 1},
        {**CARD, "customer": "cus_theirs"},  # another account's customer: 409
        {**CARD, "customer": "cus_unlinked"},  # nobody's yet: 409
        {"customer": "cus_T1"},
        [],
    ]
    for n, body in enumerate(bad_bodies):
        answer = http.put(ROUTE, json=body, headers=auth(USER, key=f"bad-{n}"))
        assert 400 <= answer.status_code < 500, answer.text
        assert isinstance(answer.json().get("error"), str)
    conflict = http.put(ROUTE, json={**CARD, "pack": "big"}, headers=auth(USER, key="save-1"))
    assert conflict.status_code == 409
    assert state(url) == before
    assert http.get(ROUTE, headers=auth(USER)).json()["settings"] == CARD
    removed = http.delete(ROUTE, headers=auth(USER, key="off-1"))
    assert removed.status_code == 200
    assert removed.json()["settings"] is None


def test_org_settings_are_the_admins_to_change(http: TestClient, url: str) -> None:
    link(url, "cus_T1", ORG)
    refused = http.put(ROUTE, json=CARD, headers=auth(MEMBER, "member", key="m-1"))
    assert refused.status_code == 403
    done = http.put(ROUTE, json=CARD, headers=auth(ADMIN, "admin", key="a-1"))
    assert done.status_code == 200, done.text
    assert done.json()["account"] == ORG
    seen = http.get(ROUTE, headers=auth(MEMBER, "member")).json()
    assert (seen["account"], seen["settings"]) == (ORG, CARD)


def test_the_example_worker_tops_up_once(
    http: TestClient, url: str, price_file: Path, standin: StripeStandIn
) -> None:
    link(url, "cus_T1", USER)
    assert http.put(ROUTE, json=CARD, headers=auth(USER, key="w-1")).status_code == 200
    catalog = load_price_table(price_file).catalog
    stripe_client = make_stripe_client(API_KEY, api_base=standin.url)
    with CreditsClient(url) as credits:
        credits.initialize_user(USER, 60)
        credits.set_tier(USER, None, low_balance=50)
        assert http.get(ROUTE, headers=auth(USER)).json()["low_balance"] == 50
        for _ in range(3):
            credits.debit(USER, 5, action="chat_message")  # one crossing, then below
        [done] = topup_worker.run_once(credits, stripe_client, catalog)
        assert (done.result, done.credits) == ("credited", 500)
        assert topup_worker.run_once(credits, stripe_client, catalog) == []
        assert credits.get_balance(USER) == 545
    assert len(standin.payment_intents) == 1


def test_the_operator_commands(url: str, price_file: Path, standin: StripeStandIn) -> None:
    runner = CliRunner()

    def run(*args: str) -> Any:
        return runner.invoke(
            cli,
            ["--url", url, "topup", *args],
            env={"STRIPE_API_KEY": API_KEY, "STRIPE_API_BASE": standin.url},
        )

    with CreditsClient(url) as credits:
        credits.initialize_user(USER, 60)
        credits.set_tier(USER, None, low_balance=50)
    shown = run("show", USER, "--json")
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output) == {"account": USER, "settings": None, "low_balance": 50}
    bad = run("set", USER, "--customer", "cus_T1", "--payment-method", "pm_x", "--pack", "nope")
    assert bad.exit_code == 2
    worse = run("set", USER, "--customer", "c u s", "--payment-method", "pm_x", "--pack", "starter")
    assert worse.exit_code == 2
    assert json.loads(run("show", USER, "--json").output)["settings"] is None
    args = ["--customer", "cus_T1", "--payment-method", "pm_card_visa", "--pack", "starter"]
    saved = run("set", USER, *args)
    assert saved.exit_code == 0, saved.output
    assert "buys pack starter" in saved.output
    with CreditsClient(url) as credits:
        credits.debit(USER, 20, action="chat_message")
    passed = run("run", "--json")
    assert passed.exit_code == 0, passed.output
    [outcome] = json.loads(passed.output)["outcomes"]
    assert (outcome["result"], outcome["credits"]) == ("credited", 500)
    assert json.loads(run("run", "--json").output)["outcomes"] == []
    assert run("off", USER).exit_code == 0
    assert "no automatic top-up" in run("show", USER).output
    missing = runner.invoke(cli, ["--url", url, "topup", "run"], env={"STRIPE_API_KEY": ""})
    assert missing.exit_code == 2


def test_new_routes_no_5xx_and_no_change_on_refusal(http: TestClient, url: str) -> None:
    fuzz_routes(
        http.app, {ROUTE}, headers=auth(ADMIN, "admin"), state=lambda: state(url), operations=3
    )


def test_the_readme_block_as_written(url: str, tmp_path: Path) -> None:
    import os
    import re
    import subprocess
    import sys

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("### Automatic top-up in the example app and on the command line")[1]
    [script] = re.findall(r"```bash\n(.*?)```", section.split("\n## ", 1)[0], flags=re.S)
    (tmp_path / "pricing.toml").write_text(se.CATALOG_TOML)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    done = subprocess.run(
        ["bash", "-e", "-c", script.replace("redis://localhost:6379/0", url)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    shown, saved, off = (
        done.stdout.index(t)
        for t in ("no automatic top-up", "buys pack starter", "automatic top-up off")
    )
    assert shown < saved < off
