"""history() and usage() read on into the archive once Redis is trimmed: the same cursor,
the same filters, the same figures, on every backend and both clients."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from conftest import token_for
from sparked_credits import CreditsClient
from sparked_credits.archive import Archiver
from sparked_credits.errors import ConfigurationError

pytestmark = pytest.mark.timeout(120)


def page_all(client: Any, account: str, limit: int, **filters: Any) -> list[Any]:
    out, cursor = [], None
    for _ in range(200):
        page = client.history(account, limit, cursor, **filters)
        assert len(page.entries) <= limit
        out.extend(page.entries)
        if page.next_cursor is None:
            return out
        assert len(page.entries) == limit
        cursor = page.next_cursor
    raise AssertionError("history did not end")


def write(client: Any, account: str, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        client.debit(account, 1 + i % 4, action=("chat" if i % 3 else "video"))
        if i % 5 == 0:
            client.credit(account, 3, source="grant")


def test_history_and_usage_continue_into_the_archive(
    make_client: Callable[..., Any], backend_url: str, archive_url: str
) -> None:
    client = make_client(archive=archive_url)
    redis_only = make_client()
    client.initialize_user("user_h", 10_000)
    write(client, "user_h", 24)
    hold = client.reserve("user_h", 7, action="video")  # open: its entry stays in Redis
    before_trim = page_all(redis_only, "user_h", 1000)
    usage_before = client.usage("user_h", 2)
    with CreditsClient(backend_url, token=token_for(backend_url)) as sync, Archiver(
        sync, archive_url, retain="0s"
    ) as archiver:
        report = archiver.run_once()
    assert report.entries == len(before_trim)
    assert report.trimmed > 0
    still = page_all(redis_only, "user_h", 1000)
    assert len(still) == len(before_trim) - report.trimmed
    assert still[-1].id == hold.hold_id  # the open hold's reserve entry bounds the trim
    write(client, "user_h", 6, start=100)
    client.settle("user_h", hold.hold_id, 5)
    everything = page_all(redis_only, "user_h", 1000)[:-len(still)] + before_trim
    # Paged back with small pages, across the boundary: every entry once, in order.
    for limit in (1, 7, 50):
        assert page_all(client, "user_h", limit) == everything
    # Filters continue with the same meaning.
    for filters in ({"types": ["debit"]}, {"action": "video"}, {"app": "app.sparked.world"},
                    {"types": ["credit", "init"]}):
        expected = [e for e in everything if _matches(e, **filters)]
        assert page_all(client, "user_h", 4, **filters) == expected
    # Without the archive, history ends where Redis does.
    assert len(page_all(redis_only, "user_h", 10)) < len(everything)
    after = client.usage("user_h", 2)
    added = sum(-e.delta for e in everything[: len(everything) - len(before_trim)]
                if e.type_name in ("debit", "settle", "reserve"))
    assert after.total == usage_before.total + added
    assert redis_only.usage("user_h", 2).total < after.total
    # reconcile(full=True) proves the trimmed part against the archive.
    proved = client.reconcile("user_h", full=True)
    assert (proved.matched, proved.archive_matched) == (True, True)
    assert redis_only.reconcile("user_h", full=True).archive_matched is None
    with psycopg.connect(archive_url, autocommit=True) as conn:
        conn.execute(
            "DELETE FROM sparked_credits.entries WHERE (account, ms, seq) IN (SELECT account, "
            "ms, seq FROM sparked_credits.entries WHERE type = 'debit' LIMIT 1)"
        )
    assert client.reconcile("user_h", full=True).archive_matched is False


def _matches(e: Any, types: list[str] | None = None, action: str | None = None,
             app: str | None = None) -> bool:
    return ((types is None or e.type_name in types) and (action is None or e.action == action)
            and (app is None or e.app == app))


def test_archive_option_is_checked_and_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, archive_url: str
) -> None:
    with pytest.raises(ConfigurationError, match="postgresql://"):
        CreditsClient("memory://x", archive="redis://nope")
    monkeypatch.setenv("REDIS_URL", "memory://env-archive")
    monkeypatch.setenv("SPARKED_CREDITS_ARCHIVE_URL", archive_url)
    with CreditsClient.from_env() as client:
        assert client._archive is not None
        assert client._archive.url == archive_url
