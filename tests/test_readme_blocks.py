"""The README's example-app command blocks, run as written: the export block and the
four-process loop (four uvicorn processes, four different ports, one Redis).

Two substitutions only: the test's redis-server in place of ``localhost:6379`` and, so
that a busy machine cannot collide, a free base port in place of ``8000``.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from clerk_keys import KeyPair

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def bash_blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)```", README, flags=re.S)


def block_with(text: str) -> str:
    found = [b for b in bash_blocks() if text in b]
    assert len(found) == 1, text
    return found[0]


def free_run(count: int) -> int:
    """A base port with ``count`` free ports after it."""
    for base in range(20000, 60000, 97):
        ok = True
        for port in range(base, base + count):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no free ports")


def test_four_process_loop_uses_four_ports(redis_url: str, tmp_path: Path) -> None:
    (tmp_path / "clerk-public.pem").write_text(KeyPair("ins_readme").public_pem)
    exports = block_with("export CLERK_JWT_KEY")
    exports = "\n".join(line for line in exports.splitlines() if not line.startswith("pip "))
    loop = block_with("for app in app canvas studio train")
    base = free_run(4)
    loop = loop.replace("redis://localhost:6379/0", redis_url).replace("port=8000",
                                                                       f"port={base}")
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    script = f"set -e\n{exports}\n{loop}\necho $TRAIN_WEBHOOK_SECRET > secret\nwait\n"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UPSTASH", "CLERK"))}
    env["PYTHONPATH"] = str(ROOT / "src")
    proc = subprocess.Popen(["bash", "-c", script], cwd=tmp_path, env=env,
                            start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        titles: dict[int, str] = {}
        while len(titles) < 4 and time.monotonic() < deadline:
            for port in range(base, base + 4):
                if port in titles:
                    continue
                try:
                    schema = httpx.get(f"http://127.0.0.1:{port}/openapi.json", timeout=1)
                    titles[port] = schema.json()["info"]["title"]
                except httpx.TransportError:
                    time.sleep(0.2)
        assert sorted(titles.values()) == sorted(
            f"sparked credits ({app}.sparked.world)" for app in ("app", "canvas", "studio", "train")
        ), titles
        assert (tmp_path / "secret").read_text().strip()  # TRAIN_WEBHOOK_SECRET is exported
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_export_block_names_every_secret_the_app_needs() -> None:
    exports = block_with("export CLERK_JWT_KEY")
    for name in ("CLERK_JWT_KEY", "CLERK_WEBHOOK_SECRET", "CRON_SECRET",
                 "TRAIN_WEBHOOK_SECRET", "CREDITS_ADMIN_USER_IDS"):
        assert name in exports


@pytest.mark.parametrize("columns", ["80", "100", "139"])
def test_usage_chart_fits_narrow_terminals(redis_url: str, columns: str) -> None:
    import sys

    from sparked_credits import CreditsClient

    with CreditsClient(redis_url, app="canvas.sparked.world") as credits:
        credits.initialize_user("user_w", 1000)
        credits.charge("user_w", "canvas_complex")
        credits.charge("user_w", "chat_message")
    env = {**os.environ, "COLUMNS": columns, "REDIS_URL": redis_url}
    out = subprocess.run([sys.executable, "-m", "sparked_credits", "usage", "user_w", "--by",
                          "app"], capture_output=True, text=True, env=env, timeout=60,
                         check=True).stdout
    assert "…" not in out
    assert "canvas.sparked.world" in out.replace("\n", "").replace("│", "").replace(" ", "")
    assert all(len(line) <= int(columns) for line in out.splitlines())
    assert "█" in out


def test_cli_hint_and_reconcile_json_clean(redis_url: str) -> None:
    import json
    import sys

    env = {k: v for k, v in os.environ.items()
           if k not in ("REDIS_URL", "UPSTASH_REDIS_URL", "UPSTASH_REDIS_REST_URL")}
    missing = subprocess.run([sys.executable, "-m", "sparked_credits", "balance", "u"],
                             capture_output=True, text=True, env=env, timeout=60, check=False)
    assert missing.returncode == 2
    assert "--url" in missing.stderr
    assert "REDIS_URL" in missing.stderr
    assert "url='memory://'" not in missing.stderr
    script = ROOT / "examples" / "scripts" / "reconcile_balances.py"
    missing = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                             env=env, timeout=60, check=False)
    assert missing.returncode == 2
    assert "--url" in missing.stderr
    report = subprocess.run(
        [sys.executable, "-m", "sparked_credits", "--url", redis_url, "reconcile", "--all",
         "--json"], capture_output=True, text=True, env=env, timeout=60, check=True)
    assert json.loads(report.stdout)["clean"] is True
