"""Bounded Redis: with a retention, an account's Redis memory stays flat under steady
traffic while every entry stays queryable (from the archive).

Steady traffic: rounds of a grant (a credit lot, drained within the round), 150 debits,
a hold reserved and settled, a partial refund, each
round followed by an archive run with ``--retain 0s`` (in production: days; here every
archived entry is "old"). Idempotency records live two generations of their retention (set
to one second here), so they are bounded too. The bound: after a warm-up of three rounds,
the account's keys (MEMORY USAGE of each) never exceed the first measured round by more
than 48 KiB (measured: 30-47 KiB, rising and falling with the idempotency generations), while
the same traffic without the archive adds about 32 KiB a round. A drained lot's record
leaves the lots hash and the trim base once no entry left in Redis names it.
"""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
import redis

from sparked_credits import CreditsClient
from sparked_credits.archive import Archiver

pytestmark = pytest.mark.timeout(180)

ACCOUNT = "user_m"
BOUND = 48 * 1024


def account_bytes(raw: redis.Redis, account: str) -> int:
    total = 0
    for key in raw.scan_iter(match=f"*{account}*", count=1000):
        total += int(raw.memory_usage(key, samples=0) or 0)
    return total


def round_of_traffic(client: CreditsClient, i: int) -> None:
    client.credit(ACCOUNT, 200, source="grant", priority=10)  # spent first: drained
    spent = None
    for j in range(150):
        spent = client.debit(ACCOUNT, 1 + j % 7, action="chat_message", metadata={"r": i})
    hold = client.reserve(ACCOUNT, 30, action="video_generation")
    client.settle(ACCOUNT, hold.hold_id, 12)
    assert spent is not None
    client.refund(ACCOUNT, spent.entry.id, amount=1)


@pytest.mark.parametrize("server_line", ["redis7"], indirect=True)
def test_memory_stays_flat_under_steady_traffic_with_retention(
    redis_url: str, archive_url: str
) -> None:
    raw = redis.Redis.from_url(redis_url)
    sizes: list[int] = []
    with CreditsClient(
        redis_url, app="app.sparked.world", idempotency_ttl=timedelta(seconds=1)
    ) as client, Archiver(client, archive_url, retain="0s") as archiver:
        client.initialize_user(ACCOUNT, 10**9)
        for i in range(10):
            round_of_traffic(client, i)
            archiver.run_once()
            time.sleep(0.3)  # rounds spread over several idempotency generations
            sizes.append(account_bytes(raw, ACCOUNT))
        print(f"account bytes per round, with retention: {sizes}")
        steady = sizes[3:]
        assert max(steady) - steady[0] <= BOUND, sizes
        assert raw.xlen(f"txs:{ACCOUNT}") < 10  # archived and trimmed
        assert raw.hlen(f"lots:{{{ACCOUNT}}}") <= 4  # drained grants gone
        # Every entry stays queryable: history reads on into the archive.
        with CreditsClient(redis_url, archive=archive_url) as reader:
            total, cursor, n = 0, None, 0
            while True:
                page = reader.history(ACCOUNT, 500, cursor)
                total += sum(e.delta for e in page.entries)
                n += len(page.entries)
                if page.next_cursor is None:
                    break
                cursor = page.next_cursor
            assert n == 1 + 10 * (150 + 4)
            assert total == reader.get_balance(ACCOUNT)
            assert reader.reconcile(ACCOUNT, full=True).matched
    # The same traffic without the archive grows round after round.
    raw.flushall()
    grown: list[int] = []
    with CreditsClient(
        redis_url, app="app.sparked.world", idempotency_ttl=timedelta(seconds=1)
    ) as client:
        client.initialize_user(ACCOUNT, 10**9)
        for i in range(4):
            round_of_traffic(client, i)
            grown.append(account_bytes(raw, ACCOUNT))
    print(f"account bytes per round, without: {grown}")
    assert grown[-1] - grown[0] > 3 * 16 * 1024, grown
    raw.close()
