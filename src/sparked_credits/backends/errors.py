"""The one place where a backend's exceptions become :class:`BackendError`.

Clients call :func:`translate` for anything a backend raises; nothing else in the SDK
catches a client library's exception types. The translation says whether the request may
have been applied (the reply was lost) and whether repeating it is safe.
"""

from __future__ import annotations

from typing import Any

from ..errors import BackendError, CreditsError
from ..requests import CommandCall, Operation

__all__ = ["translate"]

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


def _classify(exc: BaseException) -> tuple[str, bool, bool]:
    """(message, may_have_applied, transient) for one exception."""
    try:
        from redis import exceptions as rx
    except ImportError:  # pragma: no cover - redis-py is absent only without any Redis backend
        rx = None  # type: ignore[assignment]
    if rx is not None:
        if isinstance(exc, rx.AuthenticationError | rx.AuthorizationError):
            return (f"authentication failed: {exc}", False, False)
        if isinstance(exc, rx.ConnectionError | rx.TimeoutError):
            return (f"connection lost or timed out: {exc}", True, True)
        if isinstance(exc, rx.ResponseError):
            text = str(exc)
            return (
                f"server replied with an error: {text}",
                False,
                text.startswith(_TRANSIENT_REPLIES),
            )
        if isinstance(exc, rx.RedisError):
            return (f"{type(exc).__name__}: {exc}", True, True)
    if isinstance(exc, ConnectionError | TimeoutError | OSError):
        return (f"connection lost or timed out: {exc}", True, True)
    return (f"{type(exc).__name__}: {exc}", True, False)


def translate(exc: Exception, op: Operation[Any]) -> CreditsError:
    """The CreditsError to raise (``from exc``) for an exception a backend raised."""
    if isinstance(exc, CreditsError):
        return exc
    message, may_have_applied, transient = _classify(exc)
    if isinstance(op.request, CommandCall):
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
