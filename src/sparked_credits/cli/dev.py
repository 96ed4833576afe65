"""``sparked-credits dev``: run the example app locally, without a Clerk account.

Clerk gives a deployment three things: an RS256 key pair (the app holds the public half,
``CLERK_JWT_KEY``), session tokens signed with the private half, and webhooks signed with
a Svix secret (``CLERK_WEBHOOK_SECRET``). These commands make the same three locally:

* ``dev keys DIR`` writes a key pair and a ``whsec_`` secret into DIR (kept if already
  there) and prints the ``export`` lines that point the app at them;
* ``dev token USER`` signs a session token with DIR's private key, with the claims the
  app checks (``sub``, ``azp``, ``exp``/``nbf``/``iat``, the ``o`` organization claim);
* ``dev webhook EVENT USER --to URL`` posts a Clerk ``user.created``/``user.deleted``
  event signed by the svix library itself, exactly as Svix signs deliveries.

Nothing changes in production: the app trusts whichever key it is configured with, and
these keys never leave the machine. They are for local runs only.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shlex
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click

__all__ = [
    "DEFAULT_PARTY",
    "KEYS_ENV",
    "dev",
    "event_body",
    "load_private_key",
    "mint_token",
    "signed_headers",
]

KEYS_ENV = "SPARKED_DEV_KEYS"
"""The variable ``dev keys`` exports: where ``dev token`` finds the private key."""
PRIVATE_KEY = "clerk-private.pem"
PUBLIC_KEY = "clerk-public.pem"
WEBHOOK_SECRET = "clerk-webhook-secret"
DEFAULT_PARTY = "http://localhost:3000"
ISSUER = "urn:sparked-credits:dev"
KID = "sparked-dev"
_HINT = "pip install 'sparked-credits[clerk,cli]'"


class DevError(click.ClickException):
    """One line on stderr and exit status 2, never a traceback."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def _crypto() -> tuple[Any, Any, Any]:
    """PyJWT, cryptography's serialization and rsa modules (the ``clerk`` extra)."""
    try:
        import jwt
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
    except ImportError:
        raise DevError(f"the dev commands need PyJWT and cryptography: {_HINT}") from None
    return jwt, serialization, rsa


def _keys_dir(keys: str | None) -> Path:
    chosen = keys or os.environ.get(KEYS_ENV)
    if not chosen:
        raise DevError(
            f"no key directory: pass --keys DIR or set {KEYS_ENV} "
            '(eval "$(sparked-credits dev keys DIR)" does both)'
        )
    return Path(chosen)


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        raise DevError(
            f"no {what} at {path}: run 'sparked-credits dev keys {path.parent}' first"
        ) from None
    except OSError as exc:
        raise DevError(f"cannot read {what} at {path}: {exc.strerror}") from None


def load_private_key(directory: Path) -> Any:
    """The RSA private key ``dev keys`` wrote into ``directory``; a DevError naming the
    file (and the command that makes it) when it is missing or not a key."""
    _, serialization, rsa = _crypto()
    path = directory / PRIVATE_KEY
    pem = _read(path, "private key")
    try:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError):
        raise DevError(f"{path} is not a PEM private key: delete it and run dev keys") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise DevError(f"{path} is not an RSA key (session tokens are RS256)")
    return key


