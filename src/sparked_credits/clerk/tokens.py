"""Clerk session tokens: verify the JWT a signed-in browser sends, say who it speaks for.

:func:`verify_session_token` checks a Clerk session JWT the way Clerk's own backend SDK
does: RS256 only (``alg: none`` and HS256-with-the-public-key are refused before any key is
touched), ``exp``/``nbf``/``iat`` numeric with a few seconds of leeway (Clerk tokens live
60 s), ``sub`` a non-empty string, ``azp`` checked against the origins you allow. The key
is the PEM public key from the dashboard (``CLERK_JWT_KEY``: no network at all) or the
instance's JWKS, cached and refetched when a token names a key it has not seen (key
rotation). Every refusal is a :class:`TokenVerificationError` subclass, never another
exception: a token is attacker-controlled input.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from http.cookies import CookieError, SimpleCookie
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .._core.validation import account as valid_account
from ..errors import ConfigurationError, ValidationError
from .errors import (
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
)

__all__ = [
    "ALGORITHM",
    "DEFAULT_LEEWAY",
    "REQUIRED_CLAIMS",
    "SESSION_COOKIE",
    "ClerkPrincipal",
    "jwks_client",
    "load_jwt_key",
    "session_token_from",
    "verify_session_token",
]

logger = logging.getLogger("sparked_credits.clerk")

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
    except (jwt.PyJWTError, ValueError, TypeError, RecursionError) as exc:
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
    except jwt.DecodeError as exc:
        raise TokenMalformedError("the token cannot be decoded") from exc
    except jwt.InvalidTokenError as exc:
        # InvalidIssuedAtError, and InvalidSubjectError on PyJWT versions that have it.
        raise TokenMalformedError(f"a claim has the wrong type ({type(exc).__name__})") from exc
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        # PyJWT converts claims with int(): NaN, Infinity and nesting escape as these.
        raise TokenMalformedError(f"a claim has the wrong type ({type(exc).__name__})") from exc
    return _principal(claims, authorized_parties)


MAX_TIMESTAMP = 253_402_300_799
"""9999-12-31T23:59:59Z: the last second a datetime can hold."""


def _timestamp(claims: Mapping[str, Any], name: str) -> float:
    """A time claim as a finite number of seconds a datetime can hold, or a 401.

    PyJWT checks that exp/iat/nbf convert with int(), not that they are numbers a
    datetime can hold: ``10**13`` passes its check and overflows fromtimestamp().
    """
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TokenMalformedError(f"the token's {name!r} claim is not a number")
    if not (0 <= value <= MAX_TIMESTAMP):  # also false for NaN
        raise TokenMalformedError(f"the token's {name!r} claim is not a plausible time")
    return float(value)


def _principal(claims: dict[str, Any], authorized_parties: Iterable[str] | None) -> ClerkPrincipal:
    exp = _timestamp(claims, "exp")
    for name in ("iat", "nbf"):
        _timestamp(claims, name)
    raw_sub = claims.get("sub")
    if not isinstance(raw_sub, str) or not raw_sub:
        raise TokenClaimError("the token's sub claim is not a user id", "sub")
    try:
        sub = valid_account(raw_sub)
    except ValidationError as exc:
        # A lone surrogate or a control character cannot be a credits account (nor be
        # encoded for Redis): refused here, as the token's problem, not later as a 500.
        raise TokenClaimError("the token's sub claim is not a valid user id", "sub") from exc
    raw_azp = claims.get("azp")
    if raw_azp is not None and not isinstance(raw_azp, str):
        raise TokenPartyError("the token's azp claim is not a string")
    azp = raw_azp or None
    if authorized_parties is not None:
        allowed = {_normalize_origin(p) for p in authorized_parties}
        if azp is None:
            raise TokenPartyError("the token names no azp, and authorized parties are set")
        if _normalize_origin(azp) not in allowed:
            raise TokenPartyError("the token was issued to another origin, not an authorized party")
    org_id, org_role, org_slug = _org_claims(claims)
    return ClerkPrincipal(
        user_id=sub,
        session_id=_claim_str(claims, "sid"),
        org_id=org_id,
        org_role=org_role,
        org_slug=org_slug,
        authorized_party=azp,
        issuer=_claim_str(claims, "iss"),
        expires_at=datetime.fromtimestamp(int(exp), tz=timezone.utc),
        claims=claims,
    )
