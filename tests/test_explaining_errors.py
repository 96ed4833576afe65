"""Errors that say what to change: ``IdempotencyConflictError.differs`` on every backend,
sync and async (the conflict path reads the first call's entry; state unchanged), and the
price file's "did you mean" refusal."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from conftest import ledger_sum
from sparked_credits import ConfigurationError, IdempotencyConflictError
from sparked_credits.pricing import DEFAULT_TABLE, load_price_table, one_edit_apart

ACCT = "user_differs"


def conflict(call: Any, *args: Any, **kwargs: Any) -> IdempotencyConflictError:
    with pytest.raises(IdempotencyConflictError) as caught:
        call(*args, **kwargs)
    return caught.value


def test_conflict_names_what_differs(client: Any) -> None:
    client.initialize_user(ACCT)
    later = datetime.now(timezone.utc) + timedelta(days=1)
    grant = client.credit(ACCT, 50, source="promo", expires_at=later, idempotency_key="g")
    client.debit(ACCT, 10, action="chat_message", metadata={"m": 1}, idempotency_key="d")
    hold = client.reserve(ACCT, 20, action="video_generation", ttl=60, idempotency_key="r")
    before = (client.get_balance(ACCT), len(client.history(ACCT, 100).entries))

    # The README's trap: expires_at recomputed on the retry.
    error = conflict(client.credit, ACCT, 50, source="promo",
                     expires_at=later + timedelta(seconds=1), idempotency_key="g")
    assert error.differs == ["expires_at"]
    assert "expires_at differs" in str(error)
    assert "compute expires_at once" in str(error)
    assert error.first_entry == grant.entry.id
    assert error.to_dict()["differs"] == ["expires_at"]
    assert conflict(client.credit, ACCT, 50, source="promo", priority=10, expires_at=later,
                    idempotency_key="g").differs == ["priority"]
    assert conflict(client.credit, ACCT, 50, source="gift", expires_at=later,
                    idempotency_key="g").differs == ["source"]
    assert conflict(client.debit, ACCT, 11, action="chat_message", metadata={"m": 1},
                    idempotency_key="d").differs == ["amount"]
    assert conflict(client.debit, ACCT, 10, action="canvas_simple", metadata={"m": 1},
                    idempotency_key="d").differs == ["action"]
    assert conflict(client.debit, ACCT, 10, action="chat_message", metadata={"m": 2},
                    reason="why", idempotency_key="d").differs == ["reason", "metadata"]
    assert conflict(client.credit, ACCT, 10, idempotency_key="d").differs == ["operation"]
    assert conflict(client.reserve, ACCT, 20, action="video_generation", ttl=61,
                    idempotency_key="r").differs == ["ttl"]
    client.settle(ACCT, hold.hold_id, 15)
    # What the entry does not keep is named as the candidates.
    assert set(conflict(client.settle, ACCT, hold.hold_id, 12).differs) == {
        "actual", "allow_overage"}
    after = (client.get_balance(ACCT), len(client.history(ACCT, 100).entries))
    assert after[0] == before[0] + 5  # the settle gave back 5; no conflict wrote anything
    assert after[1] == before[1] + 1
    assert client.get_balance(ACCT) == ledger_sum(client, ACCT)


def test_one_edit_apart() -> None:
    assert one_edit_apart("chat_mesage", "chat_message")  # a letter missing
    assert one_edit_apart("chat_messages", "chat_message")  # one too many
    assert one_edit_apart("chat_massage", "chat_message")  # one changed
    assert one_edit_apart("caht_message", "chat_message")  # two swapped
    assert not one_edit_apart("chat_message", "chat_message")
    assert not one_edit_apart("voice_clone", "chat_message")
    assert not one_edit_apart("canvas_simple", "canvas_complex")


def test_price_file_typo_is_refused_with_did_you_mean(tmp_path: Path) -> None:
    typo = tmp_path / "pricing.toml"
    typo.write_text('[chat_mesage]\nkind = "fixed"\ncredits = 5\n')
    with pytest.raises(ConfigurationError) as caught:
        load_price_table(typo)
    message = str(caught.value)
    assert "did you mean [chat_message]?" in message
    assert "new = true" in message
    declared = tmp_path / "new.toml"
    declared.write_text('[chat_mesage]\nnew = true\nkind = "fixed"\ncredits = 5\n')
    table = load_price_table(declared)
    assert table.calculate_cost("chat_mesage") == 5
    assert table.calculate_cost("chat_message") == 10
    assert "new" not in table.to_dict()["chat_mesage"]
    known = tmp_path / "known.json"
    known.write_text('{"chat_message": {"new": true, "kind": "fixed", "credits": 5}}')
    with pytest.raises(ConfigurationError, match="known action"):
        load_price_table(known)
    odd = tmp_path / "odd.json"
    odd.write_text('{"voice_clone": {"new": "yes", "kind": "fixed", "credits": 5}}')
    with pytest.raises(ConfigurationError, match="true or false"):
        load_price_table(odd)
    # A new action far from every known one needs no declaration.
    fine = DEFAULT_TABLE.with_overrides({"voice_clone": {"kind": "fixed", "credits": 3}})
    assert fine.calculate_cost("voice_clone") == 3
