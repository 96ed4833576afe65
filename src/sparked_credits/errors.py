"""The error tree.

Every exception the SDK raises is a :class:`CreditsError`, so one ``except`` catches them all,
and each subclass carries the fields a route handler needs to answer (``to_dict()`` gives a JSON
body, ``http_status`` the status code). Backend exceptions are translated in exactly one place
(:mod:`sparked_credits.backends.errors`), never ad hoc.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

__all__ = [
    "AccountClosedError",
    "BackendError",
    "ConfigurationError",
    "CreditsError",
    "EntryNotFoundError",
    "HoldExpiredError",
    "HoldNotFoundError",
    "HoldOverageError",
    "IdempotencyConflictError",
    "InsufficientCreditsError",
    "ReferralError",
    "RefundError",
    "SpendLimitExceededError",
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
    "ValidationError",
    "WebhookVerificationError",
]


class CreditsError(Exception):
    """Root of every error the SDK raises."""

    http_status: int = 500
    code: str = "credits_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready body for an HTTP error response."""
        return {"error": self.code, "message": self.message}


class ConfigurationError(CreditsError):
    """The client was configured wrongly: bad URL, missing optional dependency, missing env."""

    code = "configuration_error"


class ValidationError(CreditsError, ValueError):
    """An argument was rejected before anything was sent; nothing was written.

    ``field`` names the offending argument so a handler can answer 422 precisely.
    """

    http_status = 422
    code = "validation_error"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "field": self.field}


class InsufficientCreditsError(CreditsError):
    """The balance does not cover the amount; nothing was written (HTTP 402)."""

    http_status = 402
    code = "insufficient_credits"

    def __init__(self, account: str, balance: int, required: int, action: str | None) -> None:
        what = f" for {action}" if action else ""
        super().__init__(f"account {account} has {balance} credits, {required} required{what}")
        self.account = account
        self.balance = balance
        self.required = required
        self.action = action

    @property
    def shortfall(self) -> int:
        """How many credits the account lacks."""
        return max(self.required - self.balance, 0)

    def to_dict(self) -> dict[str, Any]:
        return {
            **super().to_dict(),
            "account": self.account,
            "balance": self.balance,
            "required": self.required,
            "shortfall": self.shortfall,
            "action": self.action,
        }


class AccountClosedError(CreditsError):
    """The account was closed (its user was deleted): it takes no new debits or
    reservations; its balance and ledger are kept (HTTP 403)."""

    http_status = 403
    code = "account_closed"

    def __init__(self, account: str, action: str | None = None) -> None:
        what = f" for {action}" if action else ""
        super().__init__(f"account {account} is closed: no new charges{what}")
        self.account = account
        self.action = action

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "account": self.account, "action": self.action}


class IdempotencyConflictError(CreditsError):
    """The idempotency key was already used with different parameters (HTTP 409)."""

    http_status = 409
    code = "idempotency_conflict"

    def __init__(
        self,
        account: str,
        idempotency_key: str,
        *,
        differs: Sequence[str] = (),
        first_entry: str | None = None,
    ) -> None:
        message = (
            f"idempotency key {idempotency_key!r} on account {account} was already used "
            "with different parameters"
        )
        if differs:
            verb = "differs" if len(differs) == 1 else "differ"
            message += f": {', '.join(differs)} {verb} from the first call"
            if first_entry:
                message += f" (entry {first_entry})"
            if "expires_at" in differs:
                message += "; compute expires_at once and pass the same value on every retry"
            message += "; a new operation needs a new key"
        super().__init__(message)
        self.account = account
        self.idempotency_key = idempotency_key
        self.differs: list[str] = list(differs)
        """The parameters (as the caller names them) that differ from the first call of
        this key; 'operation' when it was another operation. Empty when not known."""
        self.first_entry = first_entry

    def to_dict(self) -> dict[str, Any]:
        return {
            **super().to_dict(),
            "idempotency_key": self.idempotency_key,
            "differs": self.differs,
        }


class EntryNotFoundError(CreditsError):
    """A ledger entry named by id does not exist on this account (HTTP 404)."""

    http_status = 404
    code = "entry_not_found"

    def __init__(self, account: str, entry_id: str) -> None:
        super().__init__(f"no ledger entry {entry_id} on account {account}")
        self.account = account
        self.entry_id = entry_id


class RefundError(CreditsError):
    """A refund was refused: wrong entry type, already refunded, or more than was taken."""

    http_status = 409
    code = "refund_refused"

    def __init__(self, account: str, entry_id: str, message: str, refundable: int = 0) -> None:
        super().__init__(f"cannot refund {entry_id} on account {account}: {message}")
        self.account = account
        self.entry_id = entry_id
        self.refundable = refundable

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "entry_id": self.entry_id, "refundable": self.refundable}


class HoldNotFoundError(CreditsError):
    """No open hold with this id: it never existed, or was already settled or released.

    ``state`` says which ("settled", "released") when the hold existed (HTTP 404).
    """

    http_status = 404
    code = "hold_not_found"

    def __init__(self, account: str, hold_id: str, state: str | None = None) -> None:
        why = f"it was already {state}" if state else "no such hold"
        super().__init__(f"hold {hold_id} on account {account} is not open: {why}")
        self.account = account
        self.hold_id = hold_id
        self.state = state

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "hold_id": self.hold_id, "state": self.state}


