"""Clerk webhooks with real Svix signatures, and the events applied to a real store."""

from __future__ import annotations

import base64
import json
import os
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from svix.webhooks import Webhook

from conftest import AsyncFacade, ledger_sum
from sparked_credits import (
    AccountClosedError,
    AsyncCreditsClient,
    ConfigurationError,
    CreditsClient,
    EntryType,
    WebhookVerificationError,
)
from sparked_credits.clerk import (
    ClerkEvent,
    ahandle_clerk_event,
    handle_clerk_event,
    verify_cron_secret,
    verify_webhook,
)

SECRET = "whsec_" + base64.b64encode(os.urandom(24)).decode()


def event_body(type_: str = "user.created", id_: str = "user_new", **data: Any) -> bytes:
    payload = {"type": type_, "object": "event", "data": {"id": id_, **data}}
    return json.dumps(payload).encode()


def signed(
    body: bytes, msg_id: str = "msg_1", *, at: datetime | None = None, secret: str = SECRET
) -> dict[str, str]:
    at = at or datetime.now(timezone.utc)
    signature = Webhook(secret).sign(msg_id, at, body.decode())
    return {
        "svix-id": msg_id,
        "svix-timestamp": str(int(at.timestamp())),
        "svix-signature": signature,
    }


def test_valid_delivery_parsed() -> None:
    body = event_body(email_addresses=[])
    event = verify_webhook(body, signed(body), SECRET)
    assert event.type == "user.created"
    assert event.data["id"] == "user_new"
    assert event.svix_id == "msg_1"


def test_headers_case_insensitive() -> None:
    body = event_body()
    headers = {k.upper(): v for k, v in signed(body).items()}
    assert verify_webhook(body, headers, SECRET).type == "user.created"


def test_rotated_signature_list_accepted() -> None:
    """Svix sends several space-separated signatures while a secret rotates."""
    body = event_body()
    headers = signed(body)
    old = signed(body, secret="whsec_" + base64.b64encode(os.urandom(24)).decode())
    headers["svix-signature"] = f"{old['svix-signature']} {headers['svix-signature']}"
    assert verify_webhook(body, headers, SECRET).type == "user.created"


def test_forged_signature() -> None:
    body = event_body()
    forged = signed(body, secret="whsec_" + base64.b64encode(os.urandom(24)).decode())
    with pytest.raises(WebhookVerificationError) as info:
        verify_webhook(body, forged, SECRET)
    assert info.value.reason == "bad_signature"
    assert info.value.http_status == 400


def test_tampered_body() -> None:
    body = event_body()
    headers = signed(body)
    with pytest.raises(WebhookVerificationError) as info:
        verify_webhook(event_body(id_="user_other"), headers, SECRET)
    assert info.value.reason == "bad_signature"


@pytest.mark.parametrize("minutes", [-10, 10])
def test_stale_or_future_timestamp(minutes: int) -> None:
    body = event_body()
    at = datetime.now(timezone.utc) + timedelta(minutes=minutes)
    with pytest.raises(WebhookVerificationError) as info:
        verify_webhook(body, signed(body, at=at), SECRET)
    assert info.value.reason == "stale_timestamp"


def test_within_tolerance_accepted() -> None:
    body = event_body()
    at = datetime.now(timezone.utc) - timedelta(minutes=4)
    assert verify_webhook(body, signed(body, at=at), SECRET).type == "user.created"


@pytest.mark.parametrize(
    ("header", "value", "reason"),
    [
        ("svix-signature", "garbage-without-version", "malformed_headers"),
        ("svix-signature", "v1,@@@not-base64@@@", "malformed_headers"),
        ("svix-signature", "v1", "malformed_headers"),
        ("svix-timestamp", "yesterday", "malformed_headers"),
        ("svix-id", "", "missing_headers"),
        ("svix-signature", "", "missing_headers"),
    ],
)
def test_malformed_headers_are_verification_errors(header: str, value: str, reason: str) -> None:
    body = event_body()
    headers = signed(body)
    headers[header] = value
    with pytest.raises(WebhookVerificationError) as info:
        verify_webhook(body, headers, SECRET)
    assert info.value.reason == reason
    assert SECRET not in str(info.value)


def test_missing_headers() -> None:
    with pytest.raises(WebhookVerificationError, match="svix-id, svix-timestamp"):
        verify_webhook(event_body(), {}, SECRET)


def test_signed_but_not_an_event() -> None:
    for body in (b"[1, 2]", b"not json", json.dumps({"type": "x"}).encode()):
        with pytest.raises(WebhookVerificationError) as info:
            verify_webhook(body, signed(body), SECRET)
        assert info.value.reason == "malformed_body"


def test_bad_secret_is_configuration_error() -> None:
    body = event_body()
    with pytest.raises(ConfigurationError):
        verify_webhook(body, signed(body), "")
    with pytest.raises(ConfigurationError):
        verify_webhook(body, signed(body), "whsec_%%%")


# -- events on a real store -------------------------------------------------------------


@pytest.fixture
def store(redis_url: str) -> Any:
    client = CreditsClient(redis_url, app="app.sparked.world")
    yield client
    client.close()


def deliver(store: Any, body: bytes, msg_id: str) -> Any:
    event = verify_webhook(body, signed(body, msg_id), SECRET)
    return handle_clerk_event(store, event)


