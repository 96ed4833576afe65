"""Idempotent HTTP requests: one request id, one piece of work, one answer.

``charge(idempotency_key=...)`` makes a *charge* happen once. A route does more than
charge: it runs the work and answers. If a client reuses a request id with another body,
a charge keyed on the id replays and the new work runs for free; if the client retries
after a lost answer, the work runs again. This module makes the *request* happen once.

A request names its id in the ``Idempotency-Key`` header (or a body field the route
chooses). The id is bound to the account, the route (its scope) and a digest of the body,
in one record kept in the credits store beside the balances:

* first time: the record is created (state ``running``, with a lease) and the handler runs;
  its answer (status and body) is stored with the record when it is a success (< 400);
* a repeat with the same body: the stored answer, without running the handler, with the
  header ``Idempotent-Replayed: true``;
* the same id with another body: 409 ``idempotency_conflict``;
* a repeat while the first is still running: 409 ``request_in_progress`` (Retry-After);
* the first attempt failed (an error answer or an exception): the record is forgotten when
  the handler never asked for a charge key (nothing can have been charged), else kept so
  that a retry with the same body runs again: with the *same* charge keys after a
  :class:`~sparked_credits.BackendError` (the charge may have applied: the retry replays
  it), with *new* ones after any other failure (the handler refunded or never charged).
* a process that dies between its charge and its stored answer leaves the record
  ``running``; once the lease runs out, a retry takes over with the same charge keys, so
  the charge replays instead of happening twice.

Records live ``2 x idempotency_ttl`` of the client (the longest a charge key is
remembered), so a request is never re-run while its charge could still replay.
Each step is one atomic script on the record's one key (``request:{<account>}:...``).
This module is pure: the framework integrations run its operations through the client.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from importlib import resources
from typing import Any, Literal

from .._core.options import ClientOptions
from .._core.requests import Operation, ScriptCall
from .._core.scripts import Script
from ..errors import BackendError, CreditsError, IdempotencyConflictError, ValidationError

__all__ = [
    "IDEMPOTENCY_HEADER",
    "REPLAYED_HEADER",
    "Done",
    "IdempotencySpec",
    "RequestConflictError",
    "RequestContext",
    "RequestFlow",
    "RequestInProgressError",
    "Started",
    "begin_operation",
    "fail_operation",
    "failure_mode",
    "finish_operation",
    "request_key",
    "storable_text",
]

IDEMPOTENCY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
DEFAULT_LEASE = timedelta(seconds=60)
MAX_STORED_BODY = 1024 * 1024
_KEY_RE = re.compile(r"[\x21-\x7e]{1,200}")

SCRIPT = Script(
    name="request_record",
    # The edge's own script, beside this module: it touches one request record, not an
    # account's ledger, so it has no place among the ledger's declared scripts in lua/.
    source=resources.files(__package__).joinpath("request_record.lua").read_text("utf-8"),
)


class RequestInProgressError(CreditsError):
    """The same request (id and body) is still being handled by another attempt (409)."""

    http_status = 409
    code = "request_in_progress"

    def __init__(self, key: str, retry_after: int) -> None:
        super().__init__(
            "a request with this Idempotency-Key is still in progress; retry after it ends"
        )
        self.idempotency_key = key
        self.retry_after = retry_after

    def to_dict(self) -> dict[str, Any]:
        return {
            **super().to_dict(),
            "idempotency_key": self.idempotency_key,
            "retry_after": self.retry_after,
        }


class RequestConflictError(IdempotencyConflictError):
    """The request id was already used on this route with another body (409)."""

    def __init__(self, account: str, key: str) -> None:
        super().__init__(account, key, differs=("body",))
        self.message = (
            "this Idempotency-Key was already used on this route with another request body: "
            "use a new key for a new request"
        )
        self.args = (self.message,)


@dataclass(frozen=True)
class IdempotencySpec:
    """How a route takes part: its scope (default: the route's path) and an optional body
    field holding the request id when the header is absent."""

    scope: str | None = None
    body_field: str | None = None
    lease: timedelta = DEFAULT_LEASE


@dataclass
class RequestContext:
    """What a handler sees of its idempotent request (``request.state.idempotent_request``
    in FastAPI, ``flask.g.idempotent_request`` in Flask).

    ``request_id`` is the client's id, or a fresh one when the client sent none. Derive
    every charge's key from it with :meth:`charge_key`: reading it tells the record that
    this attempt may charge, so a failure is then kept rather than forgotten.
    """

    account: str
    scope: str
    key: str | None
    attempt: int = 1
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    used: bool = False
    _fresh: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def request_id(self) -> str:
        self.used = True
        if self.key is None:
            return self._fresh
        digest = hashlib.sha256(f"{self.scope}\n{self.key}".encode()).hexdigest()[:32]
        return digest if self.attempt == 1 else f"{digest}.{self.attempt}"

    def charge_key(self, label: str = "charge") -> str:
        """An idempotency key for one SDK mutation of this request (``label`` tells two
        mutations of one request apart): the same on a retry that must replay it."""
        return f"{label}:{self.request_id}"


@dataclass(frozen=True)
class Started:
    attempt: int


@dataclass(frozen=True)
class Done:
    status: int
    content_type: str
    body: bytes


Begin = Started | Done


def request_key(
    header: str | None, body: bytes, body_field: str | None
) -> str | None:
    """The request id: the ``Idempotency-Key`` header, else the route's body field (a
    string in a JSON object body), else None (the request is not tracked)."""
    value: object = header
    where = IDEMPOTENCY_HEADER
    if not header and body_field:
        where = body_field
        try:
            parsed = json.loads(body) if body else None
        except (ValueError, RecursionError):
            return None  # the handler answers the malformed body (422)
        value = parsed.get(body_field) if isinstance(parsed, dict) else None
        if value is None:
            return None
    if not value:
        return None
    if not isinstance(value, str) or not _KEY_RE.fullmatch(value):
        raise ValidationError(where, "must be 1 to 200 printable ASCII characters, no spaces")
    return value


def _record_key(options: ClientOptions, account: str, scope: str, key: str) -> str:
    digest = hashlib.sha256(f"{scope}\n{key}".encode()).hexdigest()
    return f"{options.key_prefix}request:{{{account}}}:{digest}"


def _ttl_ms(options: ClientOptions) -> str:
    return str(int(options.idempotency_ttl.total_seconds() * 1000) * 2)


def canonical_body(body: bytes) -> bytes:
    """The body by its JSON meaning: parsed, keys sorted, no whitespace, so a retry that
    re-serialized the same JSON (other spacing, other key order) is the same request.
    A body that is not JSON (or not UTF-8) stays byte-exact. A body already in this form
    is unchanged, so its digest is the one earlier versions stored."""
    try:
        parsed = json.loads(body)
        return json.dumps(
            parsed, sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode()
    except (ValueError, RecursionError):  # JSONDecodeError, UnicodeDecodeError
        return body


def fingerprint(method: str, body: bytes) -> str:
    """The digest a request id is bound to: the method and the body's meaning."""
    return hashlib.sha256(method.upper().encode() + b"\n" + canonical_body(body)).hexdigest()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def begin_operation(
    options: ClientOptions, ctx: RequestContext, fp: str, lease: timedelta
) -> Operation[Begin]:
    assert ctx.key is not None
    key = _record_key(options, ctx.account, ctx.scope, ctx.key)
    lease_ms = str(max(1, int(lease.total_seconds() * 1000)))

    def decode(raw: Any) -> Begin:
        tag = _text(raw[0])
        if tag == "started":
            return Started(int(_text(raw[1])))
        if tag == "done":
            body = raw[3] if isinstance(raw[3], bytes) else str(raw[3]).encode()
            return Done(int(_text(raw[1])), _text(raw[2]), body)
        if tag == "running":
            raise RequestInProgressError(ctx.key or "", max(1, -(-int(_text(raw[1])) // 1000)))
        raise RequestConflictError(ctx.account, ctx.key or "")

    call = ScriptCall(SCRIPT, (key,), ("begin", fp, ctx.token, _ttl_ms(options), lease_ms))
    return Operation("request_begin", call, decode)


def finish_operation(
    options: ClientOptions,
    ctx: RequestContext,
    fp: str,
    status: int,
    content_type: str,
    body: str,
) -> Operation[str]:
    assert ctx.key is not None
    key = _record_key(options, ctx.account, ctx.scope, ctx.key)
    call = ScriptCall(
        SCRIPT,
        (key,),
        ("finish", fp, ctx.token, _ttl_ms(options), str(status), content_type, body),
    )
    return Operation("request_finish", call, lambda raw: _text(raw[0]))


FailureMode = Literal["forget", "next", "same"]


def failure_mode(ctx: RequestContext, exc: BaseException | None, status: int) -> FailureMode:
    """What a failed attempt leaves for the next one (see the module docstring)."""
    if not ctx.used:
        return "forget"
    if isinstance(exc, BackendError) or status == 503:
        return "same"
    return "next"


def fail_operation(
    options: ClientOptions, ctx: RequestContext, fp: str, mode: FailureMode
) -> Operation[str]:
    assert ctx.key is not None
    key = _record_key(options, ctx.account, ctx.scope, ctx.key)
    call = ScriptCall(SCRIPT, (key,), ("fail", fp, ctx.token, _ttl_ms(options), mode))
    return Operation("request_fail", call, lambda raw: _text(raw[0]))


def storable_text(status: int, body: bytes | None) -> str | None:
    """The body to keep, or None: only successes are kept and replayed (an error answer
    leaves the request retryable), and only text bodies of at most 1 MiB."""
    if status >= 400 or body is None or len(body) > MAX_STORED_BODY:
        return None
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return None


@dataclass
class RequestFlow:
    """The decisions of one idempotent request, without I/O.

    Each framework integration (async FastAPI, blocking Flask) runs the operations this
    hands out on its own client and reports the outcome back, so the rules above are
    written once::

        flow = RequestFlow.open(options, account, scope, lease, method, header, body, field)
        if flow.tracked:
            done = flow.begun(run(flow.begin()))   # a Done: answer it, replayed
            ... run the handler ...
            run(flow.failed(exc))                  # it raised
            op, stored = flow.answered(status, content_type, body)
            run(op)
    """

    options: ClientOptions
    ctx: RequestContext
    fp: str
    lease: timedelta

    @classmethod
    def open(
        cls,
        options: ClientOptions,
        account: str,
        scope: str,
        lease: timedelta,
        method: str,
        header: str | None,
        body: bytes,
        body_field: str | None,
    ) -> RequestFlow:
        """The request's flow: its id from the header or ``body_field`` (ValidationError
        when malformed); untracked (``tracked`` False) when it names none."""
        key = request_key(header, body, body_field)
        ctx = RequestContext(account=account, scope=scope, key=key)
        return cls(options, ctx, fingerprint(method, body), lease)

    @property
    def tracked(self) -> bool:
        return self.ctx.key is not None

    def begin(self) -> Operation[Begin]:
        return begin_operation(self.options, self.ctx, self.fp, self.lease)

    def begun(self, result: Begin) -> Done | None:
        """The stored answer to replay, or None: this attempt runs the handler."""
        if isinstance(result, Done):
            return result
        self.ctx.attempt = result.attempt
        return None

    def failed(self, exc: BaseException) -> Operation[str]:
        """The handler raised: what its record keeps for the next attempt."""
        status = exc.http_status if isinstance(exc, CreditsError) else 500
        mode = failure_mode(self.ctx, exc, status)
        return fail_operation(self.options, self.ctx, self.fp, mode)

    def answered(
        self, status: int, content_type: str, body: bytes | None
    ) -> tuple[Operation[str], bool]:
        """The handler answered: (the step storing it or failing the attempt, whether the
        answer was stored and will be replayed)."""
        stored = storable_text(status, body)
        if stored is None:
            mode = failure_mode(self.ctx, None, status)
            return fail_operation(self.options, self.ctx, self.fp, mode), False
        return (
            finish_operation(self.options, self.ctx, self.fp, status, content_type, stored),
            True,
        )
