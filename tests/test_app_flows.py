"""The four apps' flows (examples/app_flows.py) end to end, on every backend and mode."""

from __future__ import annotations

import time
from typing import Any

import pytest

import app_flows
from conftest import ledger_sum
from sparked_credits import (
    EntryType,
    InsufficientCreditsError,
    ValidationError,
)

USER = "user_2abc"


@pytest.fixture
def credits(redis_url: str) -> Any:
    from sparked_credits import CreditsClient

    client = CreditsClient(redis_url, app="app.sparked.world")
    client.initialize_user(USER)
    yield client
    client.close()


def test_chat_message_costs_10_once_per_message(credits: Any) -> None:
    reply, charged = app_flows.send_chat_message(credits, USER, "m1", "Hello")
    assert reply == "echo: Hello"
    assert charged.balance == 90
    assert charged.entry.action == "chat_message"
    _, again = app_flows.send_chat_message(credits, USER, "m1", "Hello")  # client retry
    assert again.replayed is True
    assert credits.get_balance(USER) == 90


def test_canvas_simple_and_complex(credits: Any) -> None:
    credits.credit(USER, 100, source="test")
    assert app_flows.create_canvas(credits, USER, "c1", "a cat", False)[1].entry.delta == -50
    assert app_flows.create_canvas(credits, USER, "c2", "a city", True)[1].entry.delta == -75
    assert credits.get_balance(USER) == 75


def test_video_charged_per_second_and_refunded_on_failure(credits: Any) -> None:
    credits.credit(USER, 900, source="test")
    _, charged = app_flows.create_video(credits, USER, "v1", "waves", 2.3)
    assert charged.entry.delta == -23  # 10 per second, rounded up to whole credits
    assert credits.get_balance(USER) == 977

    def broken(prompt: str, seconds: float) -> str:
        raise RuntimeError("renderer crashed")

    with pytest.raises(RuntimeError, match="crashed"):
        app_flows.create_video(credits, USER, "v2", "storm", 30, render=broken)
    assert credits.get_balance(USER) == 977  # 300 taken, 300 refunded
    kinds = [e.type for e in credits.history(USER, limit=2).entries]
    assert kinds == [EntryType.REFUND, EntryType.DEBIT]
    assert ledger_sum(credits, USER) == 977


def test_sixty_second_video_with_40_credits_is_a_402(credits: Any) -> None:
    credits.debit(USER, 60, action="chat_message")
    with pytest.raises(InsufficientCreditsError) as info:
        app_flows.create_video(credits, USER, "v3", "a long film", 60)
    body = info.value.to_dict()
    assert info.value.http_status == 402
    assert (body["balance"], body["required"], body["action"]) == (40, 600, "video_generation")
    assert credits.get_balance(USER) == 40


def test_zero_second_video_is_refused(credits: Any) -> None:
    with pytest.raises(ValidationError):
        app_flows.create_video(credits, USER, "v4", "nothing", 0)
    assert credits.get_balance(USER) == 100


def test_training_settles_once_despite_three_webhooks(credits: Any) -> None:
    credits.credit(USER, 10_000, source="purchase")
    job = app_flows.start_training(credits, USER, "job-1", estimated_gpu_hours=4)
    assert job.reserved == 4000
    assert credits.get_balance(USER) == 6100
    again = app_flows.start_training(credits, USER, "job-1", estimated_gpu_hours=4)
    assert again.hold_id == job.hold_id  # the start route retried: one hold
    results = [app_flows.training_webhook(credits, job, 2.5) for _ in range(3)]
    assert [r.replayed for r in results if r] == [False, True, True]
    assert credits.get_balance(USER) == 10_100 - 2500
    assert ledger_sum(credits, USER) == credits.get_balance(USER)


def test_training_overrun_takes_the_difference(credits: Any) -> None:
    credits.credit(USER, 10_000, source="purchase")
    job = app_flows.start_training(credits, USER, "job-2", estimated_gpu_hours=1)
    result = app_flows.training_webhook(credits, job, 1.5)
    assert result is not None
    assert result.entry.delta == -500
    assert credits.get_balance(USER) == 10_100 - 1500


def test_training_job_that_never_reports_is_released(credits: Any) -> None:
    credits.credit(USER, 5000, source="purchase")
    from datetime import timedelta

    job = app_flows.start_training(
        credits, USER, "job-3", estimated_gpu_hours=2, max_runtime=timedelta(milliseconds=100)
    )
    assert credits.get_balance(USER) == 3100
    time.sleep(0.2)
    assert credits.sweep_expired() == 1
    assert credits.get_balance(USER) == 5100
    assert app_flows.training_webhook(credits, job, 1.0) is None  # too late: nothing taken
    assert credits.get_balance(USER) == 5100 == ledger_sum(credits, USER)
