"""Typed results: ledger entries, mutation outcomes, history pages.

Models are frozen pydantic v2 models so they serialize straight into API responses
(``model_dump(mode="json")``) and cannot be edited by accident: like the ledger they mirror.
"""

from __future__ import annotations

from datetime import datetime, timezone
from enum import Enum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, computed_field

__all__ = [
    "AllocationResult",
    "EntryType",
    "Grant",
    "HistoryPage",
    "Hold",
    "HoldState",
    "InitResult",
    "LedgerEntry",
    "LotDraw",
    "MutationResult",
    "RevokeResult",
    "split_lots_record",
]


class EntryType(str, Enum):
    """What a ledger entry records. The value is what the stream stores."""

    INIT = "init"
    DEBIT = "debit"
    CREDIT = "credit"
    REFUND = "refund"
    RESERVE = "reserve"
    SETTLE = "settle"
    RELEASE = "release"
    EXPIRE = "expire"
    ADJUST = "adjust"
    CLOSE = "close"
    """The account was closed (delta 0): no new debits or reservations after it."""
    LOT_EXPIRE = "lot_expire"
    """What was left of a credit lot lapsed at its expiry (not usage; distinct from a
    hold's ``expire``, which gives credits back)."""
    REVOKE = "revoke"
    """Unspent credits taken back from a lot (a refunded or disputed payment): not usage."""
    ROLLOVER = "rollover"
    """A period's unused credits carried into the next one (a pair: out of the old lots,
    into a lot with the new expiry; they net to zero)."""


def split_lots_record(value: str | None) -> list[tuple[str, int]]:
    """The one parser of an entry's compact lots record ``'<lot id>:<credits>,...'``:
    ``[(lot id, credits), ...]``; empty for no record and for an opening one
    (``'+priority[:expires ms]'``). Raises ValueError on a record it cannot read."""
    if not value or value.startswith("+"):
        return []
    out = []
    for part in value.split(","):
        lot_id, sep, n = part.rpartition(":")
        if not sep or not lot_id:
            raise ValueError(f"not a lots record: {value!r}")
        out.append((lot_id, int(n)))
    return out


class LotDraw(BaseModel):
    """Credits one ledger entry moved out of (a debit, reserve, lapse) or back into (a
    refund, release, settle's unused part) one credit lot, or the lot it opened."""

    model_config = ConfigDict(frozen=True)

    grant_id: str = Field(
        description="The lot: the id of the entry that opened it (a Grant's grant_id); "
        "'_' for credits no lot tracks."
    )
    credits: int = Field(description="How many credits moved (positive; the entry's delta "
                         "says which way).")


