"""Argument validation, shared by both clients.

Everything a caller passes is checked here before a script is built, so a rejected call
never reaches Redis and never writes anything. Each rejection names the field.
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from typing import Any

from ..errors import ValidationError

MAX_CREDITS = 2**53 - 1
"""Largest amount or balance: Lua numbers are doubles, exact only up to 2^53 - 1."""

MAX_ACCOUNT_LENGTH = 128
MAX_LABEL_LENGTH = 64
MAX_REASON_LENGTH = 500
MAX_IDEMPOTENCY_KEY_LENGTH = 128
MAX_METADATA_BYTES = 4096
MAX_HISTORY_LIMIT = 1000

# No whitespace, no braces (they would break hash tags), no control characters (C0, DEL,
# C1), no lone surrogates (they cannot be encoded to send).
_ACCOUNT_RE = re.compile(r"[^\s{}\x00-\x1f\x7f-\x9f\ud800-\udfff]+")
# Labels (action, app, source) are identifiers, not prose: they are grouped on in analytics.
_LABEL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/-]*")
_IDEM_RE = re.compile(r"[\x21-\x7e]+")  # printable ASCII, no spaces
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
_STREAM_ID_RE = re.compile(r"([0-9]{1,20})-([0-9]{1,20})")
_MAX_STREAM_PART = 2**64 - 1


def amount(value: object, field: str = "amount") -> int:
    """A positive whole number of credits, 1 <= value <= 2^53 - 1."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(field, f"must be an int, got {type(value).__name__}")
    if not 1 <= value <= MAX_CREDITS:
        raise ValidationError(field, f"must be between 1 and {MAX_CREDITS}, got {value}")
    return value


def credits(value: object, field: str = "credits") -> int:
    """A whole number of credits that may be zero (starting credits)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(field, f"must be an int, got {type(value).__name__}")
    if not 0 <= value <= MAX_CREDITS:
        raise ValidationError(field, f"must be between 0 and {MAX_CREDITS}, got {value}")
    return value


def signed_delta(value: object, field: str = "delta") -> int:
    """A non-zero signed number of credits, |value| <= 2^53 - 1 (admin adjustments)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(field, f"must be an int, got {type(value).__name__}")
    if value == 0 or abs(value) > MAX_CREDITS:
        raise ValidationError(field, f"must be non-zero with |{field}| <= {MAX_CREDITS}")
    return value


def account(value: object) -> str:
    """An account id: a Clerk user or organization id, or any id of the same shape."""
    if type(value) is str and value in _GOOD_ACCOUNTS:
        return value
    if not isinstance(value, str):
        raise ValidationError("account", f"must be a str, got {type(value).__name__}")
    if not value:
        raise ValidationError("account", "must not be empty")
    if len(value) > MAX_ACCOUNT_LENGTH:
        raise ValidationError("account", f"must be at most {MAX_ACCOUNT_LENGTH} characters")
    if not _ACCOUNT_RE.fullmatch(value):
        raise ValidationError(
            "account", "must not contain whitespace, braces or control characters"
        )
    _remember(_GOOD_ACCOUNTS, value)
    return value


# Ids and labels already accepted, so a hot account or action is checked once, not per call.
_GOOD_ACCOUNTS: dict[str, None] = {}
_MEMO_SIZE = 4096


def _remember(memo: dict[str, None], value: str) -> None:
    if len(memo) >= _MEMO_SIZE:
        memo.clear()
    memo[value] = None


def label(value: object, field: str, *, required: bool = False) -> str:
    """An identifier-like tag (action, app, source); '' stands for 'not given'."""
    if type(value) is str and value and _label_ok(value):
        return value
    if value is None:
        if required:
            raise ValidationError(field, "is required")
        return ""
    if not isinstance(value, str):
        raise ValidationError(field, f"must be a str, got {type(value).__name__}")
    if not value:
        if required:
            raise ValidationError(field, "must not be empty")
        return ""
    if len(value) > MAX_LABEL_LENGTH:
        raise ValidationError(field, f"must be at most {MAX_LABEL_LENGTH} characters")
    raise ValidationError(
        field, "must start with a letter or digit and use only letters, digits and _.:/-"
    )


@lru_cache(maxsize=1024)
def _label_ok(value: str) -> bool:
    return len(value) <= MAX_LABEL_LENGTH and _LABEL_RE.fullmatch(value) is not None


