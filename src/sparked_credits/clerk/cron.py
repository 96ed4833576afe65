"""The cron job's shared secret, compared in constant time."""

from __future__ import annotations

import hmac

from ..errors import ConfigurationError

__all__ = ["verify_cron_secret"]

# -- cron -------------------------------------------------------------------------------


def verify_cron_secret(authorization_header: str | None, secret: str) -> bool:
    """True when the header is ``Bearer <secret>`` (what Vercel Cron sends), compared in
    constant time so the secret cannot be guessed byte by byte from response times.

    An empty ``secret`` is a misconfiguration, never "no check": ConfigurationError.
    """
    if not secret:
        raise ConfigurationError("CRON_SECRET is empty: refusing to authorize cron calls")
    expected = f"Bearer {secret}".encode()
    given = (authorization_header or "").strip().encode()
    return hmac.compare_digest(given, expected)
