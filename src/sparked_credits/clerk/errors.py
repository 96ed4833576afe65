"""The Clerk edge's errors: a session token or a webhook that does not verify.

They live with the code that raises them and derive from the SDK's one root,
:class:`~sparked_credits.errors.CreditsError`; :mod:`sparked_credits.errors` and the
package re-export them, so ``from sparked_credits.errors import TokenExpiredError`` and
``from sparked_credits import TokenExpiredError`` keep working. This module imports only
the root of the error tree, so importing it never pulls in PyJWT or svix.
"""

from __future__ import annotations

from typing import Any

from ..errors import CreditsError

__all__ = [
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
]


class WebhookVerificationError(CreditsError):
    """A webhook's signature, timestamp, headers or body did not verify (HTTP 400).

    ``reason`` says which, in a word a handler can log or count: ``missing_headers``,
    ``malformed_headers``, ``bad_signature``, ``stale_timestamp``, ``malformed_body``.
    The message never contains the secret or the signature.
    """

    http_status = 400
    code = "webhook_verification_failed"

    def __init__(self, message: str, *, reason: str = "invalid") -> None:
        super().__init__(message)
        self.reason = reason

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "reason": self.reason}


class TokenVerificationError(CreditsError):
    """A session token did not verify (HTTP 401). Catch this; the subclasses say why, and
    ``reason`` names it in one word (for logs and the JSON body)."""

    http_status = 401
    code = "token_verification_failed"
    reason = "invalid"

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "reason": self.reason}


class TokenMissingError(TokenVerificationError):
    """No token in the request: no ``Authorization: Bearer`` header, no ``__session``
    cookie."""

    reason = "missing"


class TokenMalformedError(TokenVerificationError):
    """Not a JWT at all, or its header or claims cannot be decoded."""

    reason = "malformed"


class TokenExpiredError(TokenVerificationError):
    """``exp`` has passed (beyond the leeway). Clerk session tokens live 60 seconds: the
    frontend should fetch a fresh one."""

    reason = "expired"


class TokenNotYetValidError(TokenVerificationError):
    """``nbf`` or ``iat`` lies in the future (beyond the leeway): clock skew or a forgery."""

    reason = "not_yet_valid"


class TokenSignatureError(TokenVerificationError):
    """The signature does not match the key: a tampered token or the wrong Clerk instance."""

    reason = "bad_signature"


class TokenAlgorithmError(TokenVerificationError):
    """The token is not RS256 (``alg: none``, or HS256 signed with the public key as an
    HMAC secret: the key-confusion attack)."""

    reason = "wrong_algorithm"


class TokenPartyError(TokenVerificationError):
    """``azp`` (the origin that requested the token) is not one of the authorized parties."""

    reason = "wrong_party"


class TokenClaimError(TokenVerificationError):
    """A required claim (exp, iat, nbf, sub) is missing or has the wrong type."""

    reason = "missing_claim"

    def __init__(self, message: str, claim: str) -> None:
        super().__init__(message)
        self.claim = claim

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "claim": self.claim}


class TokenKeyError(TokenVerificationError):
    """No key in the JWKS has the token's ``kid``, even after refetching it."""

    reason = "unknown_key"


class TokenKeysUnavailableError(TokenVerificationError):
    """The JWKS could not be fetched (HTTP 503): Clerk or the network is down, the token may
    well be valid, and retrying later is right."""

    http_status = 503
    reason = "keys_unavailable"
