"""Flask: the verified Clerk user, rate limits, idempotent routes and flat error bodies.

Needs the ``flask`` extra (``pip install 'sparked-credits[flask]'``: Flask, the ``clerk``
extra and ``limits``). The same pieces as the FastAPI integration, with the same bodies::

    app = Flask(__name__)
    credits = CreditsClient.from_env(app="app.sparked.world")
    setup_credits(app, credits, auth=ClerkAuth(jwt_key=os.environ["CLERK_JWT_KEY"],
                                               authorized_parties=[...]),
                  rate_limiter=AccountRateLimiter.for_credits_url("20/minute", url))

    @app.post("/api/chat")
    @credits_route(rate_limit="chat", idempotent="chat", body_field="message_id")
    def chat():
        user = current_user()
        charged = credits.charge(user.user_id, "chat_message",
                                 idempotency_key=current_request().charge_key())
        return {"balance": charged.balance}

:func:`credits_route` checks the session (401), an optional ``authorize`` check (403) and
the rate limit (429) before the view reads the body, then runs the view once per request
id (see :mod:`sparked_credits.integrations.idempotency`). Every CreditsError, every HTTP
error Flask raises (404, 405, 413) and every pydantic validation error a view lets escape
answer ``{"error", "message", ...fields}``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

from ..clerk.tokens import ClerkPrincipal
from ..client import CreditsClient
from ..errors import ConfigurationError, CreditsError
from . import idempotency as idem
from .http_errors import HTTPRefusal, dumps, error_parts, status_code_name, validation_body
from .ratelimit import AccountRateLimiter
from .session import SessionAuth

try:
    import pydantic
    from flask import Flask, Response, current_app, g, request
    from werkzeug.exceptions import HTTPException
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ConfigurationError(
        "the Flask integration needs Flask: pip install 'sparked-credits[flask]'"
    ) from exc

ClerkAuth = SessionAuth
"""Verifies the request's session token: ``ClerkAuth(jwt_key=...)`` as in FastAPI."""

__all__ = [
    "ClerkAuth",
    "credits_route",
    "current_request",
    "current_user",
    "error_response",
    "setup_credits",
]

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])
_EXT = "sparked_credits"


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(dumps(body), status=status, headers=headers, mimetype="application/json")


def error_response(exc: CreditsError) -> Response:
    """The flat answer for a CreditsError (the same bytes as the FastAPI integration's)."""
    status, body, headers = error_parts(exc)
    return _json(status, body, headers)


def setup_credits(
    app: Flask,
    client: CreditsClient,
    *,
    auth: ClerkAuth | None = None,
    rate_limiter: AccountRateLimiter | None = None,
) -> None:
    """Keep the client, the ClerkAuth and the default rate limiter on the app and install
    the flat error handlers."""
    app.extensions[_EXT] = {"client": client, "auth": auth, "limiter": rate_limiter}

    @app.errorhandler(CreditsError)
    def _credits(exc: CreditsError) -> Response:
        return error_response(exc)

    @app.errorhandler(pydantic.ValidationError)
    def _validation(exc: pydantic.ValidationError) -> Response:
        return _json(422, validation_body(exc.errors()))

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response:
        status = exc.code or 500
        return _json(status, {"error": status_code_name(status), "message": exc.description or ""})


def _ext() -> dict[str, Any]:
    found = current_app.extensions.get(_EXT)
    if found is None:
        raise ConfigurationError("call setup_credits(app, client) first")
    return dict(found)


def current_user() -> ClerkPrincipal:
    """The request's verified user (401 when the session does not verify)."""
    known = g.get("clerk_principal")
    if isinstance(known, ClerkPrincipal):
        return known
    auth: ClerkAuth | None = _ext()["auth"]
    if auth is None:
        raise ConfigurationError("no ClerkAuth: setup_credits(app, client, auth=...)")
    principal = auth.from_request(request.headers.get("authorization"), request.cookies)
    g.clerk_principal = principal
    return principal


def current_request() -> idem.RequestContext:
    """This request's idempotent-request context (``charge_key()`` for each charge)."""
    ctx = g.get("idempotent_request")
    if isinstance(ctx, idem.RequestContext):
        return ctx
    ctx = idem.RequestContext(account=current_user().user_id, scope=request.path, key=None)
    g.idempotent_request = ctx
    return ctx


def credits_route(
    *,
    rate_limit: str | None = None,
    idempotent: str | bool | None = None,
    body_field: str | None = None,
    authorize: Callable[[ClerkPrincipal], bool] | None = None,
    lease: timedelta = idem.DEFAULT_LEASE,
) -> Callable[[F], F]:
    """A view decorator: session (401), ``authorize`` (403), rate limit on scope
    ``rate_limit`` (429), all before the view reads the body; then, with ``idempotent``
    (a scope name, or True for the route's path), one run per request id and body."""

    def wrap(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            principal = current_user()
            if authorize is not None and not authorize(principal):
                raise HTTPRefusal(403, "forbidden", "you may not use this route")
            ext = _ext()
            limiter: AccountRateLimiter | None = ext["limiter"]
            if rate_limit and limiter is not None:
                limiter.check(principal.user_id, rate_limit)
            if not idempotent:
                return view(*args, **kwargs)
            scope = request.path if idempotent is True else str(idempotent)
            return _run_idempotent(ext["client"], principal, scope, body_field, lease,
                                   lambda: view(*args, **kwargs))

        return wrapper  # type: ignore[return-value]

    return wrap


def _run_idempotent(
    client: CreditsClient,
    principal: ClerkPrincipal,
    scope: str,
    body_field: str | None,
    lease: timedelta,
    view: Callable[[], Any],
) -> Response:
    body = request.get_data(cache=True)
    flow = idem.RequestFlow.open(
        client.options, principal.user_id, scope, lease, request.method,
        request.headers.get(idem.IDEMPOTENCY_HEADER), body, body_field,
    )
    g.idempotent_request = flow.ctx
    if not flow.tracked:
        return current_app.make_response(view())
    done = flow.begun(client.run_request_step(flow.begin()))
    if done is not None:
        return Response(
            done.body,
            status=done.status,
            content_type=done.content_type or None,
            headers={idem.REPLAYED_HEADER: "true"},
        )
    try:
        response = current_app.make_response(view())
    except BaseException as exc:
        try:
            client.run_request_step(flow.failed(exc))
        except CreditsError:  # the record keeps running; its lease ends it
            logger.warning("could not record the failed attempt on %s", scope, exc_info=True)
        raise
    step, stored = flow.answered(
        response.status_code, response.content_type or "", response.get_data()
    )
    client.run_request_step(step)
    if stored:
        response.headers[idem.REPLAYED_HEADER] = "false"
    return response
