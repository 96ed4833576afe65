"""Fixtures: real redis-server processes, and clients over every backend and both modes.

The contract tests take ``make_client``, which is parametrized over
memory/redis/cluster/upstash x sync/async: fakeredis in-process, one real redis-server, a
real 3-primary Redis Cluster, and the upstash-redis client over HTTP to a bridge in front
of the real redis-server. Async clients are driven through :class:`AsyncFacade` (a private
event loop per client), so one test body checks both clients' behaviour.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
from collections.abc import Callable, Generator, Iterator
from typing import Any

import pytest
import redis

from sparked_credits import AsyncCreditsClient, CreditsClient
from sparked_credits.backends.memory import reset_memory_store
from sparked_credits.testing import RedisCluster, RedisServer
from upstash_bridge import TOKEN, UpstashBridge

_names = itertools.count()

# Each phase's report on the test item, so fixtures can act on a failure in their teardown
# (the browser tests save a screenshot).
PHASE_REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    item.stash.setdefault(PHASE_REPORTS, {})[report.when] = report
    return report


class AsyncFacade:
    """Calls an AsyncCreditsClient's coroutine methods to completion on a private loop."""

    def __init__(self, client: AsyncCreditsClient) -> None:
        self._client = client
        self._loop = asyncio.new_event_loop()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if inspect.iscoroutinefunction(attr):
            return lambda *a, **k: self._loop.run_until_complete(attr(*a, **k))
        return attr

    def close(self) -> None:
        self._loop.run_until_complete(self._client.close())
        self._loop.close()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """The shared server's URL, emptied before the test."""
    raw = redis.Redis.from_url(redis_server.url)
    raw.flushall()
    raw.script_flush()
    raw.close()
    return redis_server.url


@pytest.fixture
def raw_redis(redis_url: str) -> Iterator[redis.Redis]:
    """A plain redis-py client on the test server, to look behind the SDK's back."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    with RedisCluster(3) as cluster:
        yield cluster


@pytest.fixture
def cluster_url(redis_cluster: RedisCluster) -> str:
    """The shared cluster's URL, every node emptied before the test."""
    redis_cluster.flush()
    return redis_cluster.url


@pytest.fixture(scope="session")
def upstash_bridge(redis_server: RedisServer) -> Iterator[UpstashBridge]:
    """The Upstash REST bridge in front of the shared redis-server."""
    with UpstashBridge(redis_server.port) as bridge:
        yield bridge


@pytest.fixture
def upstash_url(redis_url: str, upstash_bridge: UpstashBridge) -> str:
    """The bridge's URL (use with ``token=UPSTASH_TOKEN``); Redis emptied, faults and
    counters reset before the test."""
    upstash_bridge.reset()
    return upstash_bridge.url


UPSTASH_TOKEN = TOKEN

BACKENDS = ["memory", "redis", "cluster", "upstash"]


@pytest.fixture(params=BACKENDS)
def backend_url(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param in ("redis", "cluster", "upstash"):
        yield request.getfixturevalue(f"{request.param}_url")
        return
    name = f"test-{next(_names)}"
    yield f"memory://{name}"
    reset_memory_store(name)


@pytest.fixture(params=["sync", "async"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_client(backend_url: str, mode: str) -> Iterator[Callable[..., Any]]:
    """Factory of clients on one store: ``make_client(app=..., auto_initialize=...)``."""
    made: list[Any] = []

    def make(**options: Any) -> Any:
        options.setdefault("app", "app.sparked.world")
        if backend_url.startswith("http"):
            options.setdefault("token", UPSTASH_TOKEN)
        client: Any
        if mode == "sync":
            client = CreditsClient(backend_url, **options)
        else:
            client = AsyncFacade(AsyncCreditsClient(backend_url, **options))
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


@pytest.fixture
def client(make_client: Callable[..., Any]) -> Any:
    return make_client()


def ledger_sum(client: Any, account: str) -> int:
    """Sum of every entry's delta, read page by page through the public API."""
    total, cursor = 0, None
    while True:
        page = client.history(account, limit=1000, cursor=cursor)
        total += sum(e.delta for e in page.entries)
        if page.next_cursor is None:
            return total
        cursor = page.next_cursor
