"""FastAPI: the verified Clerk user, the credits client, rate limits and error responses.

Needs the ``fastapi`` extra (``pip install 'sparked-credits[fastapi]'``: FastAPI, the
``clerk`` extra and ``limits``). A route then reads::

    auth = ClerkAuth(jwt_key=os.environ["CLERK_JWT_KEY"],
                     authorized_parties=["https://app.sparked.world"])
    app = FastAPI()
    setup_credits(app, CreditsClient.from_env(app="app.sparked.world"))

    @app.post("/api/chat")
    def chat(user: Annotated[ClerkPrincipal, Depends(auth)],
             credits: Annotated[CreditsClient, Depends(get_credits)]) -> dict[str, int]:
        return {"balance": credits.charge(user.user_id, "chat_message").balance}

and an InsufficientCreditsError raised inside becomes ``402 Payment Required`` with
``{"error", "message", "account", "balance", "required", "shortfall", "action"}``; every
other CreditsError its own status (404, 409, 422, 403...) and ``to_dict()`` body.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any

from ..async_client import AsyncCreditsClient
from ..clerk import DEFAULT_LEEWAY, ClerkPrincipal, session_token_from, verify_session_token
from ..client import CreditsClient
from ..errors import ConfigurationError, CreditsError, TokenVerificationError
from ..ratelimit import AccountRateLimiter

try:
    from fastapi import Depends, FastAPI, HTTPException, Request
    from fastapi.responses import JSONResponse
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ConfigurationError(
        "the FastAPI integration needs FastAPI: pip install 'sparked-credits[fastapi]'"
    ) from exc

__all__ = [
    "ClerkAuth",
    "add_exception_handlers",
    "credits_error_response",
    "get_async_credits",
    "get_clerk_user",
    "get_credits",
    "get_rate_limiter",
    "rate_limited",
    "setup_credits",
]

logger = logging.getLogger(__name__)

_STATE_CLIENT = "sparked_credits"
_STATE_LIMITER = "sparked_credits_rate_limiter"
_STATE_AUTH = "sparked_credits_clerk_auth"


# -- auth -------------------------------------------------------------------------------


def _unauthorized(exc: TokenVerificationError) -> HTTPException:
    headers = {}
    if exc.http_status == 401:
        headers["WWW-Authenticate"] = (
            f'Bearer error="invalid_token", error_description="{exc.reason}"'
        )
    return HTTPException(status_code=exc.http_status, detail=exc.to_dict(), headers=headers)


class ClerkAuth:
    """A dependency yielding the request's verified :class:`ClerkPrincipal`.

    The token comes from ``Authorization: Bearer`` or the ``__session`` cookie; any failure
    answers 401 (503 when the JWKS cannot be fetched) with ``{"detail": {"error",
    "reason", ...}}`` and a ``WWW-Authenticate`` header. The key source is checked when
    the app starts, not on the first request. It is a plain ``def``: FastAPI runs it in
    its thread pool, so a JWKS refetch never blocks the event loop.
    """

    def __init__(
        self,
        *,
        jwt_key: str | None = None,
        jwks_url: str | None = None,
        jwks: Any | None = None,
        authorized_parties: Iterable[str] | None = None,
        leeway: timedelta | float = DEFAULT_LEEWAY,
    ) -> None:
        given = [x for x in (jwt_key, jwks_url, jwks) if x]
        if len(given) != 1:
            raise ConfigurationError(
                "ClerkAuth needs exactly one of jwt_key= (CLERK_JWT_KEY), jwks_url= or jwks="
            )
        if jwt_key:
            from ..clerk import load_jwt_key

            load_jwt_key(jwt_key)  # fail at startup on a bad key, not per request
        self._key: dict[str, Any] = {"jwt_key": jwt_key, "jwks_url": jwks_url, "jwks": jwks}
        self._key = {k: v for k, v in self._key.items() if v}
        self.authorized_parties = None if authorized_parties is None else tuple(authorized_parties)
        self.leeway = leeway

    def verify(self, token: str) -> ClerkPrincipal:
        """Verify one token with this dependency's settings (raises TokenVerificationError)."""
        return verify_session_token(
            token, authorized_parties=self.authorized_parties, leeway=self.leeway, **self._key
        )

    def __call__(self, request: Request) -> ClerkPrincipal:
        try:
            token = session_token_from(request.headers.get("authorization"), request.cookies)
            principal = self.verify(token)
        except TokenVerificationError as exc:
            logger.info("session token refused: %s", exc.reason)
            raise _unauthorized(exc) from exc
        request.state.clerk_principal = principal
        return principal


# -- the client -------------------------------------------------------------------------


