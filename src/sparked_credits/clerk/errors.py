"""The Clerk edge's errors: a session token or a webhook that does not verify.

Defined in :mod:`sparked_credits.errors` (the one error tree, which imports no edge) and
re-exported here beside the code that raises them, so ``from sparked_credits.clerk.errors
import TokenExpiredError`` keeps working. Importing it never pulls in PyJWT or svix.
"""

from __future__ import annotations

from ..errors import (
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