def reason(value: object) -> str:
    """Free text for humans, bounded, without control characters."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValidationError("reason", f"must be a str, got {type(value).__name__}")
    if len(value) > MAX_REASON_LENGTH:
        raise ValidationError("reason", f"must be at most {MAX_REASON_LENGTH} characters")
    if _CONTROL_RE.search(value):
        raise ValidationError("reason", "must not contain control characters or lone surrogates")
    return value


def idempotency_key(value: object) -> str:
    """A caller-chosen idempotency key: printable ASCII without spaces, bounded."""
    if not isinstance(value, str):
        raise ValidationError("idempotency_key", f"must be a str, got {type(value).__name__}")
    if not 1 <= len(value) <= MAX_IDEMPOTENCY_KEY_LENGTH:
        raise ValidationError(
            "idempotency_key", f"must be 1 to {MAX_IDEMPOTENCY_KEY_LENGTH} characters"
        )
    if not _IDEM_RE.fullmatch(value):
        raise ValidationError("idempotency_key", "must be printable ASCII without spaces")
    return value


def metadata(value: object) -> str:
    """Caller metadata as compact JSON text ('' when absent), at most 4 KiB.

    Serialized with sorted keys so the same dict always gives the same text: the
    idempotency fingerprint depends on it.
    """
    if value is None:
        return ""
    if not isinstance(value, dict):
        raise ValidationError("metadata", f"must be a dict, got {type(value).__name__}")
    try:
        text = json.dumps(
            value, separators=(",", ":"), sort_keys=True, ensure_ascii=False, allow_nan=False
        )
        size = len(text.encode())
    except (TypeError, ValueError) as exc:  # UnicodeEncodeError is a ValueError
        raise ValidationError("metadata", f"must be JSON-serializable UTF-8: {exc}") from None
    if size > MAX_METADATA_BYTES:
        raise ValidationError("metadata", f"must serialize to at most {MAX_METADATA_BYTES} bytes")
    return text


def entry_id(value: object, field: str = "entry_id") -> str:
    """A ledger entry id as Redis Streams writes it: '<ms>-<seq>'."""
    if not isinstance(value, str):
        raise ValidationError(field, f"must be a str, got {type(value).__name__}")
    match = _STREAM_ID_RE.fullmatch(value)
    if match is None or any(int(part) > _MAX_STREAM_PART for part in match.groups()):
        raise ValidationError(field, "must be a ledger entry id like '1732406400000-0'")
    return value


MIN_HOLD_TTL_MS = 10
MAX_HOLD_TTL_MS = 90 * 24 * 3600 * 1000


def ttl_ms(value: object, field: str = "ttl") -> int:
    """A hold's time to live, as a timedelta or seconds, in whole milliseconds."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise ValidationError(field, f"must be a timedelta or seconds, got {type(value).__name__}")
    if not math.isfinite(seconds):
        raise ValidationError(field, "must be finite")
    ms = int(seconds * 1000)
    if not MIN_HOLD_TTL_MS <= ms <= MAX_HOLD_TTL_MS:
        raise ValidationError(field, "must be between 10 milliseconds and 90 days")
    return ms


def history_limit(value: object) -> int:
    """A page size for history reads."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError("limit", f"must be an int, got {type(value).__name__}")
    if not 1 <= value <= MAX_HISTORY_LIMIT:
        raise ValidationError("limit", f"must be between 1 and {MAX_HISTORY_LIMIT}")
    return value


def flag(value: object, field: str) -> bool:
    """A real bool (not a truthy string or int)."""
    if not isinstance(value, bool):
        raise ValidationError(field, f"must be a bool, got {type(value).__name__}")
    return value


def as_dict(value: str | bytes | None) -> dict[str, Any]:
    """Parse stored metadata JSON (text or bytes) back into a dict (``{}`` when empty)."""
    if not value:
        return {}
    parsed = json.loads(value)
    return parsed if isinstance(parsed, dict) else {"value": parsed}


MIN_PRIORITY, MAX_PRIORITY = 0, 100
MAX_EXPIRES_MS = 32_503_679_999_999
"""Latest lot expiry (ms since the epoch): the last millisecond of 2999, so an expiry is
"before the year 3000" as the error says. The scripts order lots by priority * 2^45 +
expiry, exact in a double for any expiry below 2^45 - 1 (in the year 3084)."""


def priority(value: object) -> int:
    """A lot's priority: an int from 0 to 100, lower consumed first."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError("priority", f"must be an int, got {type(value).__name__}")
    if not MIN_PRIORITY <= value <= MAX_PRIORITY:
        raise ValidationError(
            "priority", f"must be between {MIN_PRIORITY} and {MAX_PRIORITY}, got {value}"
        )
    return value


def expires_at(value: object, now: datetime | None = None) -> int | None:
    """A lot's expiry as ms since the epoch (None: never): an aware datetime in the future.

    Checked against this machine's clock here, and against the server's in the script.
    """
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise ValidationError("expires_at", f"must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValidationError("expires_at", "must be timezone-aware (naive times are ambiguous)")
    current = now or datetime.now(timezone.utc)
    if value <= current:
        raise ValidationError("expires_at", "must be in the future")
    ms = int(value.timestamp() * 1000)
    if ms > MAX_EXPIRES_MS:
        raise ValidationError("expires_at", "must be before the year 3000")
    return ms


DEFAULT_GRANT_SOURCE = "grant"
"""The source of a credit lot when none is given: the one default of the SDK and the CLI."""


def source(value: object) -> str:
    """Where a lot's credits come from (grant, purchase, referral...); None means grant."""
    if value is None:
        return DEFAULT_GRANT_SOURCE
    return label(value, "source", required=True)
