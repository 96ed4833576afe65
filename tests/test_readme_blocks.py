"""The README's example-app command blocks, run as written: the export block, the
four-process loop (four uvicorn processes, four different ports, one Redis), the guide's
curl checks, the one-process and the dev sign-in commands, the training report body.

Nothing is substituted: the blocks take ``REDIS_URL`` and ``PORT`` from the environment
(defaults ``redis://localhost:6379/0`` and ``8000``), which the tests set to their own
redis-server and free ports; ``$TOKEN`` is a session token the test signs.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def bash_blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)```", README, flags=re.S)


def block_with(text: str) -> str:
    found = [b for b in bash_blocks() if text in b]
    assert len(found) == 1, text
    return found[0]


def free_run(count: int) -> int:
    """A base port with ``count`` free ports after it, below the kernel's ephemeral range
    (32768 on), where the servers other tests start on port 0 land. The search starts at a
    random place, so that tests on parallel workers (pytest-xdist) do not pick one run."""
    start = random.randrange(20000, 32000, 97)
    for base in [*range(start, 32000, 97), *range(20000, start, 97)]:
        ok = True
        for port in range(base, base + count):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no free ports")


class Shell:
    """README blocks run as one bash script, in its own process group (the servers the
    blocks start in the background die with it)."""

    def __init__(self, script: str, cwd: Path, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(["bash", "-c", script], cwd=cwd, env=env,
                                     start_new_session=True, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def shell_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("UPSTASH", "CLERK", "CREDITS_")) and k not in ("REDIS_URL",)}
    env["PYTHONPATH"] = str(ROOT / "src")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def wait_for(path: Path, shell: Shell, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if shell.proc.poll() is not None and not path.exists():
            raise AssertionError(shell.proc.stderr.read().decode() if shell.proc.stderr else "")
        assert time.monotonic() < deadline, f"timed out waiting for {path.name}"
        time.sleep(0.2)


def checkout(tmp_path: Path) -> Path:
    """A directory to run the blocks from, as a checkout: examples/ beside it."""
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    return tmp_path


def export_block() -> str:
    """The export block without its install line (the test venv has everything)."""
    exports = block_with('eval "$(sparked-credits dev keys')
    return "\n".join(line for line in exports.splitlines() if not line.startswith("pip "))


WAIT_FOR_PORTS = (  # glue between two blocks: the servers of the loop answer
    'for p in $(seq "$PORT" $((PORT + 3))); do\n'
    '  until curl -s -o /dev/null "localhost:$p/openapi.json"; do sleep 0.2; done\n'
    "done\n"
)


def test_walk_through_as_written(redis_url: str, tmp_path: Path) -> None:
    """The export block (local keys by ``dev keys``), the four-process loop (four ports,
    one Redis) and the guide's checks (``dev webhook`` signs up the user, ``dev token``
    signs the session), in one shell, as a reader runs them; the answers are the ones
    shown. No Clerk account, no token from outside the blocks."""
    from sparked_credits import CreditsClient

    loop = block_with("for app in app canvas studio train")
    checks = block_with("curl $API/api/credits/balance")
    base = free_run(4)
    cwd = checkout(tmp_path)
    script = (f"set -e\n{export_block()}\n{loop}\n{WAIT_FOR_PORTS}"
              f"({checks}) > checks.out 2>&1 || echo failed >> checks.out\n"
              "touch checks.done\nwait\n")
    shell = Shell(script, cwd, shell_env(REDIS_URL=redis_url, PORT=str(base)))
    try:
        titles: dict[int, str] = {}
        deadline = time.monotonic() + 90
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
        wait_for(cwd / "checks.done", shell)
        out = (cwd / "checks.out").read_text()
    finally:
        shell.stop()
    assert "failed" not in out.splitlines(), out
    assert out.startswith("200 "), out  # the signed user.created was accepted
    assert '"outcome":"initialized"' in out, out
    assert out.count('{"balance":100}') == 1, out
    assert out.count('{"balance":90}') == 1, out
    assert "HTTP/1.1 402 Payment Required" in out, out
    decode = json.JSONDecoder().raw_decode  # curl prints the bodies without newlines
    refused, _ = decode(out, out.index('{"error"'))
    assert refused["error"] == "insufficient_credits"
    assert (refused["balance"], refused["required"], refused["shortfall"]) == (90, 600, 510)
    cron, _ = decode(out, out.index('{"clean"'))
    assert cron["clean"] is True
    assert cron["checked"] >= 1
    with CreditsClient(redis_url) as credits:
        assert credits.get_balance("user_2abc") == 90
    assert (cwd / ".dev-keys" / "clerk-private.pem").stat().st_mode & 0o077 == 0


def _dev_token(cwd: Path, user: str) -> str:
    from sparked_credits.cli.dev import load_private_key, mint_token

    return mint_token(load_private_key(cwd / ".dev-keys"), user)


def test_one_process_and_dev_signin_blocks(tmp_path: Path) -> None:
    """The one-process command (after the export block) and the credits page's dev
    sign-in command (in a fresh shell: it refuses to start next to a Clerk key)."""
    one = block_with("# one process, in-process store")
    dev = block_with("CREDITS_DEV_SIGNIN=1 REDIS_URL=memory://")
    cwd = checkout(tmp_path)
    first = free_run(2)
    second = first + 1
    shells = [Shell(f"set -e\n{export_block()}\n{one}\n", cwd, shell_env(PORT=str(first))),
              Shell(f"set -e\n{dev}\n", cwd, shell_env(PORT=str(second)))]
    try:
        deadline = time.monotonic() + 60
        while not (cwd / ".dev-keys" / "clerk-private.pem").exists():
            assert time.monotonic() < deadline
            time.sleep(0.1)
        time.sleep(0.2)
        token = _dev_token(cwd, "user_one")
        answer = _get_when_up(f"http://127.0.0.1:{first}/api/credits/balance",
                              {"Authorization": f"Bearer {token}"})
        assert answer == {"balance": 0}  # memory://: nobody delivered user.created
        signin = _post_when_up(f"http://127.0.0.1:{second}/api/dev/signin")
        assert signin["balance"] == 100
        assert _get_when_up(f"http://127.0.0.1:{second}/api/credits/balance",
                            {"Authorization": f"Bearer {signin['token']}"}) == {"balance": 100}
    finally:
        for shell in shells:
            shell.stop()


def _get_when_up(url: str, headers: dict[str, str]) -> Any:
    deadline = time.monotonic() + 60
    while True:
        try:
            response = httpx.get(url, headers=headers, timeout=2)
            assert response.status_code == 200, response.text
            return response.json()
        except httpx.TransportError:
            assert time.monotonic() < deadline, url
            time.sleep(0.2)


def _post_when_up(url: str) -> Any:
    deadline = time.monotonic() + 60
    while True:
        try:
            response = httpx.post(url, json={}, timeout=2)
            assert response.status_code == 200, response.text
            return response.json()
        except httpx.TransportError:
            assert time.monotonic() < deadline, url
            time.sleep(0.2)


def test_training_report_block_is_a_valid_report() -> None:
    """The training webhook's body as the README shows it validates as the app reads it."""
    import credits_app

    block = re.findall(r"```json\n(.*?)```", README, flags=re.S)
    reports = [json.loads(b) for b in block if '"hold_id"' in b]
    assert len(reports) == 1
    report = credits_app.TrainWebhook.model_validate(reports[0])
    assert report.status == "succeeded"


