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
other CreditsError its own status (404, 409, 422, 403...) and ``to_dict()`` body. Every
other refusal answers the same flat shape, ``{"error", "message", ...fields}``: a refused
session (401), a rate limit (429), a malformed body (422), FastAPI's own 404/405.

Idempotent routes (one request id, one piece of work, one answer; see
:mod:`sparked_credits.integrations.idempotency`)::

    router = APIRouter(route_class=CreditsRoute)

    @router.post("/api/chat")
    @idempotent(body_field="message_id")
    def chat(body: ChatRequest, user: User, credits: Credits, req: IdempotentRequest):
        charged = credits.charge(user.user_id, "chat_message",
                                 idempotency_key=req.charge_key())
        ...

A :class:`CreditsRoute` route marked :func:`idempotent` or :func:`authorize` checks the
session (and the route's authorization) before the body is read or validated.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from datetime import timedelta
from typing import Annotated, Any, TypeVar

from ..async_client import AsyncCreditsClient
from ..clerk.tokens import (
    ClerkPrincipal,
)
from ..clerk.webhooks import DEFAULT_MAX_WEBHOOK_BYTES
from ..client import CreditsClient
from ..errors import ConfigurationError, CreditsError
from . import idempotency as idem
from .http_errors import HTTPRefusal, dumps, error_parts, read_limited, status_code_name
from .http_errors import validation_body as _validation_body
from .ratelimit import AccountRateLimiter
from .session import SessionAuth

try:
    from fastapi import Depends, FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import Response
    from fastapi.routing import APIRoute
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException as StarletteHTTPException
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ConfigurationError(
        "the FastAPI integration needs FastAPI: pip install 'sparked-credits[fastapi]'"
    ) from exc

__all__ = [
    "ClerkAuth",
    "CreditsRoute",
    "IdempotentRequest",
    "add_exception_handlers",
    "authorize",
    "credits_error_response",
    "get_async_credits",
    "get_clerk_user",
    "get_credits",
    "get_idempotent_request",
    "get_rate_limiter",
    "idempotent",
    "rate_limited",
    "read_body_limited",
    "setup_credits",
]

F = TypeVar("F", bound=Callable[..., Any])

logger = logging.getLogger(__name__)

_STATE_CLIENT = "sparked_credits"
_STATE_LIMITER = "sparked_credits_rate_limiter"
_STATE_AUTH = "sparked_credits_clerk_auth"


# -- auth -------------------------------------------------------------------------------


class ClerkAuth(SessionAuth):
    """A dependency yielding the request's verified :class:`ClerkPrincipal`.

    The token comes from ``Authorization: Bearer`` or the ``__session`` cookie; any failure
    answers 401 (503 when the JWKS cannot be fetched) with ``{"error", "message",
    "reason"}`` and a ``WWW-Authenticate`` header. A request is verified once, however
    many dependencies ask. It is a plain ``def``: FastAPI runs it in its thread pool, so
    a JWKS refetch never blocks the event loop.
    """

    def __call__(self, request: Request) -> ClerkPrincipal:
        known = getattr(request.state, "clerk_principal", None)
        if isinstance(known, ClerkPrincipal):
            return known
        principal = self.from_request(request.headers.get("authorization"), request.cookies)
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
        active.check(principal.user_id, scope)  # RateLimitedError: 429 with Retry-After
        return principal

    dependency.__name__ = f"rate_limited_{scope}"
    return dependency


# -- errors -----------------------------------------------------------------------------


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(dumps(body), status_code=status, headers=headers, media_type="application/json")


def credits_error_response(exc: CreditsError) -> Response:
    """The HTTP answer for a CreditsError: its ``http_status`` and flat ``to_dict()`` body
    (402 for InsufficientCreditsError, with balance, required and action); 5xx answers
    carry the code only (see :func:`~sparked_credits.integrations.http_errors.error_parts`)."""
    status, body, headers = error_parts(exc)
    return _json(status, body, headers)


async def _handle(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, CreditsError)
    return credits_error_response(exc)


async def _handle_validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return _json(422, _validation_body(exc.errors()))


async def _handle_http(request: Request, exc: Exception) -> Response:
    """FastAPI's and Starlette's own HTTPExceptions (404, 405, a route's own raise) in the
    flat shape: a dict detail with an ``error`` is the body; any other detail the message."""
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail
    if isinstance(detail, dict) and isinstance(detail.get("error"), str):
        body = {"message": detail["error"], **detail}
    else:
        body = {"error": status_code_name(exc.status_code), "message": str(detail)}
    return _json(exc.status_code, body, dict(exc.headers or {}))


def add_exception_handlers(app: FastAPI) -> None:
    """Answer every refusal in the one flat shape: CreditsError (and so 401 and 429),
    request validation (422, never echoing the input) and HTTPException."""
    app.add_exception_handler(CreditsError, _handle)
    app.add_exception_handler(RequestValidationError, _handle_validation)
    app.add_exception_handler(StarletteHTTPException, _handle_http)


# -- request bodies ---------------------------------------------------------------------


async def read_body_limited(request: Request, limit: int = DEFAULT_MAX_WEBHOOK_BYTES) -> bytes:
    """The raw body, refused with 413 before it is read whole when it is over ``limit``
    (1 MiB default): by Content-Length when sent, else while streaming. For webhook
    routes, which must read the raw bytes to check a signature."""
    cached = getattr(request, "_body", None)
    if isinstance(cached, bytes):
        if len(cached) > limit:
            raise HTTPRefusal(413, "payload_too_large", f"the request body is over {limit} bytes")
        return cached
    body = await read_limited(request.stream(), request.headers.get("content-length"), limit)
    request._body = body  # later readers (FastAPI's body parsing) see the same bytes
    return body


# -- authorization first, idempotent requests ---------------------------------------------

_SPEC_ATTR = "__sparked_credits_route__"


class _RouteSpec:
    __slots__ = ("authorize", "idempotency")

    def __init__(self) -> None:
        self.authorize: Callable[[ClerkPrincipal], bool] | None = None
        self.idempotency: idem.IdempotencySpec | None = None


def _spec(endpoint: Callable[..., Any]) -> _RouteSpec:
    spec = getattr(endpoint, _SPEC_ATTR, None)
    if spec is None:
        spec = _RouteSpec()
        setattr(endpoint, _SPEC_ATTR, spec)
    return spec


def idempotent(
    scope: str | None = None,
    *,
    body_field: str | None = None,
    lease: timedelta = idem.DEFAULT_LEASE,
) -> Callable[[F], F]:
    """Mark a :class:`CreditsRoute` route idempotent: its ``Idempotency-Key`` (or
    ``body_field`` of the JSON body) is bound to the user, the route (``scope``, default
    its path) and a digest of the body; a repeat answers the stored response without
    running the route (header ``Idempotent-Replayed: true``), another body 409
    ``idempotency_conflict``, a repeat while the first runs 409 ``request_in_progress``.
    ``lease``: how long a running attempt holds the request before a retry may take over
    (its process may have died). Derive charge keys from :data:`IdempotentRequest`."""

    def mark(endpoint: F) -> F:
        _spec(endpoint).idempotency = idem.IdempotencySpec(scope, body_field, lease)
        return endpoint

    return mark


def authorize(check: Callable[[ClerkPrincipal], bool]) -> Callable[[F], F]:
    """Mark a :class:`CreditsRoute` route as allowed only to users for whom ``check``
    holds (else 403 ``forbidden``), checked after the session and before the body is
    read or validated, so a non-admin learns nothing from the route's validation."""

    def mark(endpoint: F) -> F:
        _spec(endpoint).authorize = check
        return endpoint

    return mark


def get_idempotent_request(request: Request) -> idem.RequestContext:
    """Dependency: this request's :class:`~.idempotency.RequestContext` (a fresh one,
    with no client key, on routes that are not idempotent)."""
    ctx = getattr(request.state, "idempotent_request", None)
    if isinstance(ctx, idem.RequestContext):
        return ctx
    principal = getattr(request.state, "clerk_principal", None)
    account = principal.user_id if isinstance(principal, ClerkPrincipal) else ""
    ctx = idem.RequestContext(account=account, scope=request.url.path, key=None)
    request.state.idempotent_request = ctx
    return ctx


IdempotentRequest = Annotated[idem.RequestContext, Depends(get_idempotent_request)]
"""The route's idempotent request: ``req.charge_key()`` for each charge's key."""


async def _step(client: Any, op: Any) -> Any:
    if isinstance(client, AsyncCreditsClient):
        return await client.run_request_step(op)
    return await run_in_threadpool(client.run_request_step, op)


class CreditsRoute(APIRoute):
    """An APIRoute that runs the session check, the :func:`authorize` check and the
    :func:`idempotent` record around the route, before FastAPI reads the body: use it as
    ``APIRouter(route_class=CreditsRoute)``. Routes without either mark run unchanged."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        inner = super().get_route_handler()
        spec: _RouteSpec | None = getattr(self.endpoint, _SPEC_ATTR, None)
        if spec is None:
            return inner
        path = self.path

        async def handler(request: Request) -> Response:
            auth: ClerkAuth | None = getattr(request.app.state, _STATE_AUTH, None)
            if auth is None:
                raise ConfigurationError("no ClerkAuth on this app: setup_credits(..., auth=)")
            principal = await run_in_threadpool(auth, request)
            if spec.authorize is not None and not spec.authorize(principal):
                logger.warning("user %s refused on %s", principal.user_id, path)
                raise HTTPRefusal(403, "forbidden", "you may not use this route")
            if spec.idempotency is None:
                return await inner(request)
            return await _idempotent(request, inner, principal, spec.idempotency, path)

        return handler


async def _idempotent(
    request: Request,
    inner: Callable[[Request], Coroutine[Any, Any, Response]],
    principal: ClerkPrincipal,
    spec: idem.IdempotencySpec,
    path: str,
) -> Response:
    client = _client(request)
    body = await request.body()
    flow = idem.RequestFlow.open(
        client.options, principal.user_id, spec.scope or path, spec.lease, request.method,
        request.headers.get(idem.IDEMPOTENCY_HEADER), body, spec.body_field,
    )
    request.state.idempotent_request = flow.ctx
    if not flow.tracked:
        return await inner(request)
    done = flow.begun(await _step(client, flow.begin()))
    if done is not None:
        return Response(
            done.body,
            status_code=done.status,
            media_type=done.content_type or None,
            headers={idem.REPLAYED_HEADER: "true"},
        )
    try:
        response = await inner(request)
    except BaseException as exc:
        try:
            await _step(client, flow.failed(exc))
        except CreditsError:  # the record keeps running; its lease ends it
            logger.warning("could not record the failed attempt of %s", path, exc_info=True)
        raise
    step, stored = flow.answered(
        response.status_code,
        response.headers.get("content-type", ""),
        getattr(response, "body", None),
    )
    await _step(client, step)
    if stored:
        response.headers[idem.REPLAYED_HEADER] = "false"
    return response
