"""Traceable lots: ``LedgerEntry.draws`` (parsed from the compact ``lots`` record) for
every entry kind that moves lots, on every backend, sync and async; the CLI's
``history --lots``, ``grants`` (whole ids at 80 columns), ``sweep`` and its default source.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from typing import Any

from sparked_credits import CreditsClient, EntryType, LedgerEntry, LotDraw
from sparked_credits._core.lots import IMPLICIT

ACCT = "user_draws"


def moved(entry: LedgerEntry) -> dict[str, int]:
    return {d.grant_id: d.credits for d in entry.draws}


def test_draws_for_every_kind_that_moves_lots(client: Any) -> None:
    init = client.initialize_user(ACCT)
    (first,) = client.history(ACCT).entries
    assert first.draws == [LotDraw(grant_id=first.id, credits=100)]  # the lot it opened
    promo = client.credit(ACCT, 50, source="promo", priority=10)
    assert promo.entry.draws == [LotDraw(grant_id=promo.entry.id, credits=50)]
    debit = client.debit(ACCT, 70, action="chat_message")
    assert moved(debit.entry) == {promo.entry.id: 50, first.id: 20}
    assert [d.grant_id for d in debit.entry.draws] == [promo.entry.id, first.id]  # drawn order
    refund = client.refund(ACCT, debit.entry.id, amount=30)
    assert sum(d.credits for d in refund.entry.draws) == 30
    assert set(moved(refund.entry)) <= {promo.entry.id, first.id}
    hold = client.reserve(ACCT, 40, action="video_generation")
    (reserve,) = client.history(ACCT, 1).entries
    assert reserve.type == EntryType.RESERVE
    assert sum(d.credits for d in reserve.draws) == 40
    settled = client.settle(ACCT, hold.hold_id, 25)
    assert sum(d.credits for d in settled.entry.draws) == 15  # the unused part went back
    second = client.reserve(ACCT, 5, action="video_generation")
    released = client.release(ACCT, second.hold_id)
    assert sum(d.credits for d in released.entry.draws) == 5
    taken = client.adjust(ACCT, -10, reason="correction")
    assert sum(d.credits for d in taken.entry.draws) == 10
    given = client.adjust(ACCT, 7, reason="goodwill")
    assert given.entry.draws == [LotDraw(grant_id=given.entry.id, credits=7)]
    # The raw field stays, and the JSON of an entry carries both.
    dumped = taken.entry.model_dump(mode="json")
    assert dumped["lots"] == taken.entry.lots
    assert dumped["draws"] == [d.model_dump() for d in taken.entry.draws]
    # Every entry read back from history parses the same as the call's reply.
    for entry in client.history(ACCT, 50).entries:
        if entry.type in (EntryType.RESERVE,):
            continue
        assert entry.draws, entry
        if entry.lots and not entry.lots.startswith("+"):
            assert sum(d.credits for d in entry.draws) == abs(entry.delta), entry
    assert init.created


def test_draws_of_a_lapse_and_of_records_this_version_cannot_read() -> None:
    entry = LedgerEntry(id="1-0", type="lot_expire", delta=-20, balance_after=0,
                        lots="1700000000000-0:20")
    assert entry.draws == [LotDraw(grant_id="1700000000000-0", credits=20)]
    assert LedgerEntry(id="1-0", type="debit", delta=-5, balance_after=0,
                       lots=f"{IMPLICIT}:5").draws == [LotDraw(grant_id="_", credits=5)]
    odd = LedgerEntry(id="1-0", type="debit", delta=-5, balance_after=0, lots="x;5")
    assert odd.draws == []  # a newer format: no raise, the raw record stays
    assert odd.lots == "x;5"
    assert LedgerEntry(id="1-0", type="debit", delta=-5, balance_after=0).draws == []


def run(url: str, *args: str) -> Any:
    """The command line in process (click's runner), where the width does not matter."""
    from click.testing import CliRunner

    from sparked_credits.cli.commands import cli as group

    return CliRunner().invoke(group, ["--url", url, *args])


def cli(url: str, *args: str, columns: int = 80) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_URL", "UPSTASH"))}
    env["COLUMNS"] = str(columns)
    return subprocess.run([sys.executable, "-m", "sparked_credits", "--url", url, *args],
                          capture_output=True, text=True, timeout=60, check=False, env=env)


def test_cli_traces_a_debit_to_its_grants_at_80_columns(redis_url: str) -> None:
    later = datetime.now(timezone.utc) + timedelta(days=30)
    with CreditsClient(redis_url, app="app.sparked.world") as credits:
        credits.initialize_user(ACCT)
        promo = credits.credit(ACCT, 50, source="promo", priority=10)
        trial = credits.credit(ACCT, 25, source="trial", priority=20, expires_at=later)
        debit = credits.debit(ACCT, 60, action="chat_message")
    assert moved(debit.entry) == {promo.entry.id: 50, trial.entry.id: 10}
    lots = cli(redis_url, "history", ACCT, "--lots")
    assert lots.returncode == 0, lots.stderr
    assert all(len(line) <= 80 for line in lots.stdout.splitlines())
    for grant_id in (promo.entry.id, trial.entry.id, debit.entry.id):
        assert grant_id in lots.stdout  # whole, never cut
    row = next(line for line in lots.stdout.splitlines() if debit.entry.id in line)
    assert "-60" in row
    grants = cli(redis_url, "grants", ACCT)
    assert grants.returncode == 0, grants.stderr
    assert "…" not in grants.stdout
    assert all(len(line) <= 80 for line in grants.stdout.splitlines())
    assert trial.entry.id in grants.stdout  # whole
    assert json.loads(run(redis_url, "history", ACCT, "--lots", "--json").stdout)[
        "entries"][0]["draws"] == [d.model_dump() for d in debit.entry.draws]


def test_cli_sweep_lapses_what_is_due(redis_url: str) -> None:
    expires = datetime.now(timezone.utc) + timedelta(seconds=0.3)
    with CreditsClient(redis_url, app="app.sparked.world") as credits:
        short = credits.credit(ACCT, 25, source="trial", expires_at=expires)
    time.sleep(max(0.0, (expires - datetime.now(timezone.utc)).total_seconds()) + 0.1)
    swept = run(redis_url, "sweep", ACCT, "--json")
    assert swept.exit_code == 0, swept.output
    assert json.loads(swept.stdout) == {"account": ACCT, "swept": 1}
    with CreditsClient(redis_url) as credits:
        (lapse,) = credits.history(ACCT, types=[EntryType.LOT_EXPIRE]).entries
        assert lapse.draws == [LotDraw(grant_id=short.entry.id, credits=25)]
        assert credits.get_balance(ACCT) == 0
    assert run(redis_url, "sweep").exit_code == 2  # one ACCOUNT or --all
    assert "swept every account" in run(redis_url, "sweep", "--all").stdout


def test_one_default_source_for_grants(redis_url: str) -> None:
    import inspect

    from sparked_credits import AsyncCreditsClient
    from sparked_credits.cli.commands import grant

    sdk = inspect.signature(CreditsClient.credit).parameters["source"].default
    assert inspect.signature(AsyncCreditsClient.credit).parameters["source"].default == sdk
    option = next(p for p in grant.params if p.name == "source")
    assert option.default == sdk == "grant"
    assert run(redis_url, "grant", ACCT, "5").exit_code == 0
    with CreditsClient(redis_url) as credits:
        assert [g.source for g in credits.grants(ACCT)] == [sdk]


def test_history_without_lots_is_unchanged(redis_url: str) -> None:
    with CreditsClient(redis_url, app="app.sparked.world") as credits:
        credits.initialize_user(ACCT)
    plain = run(redis_url, "history", ACCT)
    assert plain.exit_code == 0
    assert "grant id" not in plain.stdout
