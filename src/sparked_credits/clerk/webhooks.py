"""Clerk webhooks: check a Svix signature and return the parsed event.

svix 2.x ``verify()`` returns None and lets a malformed signature header escape as a bare
ValueError; here every failure is a :class:`WebhookVerificationError` (HTTP 400), whatever
the body holds once the signature checks out: a signed body is still untrusted shape.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..errors import ConfigurationError
from .errors import WebhookVerificationError
from .tokens import _EXTRA_HINT

__all__ = ["ClerkEvent", "verify_webhook"]

logger = logging.getLogger("sparked_credits.clerk")


def _svix() -> tuple[Any, type[Exception]]:
    """svix's Webhook class and the error its verify() raises."""
    try:
        from svix.webhooks import Webhook
        from svix.webhooks import WebhookVerificationError as SvixVerificationError
    except ImportError as exc:
        raise ConfigurationError(f"Clerk webhooks need svix: {_EXTRA_HINT}") from exc
    return Webhook, SvixVerificationError


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
    Webhook, SvixVerificationError = _svix()
    try:
        verifier = Webhook(secret.strip())
    except Exception as exc:
        raise ConfigurationError(
            "the webhook signing secret is not a valid whsec_... value"
        ) from exc
    try:
        # svix 2.x returns None here: the body is parsed below.
        verifier.verify(text, present)
    except (ValueError, TypeError, OverflowError) as exc:
        # svix lets these escape for a signature header without "v1," or with bad base64.
        raise WebhookVerificationError(
            "malformed webhook signature headers", reason="malformed_headers"
        ) from exc
    except SvixVerificationError as exc:
        message = str(exc).lower()
        reason = "bad_signature"
        if "too old" in message or "too new" in message:
            reason = "stale_timestamp"
        elif "header" in message:
            reason = "malformed_headers"
        raise WebhookVerificationError(
            f"webhook verification failed ({reason})", reason=reason
        ) from exc
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
