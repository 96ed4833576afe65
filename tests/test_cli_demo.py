"""The demo, run the way a user runs it: as a subprocess."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", [True, False], ids=["python-m", "console-script"])
def test_demo_on_memory(module: bool) -> None:
    cmd = [sys.executable, "-m", "sparked_credits", "demo"] if module else [
        str(__import__("pathlib").Path(sys.executable).with_name("sparked-credits")), "demo"
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert "balance 100" in out.stdout
    assert "chat message (10 credits): balance 90" in out.stdout
    assert "shared balance: 90" in out.stdout
    assert "HTTP 402" in out.stdout
    assert '"required": 600' in out.stdout
    assert "all checks passed" in out.stdout


def test_demo_against_real_redis(redis_url: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "sparked_credits", "demo", "--url", redis_url],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "storage: redis://" in out.stdout
    assert "all checks passed" in out.stdout


def test_demo_with_unreachable_storage_fails_cleanly() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "sparked_credits", "demo", "--url",
         "redis://127.0.0.1:9/0?socket_connect_timeout=0.2"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert out.returncode == 2
    assert "error:" in out.stderr
    assert "Traceback" not in out.stderr