def _write(path: Path, text: str, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def make_keys(directory: Path, *, force: bool = False) -> bool:
    """Write a key pair and a webhook secret into ``directory``; True when new ones were
    made. Existing ones are kept (unless ``force``): running apps go on accepting tokens."""
    _, serialization, rsa = _crypto()
    names = (PRIVATE_KEY, PUBLIC_KEY, WEBHOOK_SECRET)
    if not force and all((directory / n).is_file() for n in names):
        return False
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DevError(f"cannot create {directory}: {exc.strerror}") from None
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public_pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    # Svix secrets are "whsec_" + base64 of 24 random bytes.
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    _write(directory / PRIVATE_KEY, private_pem, 0o600)
    _write(directory / PUBLIC_KEY, public_pem, 0o644)
    _write(directory / WEBHOOK_SECRET, secret + "\n", 0o600)
    return True


def mint_token(
    key: Any,
    user: str,
    *,
    party: str | None = DEFAULT_PARTY,
    org: str | None = None,
    admin: bool = False,
    ttl: int = 600,
    now: int | None = None,
) -> str:
    """A Clerk-shaped v2 session token: ``sub``, ``sid``, ``azp``, ``iat``/``nbf``/``exp``,
    and with ``org`` the ``o`` claim (``{"id", "rol", "slg"}``, role ``admin``/``member``)."""
    jwt, _, _ = _crypto()
    issued = int(time.time()) if now is None else now
    claims: dict[str, Any] = {
        "sub": user,
        "sid": "sess_dev_" + secrets.token_hex(6),
        "iss": ISSUER,
        "iat": issued,
        "nbf": issued - 1,
        "exp": issued + ttl,
        "v": 2,
    }
    if party:
        claims["azp"] = party
    if org:
        claims["o"] = {"id": org, "rol": "admin" if admin else "member", "slg": org}
    token: str = jwt.encode(claims, key, algorithm="RS256", headers={"kid": KID})
    return token


def event_body(event: str, user: str, *, now_ms: int | None = None) -> dict[str, Any]:
    """The JSON Clerk sends for ``user.created`` / ``user.deleted`` (the fields the app
    reads, and the envelope around them)."""
    stamp = int(time.time() * 1000) if now_ms is None else now_ms
    if event == "user.created":
        data: dict[str, Any] = {
            "id": user,
            "object": "user",
            "created_at": stamp,
            "updated_at": stamp,
            "email_addresses": [],
            "first_name": None,
            "last_name": None,
        }
    else:
        data = {"id": user, "object": "user", "deleted": True}
    return {
        "data": data,
        "object": "event",
        "type": event,
        "timestamp": stamp,
        "instance_id": "ins_dev",
    }


def signed_headers(secret: str, body: str, *, msg_id: str | None = None) -> dict[str, str]:
    """``svix-id``, ``svix-timestamp`` and ``svix-signature`` for ``body``, signed by the
    svix library (``v1,<base64 HMAC-SHA256 of "id.timestamp.body">``), as Svix delivers."""
    try:
        from svix.webhooks import Webhook
    except ImportError:
        raise DevError(f"dev webhook needs svix: {_HINT}") from None
    msg_id = msg_id or "msg_" + secrets.token_hex(12)
    at = datetime.now(timezone.utc).replace(microsecond=0)
    try:
        signature = Webhook(secret).sign(msg_id, at, body)
    except Exception as exc:
        raise DevError(f"the webhook secret is not a whsec_ secret ({exc})") from None
    return {
        "svix-id": msg_id,
        "svix-timestamp": str(int(at.timestamp())),
        "svix-signature": signature,
    }


def _secret(secret: str | None, keys: str | None) -> str:
    if secret:
        return secret
    from_env = os.environ.get("CLERK_WEBHOOK_SECRET")
    if from_env and not keys:
        return from_env
    return _read(_keys_dir(keys) / WEBHOOK_SECRET, "webhook secret").strip()


@click.group()
def dev() -> None:
    """Local keys, session tokens and webhooks for running the example app without Clerk
    (for local runs only: production keeps Clerk's keys)."""


@dev.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Make new keys even if DIR has some.")
@click.option(
    "--party",
    default=DEFAULT_PARTY,
    show_default=True,
    help="The origin tokens are for (CLERK_AUTHORIZED_PARTIES).",
)
def keys(directory: Path, force: bool, party: str) -> None:
    """Write an RS256 key pair and a Svix-style secret into DIRECTORY; print the export
    lines (eval "$(sparked-credits dev keys .dev-keys)")."""
    made = make_keys(directory, force=force)
    where = directory.resolve()
    secret = _read(where / WEBHOOK_SECRET, "webhook secret").strip()
    public = shlex.quote(str(where / PUBLIC_KEY))
    click.echo(f"# {'new' if made else 'kept the'} local keys in {where} (local runs only)")
    click.echo(f"export {KEYS_ENV}={shlex.quote(str(where))}")
    click.echo(f'export CLERK_JWT_KEY="$(cat {public})"')
    click.echo(f"export CLERK_WEBHOOK_SECRET={shlex.quote(secret)}")
    click.echo(f"export CLERK_AUTHORIZED_PARTIES={shlex.quote(party)}")


@dev.command()
@click.argument("user")
@click.option("--admin", is_flag=True, help="The organization role admin (with --org).")
@click.option("--org", help="An organization id (org_...) the session is active in.")
@click.option("--keys", "keys_dir", help=f"The key directory (default ${KEYS_ENV}).")
@click.option(
    "--party",
    help="azp: the requesting origin (default: the first of $CLERK_AUTHORIZED_PARTIES, "
    f"else {DEFAULT_PARTY}).",
)
@click.option("--ttl", default=600, show_default=True, help="Seconds the token is valid.")
def token(
    user: str, admin: bool, org: str | None, keys_dir: str | None, party: str | None, ttl: int
) -> None:
    """Print a session token for USER, signed with the local key (TOKEN=$(...))."""
    if admin and not org:
        raise DevError(
            "--admin is the role in an organization: add --org org_...; the example app's "
            "admins are the user ids in CREDITS_ADMIN_USER_IDS"
        )
    if ttl <= 0:
        raise DevError("--ttl must be a positive number of seconds")
    key = load_private_key(_keys_dir(keys_dir))
    if party is None:
        allowed = os.environ.get("CLERK_AUTHORIZED_PARTIES", "")
        party = next((p.strip() for p in allowed.split(",") if p.strip()), DEFAULT_PARTY)
    click.echo(mint_token(key, user, party=party, org=org, admin=admin, ttl=ttl))


@dev.command()
@click.argument("event", type=click.Choice(["user.created", "user.deleted"]))
@click.argument("user")
@click.option("--to", "url", required=True, help="The app's Clerk webhook URL.")
@click.option("--keys", "keys_dir", help=f"The key directory (default ${KEYS_ENV}).")
@click.option("--secret", help="A whsec_ secret (default $CLERK_WEBHOOK_SECRET, else DIR's).")
@click.option("--svix-id", "svix_id", help="Redeliver: the same id as an earlier delivery.")
def webhook(
    event: str,
    user: str,
    url: str,
    keys_dir: str | None,
    secret: str | None,
    svix_id: str | None,
) -> None:
    """Send EVENT for USER to the app, signed as Svix signs Clerk's webhooks."""
    body = json.dumps(event_body(event, user), separators=(",", ":"))
    headers = signed_headers(_secret(secret, keys_dir), body, msg_id=svix_id)
    headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=body.encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, answer = response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        status, answer = exc.code, exc.read().decode(errors="replace")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DevError(f"cannot reach {url}: {reason}") from None
    click.echo(f"{status} {answer}")
    if not 200 <= status < 300:
        raise DevError(f"the app answered {status} to {event} ({headers['svix-id']})")
