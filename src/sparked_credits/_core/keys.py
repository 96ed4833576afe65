"""Redis key names.

The balance and ledger keys mirror the TypeScript SDK (``balance:<acct>``, ``txs:<acct>``)
so both SDKs can share one database. With ``hash_tags=True`` (always on a cluster) the
account part is wrapped in braces, ``balance:{<acct>}``, so that every key one script
touches hashes to the same slot. Keys only this SDK uses always brace the account: account
ids cannot contain braces, so ``idem:{a:b}:k`` and ``idem:{a}:b:k`` never collide.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["AccountKeys", "KeySpace"]


@dataclass(frozen=True, slots=True)
class AccountKeys:
    """Every key of one account, in the order the mutation scripts take them as KEYS[]."""

    balance: str
    ledger: str
    meta: str
    idempotency: str
    idempotency_previous: str
    holds: str
    hold_expiry: str
    refunds: str
    lots: str
    """Credit lots: lot id -> record, and '' -> the sum of what they hold (lua/lots.lua)."""
    lot_order: str
    """The lots with credits left, scored in consumption order."""
    lot_expiry: str
    """The lots with credits left and an expiry, scored by expiry (ms)."""
    once: str
    """Keys applied once ever (purchase, allocate, revoke): '<kind>:<key>' -> entry id."""
    controls: str = ""
    """Spend limits, low-balance threshold, spend windows, alert arming (controls.py)."""
    alerts: str = ""
    """The account's low-balance alert outbox (a stream), in its own slot."""
    alert_acks: str = ""
    """Each alert consumer's cursor into the outbox (a sorted set): consumer scored by the
    last acknowledged id (controls.py)."""
    referrals: str = ""
    """Referral marks, kept for good (referral.lua): apart from ``controls``, so that a
    referred account keeps the debit's fast block."""
    plan_tiers: str = ""
    """The paid periods that put the account on their plan's tier, and the latest one's
    start ('' field), so a period is applied once and never after a later one
    (plan_tier.lua)."""
    transfers: str = ""
    """Transfers out of this account whose second step may still be due (transfers.py)."""
    script_keys: tuple[str, ...] = field(init=False)
    """KEYS[1..10] shared by every mutation script."""
    refund_keys: tuple[str, ...] = field(init=False)
    """The refund script's KEYS: the shared ten and the refunds hash."""

    def __post_init__(self) -> None:
        shared = (
            self.balance,
            self.ledger,
            self.meta,
            self.idempotency,
            self.idempotency_previous,
            self.holds,
            self.hold_expiry,
            self.lots,
            self.lot_order,
            self.lot_expiry,
        )
        object.__setattr__(self, "script_keys", shared)
        object.__setattr__(self, "refund_keys", (*shared, self.refunds))


@dataclass(frozen=True, slots=True)
class KeySpace:
    """Builds key names for one client configuration (tenant prefix, hash tags)."""

    prefix: str = ""
    hash_tags: bool = False

    def account(self, account: str) -> AccountKeys:
        p = self.prefix
        tagged = "{" + account + "}"
        return AccountKeys(
            balance=self.balance(account),
            ledger=self.ledger(account),
            meta=f"{p}account:{tagged}",
            idempotency=f"{p}idem:{tagged}:current",
            idempotency_previous=f"{p}idem:{tagged}:previous",
            holds=f"{p}holds:{tagged}",
            hold_expiry=f"{p}holdexp:{tagged}",
            refunds=f"{p}refunds:{tagged}",
            lots=f"{p}lots:{tagged}",
            lot_order=f"{p}lotq:{tagged}",
            lot_expiry=f"{p}lotexp:{tagged}",
            once=f"{p}once:{tagged}",
            controls=f"{p}ctl:{tagged}",
            alerts=f"{p}alerts:{tagged}",
            alert_acks=f"{p}alertack:{tagged}",
            referrals=f"{p}referral:{tagged}",
            transfers=f"{p}xfer:{tagged}",
            plan_tiers=f"{p}plantiers:{tagged}",
        )

    def _shared(self, account: str) -> str:
        """The account part of keys the TypeScript SDK shares: braced only in hash-tag mode."""
        return "{" + account + "}" if self.hash_tags else account

    def balance(self, account: str) -> str:
        return f"{self.prefix}balance:{self._shared(account)}"

    def ledger(self, account: str) -> str:
        return f"{self.prefix}txs:{self._shared(account)}"
