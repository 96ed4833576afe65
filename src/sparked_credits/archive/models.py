"""What the archive's runs return (frozen pydantic models, printable as JSON by the CLI)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ArchiveReport"]


class ArchiveReport(BaseModel):
    """One archive run (or, from ``follow``, the totals of every round)."""

    model_config = ConfigDict(frozen=True)

    accounts: int = Field(description="Accounts with a ledger that the run looked at.")
    accounts_archived: int = Field(description="Accounts that had new entries.")
    entries: int = Field(description="Entries copied into the archive (each exactly once).")
    trimmed: int = Field(
        default=0, description="Entries removed from Redis by the retention (archived and old)."
    )
    duration_seconds: float
    rounds: int = Field(default=1, description="Rounds run (more than one with --follow).")
    gaps: list[str] = Field(
        default_factory=list,
        description="Accounts whose ledger was trimmed from Redis past what the archive "
        "held (a trim without the archive): the entries in between are not archived.",
    )

    @property
    def entries_per_second(self) -> float:
        return self.entries / self.duration_seconds if self.duration_seconds > 0 else 0.0
