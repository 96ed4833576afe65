"""The idempotent-request decisions (``RequestFlow``), without any store: what each
outcome asks the record to do. The integrations only run these steps."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from sparked_credits._core.options import make_options
from sparked_credits.errors import BackendError, InsufficientCreditsError, ValidationError
from sparked_credits.integrations import idempotency as idem
from sparked_credits.integrations.http_errors import HTTPRefusal

OPTIONS = make_options(app="app.sparked.world")


def flow(header: str | None = "k1", body: bytes = b'{"a": 1}',
         field: str | None = None) -> idem.RequestFlow:
    return idem.RequestFlow.open(OPTIONS, "user_1", "chat", timedelta(seconds=60), "POST",
                                 header, body, field)


def args(op: Any) -> tuple[str, ...]:
    return tuple(op.request.args)


def test_the_request_id_and_its_scope() -> None:
    assert not flow(header=None).tracked
    assert flow(header=None, body=b'{"id": "b1"}', field="id").ctx.key == "b1"
    assert flow(header="h1", body=b'{"id": "b1"}', field="id").ctx.key == "h1"
    assert not flow(header=None, body=b"{", field="id").tracked  # the route answers 422
    for bad in ("has space", "é", "x" * 201):
        with pytest.raises(ValidationError):
            flow(header=bad)
    with pytest.raises(ValidationError):
        flow(header=None, body=json.dumps({"id": 5}).encode(), field="id")
    one, other = flow(), flow(body=b'{"a": 2}')
    assert one.fp != other.fp  # another body: another fingerprint, a conflict
    assert one.begin().request.keys == other.begin().request.keys
    assert "{user_1}" in one.begin().request.keys[0]  # one slot with the account's keys


def test_begun_replays_or_sets_the_attempt() -> None:
    f = flow()
    done = idem.Done(200, "application/json", b"{}")
    assert f.begun(done) is done
    assert f.begun(idem.Started(3)) is None
    assert f.ctx.attempt == 3
    assert f.ctx.charge_key().endswith(".3")  # a new charge key for a new attempt


@pytest.mark.parametrize(("exc", "used", "mode"), [
    (RuntimeError("boom"), False, "forget"),  # never asked for a charge key
    (RuntimeError("boom"), True, "next"),  # asked: the handler refunded or never charged
    (HTTPRefusal(502, "generation_failed", "x"), True, "next"),
    (InsufficientCreditsError("user_1", 0, 10, "chat_message"), True, "next"),
    (BackendError("lost", operation="charge", may_have_applied=True,
                  retry_safe=True), True, "same"),  # the charge may stand
])
def test_failed_attempts(exc: BaseException, used: bool, mode: str) -> None:
    f = flow()
    if used:
        f.ctx.charge_key()
    assert args(f.failed(exc))[0] == "fail"
    assert args(f.failed(exc))[-1] == mode


def test_answers_stored_or_not() -> None:
    f = flow()
    f.ctx.charge_key()
    op, stored = f.answered(200, "application/json", b'{"ok": true}')
    assert stored
    assert args(op)[0] == "finish"
    assert args(op)[-3:] == ("200", "application/json", '{"ok": true}')
    for status, body in ((402, b"{}"), (503, b"{}"), (200, b"\xff"),
                         (200, b"x" * (idem.MAX_STORED_BODY + 1)), (200, None)):
        op, stored = f.answered(status, "application/json", body)
        assert not stored
        assert args(op)[0] == "fail"
    assert args(f.answered(503, "", b"")[0])[-1] == "same"