def test_export_block_names_every_secret_the_app_needs(tmp_path: Path) -> None:
    exports = block_with('eval "$(sparked-credits dev keys')
    printed = subprocess.run(
        [sys.executable, "-m", "sparked_credits", "dev", "keys", str(tmp_path / "k")],
        capture_output=True, text=True, timeout=60, check=True).stdout
    for name in ("CLERK_JWT_KEY", "CLERK_WEBHOOK_SECRET", "CLERK_AUTHORIZED_PARTIES",
                 "CRON_SECRET", "TRAIN_WEBHOOK_SECRET", "CREDITS_ADMIN_USER_IDS"):
        assert name in exports or f"export {name}=" in printed, name


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
    from sparked_credits import CreditsClient

    with CreditsClient(redis_url) as credits:
        credits.initialize_user("user_cli")  # reconcile --all on no account exits 1
    report = subprocess.run(
        [sys.executable, "-m", "sparked_credits", "--url", redis_url, "reconcile", "--all",
         "--json"], capture_output=True, text=True, env=env, timeout=60, check=True)
    assert json.loads(report.stdout)["clean"] is True


def test_local_redis_block_as_written(tmp_path: Path) -> None:
    """The "A local Redis" block: a server set up for a ledger, that doctor passes. Run with
    the system's redis-server first on the PATH (the block's advice) on a free port."""
    from conftest import line_binary
    from redis_servers import free_port

    block = block_with("--aof-load-truncated no --daemonize yes")
    binary = Path(line_binary("redis7"))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "redis-server").symlink_to(binary)
    port = free_port()
    env = shell_env(REDIS_PORT=str(port))
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    try:
        done = subprocess.run(["bash", "-c", f"set -e\n{block}"], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "ready for a ledger" in done.stdout
        assert (tmp_path / "redis-data").is_dir()
    finally:
        import redis

        with contextlib.suppress(redis.RedisError):
            redis.Redis(port=port).shutdown(nosave=True)
