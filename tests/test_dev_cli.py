"""``sparked-credits dev``: local keys, tokens the app accepts, webhooks Svix would sign.

The token is checked by the SDK's own verifier with the app's checks (RS256, azp, the
time claims, the ``o`` organization claim); the webhook by ``verify_webhook`` (svix's
verification) and end to end by the example app on a real Redis, redelivered once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest
from click.testing import CliRunner

from sparked_credits import CreditsClient
from sparked_credits.clerk import verify_session_token, verify_webhook
from sparked_credits.cli.commands import cli
from sparked_credits.cli.dev import load_private_key

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


class Done(NamedTuple):
    returncode: int
    stdout: str
    stderr: str


def run(*args: str, env: dict[str, str] | None = None) -> Done:
    """The command line in process (click's runner), with no Clerk or dev-keys variables
    but those given."""
    clean: dict[str, str | None] = {
        name: None for name in os.environ if name.startswith(("CLERK_", "SPARKED_DEV"))}
    result = CliRunner().invoke(cli, list(args), env={**clean, **(env or {})})
    return Done(result.exit_code, result.stdout, result.stderr)


def run_script(*args: str) -> subprocess.CompletedProcess[str]:
    """The console script itself, in a process: what a shell sees."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLERK_", "SPARKED_DEV"))}
    return subprocess.run([sys.executable, "-m", "sparked_credits", *args],
                          capture_output=True, text=True, timeout=60, env=env, check=False)


def exported(printed: str) -> dict[str, str]:
    """The variables the printed lines set, as bash sets them."""
    script = printed + "\nenv -0\n"
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True,
                         env={"PATH": os.environ["PATH"]}, check=True).stdout
    return dict(item.split("=", 1) for item in out.split("\0") if "=" in item)


def test_keys_token_verify_as_the_app_verifies(tmp_path: Path) -> None:
    made = run("dev", "keys", str(tmp_path / "k"))
    assert made.returncode == 0, made.stderr
    env = exported(made.stdout)
    assert env["CLERK_WEBHOOK_SECRET"].startswith("whsec_")
    assert env["SPARKED_DEV_KEYS"] == str((tmp_path / "k").resolve())
    again = run("dev", "keys", str(tmp_path / "k"))
    assert exported(again.stdout) == env  # kept: running apps keep accepting tokens
    assert (tmp_path / "k" / "clerk-private.pem").stat().st_mode & 0o077 == 0

    plain = run("dev", "token", "user_2abc", env={"SPARKED_DEV_KEYS": env["SPARKED_DEV_KEYS"]})
    assert plain.returncode == 0, plain.stderr
    principal = verify_session_token(plain.stdout.strip(), jwt_key=env["CLERK_JWT_KEY"],
                                     authorized_parties=["http://localhost:3000"])
    assert principal.user_id == "user_2abc"
    assert principal.org_id is None
    assert principal.expires_at.timestamp() > time.time() + 60

    org = run("dev", "token", "user_2abc", "--org", "org_9", "--admin",
              "--keys", str(tmp_path / "k"))
    principal = verify_session_token(org.stdout.strip(), jwt_key=env["CLERK_JWT_KEY"])
    assert (principal.org_id, principal.org_role) == ("org_9", "org:admin")
    member = run("dev", "token", "user_2abc", "--org", "org_9", "--keys", str(tmp_path / "k"))
    assert verify_session_token(member.stdout.strip(),
                                jwt_key=env["CLERK_JWT_KEY"]).org_role == "org:member"


def test_missing_key_file_is_one_line(tmp_path: Path) -> None:
    missing = run_script("dev", "token", "user_2abc", "--keys", str(tmp_path / "nothing"))
    assert missing.returncode == 2
    assert missing.stderr.strip().count("\n") == 0, missing.stderr
    assert "dev keys" in missing.stderr
    assert "clerk-private.pem" in missing.stderr
    unset = run("dev", "token", "user_2abc")
    assert unset.returncode == 2
    assert "SPARKED_DEV_KEYS" in unset.stderr
    assert "Traceback" not in missing.stderr + unset.stderr
    admin = run("dev", "token", "user_2abc", "--admin", "--keys", str(tmp_path))
    assert admin.returncode == 2
    assert "--org" in admin.stderr


