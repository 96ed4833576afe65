"""Clerk: session tokens, webhooks and the events that open and close accounts.

Needs the ``clerk`` extra (``pip install 'sparked-credits[clerk]'``: PyJWT with
cryptography, and svix); both are imported on first use, and a missing one raises
ConfigurationError naming the extra.

* :func:`verify_session_token` checks a Clerk session JWT the way Clerk's own backend SDK
  does: RS256 only (``alg: none`` and HS256-with-the-public-key are refused before any key is
  touched), ``exp``/``nbf``/``iat`` with a few seconds of leeway (Clerk tokens live 60 s),
  ``sub`` required, ``azp`` checked against the origins you allow. The key is the PEM public
  key from the dashboard (``CLERK_JWT_KEY``: no network at all) or the instance's JWKS,
  cached and refetched when a token names a key it has not seen (key rotation).
* :func:`verify_webhook` checks a Svix signature and returns the parsed event. svix 2.x
  ``verify()`` returns None and lets a malformed signature header escape as a bare
  ValueError; here every failure is a :class:`WebhookVerificationError`.
* :func:`handle_clerk_event` / :func:`ahandle_clerk_event` apply an event to the credits
  store, exactly once per user however often Svix redelivers it.
* :func:`verify_cron_secret` compares a cron job's ``Authorization`` header in constant time.

Nothing here logs a token, a signature or a secret.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from http.cookies import CookieError, SimpleCookie
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .errors import (
    ConfigurationError,
    TokenAlgorithmError,
    TokenClaimError,
    TokenExpiredError,
    TokenKeyError,
    TokenKeysUnavailableError,
    TokenMalformedError,
    TokenMissingError,
    TokenNotYetValidError,
    TokenPartyError,
    TokenSignatureError,
    TokenVerificationError,
    ValidationError,
    WebhookVerificationError,
)
from .models import InitResult, MutationResult

if TYPE_CHECKING:
    from .async_client import AsyncCreditsClient
    from .client import CreditsClient

__all__ = [
    "ALGORITHM",
    "REQUIRED_CLAIMS",
    "SESSION_COOKIE",
    "ClerkEvent",
    "ClerkPrincipal",
    "EventOutcome",
    "ahandle_clerk_event",
    "handle_clerk_event",
    "jwks_client",
    "load_jwt_key",
    "session_token_from",
    "verify_cron_secret",
    "verify_session_token",
    "verify_webhook",
]

logger = logging.getLogger(__name__)

ALGORITHM = "RS256"
"""The only algorithm Clerk signs session tokens with, and the only one accepted."""
REQUIRED_CLAIMS = ("exp", "iat", "nbf", "sub")
SESSION_COOKIE = "__session"
"""The cookie Clerk's frontend sets on same-origin requests."""
DEFAULT_LEEWAY = timedelta(seconds=5)

_EXTRA_HINT = "pip install 'sparked-credits[clerk]'"


def _jwt() -> Any:
    try:
        import jwt
        import jwt.algorithms
    except ImportError as exc:
        raise ConfigurationError(f"Clerk token verification needs PyJWT: {_EXTRA_HINT}") from exc
    if not getattr(jwt.algorithms, "has_crypto", False):
        raise ConfigurationError(f"RS256 needs PyJWT with cryptography: {_EXTRA_HINT}")
    return jwt


def _svix() -> tuple[Any, type[Exception]]:
    """svix's Webhook class and the error its verify() raises."""
    try:
        from svix.webhooks import Webhook
        from svix.webhooks import WebhookVerificationError as SvixVerificationError
    except ImportError as exc:
        raise ConfigurationError(f"Clerk webhooks need svix: {_EXTRA_HINT}") from exc
    return Webhook, SvixVerificationError


# -- session tokens ---------------------------------------------------------------------


class ClerkPrincipal(BaseModel):
    """Who a verified session token speaks for.

    ``org_*`` come from the v2 ``o`` claim (``{"id", "rol", "slg"}``) or the v1 ``org_id``,
    ``org_role``, ``org_slug`` claims; the role always carries Clerk's ``org:`` prefix.
    """

    model_config = ConfigDict(frozen=True)

    user_id: str = Field(description="The token's sub: the Clerk user id, the credits account.")
    session_id: str | None = None
    org_id: str | None = None
    org_role: str | None = None
    org_slug: str | None = None
    authorized_party: str | None = Field(default=None, description="azp: the requesting origin.")
    issuer: str | None = None
    expires_at: datetime
    claims: dict[str, Any] = Field(default_factory=dict, repr=False)