class HoldExpiredError(CreditsError):
    """The hold passed its ttl and its credits went back to the balance (HTTP 409)."""

    http_status = 409
    code = "hold_expired"

    def __init__(self, account: str, hold_id: str) -> None:
        super().__init__(f"hold {hold_id} on account {account} expired; its credits were returned")
        self.account = account
        self.hold_id = hold_id

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "hold_id": self.hold_id}


class HoldOverageError(CreditsError):
    """settle() above the reserved amount without allow_overage=True (HTTP 409)."""

    http_status = 409
    code = "hold_overage"

    def __init__(self, account: str, hold_id: str, reserved: int, actual: int) -> None:
        super().__init__(
            f"hold {hold_id} on account {account} reserved {reserved} credits, settle asked "
            f"for {actual}: pass allow_overage=True to take the difference from the balance"
        )
        self.account = account
        self.hold_id = hold_id
        self.reserved = reserved
        self.actual = actual

    def to_dict(self) -> dict[str, Any]:
        return {
            **super().to_dict(),
            "hold_id": self.hold_id,
            "reserved": self.reserved,
            "actual": self.actual,
        }


class SpendLimitExceededError(CreditsError):
    """The account's tier caps its spending per UTC day or calendar month (Redis server
    time), and this debit, charge or reservation would pass it; nothing was written
    (HTTP 429). ``resets_at`` is when the window starts afresh. ``member`` names the member
    whose own limit inside an organization's account it is (window ``member_daily`` or
    ``member_monthly``), else None."""

    http_status = 429
    code = "spend_limit_exceeded"

    def __init__(
        self,
        account: str,
        window: str,
        limit: int,
        spent: int,
        requested: int,
        resets_at: datetime,
        member: str | None = None,
    ) -> None:
        who = f"member {member} of account {account}" if member else f"account {account}"
        super().__init__(
            f"{who} spent {spent} of its {window} limit of {limit} credits; "
            f"{requested} more would pass it (resets at {resets_at.isoformat()})"
        )
        self.member = member
        self.account = account
        self.window = window
        self.limit = limit
        self.spent = spent
        self.requested = requested
        self.resets_at = resets_at

    @property
    def retry_after(self) -> int:
        """Seconds until the window resets (by this machine's clock, at least 1): the
        HTTP edge sends it as ``Retry-After``."""
        left = (self.resets_at - datetime.now(timezone.utc)).total_seconds()
        return max(1, int(left) + 1)

    @classmethod
    def from_window(
        cls,
        account: str,
        window: str,
        limit: int,
        spent: int,
        number: int,
        requested: int,
        member: str | None = None,
    ) -> SpendLimitExceededError:
        """From a script's refusal: the window's number is the UTC day since the epoch
        ('daily', 'member_daily': a member's own inside an organization's account) or
        year * 12 + month - 1 ('monthly', 'member_monthly')."""
        if window.endswith("daily"):
            resets = datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(days=number + 1)
        else:
            year, month = divmod(number + 1, 12)
            resets = datetime(year, month + 1, 1, tzinfo=timezone.utc)
        return cls(account, window, limit, spent, requested, resets, member)

    def to_dict(self) -> dict[str, Any]:
        body = {
            **super().to_dict(),
            "account": self.account,
            "window": self.window,
            "limit": self.limit,
            "spent": self.spent,
            "requested": self.requested,
            "resets_at": self.resets_at.isoformat(),
        }
        if self.member:
            body["member"] = self.member
        return body


class ReferralError(CreditsError):
    """A referral reward was refused and nothing was written: the account was already
    referred (by someone else: once per account, ever), or the referrer reached its
    monthly cap (HTTP 409). ``reason`` is ``already_referred`` or ``capped``."""

    http_status = 409
    code = "referral_refused"

    def __init__(self, account: str, reason: str, message: str) -> None:
        super().__init__(message)
        self.account = account
        self.reason = reason

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "account": self.account, "reason": self.reason}


class BackendError(CreditsError):
    """The storage backend failed.

    ``may_have_applied`` is True when the request may have reached the server before the
    failure (a dropped connection or a timeout after sending). ``retry_safe`` says whether
    repeating the call is safe: it is, for mutations, exactly when the retry reuses
    ``idempotency_key``: the server then applies the call at most once.
    """

    http_status = 503
    code = "backend_error"

    def __init__(
        self,
        message: str,
        *,
        operation: str,
        may_have_applied: bool,
        retry_safe: bool,
        idempotency_key: str | None = None,
    ) -> None:
        hint = ""
        if retry_safe and idempotency_key is not None:
            hint = f" (safe to retry with idempotency_key={idempotency_key!r})"
        elif retry_safe:
            hint = " (safe to retry)"
        super().__init__(f"{operation} failed: {message}{hint}")
        self.operation = operation
        self.may_have_applied = may_have_applied
        self.retry_safe = retry_safe
        self.idempotency_key = idempotency_key


# The Clerk edge's errors: a session token or a webhook that does not verify. Defined here, in
# the one error tree, so the root never imports an edge; ``sparked_credits.clerk.errors``
# re-exports them.


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
