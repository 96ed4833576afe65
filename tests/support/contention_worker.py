"""Work done by each process of the multi-process contention test (imported under spawn)."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

from sparked_credits import CreditsClient, InsufficientCreditsError, RefundError


def hammer(url: str, account: str, seed: int, rounds: int) -> dict[str, int]:
    """Mixed debits, credits and refunds on one account; returns what succeeded."""
    rng = random.Random(seed)
    done = {"debited": 0, "credited": 0, "refunded": 0, "refused": 0, "debits": 0}
    my_debits: list[tuple[str, int]] = []
    far = datetime.now(timezone.utc) + timedelta(days=2 + seed)
    with CreditsClient(url, app=f"worker-{seed}.test") as client:
        for _ in range(rounds):
            roll = rng.random()
            try:
                if roll < 0.6:
                    amount = rng.randint(1, 40)
                    entry = client.debit(account, amount, action="chat_message").entry
                    done["debited"] += amount
                    done["debits"] += 1
                    my_debits.append((entry.id, amount))
                elif roll < 0.85:
                    amount = rng.randint(1, 30)
                    # Lots of mixed priority and expiry (days away: none lapses here).
                    client.credit(
                        account,
                        amount,
                        source="test",
                        priority=rng.choice([0, 50, 100]),
                        expires_at=far if rng.random() < 0.5 else None,
                    )
                    done["credited"] += amount
                elif my_debits:
                    entry_id, amount = my_debits.pop(rng.randrange(len(my_debits)))
                    client.refund(account, entry_id)
                    done["refunded"] += amount
            except InsufficientCreditsError:
                done["refused"] += 1
            except RefundError:  # pragma: no cover - each debit is refunded once here
                raise
    return done