def _normalize_pem(key: str) -> str:
    """Env files often hold the PEM on one line with literal backslash-n: accept both."""
    return key.strip().replace("\\r", "").replace("\\n", "\n")


@lru_cache(maxsize=8)
def load_jwt_key(pem: str) -> Any:
    """The RSA public key from ``CLERK_JWT_KEY`` (PEM, with real or escaped newlines).

    Parsed once per distinct value: verifying a token then costs no parsing and no I/O.
    """
    _jwt()
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        key = load_pem_public_key(_normalize_pem(pem).encode())
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(
            "CLERK_JWT_KEY is not a PEM public key (copy it from the Clerk dashboard, "
            "API keys > Show JWT public key > PEM)"
        ) from exc
    if not isinstance(key, RSAPublicKey):
        raise ConfigurationError("CLERK_JWT_KEY must be an RSA public key (Clerk signs RS256)")
    return key


_jwks_lock = threading.Lock()
_jwks_clients: dict[str, Any] = {}


def jwks_client(
    url: str,
    *,
    lifespan: float = 3600.0,
    refetch_cooldown: float = 10.0,
    timeout: float = 5.0,
) -> Any:
    """A cached PyJWKClient per JWKS URL, shared by every call in the process.

    The key set is kept ``lifespan`` seconds; a token naming an unknown ``kid`` (Clerk
    rotated its keys) forces one refetch, at most every ``refetch_cooldown`` seconds, so a
    flood of tokens with made-up kids cannot turn into a flood of requests to Clerk.
    Pass your own instance as ``verify_session_token(..., jwks=...)`` to tune it.
    """
    jwt = _jwt()
    key = f"{url}|{lifespan}|{refetch_cooldown}|{timeout}"
    with _jwks_lock:
        client = _jwks_clients.get(key)
        if client is None:
            client = _jwks_clients[key] = jwt.PyJWKClient(
                url,
                cache_jwk_set=True,
                lifespan=lifespan,
                cooldown_duration=refetch_cooldown,
                timeout=timeout,
            )
        return client


def session_token_from(
    authorization: str | None = None,
    cookies: Mapping[str, str] | str | None = None,
) -> str:
    """The session token of a request: ``Authorization: Bearer <jwt>`` first (API calls,
    cross-origin), then the ``__session`` cookie (same-origin page requests).

    ``cookies`` is a mapping (e.g. ``request.cookies``) or a raw ``Cookie`` header.
    Raises TokenMissingError when neither carries one.
    """
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    jar: Mapping[str, str] = {}
    if isinstance(cookies, str):
        parsed: SimpleCookie = SimpleCookie()
        try:
            parsed.load(cookies)
        except CookieError:
            parsed = SimpleCookie()
        jar = {name: morsel.value for name, morsel in parsed.items()}
    elif cookies is not None:
        jar = cookies
    token = jar.get(SESSION_COOKIE, "").strip()
    if token:
        return token
    raise TokenMissingError("no session token: send Authorization: Bearer <token>")


def _normalize_origin(origin: str) -> str:
    return origin.strip().rstrip("/").lower()


def _claim_str(claims: Mapping[str, Any], name: str) -> str | None:
    value = claims.get(name)
    return value if isinstance(value, str) and value else None


def _org_claims(claims: Mapping[str, Any]) -> tuple[str | None, str | None, str | None]:
    """(org id, role, slug) from the v2 ``o`` claim, falling back to v1's flat claims."""
    o = claims.get("o")
    if isinstance(o, Mapping):
        org_id, role, slug = _claim_str(o, "id"), _claim_str(o, "rol"), _claim_str(o, "slg")
    else:
        org_id = _claim_str(claims, "org_id")
        role = _claim_str(claims, "org_role")
        slug = _claim_str(claims, "org_slug")
    if role is not None and not role.startswith("org:"):
        role = f"org:{role}"
    return org_id, role, slug


def _signing_key(jwt: Any, header: Mapping[str, Any], jwt_key: Any, jwks: Any) -> Any:
    if jwt_key is not None:
        return load_jwt_key(jwt_key) if isinstance(jwt_key, str) else jwt_key
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise TokenMalformedError("the token header has no kid to find its key in the JWKS")
    try:
        return jwks.get_signing_key(kid).key
    except jwt.PyJWKClientConnectionError as exc:
        logger.warning("JWKS fetch failed: %s", type(exc).__name__)
        raise TokenKeysUnavailableError(
            "could not fetch the signing keys (JWKS); try again"
        ) from exc
    except jwt.PyJWKClientError as exc:
        raise TokenKeyError("no signing key matches the token's kid") from exc


