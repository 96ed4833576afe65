"""The one place where a backend's failure becomes :class:`BackendError`.

Each backend reads its own client library's exceptions (``classify``, by ``isinstance``
on that library's classes, in the backend's module) into a :class:`~.recovery.Failure`;
clients hand whatever a backend raised to :func:`translate`, and nothing else in the SDK
catches a client library's exception types. What is common to every backend lives here:
the operating system's view (:func:`classify_os`) and the rule for ``retry_safe``.

``may_have_applied`` is False only when the request provably was not carried out: it
never left this machine (connection refused, DNS failure; see :func:`never_left`), or the
server answered that it did not run it. Everything else (a timeout, a connection closed
mid-request, a gateway error, an error raised inside a script, which Redis does not roll
back) may have applied.

A TypeError or AttributeError is not a failure at all but a defect (in the SDK, or a
client library's API changed under it): it propagates as it is (see ``recovery.BUGS``).
"""

from __future__ import annotations

import socket
from typing import Any

from .._core.requests import Operation, ScriptCall
from ..errors import BackendError, CreditsError
from .recovery import Failure, GaveUp, is_bug

__all__ = [
    "NOT_RUN_REPLIES",
    "TRANSIENT_REPLIES",
    "BadResponse",
    "classify_os",
    "classify_reply",
    "never_left",
    "translate",
]

# Error replies that mean "not executed, try again later".
TRANSIENT_REPLIES = (
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
# Error replies given before a command runs: it changed nothing.
NOT_RUN_REPLIES = (
    *TRANSIENT_REPLIES,
    "NOSCRIPT",
    "NOAUTH",
    "NOPERM",
    "WRONGPASS",
    "ERR unknown command",
    "ERR wrong number of arguments",
)


class BadResponse(Exception):
    """An HTTP backend got a reply that is not a Redis reply: a status other than 200 (or
    400 with a Redis error), or a body that is not the expected JSON shape. Raised by the
    Upstash backend's response check and classified there, by status."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status
        self.detail = detail


def never_left(exc: BaseException) -> bool:
    """True when the exception, or one it was raised from, says the connection was never
    made: refused, or the host name did not resolve. Nothing was sent."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(seen, ConnectionRefusedError | socket.gaierror):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def classify_reply(text: str) -> Failure:
    """A Redis error reply, as text: transient, and whether the command may have run."""
    return Failure(
        message=f"server replied with an error: {text}",
        may_have_applied=not text.startswith(NOT_RUN_REPLIES),
        transient=text.startswith(TRANSIENT_REPLIES),
        noscript=text.startswith("NOSCRIPT"),
    )


def classify_os(exc: BaseException) -> Failure:
    """What any backend falls back on: the operating system's errors, else unknown."""
    if never_left(exc):
        return Failure(f"could not connect: {exc}", may_have_applied=False, transient=True)
    if isinstance(exc, ConnectionError | TimeoutError | OSError):
        return Failure(f"connection lost or timed out: {exc}", True, True)
    return Failure(f"{type(exc).__name__}: {exc}", True, False)


def translate(
    exc: Exception, op: Operation[Any], classify: Any
) -> tuple[CreditsError, BaseException]:
    """The CreditsError to raise for an exception a backend raised, and the exception to
    raise it from (the client library's own, also after several attempts).

    A defect (a TypeError or AttributeError raised inside the SDK or a client library,
    :data:`~.recovery.BUGS`) is no failure of the store: it is raised here as it is,
    never made a BackendError that says retrying is safe."""
    if is_bug(exc):
        raise exc
    if isinstance(exc, CreditsError):
        return exc, exc
    if isinstance(exc, GaveUp):
        failure = exc.failure
        cause: BaseException = exc.__cause__ or exc
    else:
        failure = classify(exc)
        cause = exc
    if not isinstance(op.request, ScriptCall) or op.request.read_only:
        # Reads change nothing: always safe to repeat.
        error = BackendError(
            failure.message, operation=op.name, may_have_applied=False, retry_safe=True
        )
        return error, cause
    # A mutation is safe to repeat with the same idempotency key whatever happened: the
    # script applies it at most once. initialize_user is once-per-account by construction.
    error = BackendError(
        failure.message,
        operation=op.name,
        may_have_applied=failure.may_have_applied,
        retry_safe=failure.transient or failure.may_have_applied or op.idempotency_key is not None,
        idempotency_key=op.idempotency_key,
    )
    return error, cause
