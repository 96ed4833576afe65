"""What happens after a request fails: one pure procedure for every backend and both twins.

A backend sends a request once on its fast path. Only when that raises does it hand the
exception to :func:`recover`, a generator that decides, from the backend's own
classification, what to do next: EVAL the script after a NOSCRIPT, sleep and re-send after
a transient failure, or give up with :class:`GaveUp`, which sums up every attempt (a
request "may have applied" if any attempt may have). The twins carry the steps out with
:func:`~sparked_credits._drive.drive` or :func:`~sparked_credits._drive.drive_async`.

Re-sending is safe for every request the SDK makes: each script carries its idempotency
key (the server applies it once and a repeat replays the first outcome), and reads change
nothing.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .._core.steps import Sleep, Steps

__all__ = ["BUGS", "Failure", "GaveUp", "backoff", "is_bug", "recover", "summarize"]

BUGS: tuple[type[Exception], ...] = (TypeError, AttributeError, NameError, AssertionError)
"""Exceptions that are a defect in the SDK or in a client library (a wrong argument, an
attribute a library version lacks), never a failure of the store or the network. They
propagate as they are: not retried, and not wrapped in a BackendError whose
``retry_safe`` would invite the caller to repeat the same defect."""


def is_bug(exc: BaseException) -> bool:
    """True for an exception of :data:`BUGS` (subclasses included)."""
    return isinstance(exc, BUGS)


@dataclass(frozen=True, slots=True)
class Failure:
    """How one failed attempt is to be understood; a backend's ``classify`` returns it.

    ``may_have_applied`` is False only when the request provably was not carried out:
    it never left this machine (connection refused, DNS failure), or the server said it
    did not run it (NOSCRIPT, BUSY, LOADING, an HTTP 401). ``transient`` says repeating it
    as is may succeed. ``noscript`` marks the script-cache miss that EVAL answers.
    """

    message: str
    may_have_applied: bool
    transient: bool
    noscript: bool = False


class GaveUp(Exception):
    """Every attempt of one request failed; ``failure`` sums them up and ``__cause__`` is
    the last exception the client library raised."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure


def backoff(attempt: int) -> float:
    """Seconds to wait before retry number ``attempt`` (0-based): 20 ms doubling, capped
    at 0.5 s, with full jitter so many clients do not retry in step."""
    return random.uniform(0, min(0.5, 0.02 * 2**attempt))


def summarize(failures: list[Failure]) -> Failure:
    """One failure for several attempts: the last one's message and transience; applied
    if any attempt may have applied."""
    last = failures[-1]
    return Failure(
        message=last.message,
        may_have_applied=any(f.may_have_applied for f in failures),
        transient=last.transient,
    )


def recover(
    first: Exception,
    command: tuple[Any, ...],
    classify: Callable[[BaseException], Failure],
    retries: int,
    fallback: tuple[Any, ...] | None = None,
) -> Steps[Any]:
    """After ``command``'s first attempt raised ``first``: EVAL (``fallback``) on NOSCRIPT,
    re-send transient failures up to ``retries`` times with :func:`backoff`, else raise
    GaveUp. A defect (:func:`is_bug`) is raised as it is, at once. Returns the reply of
    the attempt that succeeded."""
    failures: list[Failure] = []
    exc: Exception = first
    attempt = 0
    while True:
        if is_bug(exc):
            raise exc
        failure = classify(exc)
        if failure.noscript and fallback is not None:
            command, fallback = fallback, None  # EVAL also caches the script again
        else:
            failures.append(failure)
            if attempt >= retries or not failure.transient:
                raise GaveUp(summarize(failures)) from exc
            yield Sleep(backoff(attempt))
            attempt += 1
        try:
            return (yield command)
        except Exception as error:  # the next attempt's failure, thrown in by the driver
            exc = error
