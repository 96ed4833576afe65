"""The two drivers of the core's procedures (``_core.steps``): the one place where the
blocking and the asyncio clients differ in kind, and nothing else needs writing twice."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from ._core.steps import Fanout, Sleep, Steps

__all__ = ["drive", "drive_async"]

T = TypeVar("T")


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
