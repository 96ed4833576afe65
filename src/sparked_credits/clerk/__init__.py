"""Clerk: session tokens, webhooks and the events that open and close accounts.

Needs the ``clerk`` extra (``pip install 'sparked-credits[clerk]'``: PyJWT with
cryptography, and svix); both are imported on first use, and a missing one raises
ConfigurationError naming the extra.

* :func:`verify_session_token` (:mod:`.tokens`) checks a Clerk session JWT the way Clerk's
  own backend SDK does, and :func:`session_token_from` finds it in a request.
* :func:`verify_webhook` (:mod:`.webhooks`) checks a Svix signature and returns the
  parsed event; every failure is a :class:`WebhookVerificationError`.
* :func:`handle_clerk_event` / :func:`ahandle_clerk_event` (:mod:`.events`) apply an
  event to the credits store, exactly once per user however often Svix redelivers it.
* :func:`verify_cron_secret` (:mod:`.cron`) compares a cron job's ``Authorization``
  header in constant time.
* :mod:`.errors` holds the ``Token*`` errors and :class:`WebhookVerificationError`.

Nothing here logs a token, a signature or a secret.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import (
    TokenAlgorithmError,
    TokenClaimError,
    TokenExpiredError,
    TokenKeyError,
    TokenKeysUnavailableError,
    TokenMalformedError,
    TokenMissingError,
    TokenNotYetValidError,
    TokenPartyError,
    TokenSignatureError,
    TokenVerificationError,
    WebhookVerificationError,
)

if TYPE_CHECKING:
    from .cron import verify_cron_secret
    from .events import EventOutcome, ahandle_clerk_event, handle_clerk_event
    from .tokens import (
        ALGORITHM,
        DEFAULT_LEEWAY,
        REQUIRED_CLAIMS,
        SESSION_COOKIE,
        ClerkPrincipal,
        jwks_client,
        load_jwt_key,
        session_token_from,
        verify_session_token,
    )
    from .webhooks import DEFAULT_MAX_WEBHOOK_BYTES, ClerkEvent, verify_webhook

# Everything but the errors is imported on first use: ``sparked_credits.errors`` re-exports
# the errors from here while it is itself being imported, so this package must not pull in
# the rest of the SDK (models, validation) at that moment.
_LAZY = {
    "verify_cron_secret": "cron",
    "EventOutcome": "events",
    "ahandle_clerk_event": "events",
    "handle_clerk_event": "events",
    "ALGORITHM": "tokens",
    "DEFAULT_LEEWAY": "tokens",
    "REQUIRED_CLAIMS": "tokens",
    "SESSION_COOKIE": "tokens",
    "ClerkPrincipal": "tokens",
    "jwks_client": "tokens",
    "load_jwt_key": "tokens",
    "session_token_from": "tokens",
    "verify_session_token": "tokens",
    "DEFAULT_MAX_WEBHOOK_BYTES": "webhooks",
    "ClerkEvent": "webhooks",
    "verify_webhook": "webhooks",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "ALGORITHM",
    "DEFAULT_LEEWAY",
    "DEFAULT_MAX_WEBHOOK_BYTES",
    "REQUIRED_CLAIMS",
    "SESSION_COOKIE",
    "ClerkEvent",
    "ClerkPrincipal",
    "EventOutcome",
    "TokenAlgorithmError",
    "TokenClaimError",
    "TokenExpiredError",
    "TokenKeyError",
    "TokenKeysUnavailableError",
    "TokenMalformedError",
    "TokenMissingError",
    "TokenNotYetValidError",
    "TokenPartyError",
    "TokenSignatureError",
    "TokenVerificationError",
    "WebhookVerificationError",
    "ahandle_clerk_event",
    "handle_clerk_event",
    "jwks_client",
    "load_jwt_key",
    "session_token_from",
    "verify_cron_secret",
    "verify_session_token",
    "verify_webhook",
]