def verify_session_token(
    token: str,
    *,
    jwt_key: str | Any | None = None,
    jwks_url: str | None = None,
    jwks: Any | None = None,
    authorized_parties: Iterable[str] | None = None,
    leeway: timedelta | float = DEFAULT_LEEWAY,
) -> ClerkPrincipal:
    """Verify a Clerk session token and return who it speaks for.

    Give exactly one key source: ``jwt_key`` (the PEM public key, ``CLERK_JWT_KEY``; no
    network), ``jwks_url`` (``https://<frontend-api>/.well-known/jwks.json``; cached, see
    :func:`jwks_client`) or ``jwks`` (your own PyJWKClient). ``authorized_parties`` lists the
    origins allowed to hold tokens (``https://app.sparked.world``): a token whose ``azp``
    is another origin is refused. Without it, ``azp`` is not checked, as in Clerk's SDKs;
    set it in production, it is what stops a token minted for another site.

    Every refusal is a :class:`TokenVerificationError` subclass naming the reason.
    """
    jwt = _jwt()
    if sum(x is not None for x in (jwt_key, jwks_url, jwks)) != 1:
        raise ConfigurationError("give exactly one of jwt_key=, jwks_url= or jwks=")
    if isinstance(jwt_key, str) and not jwt_key.strip():
        raise ConfigurationError("jwt_key is empty: set CLERK_JWT_KEY or use jwks_url=")
    if jwks_url is not None:
        jwks = jwks_client(jwks_url)
    if not isinstance(token, str) or not token.strip():
        raise TokenMissingError("no session token")
    token = token.strip()
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise TokenMalformedError("the token is not a well-formed JWT") from exc
    alg = header.get("alg")
    if alg != ALGORITHM:
        # Before any key is touched: refuses alg=none and HS256 signed with the public key.
        raise TokenAlgorithmError(f"the token is signed with {alg!r}; only {ALGORITHM} is accepted")
    key = _signing_key(jwt, header, jwt_key, jwks)
    seconds = leeway.total_seconds() if isinstance(leeway, timedelta) else float(leeway)
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],
            leeway=seconds,
            options={"require": list(REQUIRED_CLAIMS), "verify_aud": False, "verify_sub": True},
        )
    except jwt.ExpiredSignatureError as exc:
        raise TokenExpiredError("the session token has expired") from exc
    except jwt.ImmatureSignatureError as exc:
        raise TokenNotYetValidError("the session token is not valid yet (nbf/iat)") from exc
    except jwt.MissingRequiredClaimError as exc:
        raise TokenClaimError(f"the token has no {exc.claim!r} claim", exc.claim) from exc
    except jwt.InvalidSignatureError as exc:
        raise TokenSignatureError("the token's signature does not verify") from exc
    except jwt.InvalidAlgorithmError as exc:
        raise TokenAlgorithmError(f"only {ALGORITHM} is accepted") from exc
    except (jwt.InvalidIssuedAtError, jwt.InvalidSubjectError) as exc:
        raise TokenMalformedError(f"a claim has the wrong type: {exc}") from exc
    except jwt.DecodeError as exc:
        raise TokenMalformedError("the token cannot be decoded") from exc
    except jwt.InvalidTokenError as exc:
        raise TokenVerificationError(f"the token does not verify: {type(exc).__name__}") from exc
    return _principal(claims, authorized_parties)


def _principal(claims: dict[str, Any], authorized_parties: Iterable[str] | None) -> ClerkPrincipal:
    sub = _claim_str(claims, "sub")
    if sub is None:
        raise TokenClaimError("the token's sub claim is empty", "sub")
    azp = _claim_str(claims, "azp")
    if authorized_parties is not None and azp is not None:
        allowed = {_normalize_origin(p) for p in authorized_parties}
        if _normalize_origin(azp) not in allowed:
            raise TokenPartyError(f"the token was issued to {azp!r}, not an authorized party")
    org_id, org_role, org_slug = _org_claims(claims)
    return ClerkPrincipal(
        user_id=sub,
        session_id=_claim_str(claims, "sid"),
        org_id=org_id,
        org_role=org_role,
        org_slug=org_slug,
        authorized_party=azp,
        issuer=_claim_str(claims, "iss"),
        expires_at=datetime.fromtimestamp(int(claims["exp"]), tz=timezone.utc),
        claims=claims,
    )


