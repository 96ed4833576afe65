"""The Upstash REST backend (``https://<db>.upstash.io`` plus a token), on upstash-redis.

upstash-redis sends one HTTP POST per command. Out of the box it has gaps that matter for
money, each closed here:

* **No timeout** (its httpx client uses ``timeout=None``): a stalled request would hang a
  worker forever. Its httpx client is swapped for one with the client's ``timeout``.
* **Blind retries**: it re-POSTs any failed request, writes included, after 3 s. That is
  turned off (``rest_retries=0``); this backend retries instead, only failures classified
  as transient, with a short jittered backoff. Re-sending is safe for every request the
  SDK makes: each script carries its idempotency key (the server applies it once and a
  repeat replays the first outcome), and reads change nothing.
* **No NOSCRIPT fallback**: EVALSHA's NOSCRIPT error comes back as text; on it the script
  is sent once with EVAL (which also caches it for the next EVALSHA).
* **Request-level failures leak** as JSONDecodeError (an HTML 502 page), AttributeError
  (a JSON body of the wrong shape) or a bare UpstashError: a response hook checks status
  and shape first and raises :class:`~.errors.BadResponse`, which ``errors.translate``
  turns into a BackendError saying whether the call may have applied.

Read-your-writes: Upstash may serve reads from replicas. upstash-redis's
``read_your_writes`` (kept on) sends back the ``Upstash-Sync-Token`` of the last reply, so
the next request of the same client observes that client's earlier writes, e.g. a
``get_balance`` right after a ``debit``. Separate clients (other processes) get no such
guarantee for plain reads; every mutation runs on the primary and is always current.

Results arrive base64-encoded (``Upstash-Encoding: base64``) and decoded to ``str`` by the
client; the SDK's decoders take ``str`` and ``bytes`` alike.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from ..errors import ConfigurationError
from ..requests import CommandCall, ScanCall, ScriptCall
from .base import AsyncBackend, SyncBackend, drive, drive_async, scan_steps
from .errors import BadResponse, is_noscript, is_transient

__all__ = ["AsyncUpstashBackend", "UpstashBackend", "open_async_upstash", "open_upstash"]

T = TypeVar("T")


def _import() -> Any:
    try:
        import httpx
        import upstash_redis
        import upstash_redis.asyncio
    except ImportError as exc:
        raise ConfigurationError(
            "Upstash URLs need upstash-redis: pip install 'sparked-credits[upstash]'"
        ) from exc
    return upstash_redis, httpx


def check_body(status: int, content: bytes, pipeline: bool) -> None:
    """Raise BadResponse unless this is a reply upstash-redis can read: 200 (or 400, the
    status of a Redis error reply) with ``{"result"|"error": ...}``, or a list of those
    from ``/pipeline``."""
    if status not in (200, 400):
        raise BadResponse(status, _excerpt(content))
    try:
        body = json.loads(content)
    except ValueError:
        raise BadResponse(status, f"not JSON: {_excerpt(content)}") from None
    items = body if pipeline and isinstance(body, list) else [body]
    for item in items:
        if not isinstance(item, dict) or not ("result" in item or "error" in item):
            raise BadResponse(status, f"unexpected reply shape: {_excerpt(content)}")
    if status == 400 and pipeline:
        raise BadResponse(status, _excerpt(content))


def _excerpt(content: bytes) -> str:
    text = content[:200].decode("utf-8", "replace").strip()
    return repr(text) if text else "(empty body)"


def backoff(attempt: int) -> float:
    """Seconds to wait before retry number ``attempt`` (0-based): 20 ms doubling, capped
    at 0.5 s, with full jitter so many clients do not retry in step."""
    return random.uniform(0, min(0.5, 0.02 * 2**attempt))


def _eval_command(call: ScriptCall, sha: bool) -> list[str]:
    head = call.script.sha if sha else call.script.source
    return ["EVALSHA" if sha else "EVAL", head, str(len(call.keys)), *call.keys, *call.args]


def _is_pipeline(url: str) -> bool:
    return url.rstrip("/").endswith(("/pipeline", "/multi-exec"))


def _checked_http(httpx: Any, timeout: float, asyncio_: bool) -> Any:
    """An httpx client with a timeout and the reply check as a response hook."""
    if asyncio_:

        async def acheck(response: Any) -> None:
            await response.aread()
            check_body(response.status_code, response.content, _is_pipeline(str(response.url)))

        return httpx.AsyncClient(timeout=timeout, event_hooks={"response": [acheck]})

    def check(response: Any) -> None:
        response.read()
        check_body(response.status_code, response.content, _is_pipeline(str(response.url)))

    return httpx.Client(timeout=timeout, event_hooks={"response": [check]})


def _make_client(url: str, token: str | None, timeout: float, asyncio_: bool) -> Any:
    if not token:
        raise ConfigurationError("an Upstash URL needs token= (UPSTASH_REDIS_REST_TOKEN)")
    upstash_redis, httpx = _import()
    cls = upstash_redis.asyncio.Redis if asyncio_ else upstash_redis.Redis
    client = cls(
        url.rstrip("/"),
        token,
        rest_encoding="base64",
        rest_retries=0,
        allow_telemetry=False,
        read_your_writes=True,
    )
    transport = getattr(client, "_http", None)
    if transport is None or not hasattr(transport, "_client"):
        raise ConfigurationError(
            "this upstash-redis version is not supported (no _http._client to set a timeout "
            "on); install upstash-redis>=1.8,<2"
        )
    # Replace, not wrap: the original has no timeout. The sync one is closed here; the
    # async one was never used, and closing it needs a running loop.
    if not asyncio_:
        transport._client.close()
    transport._client = _checked_http(httpx, timeout, asyncio_)
    return client


class UpstashBackend(SyncBackend):
    """A blocking upstash-redis client: one HTTP request per call (two after a NOSCRIPT)."""

    def __init__(self, client: Any, retries: int) -> None:
        self.client = client
        self.retries = retries

    def _send(self, *command: str) -> Any:
        attempt = 0
        while True:
            try:
                return self.client.execute(list(command))
            except Exception as exc:
                if attempt >= self.retries or not is_transient(exc):
                    raise
                time.sleep(backoff(attempt))
                attempt += 1

    def run_script(self, call: ScriptCall) -> Any:
        try:
            return self._send(*_eval_command(call, sha=True))
        except Exception as exc:
            if not is_noscript(exc):
                raise
            return self._send(*_eval_command(call, sha=False))

    def run_command(self, call: CommandCall) -> Any:
        return self._send(*call.args)

    def scan_keys(self, call: ScanCall) -> list[Any]:
        return drive(scan_steps(call), self._send)

    def close(self) -> None:
        self.client.close()


class AsyncUpstashBackend(AsyncBackend):
    """An asyncio upstash-redis client, the twin of :class:`UpstashBackend`."""

    def __init__(self, client: Any, retries: int) -> None:
        self.client = client
        self.retries = retries
        self._execute: Callable[[list[str]], Awaitable[Any]] = client.execute

    async def _send(self, *command: str) -> Any:
        attempt = 0
        while True:
            try:
                return await self._execute(list(command))
            except Exception as exc:
                if attempt >= self.retries or not is_transient(exc):
                    raise
                await asyncio.sleep(backoff(attempt))
                attempt += 1

    async def run_script(self, call: ScriptCall) -> Any:
        try:
            return await self._send(*_eval_command(call, sha=True))
        except Exception as exc:
            if not is_noscript(exc):
                raise
            return await self._send(*_eval_command(call, sha=False))

    async def run_command(self, call: CommandCall) -> Any:
        return await self._send(*call.args)

    async def scan_keys(self, call: ScanCall) -> list[Any]:
        return await drive_async(scan_steps(call), self._send)

    async def close(self) -> None:
        await self.client.close()


def open_upstash(url: str, token: str | None, *, retries: int, timeout: float) -> UpstashBackend:
    return UpstashBackend(_make_client(url, token, timeout, asyncio_=False), retries)


def open_async_upstash(
    url: str, token: str | None, *, retries: int, timeout: float
) -> AsyncUpstashBackend:
    return AsyncUpstashBackend(_make_client(url, token, timeout, asyncio_=True), retries)
