"""Procedures and their two drivers: the one place where sync and async differ in kind.

Anything that takes more than one round trip (a reconcile in chunks, a hold sweep, a
history page with filters, a retry after a failure, every account of ``reconcile_all``) is
written once, as a generator: it yields steps and receives their results. A step is a
request for the client or backend to carry out, :class:`Sleep`, or :class:`Fanout` (run
several procedures at once). An exception a step raised is thrown back into the procedure,
which may handle it. :func:`drive` carries the steps out with blocking calls and threads,
:func:`drive_async` with awaits and tasks; nothing else needs writing twice.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Generator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = ["Fanout", "Sleep", "Steps", "drive", "drive_async"]

T = TypeVar("T")

Steps = Generator[Any, Any, T]
"""A procedure: yields steps, receives each step's result (or has its exception thrown in)."""


@dataclass(frozen=True, slots=True)
class Sleep:
    """Wait this long before the next step."""

    seconds: float


@dataclass(frozen=True, slots=True)
class Fanout:
    """Run these procedures, at most ``concurrency`` at a time; the result is the list of
    their results in order. A procedure's exception propagates (catch it inside it to
    collect it instead)."""

    procedures: tuple[Steps[Any], ...]
    concurrency: int


def drive(
    steps: Steps[T], run: Callable[[Any], Any], sleep: Callable[[float], Any] = time.sleep
) -> T:
    """Run ``steps`` with a blocking ``run(step)``; a Fanout runs on threads."""
    reply: Any = None
    error: Exception | None = None
    while True:
        try:
            step = steps.send(reply) if error is None else steps.throw(error)
        except StopIteration as done:
            result: T = done.value
            return result
        reply, error = None, None
        try:
            if type(step) is Sleep:
                sleep(step.seconds)
            elif type(step) is Fanout:
                with ThreadPoolExecutor(max_workers=max(1, step.concurrency)) as pool:
                    reply = list(pool.map(lambda p: drive(p, run, sleep), step.procedures))
            else:
                reply = run(step)
        except Exception as exc:
            error = exc


async def drive_async(
    steps: Steps[T],
    run: Callable[[Any], Awaitable[Any]],
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
) -> T:
    """Run ``steps`` with an awaited ``run(step)``; a Fanout runs as tasks."""
    reply: Any = None
    error: Exception | None = None
    while True:
        try:
            step = steps.send(reply) if error is None else steps.throw(error)
        except StopIteration as done:
            result: T = done.value
            return result
        reply, error = None, None
        try:
            if type(step) is Sleep:
                await sleep(step.seconds)
            elif type(step) is Fanout:
                gate = asyncio.Semaphore(max(1, step.concurrency))

                async def one(procedure: Steps[Any], gate: asyncio.Semaphore = gate) -> Any:
                    async with gate:
                        return await drive_async(procedure, run, sleep)

                reply = await asyncio.gather(*(one(p) for p in step.procedures))
            else:
                reply = await run(step)
        except Exception as exc:
            error = exc
