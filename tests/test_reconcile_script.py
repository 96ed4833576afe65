"""examples/scripts/reconcile_balances.py against a real Redis."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
import redis

from sparked_credits import CreditsClient

SCRIPT = Path(__file__).resolve().parent.parent / "examples" / "scripts" / "reconcile_balances.py"


def load_script() -> Any:
    spec = importlib.util.spec_from_file_location("reconcile_balances", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reconcile_script(redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    script = load_script()
    with CreditsClient(redis_url, app="app.sparked.world") as credits:
        credits.initialize_user("user_a")
        credits.initialize_user("user_b")
        credits.charge("user_a", "chat_message")
    assert script.main(["--url", redis_url]) == 0
    assert "accounts checked:       2" in capsys.readouterr().out

    raw = redis.Redis.from_url(redis_url)
    raw.set("balance:user_b", "7")
    raw.close()
    assert script.main(["--url", redis_url]) == 1
    out = capsys.readouterr().out
    assert "MISMATCH user_b: balance 7, ledger sum 100" in out
    assert script.main(["--url", redis_url, "--repair", "user_b"]) == 0
    assert "repaired user_b" in capsys.readouterr().out
    assert script.main(["--url", redis_url]) == 0
