"""A catalogue of bad inputs: each is refused with the right error and changes nothing.

Every case runs against the same small ledger and compares a snapshot of it (balances, full
histories and lots of two accounts) taken before and after the refused call. The cases the
pure core refuses run once, on memory:// sync and async, proven to send nothing; the cases a
script refuses run over the ``client`` fixture (every backend and server line, sync and
async).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from sparked_credits import (
    MAX_CREDITS,
    AsyncCreditsClient,
    ConfigurationError,
    CreditsClient,
    CreditsError,
    EntryNotFoundError,
    InsufficientCreditsError,
    RefundError,
    ValidationError,
)

ACCT = "user_1"
OTHER = "user_2"
NEW = "user_new"  # never written: the initialize_user cases name it
ACTION = "chat_message"


@dataclass(frozen=True)
class Ledger:
    """Entry ids of the ledger every case starts from (see ``_build_ledger``)."""

    init: str
    debit: str  # 10 credits, not refunded
    credit: str
    refunded_debit: str  # 7 credits, fully refunded
    refund: str
    other_debit: str  # a debit on OTHER
    balance: int


def _build_ledger(client: Any) -> Ledger:
    init = client.initialize_user(ACCT)
    debit = client.debit(ACCT, 10, action=ACTION)
    credit = client.credit(ACCT, 5, source="purchase")
    refunded = client.debit(ACCT, 7, action=ACTION)
    refund = client.refund(ACCT, refunded.entry.id)
    client.initialize_user(OTHER)
    # Stream ids are per account: within one millisecond OTHER's ids can repeat ACCT's.
    # Take a debit whose id ACCT's ledger does not have, so it is really not found there.
    own = {e.id for e in client.history(ACCT, limit=1000).entries}
    other = client.debit(OTHER, 1, action=ACTION)
    while other.entry.id in own:
        other = client.debit(OTHER, 1, action=ACTION)
    assert init.entry is not None
    return Ledger(
        init=init.entry.id,
        debit=debit.entry.id,
        credit=credit.entry.id,
        refunded_debit=refunded.entry.id,
        refund=refund.entry.id,
        other_debit=other.entry.id,
        balance=refund.balance,
    )


def _snapshot(client: Any) -> dict[str, Any]:
    return {
        account: (
            client.get_balance(account),
            [e.model_dump() for e in client.history(account, limit=1000).entries],
            [g.model_dump() for g in client.grants(account)],
        )
        for account in (ACCT, OTHER)
    }


def _circular() -> dict[str, Any]:
    d: dict[str, Any] = {}
    d["self"] = d
    return d


# -- checks on the raised error, beyond its type and field --------------------------------


def _insufficient_debit(exc: Any, ledger: Ledger) -> None:
    assert exc.account == ACCT
    assert exc.balance == ledger.balance
    assert exc.required == 1000
    assert exc.action == ACTION
    assert exc.shortfall == 1000 - ledger.balance
    assert exc.http_status == 402


def _insufficient_adjust(exc: Any, ledger: Ledger) -> None:
    assert exc.account == ACCT
    assert exc.balance == ledger.balance
    assert exc.required == 1000
    assert exc.action == "correction"


def _not_found(exc: Any, ledger: Ledger) -> None:
    assert exc.account == ACCT
    assert exc.http_status == 404


def _not_found_1_0(exc: Any, ledger: Ledger) -> None:
    _not_found(exc, ledger)
    assert exc.entry_id == "1-0"


def _refund_refused(exc: Any, ledger: Ledger) -> None:
    assert exc.account == ACCT
    assert exc.http_status == 409


def _refund_exceeds(exc: Any, ledger: Ledger) -> None:
    assert exc.entry_id == ledger.debit
    assert exc.refundable == 10


Call = Callable[[Any, Ledger], object]
Check = Callable[[Any, Ledger], None]


def case(
    id: str,
    call: Call,
    error: type[Exception] = ValidationError,
    field: str | None = None,
    check: Check | None = None,
) -> Any:
    return pytest.param(call, error, field, check, id=id)


def debit(c: Any, amount: Any = 5, **kw: Any) -> object:
    kw.setdefault("action", ACTION)
    return c.debit(ACCT, amount, **kw)


CASES = [
    # -- amounts ----------------------------------------------------------------------
    case("debit-amount-float", lambda c, e: debit(c, 1.5), field="amount"),
    case("debit-amount-integral-float", lambda c, e: debit(c, 5.0), field="amount"),
    case("debit-amount-bool", lambda c, e: debit(c, True), field="amount"),
    case("debit-amount-str", lambda c, e: debit(c, "5"), field="amount"),
    case("debit-amount-none", lambda c, e: debit(c, None), field="amount"),
    case("debit-amount-zero", lambda c, e: debit(c, 0), field="amount"),
    case("debit-amount-negative", lambda c, e: debit(c, -5), field="amount"),
    case("debit-amount-2**53", lambda c, e: debit(c, 2**53), field="amount"),
    case("debit-amount-huge", lambda c, e: debit(c, 10**30), field="amount"),
    case("credit-amount-negative", lambda c, e: c.credit(ACCT, -1), field="amount"),
    case("credit-amount-2**53", lambda c, e: c.credit(ACCT, 2**53), field="amount"),
    case("credit-amount-float", lambda c, e: c.credit(ACCT, 2.0), field="amount"),
    case(
        "credit-overflows-balance",
        lambda c, e: c.credit(ACCT, MAX_CREDITS),
        field="amount",
    ),
    # -- accounts ---------------------------------------------------------------------
    case("account-empty", lambda c, e: c.debit("", 5, action=ACTION), field="account"),
    case("account-129-chars", lambda c, e: c.credit("u" * 129, 5), field="account"),
    case("account-space", lambda c, e: c.credit("user 1", 5), field="account"),
    case("account-tab", lambda c, e: c.credit("user\t1", 5), field="account"),
    case("account-trailing-newline", lambda c, e: c.credit("user_1\n", 5), field="account"),
    case("account-braces", lambda c, e: c.credit("{user_1}", 5), field="account"),
    case("account-open-brace", lambda c, e: c.credit("user{1", 5), field="account"),
    case("account-nul", lambda c, e: c.credit("user\x00", 5), field="account"),
    case("account-escape", lambda c, e: c.credit("user\x1b[0m", 5), field="account"),
    case("account-del", lambda c, e: c.credit("user\x7f", 5), field="account"),
    case("account-int", lambda c, e: c.credit(1, 5), field="account"),
    case("account-none", lambda c, e: c.credit(None, 5), field="account"),
    case("account-bytes", lambda c, e: c.credit(b"user_1", 5), field="account"),
    # Regression: C1 controls (U+0080-U+009F) used to pass the account check.
    case(
        "account-c1-control",
        lambda c, e: c.credit("user\x9b31m", 5),
        field="account",
    ),
    # Regression: a lone surrogate used to pass, then fail UTF-8 encoding.
    case(
        "account-lone-surrogate",
        lambda c, e: c.credit("user\ud800", 5),
        field="account",
    ),
    case("get-balance-account-empty", lambda c, e: c.get_balance(""), field="account"),
    case("history-account-space", lambda c, e: c.history("user 1"), field="account"),
    case("init-account-braces", lambda c, e: c.initialize_user("{a}"), field="account"),
    case("adjust-account-newline", lambda c, e: c.adjust("a\nb", 5), field="account"),
    case("refund-account-int", lambda c, e: c.refund(7, e.debit), field="account"),
    # -- labels: action, source -------------------------------------------------------
    case("debit-action-none", lambda c, e: debit(c, action=None), field="action"),
    case("debit-action-missing", lambda c, e: c.debit(ACCT, 5), error=TypeError),
    case("debit-action-empty", lambda c, e: debit(c, action=""), field="action"),
    case("debit-action-spaces", lambda c, e: debit(c, action="chat message"), field="action"),
    case("debit-action-65-chars", lambda c, e: debit(c, action="a" * 65), field="action"),
    case("debit-action-int", lambda c, e: debit(c, action=42), field="action"),
    case("debit-action-leading-dash", lambda c, e: debit(c, action="-chat"), field="action"),
    case("credit-source-spaces", lambda c, e: c.credit(ACCT, 5, source="a b"), field="source"),
    case("adjust-action-non-str", lambda c, e: c.adjust(ACCT, 5, action=1), field="action"),
    case("credit-source-empty", lambda c, e: c.credit(ACCT, 5, source=""), field="source"),
    case("credit-source-pipe", lambda c, e: c.credit(ACCT, 5, source="a|b"), field="source"),
    case("credit-source-int", lambda c, e: c.credit(ACCT, 5, source=7), field="source"),
    # -- credit lots: expiry and priority ---------------------------------------------
    case(
        "credit-expires-naive",
        lambda c, e: c.credit(ACCT, 5, expires_at=datetime(2999, 1, 1)),
        field="expires_at",
    ),
    case(
        "credit-expires-past",
        lambda c, e: c.credit(ACCT, 5, expires_at=datetime.now(timezone.utc) - timedelta(1)),
        field="expires_at",
    ),
    case(
        "credit-expires-now",
        lambda c, e: c.credit(ACCT, 5, expires_at=datetime.now(timezone.utc)),
        field="expires_at",
    ),
    case(
        "credit-expires-year-3500",
        lambda c, e: c.credit(ACCT, 5, expires_at=datetime(3500, 1, 1, tzinfo=timezone.utc)),
        field="expires_at",
    ),
    case(
        "credit-expires-str",
        lambda c, e: c.credit(ACCT, 5, expires_at="2999-01-01T00:00:00Z"),
        field="expires_at",
    ),
    case(
        "credit-expires-timestamp",
        lambda c, e: c.credit(ACCT, 5, expires_at=32503680000),
        field="expires_at",
    ),
    case(
        "credit-expires-timedelta",
        lambda c, e: c.credit(ACCT, 5, expires_at=timedelta(days=1)),
        field="expires_at",
    ),
    case("credit-priority-101", lambda c, e: c.credit(ACCT, 5, priority=101), field="priority"),
    case("credit-priority-negative", lambda c, e: c.credit(ACCT, 5, priority=-1), field="priority"),
    case("credit-priority-float", lambda c, e: c.credit(ACCT, 5, priority=1.0), field="priority"),
    case("credit-priority-bool", lambda c, e: c.credit(ACCT, 5, priority=True), field="priority"),
    case("credit-priority-str", lambda c, e: c.credit(ACCT, 5, priority="1"), field="priority"),
    case("credit-priority-none", lambda c, e: c.credit(ACCT, 5, priority=None), field="priority"),
    case("grants-account-space", lambda c, e: c.grants("user 1"), field="account"),
    # -- reason -----------------------------------------------------------------------
    case("reason-501-chars", lambda c, e: debit(c, reason="x" * 501), field="reason"),
    case("reason-nul", lambda c, e: debit(c, reason="a\x00b"), field="reason"),
    case("reason-escape", lambda c, e: debit(c, reason="\x1b[31mred"), field="reason"),
    case("reason-unit-separator", lambda c, e: debit(c, reason="a\x1fb"), field="reason"),
    case("reason-int", lambda c, e: debit(c, reason=42), field="reason"),
    # Regression: C1 controls used to pass the reason check.
    case(
        "reason-c1-control",
        lambda c, e: debit(c, reason="\x9b31mred"),
        field="reason",
    ),
    # Regression: used to escape as UnicodeEncodeError from the fingerprint.
    case(
        "reason-lone-surrogate",
        lambda c, e: debit(c, reason="bad \ud800"),
        field="reason",
    ),
    case(
        "init-reason-control",
        lambda c, e: c.initialize_user(NEW, reason="\x07"),
        field="reason",
    ),
    # -- metadata ---------------------------------------------------------------------
    case("metadata-list", lambda c, e: debit(c, metadata=[1, 2]), field="metadata"),
    case("metadata-json-str", lambda c, e: debit(c, metadata='{"a": 1}'), field="metadata"),
    case("metadata-object", lambda c, e: debit(c, metadata={"o": object()}), field="metadata"),
    case("metadata-set", lambda c, e: debit(c, metadata={"s": {1, 2}}), field="metadata"),
    case("metadata-nan", lambda c, e: debit(c, metadata={"x": float("nan")}), field="metadata"),
    case("metadata-inf", lambda c, e: debit(c, metadata={"x": float("inf")}), field="metadata"),
    case("metadata-circular", lambda c, e: debit(c, metadata=_circular()), field="metadata"),
    case(
        "metadata-mixed-key-types",
        lambda c, e: debit(c, metadata={1: "a", "b": 2}),
        field="metadata",
    ),
    case(
        "metadata-over-4KiB",
        lambda c, e: debit(c, metadata={"blob": "x" * 4096}),
        field="metadata",
    ),
    case(
        "metadata-over-4KiB-in-utf8-bytes",
        lambda c, e: c.credit(ACCT, 5, metadata={"blob": "\u00e9" * 2100}),
        field="metadata",
    ),
    # Regression: used to escape as UnicodeEncodeError (encode() outside the try).
    case(
        "metadata-lone-surrogate",
        lambda c, e: debit(c, metadata={"k": "\ud800"}),
        field="metadata",
    ),
    # -- idempotency keys -------------------------------------------------------------
    case("idem-key-empty", lambda c, e: debit(c, idempotency_key=""), field="idempotency_key"),
    case("idem-key-space", lambda c, e: debit(c, idempotency_key="a b"), field="idempotency_key"),
    case(
        "idem-key-newline",
        lambda c, e: c.credit(ACCT, 5, idempotency_key="key\n"),
        field="idempotency_key",
    ),
    case(
        "idem-key-non-ascii",
        lambda c, e: debit(c, idempotency_key="cl\u00e9"),
        field="idempotency_key",
    ),
    case(
        "idem-key-129-chars",
        lambda c, e: debit(c, idempotency_key="k" * 129),
        field="idempotency_key",
    ),
    case("idem-key-int", lambda c, e: debit(c, idempotency_key=123), field="idempotency_key"),
    case(
        "idem-key-bytes",
        lambda c, e: c.adjust(ACCT, 1, idempotency_key=b"k"),
        field="idempotency_key",
    ),
    # -- refunds ----------------------------------------------------------------------
    case("refund-entry-id-garbage", lambda c, e: c.refund(ACCT, "abc"), field="entry_id"),
    case(
        "refund-entry-id-no-seq",
        lambda c, e: c.refund(ACCT, "1732406400000"),
        field="entry_id",
    ),
    case(
        "refund-entry-id-trailing-newline",
        lambda c, e: c.refund(ACCT, e.debit + "\n"),
        field="entry_id",
    ),
    case(
        "refund-entry-id-int",
        lambda c, e: c.refund(ACCT, 1732406400000),
        field="entry_id",
    ),
    # Regression: \d matched non-ASCII digits (then blamed idempotency_key).
    case(
        "refund-entry-id-unicode-digits",
        lambda c, e: c.refund(ACCT, "\u0661\u0662-\u0660"),
        field="entry_id",
    ),
    # Regression: 20 digits past 2**64-1 used to reach Redis: BackendError.
    case(
        "refund-entry-id-over-u64",
        lambda c, e: c.refund(ACCT, "99999999999999999999-0"),
        field="entry_id",
    ),
    case(
        "refund-nonexistent-entry",
        lambda c, e: c.refund(ACCT, "1-0"),
        error=EntryNotFoundError,
        check=_not_found_1_0,
    ),
    case(
        "refund-other-accounts-debit",
        lambda c, e: c.refund(ACCT, e.other_debit, amount=1),
        error=EntryNotFoundError,
        check=_not_found,
    ),
    case(
        "refund-credit-entry",
        lambda c, e: c.refund(ACCT, e.credit),
        error=RefundError,
        check=_refund_refused,
    ),
    case(
        "refund-init-entry",
        lambda c, e: c.refund(ACCT, e.init, amount=1),
        error=RefundError,
        check=_refund_refused,
    ),
    case(
        "refund-a-refund-entry",
        lambda c, e: c.refund(ACCT, e.refund, amount=1),
        error=RefundError,
        check=_refund_refused,
    ),
    case(
        "refund-already-fully-refunded",
        lambda c, e: c.refund(ACCT, e.refunded_debit, amount=1),
        error=RefundError,
        check=_refund_refused,
    ),
    case(
        "refund-more-than-debit",
        lambda c, e: c.refund(ACCT, e.debit, amount=11),
        error=RefundError,
        check=_refund_exceeds,
    ),
    case("refund-amount-zero", lambda c, e: c.refund(ACCT, e.debit, amount=0), field="amount"),
    case(
        "refund-amount-float",
        lambda c, e: c.refund(ACCT, e.debit, amount=2.5),
        field="amount",
    ),
    # -- adjust -----------------------------------------------------------------------
    case("adjust-delta-zero", lambda c, e: c.adjust(ACCT, 0), field="delta"),
    case("adjust-delta-float", lambda c, e: c.adjust(ACCT, -1.0), field="delta"),
    case("adjust-delta-bool", lambda c, e: c.adjust(ACCT, True), field="delta"),
    case("adjust-delta-minus-2**53", lambda c, e: c.adjust(ACCT, -(2**53)), field="delta"),
    case(
        "adjust-overdraft-str",
        lambda c, e: c.adjust(ACCT, -1, allow_overdraft="yes"),
        field="allow_overdraft",
    ),
    case(
        "adjust-overdraft-int",
        lambda c, e: c.adjust(ACCT, -1, allow_overdraft=1),
        field="allow_overdraft",
    ),
    case(
        "adjust-below-zero-without-overdraft",
        lambda c, e: c.adjust(ACCT, -1000, action="correction"),
        error=InsufficientCreditsError,
        check=_insufficient_adjust,
    ),
    # Regression: overflow used to be reported on field 'amount'.
    case(
        "adjust-overflows-balance",
        lambda c, e: c.adjust(ACCT, MAX_CREDITS),
        field="delta",
    ),
    # -- history ----------------------------------------------------------------------
    case("history-limit-0", lambda c, e: c.history(ACCT, limit=0), field="limit"),
    case("history-limit-1001", lambda c, e: c.history(ACCT, limit=1001), field="limit"),
    case("history-limit-bool", lambda c, e: c.history(ACCT, limit=True), field="limit"),
    case("history-limit-str", lambda c, e: c.history(ACCT, limit="10"), field="limit"),
    case("history-cursor-garbage", lambda c, e: c.history(ACCT, cursor="abc"), field="cursor"),
    case(
        "history-cursor-special-id",
        lambda c, e: c.history(ACCT, cursor="+"),
        field="cursor",
    ),
    case("history-cursor-int", lambda c, e: c.history(ACCT, cursor=5), field="cursor"),
    # Regression: \d matched non-ASCII digits: BackendError.
    case(
        "history-cursor-unicode-digits",
        lambda c, e: c.history(ACCT, cursor="\u0663-\u0660"),
        field="cursor",
    ),
    # Regression: 20 digits past 2**64-1 used to reach Redis: BackendError.
    case(
        "history-cursor-over-u64",
        lambda c, e: c.history(ACCT, cursor="99999999999999999999-0"),
        field="cursor",
    ),
    # -- initialize_user ----------------------------------------------------------------
    case("init-credits-negative", lambda c, e: c.initialize_user(NEW, -1), field="credits"),
    case("init-credits-float", lambda c, e: c.initialize_user(NEW, 10.0), field="credits"),
    case("init-credits-bool", lambda c, e: c.initialize_user(NEW, True), field="credits"),
    case("init-credits-2**53", lambda c, e: c.initialize_user(NEW, 2**53), field="credits"),
    # -- the balance --------------------------------------------------------------------
    case(
        "debit-beyond-balance",
        lambda c, e: c.debit(ACCT, 1000, action=ACTION),
        error=InsufficientCreditsError,
        check=_insufficient_debit,
    ),
]


# The cases a script refuses (the store must be asked); every other case is refused by the
# pure core's validation before anything is sent, so it runs once, on memory://, where a
# counter proves that no command reached the store. The script's own refusals run on every
# backend and server line, sync and async.
REFUSED_BY_SCRIPT = {
    "credit-overflows-balance",
    "refund-nonexistent-entry",
    "refund-other-accounts-debit",
    "refund-credit-entry",
    "refund-init-entry",
    "refund-a-refund-entry",
    "refund-already-fully-refunded",
    "refund-more-than-debit",
    "adjust-below-zero-without-overdraft",
    "adjust-overflows-balance",
    "debit-beyond-balance",
}
SCRIPT_CASES = [c for c in CASES if c.id in REFUSED_BY_SCRIPT]
VALIDATION_CASES = [c for c in CASES if c.id not in REFUSED_BY_SCRIPT]


def _count_sends(client: Any) -> list[int]:
    """Count what the client sends to its store from now on (sync or async client)."""
    real = getattr(client, "_client", client)
    backend = real._backend
    sent = [0]
    execute = backend.execute

    def counted(request: Any) -> Any:
        sent[0] += 1
        return execute(request)

    backend.execute = counted
    return sent


def _refused_and_unchanged(
    client: Any, call: Call, error: type[Exception], field: str | None, check: Check | None
) -> int:
    """Run one case; return how many requests it sent to the store."""
    ledger = _build_ledger(client)
    before = _snapshot(client)
    sent = _count_sends(client)

    with pytest.raises(error) as info:
        call(client, ledger)
    refused_with = sent[0]

    exc = info.value
    if error is not TypeError:
        assert isinstance(exc, CreditsError)
    if error is ValidationError:
        assert isinstance(exc, ValueError)
        assert exc.field == field, str(exc)
        assert exc.to_dict()["field"] == field
        assert exc.http_status == 422
    if check is not None:
        check(exc, ledger)
    assert _snapshot(client) == before
    # Nothing written for the account the initialize_user cases name either.
    assert client.get_balance(NEW) == 0
    assert client.history(NEW).entries == []
    return refused_with


@pytest.mark.parametrize("backend_url", ["memory"], indirect=True)
@pytest.mark.parametrize(("call", "error", "field", "check"), VALIDATION_CASES)
def test_bad_input_is_refused_before_the_store(
    client: Any,
    call: Call,
    error: type[Exception],
    field: str | None,
    check: Check | None,
) -> None:
    assert _refused_and_unchanged(client, call, error, field, check) == 0


@pytest.mark.parametrize(("call", "error", "field", "check"), SCRIPT_CASES)
def test_bad_input_is_refused_by_the_script_and_changes_nothing(
    client: Any,
    call: Call,
    error: type[Exception],
    field: str | None,
    check: Check | None,
) -> None:
    assert _refused_and_unchanged(client, call, error, field, check) > 0


# -- configuration -------------------------------------------------------------------------

CONFIG_CASES = [
    pytest.param("ftp://localhost", {}, id="url-unknown-scheme"),
    pytest.param("https://example.upstash.io", {}, id="url-upstash-without-token"),
    pytest.param("redis+cluster://", {}, id="url-cluster-without-nodes"),
    pytest.param("redis://localhost:1", {"token": "secret"}, id="token-with-redis-url"),
    pytest.param("notaurl", {}, id="url-without-scheme"),
    pytest.param("", {}, id="url-empty"),
    pytest.param(None, {}, id="url-none"),
    pytest.param("memory://", {"default_credits": -1}, id="default-credits-negative"),
    pytest.param("memory://", {"default_credits": 2**53}, id="default-credits-2**53"),
    pytest.param("memory://", {"default_credits": 1.5}, id="default-credits-float"),
    pytest.param("memory://", {"app": "my app"}, id="app-with-spaces"),
    pytest.param("memory://", {"app": "a" * 65}, id="app-too-long"),
    pytest.param("memory://", {"key_prefix": "{tenant}:"}, id="key-prefix-braces"),
    pytest.param("memory://", {"key_prefix": "ten ant:"}, id="key-prefix-space"),
    pytest.param("memory://", {"token": "secret"}, id="token-with-memory-url"),
    pytest.param("memory://", {"auto_initialize": "yes"}, id="auto-initialize-str"),
    pytest.param("memory://", {"no_such_option": 1}, id="unknown-option"),
]


@pytest.mark.parametrize("cls", [CreditsClient, AsyncCreditsClient])
@pytest.mark.parametrize(("url", "options"), CONFIG_CASES)
def test_bad_configuration_is_refused(cls: type, url: Any, options: dict[str, Any]) -> None:
    expected: type[Exception] = TypeError if "no_such_option" in options else ConfigurationError
    with pytest.raises(expected):
        cls(url, **options)
