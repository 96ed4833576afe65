"""The sync and async twins are the same code up to async/await (as httpcore checks with
unasync): take the async source, drop ``async``/``await``, rename the async-only names, and
it must equal the sync source, logical line by logical line, except for an allow-list.

Logic that is not the same in both (driving a multi-step procedure, the retry loop, the
fan-out of reconcile_all) lives once in the pure core (``_core.steps``, ``backends.recovery``,
``_client_base``, ``_drive``); what is left here is the typed surface, which stays hand-written.
"""

from __future__ import annotations

import difflib
import inspect
import io
import tokenize
from pathlib import Path

import pytest

from sparked_credits import _drive, async_client, client, holds_context
from sparked_credits.backends import base, cluster, redis_py, upstash

RENAMES = {
    "AsyncCreditsClient": "CreditsClient",
    "AsyncHoldContext": "HoldContext",
    "_AsyncClient": "_Client",
    "AsyncBackend": "SyncBackend",
    "AsyncRedisBackend": "RedisBackend",
    "AsyncLanes": "Lanes",
    "_ready_async": "_ready",
    "AsyncUpstashBackend": "UpstashBackend",
    "AsyncArchiveReader": "SyncArchiveReader",
    "open_async_backend": "open_backend",
    "drive_async": "drive",
    "aclose": "close",
    "_aclose": "_close",
    # redis-py 5 to 7 name the asyncio connection's check so (8: can_read, as blocking).
    "can_read_destructive": "can_read",
    "__aenter__": "__enter__",
    "__aexit__": "__exit__",
    "StopAsyncIteration": "StopIteration",
}
DROPPED = {"async", "await"}
LINE_RENAMES = [
    ("asyncio . sleep", "time . sleep"),
    ("import asyncio", "import time"),
    ("redis . asyncio . Redis", "redis . Redis"),
    ("redis . asyncio . ConnectionPool", "redis . ConnectionPool"),
]


def unasync_lines(source: str) -> list[str]:
    """Logical lines of ``source`` after the unasync token replacement, comments and line
    wrapping ignored (the formatter wraps an awaited line earlier)."""
    lines: list[str] = []
    current: list[str] = []
    depth = 0
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type in (tokenize.COMMENT, tokenize.NL, tokenize.ENDMARKER):
            continue
        if tok.type == tokenize.INDENT:
            depth += 1
            continue
        if tok.type == tokenize.DEDENT:
            depth -= 1
            continue
        if tok.type == tokenize.NEWLINE:
            if len(current) == 1 and current[0][:1] in "\"'rbf":
                current = ["<docstring>"]  # each twin describes itself in its own words
            if current:
                line = " ".join(current)
                for old, new in LINE_RENAMES:
                    line = line.replace(old, new)
                lines.append("    " * depth + line)
            current = []
            continue
        if tok.type == tokenize.NAME and tok.string in DROPPED:
            continue
        text = RENAMES.get(tok.string, tok.string) if tok.type == tokenize.NAME else tok.string
        if tok.type == tokenize.STRING:
            text = " ".join(text.split())  # a docstring re-wrapped is the same docstring
        current.append(text)
    return lines


def differences(sync_source: str, async_source: str) -> list[str]:
    sync_lines = unasync_lines(sync_source)
    async_lines = unasync_lines(async_source)
    return [
        line
        for line in difflib.unified_diff(sync_lines, async_lines, lineterm="", n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]


def _file(module: object) -> str:
    return Path(inspect.getfile(module)).read_text()  # type: ignore[arg-type]


# Lines that may differ, as they read after the replacement ("-" sync, "+" async).
ALLOWED = {
    "client": {
        # The imports name the same things; the sorter orders them differently.
        "-from . backends import Settings , SyncBackend , open_backend",
        "+from . backends import SyncBackend , Settings , open_backend",
        '-__all__ = [ "CreditsClient" ]',
        '+__all__ = [ "AsyncCreditsClient" ]',
    },
    "backend contract": {
        "-    _call : Callable [ ... , Any ]",
        "+    _call : Callable [ ... , Awaitable [ Any ] ]",
        # The async execute returns its method's awaitable instead of awaiting it itself.
        "-    def execute ( self , request : Request ) -> Any :",
        "+    def execute ( self , request : Request ) -> Awaitable [ Any ] :",
    },
    "drivers": {
        # A Fanout: threads for the blocking driver, tasks under a semaphore for asyncio.
        "-def drive ( steps : Steps [ T ] , run : Callable [ [ Any ] , Any ] , sleep : Callable"
        " [ [ float ] , Any ] = time . sleep ) -> T :",
        "+def drive ( steps : Steps [ T ] , run : Callable [ [ Any ] , Awaitable [ Any ] ] , sleep"
        " : Callable [ [ float ] , Awaitable [ Any ] ] = time . sleep , ) -> T :",
        "-                with ThreadPoolExecutor ( max_workers = max ( 1 , step . concurrency ) )"
        " as pool :",
        "-                    reply = list ( pool . map ( lambda p : drive ( p , run , sleep ) ,"
        " step . procedures ) )",
        "+                gate = asyncio . Semaphore ( max ( 1 , step . concurrency ) )",
        "+                def one ( procedure : Steps [ Any ] , gate : asyncio . Semaphore = gate )"
        " -> Any :",
        "+                    with gate :",
        "+                        return drive ( procedure , run , sleep )",
        "+                reply = asyncio . gather ( * ( one ( p ) for p in step . procedures ) )",
    },
}


PAIRS = {
    "client": lambda: (_file(client), _file(async_client)),
    "hold context": lambda: (
        inspect.getsource(holds_context.HoldContext),
        inspect.getsource(holds_context.AsyncHoldContext),
    ),
    "backend contract": lambda: (
        inspect.getsource(base.SyncBackend),
        inspect.getsource(base.AsyncBackend),
    ),
    "redis backend": lambda: (
        inspect.getsource(redis_py.RedisBackend),
        inspect.getsource(redis_py.AsyncRedisBackend),
    ),
    "redis lanes": lambda: (
        inspect.getsource(redis_py.Lanes) + inspect.getsource(redis_py._ready),
        inspect.getsource(redis_py.AsyncLanes) + inspect.getsource(redis_py._ready_async),
    ),
    "cluster scripts": lambda: (
        inspect.getsource(cluster.ClusterBackend.run_script),
        inspect.getsource(cluster.AsyncClusterBackend.run_script),
    ),
    "drivers": lambda: (inspect.getsource(_drive.drive), inspect.getsource(_drive.drive_async)),
    "upstash backend": lambda: (
        inspect.getsource(upstash.UpstashBackend),
        inspect.getsource(upstash.AsyncUpstashBackend),
    ),
}


@pytest.mark.parametrize("pair", sorted(PAIRS))
def test_async_twin_is_the_sync_one_with_async_and_await(pair: str) -> None:
    sync_source, async_source = PAIRS[pair]()
    unexpected = [
        d for d in differences(sync_source, async_source) if d not in ALLOWED.get(pair, set())
    ]
    assert not unexpected, "\n".join(unexpected)


def test_the_check_sees_a_difference() -> None:
    sync = "def f(x):\n    return g(x)\n"
    assert differences(sync, "async def f(x):\n    return await g(x)\n") == []
    assert differences(sync, "async def f(x):\n    return await g(x + 1)\n") == [
        "-    return g ( x )",
        "+    return g ( x + 1 )",
    ]