class LedgerEntry(BaseModel):
    """One append-only ledger entry. Its stream id is both its id and its time."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(description="Stream id '<ms>-<seq>': unique, ordered, carries the time.")
    type: Annotated[EntryType | str, Field(union_mode="left_to_right")] = Field(
        description="An EntryType, or the raw type of an entry written by a newer version."
    )
    delta: int = Field(description="Signed change to the balance.")
    balance_after: int = Field(description="The balance right after this entry.")
    action: str | None = Field(default=None, description="What was paid for, or the source.")
    app: str | None = Field(default=None, description="The app that wrote the entry.")
    reason: str | None = None
    ref: str | None = Field(default=None, description="Refunded entry id or hold id.")
    idempotency_key: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    lots: str | None = Field(
        default=None,
        description="The credit lots this entry opened ('+priority[:expires ms]'), or drew "
        "from / gave back to ('<lot id>:<credits>,...'; '_' is credits no lot tracks).",
    )

    @computed_field  # type: ignore[prop-decorator]
    @property
    def draws(self) -> list[LotDraw]:
        """``lots`` parsed: which grants this entry drew from or gave back to, in the
        order the script moved them; for an entry that opened a lot (init, credit, a
        positive adjust), that lot, whose grant id is this entry's id. Empty for an
        entry that moved no lot (or whose record a newer version wrote in a form this
        one cannot read: ``lots`` keeps it raw)."""
        if self.lots and self.lots.startswith("+"):
            return [LotDraw(grant_id=self.id, credits=abs(self.delta))] if self.delta else []
        try:
            moves = split_lots_record(self.lots)
        except ValueError:
            return []
        return [LotDraw(grant_id=lot_id, credits=n) for lot_id, n in moves]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def timestamp(self) -> datetime:
        """When Redis wrote the entry (server time, millisecond precision)."""
        ms = int(self.id.split("-", 1)[0])
        return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)

    @property
    def type_name(self) -> str:
        """The type as stored ('debit', or the raw name of a type this version does not
        know): safe to print for any entry, unlike ``type.value``."""
        return self.type.value if isinstance(self.type, EntryType) else self.type

    @property
    def amount(self) -> int:
        """The size of the change, without its sign."""
        return abs(self.delta)


class MutationResult(BaseModel):
    """The outcome of a debit, credit, refund or adjustment."""

    model_config = ConfigDict(frozen=True)

    account: str
    balance: int = Field(
        description="The balance after the whole call: after the entry, and after any "
        "credits it gave back to expired lots lapsed (see ``lapsed``)."
    )
    entry: LedgerEntry
    replayed: bool = Field(
        default=False,
        description="True when the idempotency key had already been applied: this is the "
        "first call's outcome, and nothing was written now.",
    )
    lapsed: int = Field(
        default=0,
        description="Credits that lapsed in this call, each lot with its own lot_expire "
        "entry: lots past their expiry that the call lapsed before its entry (already "
        "out of entry.balance_after), and credits a refund, release or settle gave back "
        "to such lots (lapsed after the entry: out of balance, not of balance_after).",
    )


class InitResult(BaseModel):
    """The outcome of initialize_user: created once per account, ever."""

    model_config = ConfigDict(frozen=True)

    account: str
    created: bool = Field(description="False when the account already existed: nothing changed.")
    balance: int
    entry: LedgerEntry | None = Field(
        default=None, description="The init entry, when this call created the account."
    )


class HistoryPage(BaseModel):
    """One page of ledger entries, newest first."""

    model_config = ConfigDict(frozen=True)

    account: str
    entries: list[LedgerEntry]
    next_cursor: str | None = Field(
        default=None, description="Pass as cursor= to get the next (older) page; None at the end."
    )


class HoldState(str, Enum):
    """Where a hold is in its life. Only an open hold can be settled or released."""

    OPEN = "open"
    SETTLED = "settled"
    RELEASED = "released"
    EXPIRED = "expired"


class Hold(BaseModel):
    """Credits reserved for metered work; its id is the id of its reserve entry."""

    model_config = ConfigDict(frozen=True)

    account: str
    hold_id: str = Field(description="Pass to settle() or release(); the reserve entry's id.")
    amount: int = Field(description="Credits reserved (taken from the balance now).")
    action: str | None = None
    app: str | None = None
    state: HoldState
    expires_at: datetime | None = Field(
        default=None, description="Server time after which the hold returns by itself."
    )
    balance: int = Field(description="The balance right after the reserve.")
    entry: LedgerEntry = Field(description="The reserve entry.")
    replayed: bool = False


class Grant(BaseModel):
    """One open credit lot: credits that arrived together, with a source, an optional
    expiry and a priority (lower is consumed first)."""

    model_config = ConfigDict(frozen=True)

    grant_id: str = Field(
        description="The id of the entry that opened the lot; '_' for credits no lot tracks "
        "(written before lots, or by an older SDK): never expiring, consumed last."
    )
    source: str = Field(description="init, grant, purchase, subscription, referral, adjust...")
    amount: int = Field(description="Credits as granted.")
    remaining: int = Field(description="Credits left in the lot.")
    expires_at: datetime | None = Field(
        default=None, description="When what is left lapses (server time); None: never."
    )
    priority: int = Field(description="0-100; lower is consumed first.")


class RevokeResult(BaseModel):
    """The outcome of revoke(): what was taken back from a lot, and what could not be."""

    model_config = ConfigDict(frozen=True)

    account: str
    revoked: int = Field(description="Credits taken back (unspent credits of the lot).")
    unrecoverable: int = Field(
        description="Credits asked for that the lot no longer held: already spent (or held "
        "by an open reservation, or lapsed). Never taken from the balance otherwise."
    )
    balance: int = Field(description="The balance right after the revoke entry.")
    entry: LedgerEntry | None = Field(
        default=None, description="The revoke entry; None when nothing could be taken."
    )
    replayed: bool = False


class AllocationResult(BaseModel):
    """The outcome of allocate(): one period's credits, once per (account, period)."""

    model_config = ConfigDict(frozen=True)

    account: str
    grant_id: str = Field(description="The id of the allocation's lot (its entry's id).")
    rolled_over: int = Field(description="Unused credits carried in from earlier periods.")
    expired: int = Field(description="Unused credits of earlier periods that lapsed now.")
    balance: int = Field(description="The balance right after the allocation.")
    entry: LedgerEntry = Field(description="The allocation's credit entry.")
    replayed: bool = False
