"""Clerk webhooks: check a Svix signature and return the parsed event.

The signature is checked here, by Svix's published scheme (HMAC-SHA256 over
``<svix-id>.<svix-timestamp>.<raw body>``, keyed with the ``whsec_`` secret's bytes, compared in
constant time), not by the svix library: svix 1.x parses the body inside ``verify()`` and 2.x
returns None, and the two word and type their refusals differently, so the reason a handler
saw depended on the installed release. Every failure is a :class:`WebhookVerificationError`
(HTTP 400) with one ``reason``, whatever the body holds once the signature checks out: a
signed body is still untrusted shape. The tests sign with svix's own ``Webhook.sign``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import re
import time
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..errors import ConfigurationError
from .errors import WebhookVerificationError

__all__ = ["ClerkEvent", "verify_webhook"]

logger = logging.getLogger("sparked_credits.clerk")


TOLERANCE_SECONDS = 5 * 60
"""How far a delivery's svix-timestamp may lie from now: Svix's own tolerance."""

_SIGNATURE = re.compile(r"v1,[A-Za-z0-9+/]{43}=")
"""A v1 entry: 32 bytes (HMAC-SHA256) in padded base64."""


def _check_header_shapes(timestamp: str, signature: str) -> None:
    """Refuse malformed headers and stale timestamps by the Svix format itself, before any
    signature is computed: ``svix-timestamp`` is whole seconds within the tolerance;
    ``svix-signature`` is space-separated ``<version>,<base64>`` entries, at least one of
    them ``v1`` with a 32-byte HMAC-SHA256."""
    if not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 12:
        raise WebhookVerificationError(
            "malformed webhook signature headers", reason="malformed_headers"
        )
    if abs(time.time() - int(timestamp)) > TOLERANCE_SECONDS:
        raise WebhookVerificationError(
            "webhook verification failed (stale_timestamp)", reason="stale_timestamp"
        )
    valid = False
    for part in signature.split():
        version, comma, _ = part.partition(",")
        if not comma or not version.startswith("v"):
            valid = False
            break
        valid = valid or _SIGNATURE.fullmatch(part) is not None
    if not valid:
        raise WebhookVerificationError(
            "malformed webhook signature headers", reason="malformed_headers"
        )


def _secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` signing secret, as Svix derives it."""
    value = secret.strip()
    value = value[len("whsec_"):] if value.startswith("whsec_") else value
    try:
        key = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ConfigurationError(
            "the webhook signing secret is not a valid whsec_... value"
        ) from exc
    if not key:
        raise ConfigurationError("the webhook signing secret is not a valid whsec_... value")
    return key


def _sign(key: bytes, msg_id: str, timestamp: str, body: bytes) -> bytes:
    """Svix's v1 signature: base64 of HMAC-SHA256 over ``<id>.<timestamp>.<raw body>``."""
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + bytes(body), hashlib.sha256)
    return base64.b64encode(digest.digest())


# -- webhooks ---------------------------------------------------------------------------


class ClerkEvent(BaseModel):
    """A verified Clerk webhook event (``{"type", "data", "object", ...}``)."""

    model_config = ConfigDict(frozen=True, extra="allow")

    type: str
    data: dict[str, Any]
    object: str | None = None
    timestamp: int | None = None
    instance_id: str | None = None
    svix_id: str = Field(description="The delivery's svix-id: the same on every redelivery.")


_SVIX_HEADERS = ("svix-id", "svix-timestamp", "svix-signature")

DEFAULT_MAX_WEBHOOK_BYTES = 1024 * 1024
"""1 MiB: far above any Clerk event, far below what would hurt a worker to hold."""


def verify_webhook(
    body: bytes,
    headers: Mapping[str, str],
    secret: str,
    *,
    max_bytes: int = DEFAULT_MAX_WEBHOOK_BYTES,
) -> ClerkEvent:
    """Check a Svix-signed webhook (Clerk's) and return the parsed event.

    ``body`` must be the raw bytes as received (re-serialized JSON does not verify);
    ``headers`` any mapping, names matched case-insensitively; ``secret`` the endpoint's
    ``whsec_...`` signing secret. Deliveries signed more than 5 minutes before or after now
    are refused (replays of a captured request). A redelivery keeps its svix-id, so the
    handler can recognize it (see :func:`handle_clerk_event`).

    A body over ``max_bytes`` is refused (``reason="too_large"``) before its signature is
    computed; a web route should refuse it before reading it at all (the integrations'
    ``read_body_limited`` does). A validly signed body of the wrong shape (not an object,
    nested beyond reason, odd types) is ``reason="malformed_body"``, never another error.
    """
    if not secret or not secret.strip():
        raise ConfigurationError("the webhook signing secret is empty: set CLERK_WEBHOOK_SECRET")
    lowered = {str(k).lower(): str(v) for k, v in headers.items()}
    present = {name: lowered.get(name, "").strip() for name in _SVIX_HEADERS}
    missing = [name for name, value in present.items() if not value]
    if missing:
        raise WebhookVerificationError(
            f"missing webhook headers: {', '.join(missing)}", reason="missing_headers"
        )
    if not isinstance(body, (bytes, bytearray)):
        raise TypeError("verify_webhook needs the raw body as bytes")
    if len(body) > max_bytes:
        raise WebhookVerificationError(
            f"the webhook body is over {max_bytes} bytes", reason="too_large"
        )
    if len(present["svix-id"]) > 256:
        raise WebhookVerificationError("the svix-id header is too long", reason="malformed_headers")
    try:
        text = bytes(body).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WebhookVerificationError(
            "the webhook body is not UTF-8", reason="malformed_body"
        ) from exc
    _check_header_shapes(present["svix-timestamp"], present["svix-signature"])
    expected = _sign(_secret_key(secret), present["svix-id"], present["svix-timestamp"], body)
    offered = [p[3:] for p in present["svix-signature"].split() if p.startswith("v1,")]
    # Every offered v1 signature is compared (a rotated secret sends two), each in constant
    # time; no early exit tells an attacker which one came close.
    matched = False
    for candidate in offered:
        matched = hmac.compare_digest(candidate.encode(), expected) or matched
    if not matched:
        raise WebhookVerificationError(
            "webhook verification failed (bad_signature)", reason="bad_signature"
        )
    try:
        payload = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise WebhookVerificationError(
            "the webhook body is not JSON", reason="malformed_body"
        ) from exc
    if not isinstance(payload, dict) or not isinstance(payload.get("type"), str):
        raise WebhookVerificationError(
            "the webhook body has no event type", reason="malformed_body"
        )
    if not isinstance(payload.get("data"), dict):
        raise WebhookVerificationError(
            "the webhook body has no data object", reason="malformed_body"
        )
    payload["svix_id"] = present["svix-id"]
    try:
        return ClerkEvent.model_validate(payload)
    except (ValueError, RecursionError) as exc:  # pydantic's ValidationError is a ValueError
        raise WebhookVerificationError(
            "the webhook body is not a Clerk event", reason="malformed_body"
        ) from exc