def test_app_without_its_key_file_says_one_line(tmp_path: Path) -> None:
    """``export CLERK_JWT_KEY="$(cat missing.pem)"`` then the app: one line, not a traceback."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLERK_", "CREDITS_"))}
    env.update(REDIS_URL="memory://", PYTHONPATH=str(ROOT / "src"))
    script = ('export CLERK_JWT_KEY="$(cat missing.pem)"\n'
              f'"{sys.executable}" -m uvicorn --factory credits_app:create_app '
              f'--app-dir "{ROOT / "examples"}" --port 1\n')
    done = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("credits_app:")]
    assert len(lines) == 1, done.stderr
    assert "CLERK_JWT_KEY" in lines[0]
    assert "dev keys" in lines[0]


class AppThread:
    """The example app under uvicorn in a thread, on a free port."""

    def __init__(self, app: object) -> None:
        import uvicorn

        from redis_servers import free_port

        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, port=self.port, log_level="error"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> AppThread:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def keys_env(tmp_path: Path) -> dict[str, str]:
    return exported(run("dev", "keys", str(tmp_path / "k")).stdout)


@pytest.fixture
def app_url(redis_url: str, keys_env: dict[str, str]) -> Iterator[str]:
    sys.path.insert(0, str(ROOT / "examples"))
    import credits_app

    settings = credits_app.Settings(
        storage_url=redis_url, clerk_jwt_key=keys_env["CLERK_JWT_KEY"],
        clerk_webhook_secret=keys_env["CLERK_WEBHOOK_SECRET"],
        authorized_parties=("http://localhost:3000",), rate_limit=None)
    with AppThread(credits_app.create_app(settings)) as running:
        yield f"http://127.0.0.1:{running.port}"


def test_webhook_signed_as_svix_and_applied_once(
    app_url: str, keys_env: dict[str, str], redis_url: str
) -> None:
    to = f"{app_url}/api/webhooks/clerk"
    env = {"SPARKED_DEV_KEYS": keys_env["SPARKED_DEV_KEYS"]}
    first = run("dev", "webhook", "user.created", "user_hook", "--to", to, "--svix-id",
                "msg_dev1", env=env)
    assert first.returncode == 0, first.stderr
    status, body = first.stdout.split(" ", 1)
    assert status == "200"
    assert json.loads(body)["outcome"] == "initialized"
    again = run("dev", "webhook", "user.created", "user_hook", "--to", to, "--svix-id",
                "msg_dev1", env=env)
    assert json.loads(again.stdout.split(" ", 1)[1])["duplicate"] is True
    wrong = run("dev", "webhook", "user.created", "user_hook", "--to", to,
                "--secret", "whsec_" + "QUJD" * 8)
    assert wrong.returncode == 2
    assert wrong.stdout.startswith("400 "), wrong.stdout
    with CreditsClient(redis_url) as credits:
        assert credits.get_balance("user_hook") == 100
        assert len(credits.history("user_hook").entries) == 1
    gone = run("dev", "webhook", "user.deleted", "user_hook", "--to", to, env=env)
    assert json.loads(gone.stdout.split(" ", 1)[1])["outcome"] == "closed"
    unreachable = run("dev", "webhook", "user.created", "u", "--to", "http://127.0.0.1:1/x",
                      env=env)
    assert unreachable.returncode == 2
    assert "cannot reach" in unreachable.stderr


def test_signature_is_svix_verifiable(keys_env: dict[str, str]) -> None:
    """The headers verify with svix's own verification, through the SDK's verify_webhook."""
    from sparked_credits.cli.dev import event_body, signed_headers

    body = json.dumps(event_body("user.created", "user_sig"))
    headers = signed_headers(keys_env["CLERK_WEBHOOK_SECRET"], body)
    event = verify_webhook(body.encode(), headers, keys_env["CLERK_WEBHOOK_SECRET"])
    assert (event.type, event.data["id"]) == ("user.created", "user_sig")
    assert load_private_key(Path(keys_env["SPARKED_DEV_KEYS"])) is not None


def test_dev_group_is_registered() -> None:
    result = CliRunner().invoke(cli, ["dev", "--help"])
    assert result.exit_code == 0
    for name in ("keys", "token", "webhook"):
        assert name in result.output
