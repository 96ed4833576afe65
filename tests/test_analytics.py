"""History filters and per-day usage, on every backend and mode."""

from __future__ import annotations

from datetime import date, datetime, timezone
from typing import Any

import pytest

from sparked_credits import EntryType, ValidationError

ACCT = "user_2abc"


def _spend(client: Any) -> None:
    client.initialize_user(ACCT, 1000)
    client.credit(ACCT, 500, source="purchase")
    client.charge(ACCT, "chat_message")
    client.charge(ACCT, "chat_message")
    video = client.charge(ACCT, "video_generation", seconds=3)
    client.refund(ACCT, video.entry.id)
    client.charge(ACCT, "canvas_simple")


def test_history_filters(make_client: Any) -> None:
    chat = make_client(app="app.sparked.world")
    canvas = make_client(app="canvas.sparked.world")
    chat.initialize_user(ACCT, 10_000)
    for i in range(30):
        (chat if i % 3 else canvas).charge(ACCT, "chat_message" if i % 3 else "canvas_simple")
    debits = chat.history(ACCT, limit=100, types=["debit"])
    assert len(debits.entries) == 30
    assert all(e.type is EntryType.DEBIT for e in debits.entries)
    only_canvas = chat.history(ACCT, limit=4, app="canvas.sparked.world")
    assert len(only_canvas.entries) == 4
    assert {e.action for e in only_canvas.entries} == {"canvas_simple"}
    rest = chat.history(ACCT, limit=100, app="canvas.sparked.world",
                        cursor=only_canvas.next_cursor)
    assert len(rest.entries) == 6
    assert rest.next_cursor is None
    assert {e.id for e in rest.entries}.isdisjoint(e.id for e in only_canvas.entries)
    inits = chat.history(ACCT, types=[EntryType.INIT])
    assert [e.type for e in inits.entries] == [EntryType.INIT]
    with pytest.raises(ValidationError) as info:
        chat.history(ACCT, types=["bogus"])
    assert info.value.field == "types"


def test_usage_by_action_today(client: Any) -> None:
    _spend(client)
    report = client.usage(ACCT, days=7)
    assert len(report.days) == 7
    assert report.days[-1].day == datetime.now(timezone.utc).date()
    assert all(d.total == 0 and d.by == {} for d in report.days[:-1])
    today = report.days[-1]
    assert today.by == {"canvas_simple": 50, "chat_message": 20, "video_generation": 0}
    assert today.total == 70 == report.total


def test_usage_by_app(make_client: Any) -> None:
    chat = make_client(app="app.sparked.world")
    studio = make_client(app="studio.sparked.world")
    chat.initialize_user(ACCT, 1000)
    chat.charge(ACCT, "chat_message")
    studio.charge(ACCT, "video_generation", seconds=5)
    today = chat.usage(ACCT, days=1, group_by="app").days[0]
    assert today.by == {"app.sparked.world": 10, "studio.sparked.world": 50}


def test_usage_counts_settled_holds_net(client: Any) -> None:
    client.initialize_user(ACCT, 5000)
    hold = client.reserve(ACCT, 3000, action="model_training")
    client.settle(ACCT, hold.hold_id, 1200)
    assert client.usage(ACCT, days=1).days[0].by == {"model_training": 1200}


def test_usage_in_a_time_zone_and_bad_arguments(client: Any) -> None:
    _spend(client)
    report = client.usage(ACCT, days=3, tz="Pacific/Kiritimati")  # UTC+14
    assert report.time_zone == "Pacific/Kiritimati"
    assert report.total == 70
    assert len(report.days) == 3
    for bad, field in ((dict(days=0), "days"), (dict(days=400), "days"),
                       (dict(group_by="user"), "group_by"), (dict(tz="Mars/Olympus"), "tz")):
        with pytest.raises(ValidationError) as info:
            client.usage(ACCT, **bad)
        assert info.value.field == field


def test_usage_window_excludes_older_days(redis_url: str) -> None:
    from sparked_credits import CreditsClient
    from sparked_credits._core import analytics

    with CreditsClient(redis_url) as client:
        _spend(client)
        tomorrow = date.fromordinal(datetime.now(timezone.utc).date().toordinal() + 1)
        report = client._drive(
            analytics.usage(client._ops, ACCT, 1, "action", None, today=tomorrow)
        )
        assert report.days[0].day == tomorrow
        assert report.total == 0
