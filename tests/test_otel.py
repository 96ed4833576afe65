"""An app whose redis-py is instrumented by OpenTelemetry (``opentelemetry-instrumentation-
redis``, the ``[otel]`` extra) sees a span per command the SDK sends: with the default
``redis_path="auto"`` a client made after ``RedisInstrumentor().instrument()`` sends
through redis-py's ``execute_command``, which the instrumentation wraps, instead of lanes.
Spans are collected with OpenTelemetry's in-memory exporter."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("opentelemetry.instrumentation.redis")
pytest.importorskip("opentelemetry.sdk")

from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)

from sparked_credits import AsyncCreditsClient, CreditsClient
from sparked_credits.backends.redis_py import AsyncLanes, Lanes

ACCT = "user_traced"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = RedisInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        yield exporter
    finally:
        instrumentor.uninstrument()


def _names(exporter: InMemorySpanExporter) -> list[str]:
    return [span.name for span in exporter.get_finished_spans()]


def _sender(client: Any) -> Any:
    return getattr(client._backend._call, "__self__", None)


def test_an_instrumented_app_sees_a_span_per_sdk_command(
    redis_url: str, spans: InMemorySpanExporter
) -> None:
    with CreditsClient(redis_url) as client:
        assert not isinstance(_sender(client), Lanes)
        client.initialize_user(ACCT, 100)
        client.debit(ACCT, 1, action="chat_message")
        # The first call of each script: EVALSHA answered NOSCRIPT, then EVAL.
        assert _names(spans)[-2:] == ["EVALSHA", "EVAL"]
        client.get_balance(ACCT)  # a read-only script: loaded once here
        spans.clear()
        client.debit(ACCT, 1, action="chat_message")
        client.debit(ACCT, 1, action="chat_message")
        client.get_balance(ACCT)
        client.history(ACCT, limit=5)
    assert _names(spans) == ["EVALSHA", "EVALSHA", "EVALSHA", "XREVRANGE"]
    statement = spans.get_finished_spans()[0].attributes or {}
    assert any("EVALSHA" in str(v) for v in statement.values())


def test_an_instrumented_async_app_sees_a_span_per_sdk_command(
    redis_url: str, spans: InMemorySpanExporter
) -> None:
    async def main() -> None:
        async with AsyncCreditsClient(redis_url) as client:
            assert not isinstance(_sender(client), AsyncLanes)
            await client.initialize_user(ACCT, 100)
            await client.debit(ACCT, 1, action="chat_message")
            await client.get_balance(ACCT)  # a read-only script: loaded once here
            spans.clear()
            await client.debit(ACCT, 1, action="chat_message")
            await client.get_balance(ACCT)

    asyncio.run(main())
    assert _names(spans) == ["EVALSHA", "EVALSHA"]


def test_lanes_chosen_explicitly_send_no_spans(redis_url: str, spans: InMemorySpanExporter) -> None:
    """``redis_path="lanes"`` keeps the fast path even under instrumentation (an app that
    would rather have the throughput); its commands then leave no redis spans."""
    with CreditsClient(redis_url, redis_path="lanes") as client:
        assert isinstance(_sender(client), Lanes)
        client.initialize_user(ACCT, 100)
        client.debit(ACCT, 1, action="chat_message")
    assert _names(spans) == []


def test_uninstrumented_redis_keeps_lanes(redis_url: str) -> None:
    with CreditsClient(redis_url) as client:
        assert isinstance(_sender(client), Lanes)


def test_the_readme_block(redis_url: str, spans: InMemorySpanExporter) -> None:
    """The README's block as written (its own instrument() call is then a no-op: the
    fixture instrumented redis-py already, with the in-memory exporter)."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    block = next(
        b
        for b in re.findall(r"```python\n(.*?)```", readme, flags=re.S)
        if "RedisInstrumentor().instrument()" in b
    )
    ns: dict[str, Any] = {}
    exec(block.replace("redis://localhost:6379/0", redis_url), ns)
    ns["credits"].close()
    assert "EVALSHA" in _names(spans)