def test_user_created_three_times_grants_once(store: CreditsClient) -> None:
    body = event_body(id_="user_new")
    outcomes = [deliver(store, body, "msg_created") for _ in range(3)]
    assert [o.outcome for o in outcomes] == [
        "initialized", "already_initialized", "already_initialized"
    ]
    assert [o.duplicate for o in outcomes] == [False, True, True]
    assert store.get_balance("user_new") == 100
    entries = store.history("user_new").entries
    assert [e.type for e in entries] == [EntryType.INIT]
    assert "msg_created" in (entries[0].reason or "")


def test_replayed_svix_id_changes_nothing(store: CreditsClient) -> None:
    body = event_body(id_="user_r")
    deliver(store, body, "msg_same")
    store.debit("user_r", 30, action="chat_message")
    again = deliver(store, body, "msg_same")
    assert again.duplicate is True
    assert store.get_balance("user_r") == 70


def test_user_deleted_closes_account(store: CreditsClient) -> None:
    deliver(store, event_body(id_="user_d"), "m1")
    store.debit("user_d", 10, action="chat_message")
    first = deliver(store, event_body("user.deleted", "user_d", deleted=True), "m2")
    assert (first.outcome, first.balance) == ("closed", 90)
    again = deliver(store, event_body("user.deleted", "user_d", deleted=True), "m2")
    assert (again.outcome, again.duplicate) == ("already_closed", True)
    with pytest.raises(AccountClosedError):
        store.charge("user_d", "chat_message")
    assert ledger_sum(store, "user_d") == store.get_balance("user_d") == 90
    assert len(store.history("user_d").entries) == 3
    # A late (re)delivery of user.created grants nothing to the deleted user.
    late = deliver(store, event_body(id_="user_d"), "m1")
    assert late.outcome == "already_initialized"
    assert store.get_balance("user_d") == 90


def test_organization_created_only_when_enabled(store: CreditsClient) -> None:
    body = event_body("organization.created", "org_1", name="Acme")
    event = verify_webhook(body, signed(body, "m_org"), SECRET)
    assert handle_clerk_event(store, event).outcome == "ignored"
    assert store.get_balance("org_1") == 0
    done = handle_clerk_event(store, event, org_balances=True, org_credits=500)
    assert (done.outcome, done.balance) == ("initialized", 500)


def test_unknown_event_ignored(store: CreditsClient) -> None:
    outcome = deliver(store, event_body("session.created", "sess_1"), "m_x")
    assert (outcome.outcome, outcome.account) == ("ignored", None)


def test_async_handler(redis_url: str) -> None:
    facade = AsyncFacade(AsyncCreditsClient(redis_url, app="app.sparked.world"))
    event = ClerkEvent(type="user.created", data={"id": "user_async"}, svix_id="m_a")
    run = facade._loop.run_until_complete
    assert run(ahandle_clerk_event(facade._client, event)).outcome == "initialized"
    assert run(ahandle_clerk_event(facade._client, event)).duplicate is True
    assert facade.get_balance("user_async") == 100
    facade.close()


def test_cron_secret() -> None:
    assert verify_cron_secret("Bearer s3cret", "s3cret") is True
    assert verify_cron_secret("Bearer s3cre", "s3cret") is False
    assert verify_cron_secret("s3cret", "s3cret") is False
    assert verify_cron_secret(None, "s3cret") is False
    with pytest.raises(ConfigurationError):
        verify_cron_secret("Bearer ", "")


ODD_BODIES = [
    b"[]", b"null", b"5", b'"x"', b"{", b'{"type": 5, "data": {}}', b'{"type": "user.created"}',
    b'{"type": "user.created", "data": []}', b'{"type": "user.created", "data": {"id": 5}}',
    b'{"type": "user.created", "data": {"id": null}}',
    b'{"type": "user.created", "data": {"id": "\\ud800"}}',
    b'{"type": "user.created", "data": {"id": "a b"}}',
    b'{"type": "user.created", "data": {"id": "' + b"u" * 5000 + b'"}}',
    b'{"type": "user.created", "data": {"id": "user_x"}, "timestamp": "soon"}',
    b'{"type": "user.created", "data": {"id": "user_x"}, "object": [1]}',
    b'{"type": "user.created", "data": {"id": "user_x"}, "timestamp": NaN}',
    b'{"type": "user.deleted", "data": {"id": {"a": 1}}}',
    b'{"type": "user.created", "data": {"id": "user_x", "n": ' + b"[" * 100_000 + b"]" * 100_000
    + b"}}",
    b"[" * 100_000 + b"]" * 100_000,
]


@pytest.mark.parametrize("body", ODD_BODIES, ids=lambda b: b[:40].decode(errors="replace"))
def test_signed_odd_payloads_are_refused_cleanly(body: bytes) -> None:
    """A valid signature on a body of the wrong shape: a 4xx-style error, nothing written."""
    from sparked_credits import CreditsClient, CreditsError

    client = CreditsClient("memory://odd-webhooks")
    refused: CreditsError | None = None
    try:
        handle_clerk_event(client, verify_webhook(body, signed(body), SECRET))
    except CreditsError as exc:
        refused = exc
    if refused is not None:
        assert 400 <= refused.http_status < 500
        json.dumps(refused.to_dict())
    assert client.get_balance("user_x") == 0
    client.close()


def test_body_over_the_limit_refused_before_verifying() -> None:
    body = event_body(padding="x" * 2048)
    with pytest.raises(WebhookVerificationError) as info:
        verify_webhook(body, signed(body), SECRET, max_bytes=1024)
    assert info.value.reason == "too_large"