# -- webhooks ---------------------------------------------------------------------------


class ClerkEvent(BaseModel):
    """A verified Clerk webhook event (``{"type", "data", "object", ...}``)."""

    model_config = ConfigDict(frozen=True, extra="allow")

    type: str
    data: dict[str, Any]
    object: str | None = None
    timestamp: int | None = None
    instance_id: str | None = None
    svix_id: str = Field(description="The delivery's svix-id: the same on every redelivery.")


_SVIX_HEADERS = ("svix-id", "svix-timestamp", "svix-signature")


def verify_webhook(body: bytes, headers: Mapping[str, str], secret: str) -> ClerkEvent:
    """Check a Svix-signed webhook (Clerk's) and return the parsed event.

    ``body`` must be the raw bytes as received (re-serialized JSON does not verify);
    ``headers`` any mapping, names matched case-insensitively; ``secret`` the endpoint's
    ``whsec_...`` signing secret. Deliveries signed more than 5 minutes before or after now
    are refused (replays of a captured request). A redelivery keeps its svix-id, so the
    handler can recognize it (see :func:`handle_clerk_event`).
    """
    if not secret or not secret.strip():
        raise ConfigurationError("the webhook signing secret is empty: set CLERK_WEBHOOK_SECRET")
    lowered = {str(k).lower(): str(v) for k, v in headers.items()}
    present = {name: lowered.get(name, "").strip() for name in _SVIX_HEADERS}
    missing = [name for name, value in present.items() if not value]
    if missing:
        raise WebhookVerificationError(
            f"missing webhook headers: {', '.join(missing)}", reason="missing_headers"
        )
    if not isinstance(body, (bytes, bytearray)):
        raise TypeError("verify_webhook needs the raw body as bytes")
    try:
        text = bytes(body).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WebhookVerificationError(
            "the webhook body is not UTF-8", reason="malformed_body"
        ) from exc
    Webhook, SvixVerificationError = _svix()
    try:
        verifier = Webhook(secret.strip())
    except Exception as exc:
        raise ConfigurationError(
            "the webhook signing secret is not a valid whsec_... value"
        ) from exc
    try:
        # svix 2.x returns None here: the body is parsed below.
        verifier.verify(text, present)
    except (ValueError, TypeError) as exc:
        # svix lets these escape for a signature header without "v1," or with bad base64.
        raise WebhookVerificationError(
            "malformed webhook signature headers", reason="malformed_headers"
        ) from exc
    except SvixVerificationError as exc:
        message = str(exc).lower()
        reason = "bad_signature"
        if "too old" in message or "too new" in message:
            reason = "stale_timestamp"
        elif "header" in message:
            reason = "malformed_headers"
        raise WebhookVerificationError(
            f"webhook verification failed ({reason})", reason=reason
        ) from exc
    try:
        payload = json.loads(text)
    except ValueError as exc:
        raise WebhookVerificationError(
            "the webhook body is not JSON", reason="malformed_body"
        ) from exc
    if not isinstance(payload, dict) or not isinstance(payload.get("type"), str):
        raise WebhookVerificationError(
            "the webhook body has no event type", reason="malformed_body"
        )
    if not isinstance(payload.get("data"), dict):
        raise WebhookVerificationError(
            "the webhook body has no data object", reason="malformed_body"
        )
    payload["svix_id"] = present["svix-id"]
    return ClerkEvent.model_validate(payload)


# -- events -----------------------------------------------------------------------------

Outcome = Literal["initialized", "already_initialized", "closed", "already_closed", "ignored"]


class EventOutcome(BaseModel):
    """What :func:`handle_clerk_event` did; ``duplicate`` is True when the event had
    already been applied (a Svix redelivery) and nothing changed now."""

    model_config = ConfigDict(frozen=True)

    type: str
    svix_id: str | None = None
    outcome: Outcome
    account: str | None = None
    balance: int | None = None
    duplicate: bool = False


class _Step:
    """One client call an event asks for: the plan both the sync and async handlers run."""

    __slots__ = ("account", "kind", "kwargs")

    def __init__(self, kind: Literal["init", "close"], account: str, **kwargs: Any) -> None:
        self.kind = kind
        self.account = account
        self.kwargs = kwargs

    @property
    def method(self) -> str:
        return "initialize_user" if self.kind == "init" else "close_account"