def setup_credits(
    app: FastAPI,
    client: CreditsClient | AsyncCreditsClient,
    *,
    auth: ClerkAuth | None = None,
    rate_limiter: AccountRateLimiter | None = None,
) -> None:
    """Keep ``client``, the app's ClerkAuth and an optional default rate limiter on the
    app, for :func:`get_credits`, :func:`get_clerk_user` and :func:`rate_limited`, and
    install the error handlers.

    Keeping them on the app (not in module globals) lets dependency aliases live at module
    level while an app factory decides the configuration, and lets two apps with different
    settings share one process (tests do).
    """
    setattr(app.state, _STATE_CLIENT, client)
    setattr(app.state, _STATE_AUTH, auth)
    setattr(app.state, _STATE_LIMITER, rate_limiter)
    add_exception_handlers(app)


def get_clerk_user(request: Request) -> ClerkPrincipal:
    """Dependency: the verified user, through the ClerkAuth given to :func:`setup_credits`
    (401 on failure)."""
    auth: ClerkAuth | None = getattr(request.app.state, _STATE_AUTH, None)
    if auth is None:
        raise ConfigurationError("no ClerkAuth on this app: setup_credits(app, client, auth=...)")
    return auth(request)


def _client(request: Request) -> Any:
    client = getattr(request.app.state, _STATE_CLIENT, None)
    if client is None:
        raise ConfigurationError("no credits client on this app: call setup_credits(app, client)")
    return client


def get_credits(request: Request) -> CreditsClient:
    """Dependency: the app's blocking CreditsClient (use it from ``def`` routes)."""
    client = _client(request)
    if not isinstance(client, CreditsClient):
        raise ConfigurationError("the app holds an AsyncCreditsClient: use get_async_credits")
    return client


def get_async_credits(request: Request) -> AsyncCreditsClient:
    """Dependency: the app's AsyncCreditsClient (use it from ``async def`` routes)."""
    client = _client(request)
    if not isinstance(client, AsyncCreditsClient):
        raise ConfigurationError("the app holds a CreditsClient: use get_credits")
    return client


def get_rate_limiter(request: Request) -> AccountRateLimiter | None:
    """Dependency: the app's default rate limiter, or None when there is none."""
    limiter: AccountRateLimiter | None = getattr(request.app.state, _STATE_LIMITER, None)
    return limiter


# -- rate limits ------------------------------------------------------------------------


def rate_limited(
    scope: str,
    auth: Callable[..., ClerkPrincipal] = get_clerk_user,
    limiter: AccountRateLimiter | None = None,
) -> Callable[..., ClerkPrincipal]:
    """A dependency that verifies the user (through ``auth``, by default the app's) and
    counts one request of theirs on ``scope``; past the limit it answers ``429 Too Many
    Requests`` with ``Retry-After``, before the route runs, so nothing is charged. Yields
    the principal, so a route needs only this one dependency. ``limiter`` defaults to the
    one given to :func:`setup_credits` (none: no limit).
    """

    def dependency(
        request: Request,
        principal: ClerkPrincipal = Depends(auth),  # noqa: B008
    ) -> ClerkPrincipal:
        active = limiter if limiter is not None else get_rate_limiter(request)
        if active is None:
            return principal
        decision = active.hit(principal.user_id, scope)
        if not decision.allowed:
            raise HTTPException(
                status_code=429,
                detail={
                    "error": "rate_limited",
                    "message": f"too many requests: {decision.limit}",
                    "retry_after": decision.retry_after,
                },
                headers={"Retry-After": str(decision.retry_after)},
            )
        return principal

    dependency.__name__ = f"rate_limited_{scope}"
    return dependency


# -- errors -----------------------------------------------------------------------------


def credits_error_response(exc: CreditsError) -> JSONResponse:
    """The HTTP answer for a CreditsError: its ``http_status`` and ``to_dict()`` body
    (402 for InsufficientCreditsError, with balance, required and action).

    Server-side failures (5xx: storage down, misconfiguration) answer with the error code
    only: their messages can name hosts or settings, which a client has no business seeing.
    """
    status = exc.http_status
    headers: dict[str, str] = {}
    if status >= 500:
        logger.error("credits error answered %d: %s", status, exc, exc_info=exc)
        body: dict[str, Any] = {"error": exc.code, "message": "the credits service failed"}
        if status == 503:
            headers["Retry-After"] = "1"
    else:
        body = exc.to_dict()
        if isinstance(exc, TokenVerificationError):
            headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
    return JSONResponse(body, status_code=status, headers=headers)


async def _handle(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, CreditsError)
    return credits_error_response(exc)


def add_exception_handlers(app: FastAPI) -> None:
    """Answer every CreditsError a route lets escape with :func:`credits_error_response`."""
    app.add_exception_handler(CreditsError, _handle)
