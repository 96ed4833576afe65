"""sparked-credits: one shared, prepaid credit balance per account, kept in Redis.

Every mutation is one atomic Lua script call that changes the balance and appends its
ledger entry together, exactly once per idempotency key.
"""

from __future__ import annotations

from ._core.validation import MAX_CREDITS
from ._version import __version__
from .async_client import AsyncCreditsClient
from .client import CreditsClient
from .control_models import (
    AccountControls,
    Alert,
    PlanTierResult,
    ReferralResult,
    TransferResult,
)
from .errors import (
    AccountClosedError,
    BackendError,
    ConfigurationError,
    CreditsError,
    EntryNotFoundError,
    HoldExpiredError,
    HoldNotFoundError,
    HoldOverageError,
    IdempotencyConflictError,
    InsufficientCreditsError,
    ReferralError,
    RefundError,
    SpendLimitExceededError,
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
    ValidationError,
    WebhookVerificationError,
)
from .holds_context import AsyncHoldContext, HoldContext
from .models import (
    AllocationResult,
    EntryType,
    Grant,
    HistoryPage,
    Hold,
    HoldState,
    InitResult,
    LedgerEntry,
    LotDraw,
    MutationResult,
    RevokeResult,
)
from .pricing import DEFAULT_TABLE, PriceTable, calculate_cost, load_price_table
from .reports import DailyUsage, ReconcileReport, ReconcileResult, TrimResult, UsageReport

__all__ = [
    "DEFAULT_TABLE",
    "MAX_CREDITS",
    "AccountClosedError",
    "AccountControls",
    "Alert",
    "AllocationResult",
    "AsyncCreditsClient",
    "AsyncHoldContext",
    "BackendError",
    "ConfigurationError",
    "CreditsClient",
    "CreditsError",
    "DailyUsage",
    "EntryNotFoundError",
    "EntryType",
    "Grant",
    "HistoryPage",
    "Hold",
    "HoldContext",
    "HoldExpiredError",
    "HoldNotFoundError",
    "HoldOverageError",
    "HoldState",
    "IdempotencyConflictError",
    "InitResult",
    "InsufficientCreditsError",
    "LedgerEntry",
    "LotDraw",
    "MutationResult",
    "PlanTierResult",
    "PriceTable",
    "ReconcileReport",
    "ReconcileResult",
    "ReferralError",
    "ReferralResult",
    "RefundError",
    "RevokeResult",
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
    "TransferResult",
    "TrimResult",
    "UsageReport",
    "ValidationError",
    "WebhookVerificationError",
    "__version__",
    "calculate_cost",
    "load_price_table",
]