def _event_id(event: ClerkEvent) -> str:
    value = event.data.get("id")
    if not isinstance(value, str) or not value:
        raise ValidationError("data.id", f"a {event.type} event without an id")
    return value


def _plan(
    event: ClerkEvent,
    svix_id: str | None,
    org_balances: bool,
    user_credits: int | None,
    org_credits: int | None,
) -> _Step | None:
    """Pure: which call (if any) applies ``event``. Each call is once-per-account in its
    own script, so a redelivered event changes nothing the second time."""
    delivery = svix_id or event.svix_id
    if event.type == "user.created":
        return _Step(
            "init", _event_id(event), credits=user_credits, reason=f"clerk {event.type} {delivery}"
        )
    if event.type == "organization.created" and org_balances:
        return _Step(
            "init", _event_id(event), credits=org_credits, reason=f"clerk {event.type} {delivery}"
        )
    if event.type in ("user.deleted", "organization.deleted"):
        return _Step(
            "close",
            _event_id(event),
            reason=f"clerk {event.type}",
            metadata={"svix_id": delivery},
        )
    return None


def _outcome(
    event: ClerkEvent, svix_id: str | None, step: _Step | None, result: Any
) -> EventOutcome:
    delivery = svix_id or event.svix_id
    if step is None:
        logger.info("clerk event %s (%s) ignored", event.type, delivery)
        return EventOutcome(type=event.type, svix_id=delivery, outcome="ignored")
    if isinstance(result, InitResult):
        outcome: Outcome = "initialized" if result.created else "already_initialized"
        duplicate = not result.created
        balance = result.balance
    else:
        assert isinstance(result, MutationResult)
        outcome = "already_closed" if result.replayed else "closed"
        duplicate = result.replayed
        balance = result.balance
    logger.info("clerk event %s (%s): account %s %s", event.type, delivery, step.account, outcome)
    return EventOutcome(
        type=event.type,
        svix_id=delivery,
        outcome=outcome,
        account=step.account,
        balance=balance,
        duplicate=duplicate,
    )


def handle_clerk_event(
    client: CreditsClient,
    event: ClerkEvent,
    *,
    svix_id: str | None = None,
    org_balances: bool = False,
    user_credits: int | None = None,
    org_credits: int | None = None,
) -> EventOutcome:
    """Apply a verified Clerk event to the credits store.

    * ``user.created``: the user's account gets its starting credits (``user_credits``,
      default the client's default_credits), once ever: initialize_user is once per
      account inside its script, so Svix redelivering the event (same svix-id, hours
      later, or concurrently to two workers) grants nothing more.
    * ``user.deleted`` (and ``organization.deleted``): the account is closed; its ledger
      is kept; later charges raise AccountClosedError; a late ``user.created`` grants nothing.
    * ``organization.created``: the organization's own account, only with
      ``org_balances=True``.
    * anything else: acknowledged and ignored (answer 2xx so Svix stops retrying).
    """
    step = _plan(event, svix_id, org_balances, user_credits, org_credits)
    result = None if step is None else getattr(client, step.method)(step.account, **step.kwargs)
    return _outcome(event, svix_id, step, result)


async def ahandle_clerk_event(
    client: AsyncCreditsClient,
    event: ClerkEvent,
    *,
    svix_id: str | None = None,
    org_balances: bool = False,
    user_credits: int | None = None,
    org_credits: int | None = None,
) -> EventOutcome:
    """:func:`handle_clerk_event` for the AsyncCreditsClient."""
    step = _plan(event, svix_id, org_balances, user_credits, org_credits)
    result = None
    if step is not None:
        result = await getattr(client, step.method)(step.account, **step.kwargs)
    return _outcome(event, svix_id, step, result)


# -- cron -------------------------------------------------------------------------------


def verify_cron_secret(authorization_header: str | None, secret: str) -> bool:
    """True when the header is ``Bearer <secret>`` (what Vercel Cron sends), compared in
    constant time so the secret cannot be guessed byte by byte from response times.

    An empty ``secret`` is a misconfiguration, never "no check": ConfigurationError.
    """
    if not secret:
        raise ConfigurationError("CRON_SECRET is empty: refusing to authorize cron calls")
    expected = f"Bearer {secret}".encode()
    given = (authorization_header or "").strip().encode()
    return hmac.compare_digest(given, expected)
