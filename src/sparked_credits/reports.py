"""Results of reconciliation and usage analytics (frozen pydantic models)."""

from __future__ import annotations

from datetime import date

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["DailyUsage", "ReconcileReport", "ReconcileResult", "TrimResult", "UsageReport"]


class ReconcileResult(BaseModel):
    """One account: does the stored balance equal the sum of its ledger?"""

    model_config = ConfigDict(frozen=True)

    account: str
    balance: int = Field(description="The stored balance found (before any repair).")
    ledger_sum: int = Field(description="The sum of every entry's delta.")
    matched: bool = Field(description="The balance equalled the ledger sum (before repair).")
    repaired: bool = Field(
        default=False,
        description="Something was fixed: the balance set to the ledger sum (recorded by an "
        "'adjust' entry), derived records rebuilt, or a repeated key compensated.",
    )
    entries_read: int = Field(description="Entries summed by this call (after the checkpoint).")
    full: bool = Field(
        default=False,
        description="A full pass ran (asked for, or the cheap pass found the count at the "
        "checkpoint changed, or a repair).",
    )
    rebuilt: int = Field(
        default=0,
        description="Derived records (idempotency records, holds, marks, refund totals) "
        "a full repair rebuilt from the ledger.",
    )
    duplicates: int = Field(
        default=0,
        description="Entries that applied an idempotency key (or an init) a second time, "
        "compensated by a full repair with a new entry.",
    )
    lots_matched: bool | None = Field(
        default=None,
        description="The credit lots agreed: every pass checks that they add up, are not "
        "negative, do not exceed the ledger sum and agree with their indexes; a full pass "
        "also replays the ledger and compares the lots it implies (see lots_replayed). "
        "None: not checked (a result of an earlier version).",
    )
    lots_problem: str | None = Field(
        default=None,
        description="What the check found wrong with the stored lots (before any repair): "
        "'record' (unreadable), 'negative', 'summary' (its head or soonest expiry), "
        "'tracked' (its sum), 'order' or 'expiry' (an index), 'over_balance' (more credits "
        "in lots than the ledger holds), 'ledger' (they differ from the ledger's replay); "
        "None when they agreed.",
    )
    lots_replayed: bool = Field(
        default=False,
        description="A full pass replayed the ledger to compare the lots (False: a cheap "
        "pass, or a ledger trimmed by an earlier version that kept no lots at its base).",
    )
    lots_rebuilt: int = Field(
        default=0, description="Credit lots a full repair rewrote from the ledger."
    )
    checkpoint_id: str | None = Field(
        default=None, description="The entry the next reconcile starts after."
    )
    adjustment_id: str | None = Field(default=None, description="The repair's adjust entry.")
    archive_matched: bool | None = Field(
        default=None,
        description="A full pass on a client with an archive: the archived entries up to "
        "the trim base add up to the base's sum and count, so balance == archive + Redis. "
        "None: no archive, or a ledger never trimmed.",
    )

    @property
    def difference(self) -> int:
        """balance - ledger_sum: positive when the balance shows more than the ledger."""
        return self.balance - self.ledger_sum


class ReconcileReport(BaseModel):
    """Every account of one reconcile_all run."""

    model_config = ConfigDict(frozen=True)

    checked: int
    mismatched: int = Field(description="Accounts whose balance differed from the ledger.")
    lots_mismatched: int = Field(
        default=0, description="Accounts whose credit lots disagreed (see lots_problem)."
    )
    repaired: int = Field(description="Accounts where a repair fixed something.")
    errors: dict[str, str] = Field(default_factory=dict, description="account -> error")
    expired_holds: int = Field(default=0, description="Holds returned by the sweep first.")
    duration_seconds: float
    results: list[ReconcileResult] = Field(default_factory=list)
    transfers_recovered: int = Field(
        default=0,
        description="Transfers interrupted between their two steps that this run finished "
        "(or dropped, when nothing had been taken).",
    )

    @property
    def unrepaired(self) -> int:
        """Accounts whose balance or credit lots did not add up and were not repaired."""
        return sum(
            (not r.matched or r.lots_matched is False) and not r.repaired for r in self.results
        )

    @property
    def clean(self) -> bool:
        """True when every account adds up now (after repairs) and none failed."""
        return self.unrepaired == 0 and not self.errors


class TrimResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    account: str
    removed: int
    kept_from: str | None = Field(description="Entries from this id on are kept.")


class DailyUsage(BaseModel):
    """Credits used on one day, in total and by action or app."""

    model_config = ConfigDict(frozen=True)

    day: date
    total: int
    by: dict[str, int] = Field(default_factory=dict)


class UsageReport(BaseModel):
    """Per-day usage for a chart: every day of the window is present, zero when idle."""

    model_config = ConfigDict(frozen=True)

    account: str
    group_by: str
    time_zone: str
    days: list[DailyUsage]

    @property
    def total(self) -> int:
        return sum(d.total for d in self.days)
