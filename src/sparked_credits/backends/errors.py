"""The one place where a backend's exceptions become :class:`BackendError`.

Clients call :func:`translate` for anything a backend raises; nothing else in the SDK
catches a client library's exception types. Backends ask :func:`is_transient` (retry
policy) and :func:`is_noscript` (script cache miss) here too, so a failure is classified
once, the same way for every backend. The translation says whether the request may have
been applied (the reply was lost) and whether repeating it is safe.

Classification, by where the failure happened:

* never sent (connection refused, connect/pool timeout, 401/403/429): not applied;
* sent, reply lost (read timeout, connection closed mid-request, HTTP 5xx from a gateway,
  an unreadable 200 body): may have applied;
* the server answered with an error (a Redis error reply): not applied; transient when
  the error code says "try again" (BUSY, LOADING, CLUSTERDOWN, ...).
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import BackendError, CreditsError
from ..requests import Operation, ScriptCall

__all__ = ["BadResponse", "is_noscript", "is_transient", "translate"]

# Server replies that mean "not executed, try again later".
_TRANSIENT_REPLIES = (
    "BUSY",
    "LOADING",
    "READONLY",
    "TRYAGAIN",
    "CLUSTERDOWN",
    "MASTERDOWN",
    "OOM",
    "MOVED",
    "ASK",
)


class BadResponse(Exception):
    """An HTTP backend got a reply that is not a Redis reply: a status other than 200 (or
    400 with a Redis error), or a body that is not the expected JSON shape. Raised by the
    Upstash backend's response check, classified (by status) only here."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status
        self.detail = detail


def is_noscript(exc: BaseException) -> bool:
    """True for Redis's NOSCRIPT reply, whatever class the client parsed it into
    (redis-py strips the code into NoScriptError; upstash-redis keeps it in the text)."""
    return str(exc).startswith("NOSCRIPT") or type(exc).__name__ == "NoScriptError"


def _bad_response(exc: BadResponse) -> tuple[str, bool, bool]:
    status = exc.status
    if status in (401, 403):
        return (
            f"authentication failed (HTTP {status}): check the token "
            f"(UPSTASH_REDIS_REST_TOKEN); {exc.detail}",
            False,
            False,
        )
    if status == 429:
        return (f"rate limited (HTTP 429): {exc.detail}", False, True)
    if status >= 500:
        # A gateway error: the request may or may not have reached the database.
        return (f"server or gateway error (HTTP {status}): {exc.detail}", True, True)
    if status == 200:
        return (f"unreadable reply from the REST API: {exc.detail}", True, False)
    return (f"request refused (HTTP {status}): {exc.detail}", False, False)


def _classify_http(exc: BaseException) -> tuple[str, bool, bool] | None:
    """httpx's and upstash-redis's failures, or None when ``exc`` is neither."""
    if isinstance(exc, BadResponse):
        return _bad_response(exc)
    if isinstance(exc, json.JSONDecodeError):
        return (f"reply is not JSON: {exc}", True, False)
    try:
        import httpx
    except ImportError:
        return None
    # Never left this machine: certainly not applied.
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
        return (f"could not connect: {type(exc).__name__}: {exc}", False, True)
    if isinstance(exc, httpx.TimeoutException):
        return (f"no reply within the timeout ({type(exc).__name__})", True, True)
    if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError):
        return (f"connection closed mid-request: {type(exc).__name__}: {exc}", True, True)
    if isinstance(exc, httpx.HTTPError):
        return (f"{type(exc).__name__}: {exc}", True, True)
    if type(exc).__name__ == "UpstashError":
        text = str(exc)
        if text.startswith("Error decoding data"):
            return (f"unreadable reply from the REST API: {text}", True, False)
        return (f"server replied with an error: {text}", False, text.startswith(_TRANSIENT_REPLIES))
    return None


def _classify_redis(exc: BaseException) -> tuple[str, bool, bool] | None:
    try:
        from redis import exceptions as rx
    except ImportError:  # pragma: no cover - redis-py is absent only without any Redis backend
        return None
    if isinstance(exc, rx.AuthenticationError | rx.AuthorizationError):
        return (f"authentication failed: {exc}", False, False)
    if isinstance(exc, rx.ConnectionError | rx.TimeoutError):
        return (f"connection lost or timed out: {exc}", True, True)
    if isinstance(exc, rx.ResponseError):
        text = str(exc)
        return (f"server replied with an error: {text}", False, text.startswith(_TRANSIENT_REPLIES))
    if isinstance(exc, rx.RedisError):
        return (f"{type(exc).__name__}: {exc}", True, True)
    if type(exc).__name__ == "RedisClusterException":
        # Raised by redis-py when no node of the cluster can be reached.
        return (f"cluster unreachable: {exc}", True, True)
    return None


def _classify(exc: BaseException) -> tuple[str, bool, bool]:
    """(message, may_have_applied, transient) for one exception."""
    found = _classify_redis(exc) or _classify_http(exc)
    if found is not None:
        return found
    if isinstance(exc, ConnectionError | TimeoutError | OSError):
        return (f"connection lost or timed out: {exc}", True, True)
    return (f"{type(exc).__name__}: {exc}", True, False)


def is_transient(exc: BaseException) -> bool:
    """Worth repeating as is (the SDK's own retry loop asks this)."""
    return _classify(exc)[2]


def translate(exc: Exception, op: Operation[Any]) -> CreditsError:
    """The CreditsError to raise (``from exc``) for an exception a backend raised."""
    if isinstance(exc, CreditsError):
        return exc
    message, may_have_applied, transient = _classify(exc)
    if not isinstance(op.request, ScriptCall):
        # Reads change nothing: always safe to repeat.
        return BackendError(message, operation=op.name, may_have_applied=False, retry_safe=True)
    # A mutation is safe to repeat with the same idempotency key whatever happened: the
    # script applies it at most once. initialize_user is once-per-account by construction.
    return BackendError(
        message,
        operation=op.name,
        may_have_applied=may_have_applied,
        retry_safe=transient or may_have_applied or op.idempotency_key is not None,
        idempotency_key=op.idempotency_key,
    )
