"""The README's "Spend limits, low-balance alerts, transfers and referrals" blocks, run as
written (the test's redis-server in place of ``redis://localhost:6379/0``)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from conftest import LINES, _flushed
from sparked_credits import CreditsClient

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
SECTION = README.split("## Spend limits, low-balance alerts, transfers and referrals", 1)[1]
SECTION = SECTION.split("\n## ", 1)[0]


def block(kind: str) -> str:
    found = re.findall(rf"```{kind}\n(.*?)```", SECTION, flags=re.S)
    assert len(found) == 1, kind
    return str(found[0])


def test_blocks_as_written(server_pool: Any, tmp_path: Path) -> None:
    url = _flushed(server_pool.server(LINES[-1]))
    ns: dict[str, Any] = {}
    exec(block("python").replace("redis://localhost:6379/0", url), ns)
    credits = ns["credits"]
    assert credits.get_controls("user_limits").spent_today == 190
    assert credits.alerts("mailer") == []
    assert ns["moved"].amount == 5
    assert ns["reward"].referred_reward.balance == 20
    credits.close()
    (tmp_path / "prices.toml").write_text(block("toml"))
    with CreditsClient(url) as client:
        client.initialize_user("user_2abc")
    script = block("bash").replace("redis://localhost:6379/0", url)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    done = subprocess.run(
        ["bash", "-e", "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert '"tier": "free"' in done.stdout
    assert "moved 50" in done.stdout
