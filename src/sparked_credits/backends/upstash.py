"""The Upstash REST backend (``https://<db>.upstash.io`` plus a token), on upstash-redis.

upstash-redis sends one HTTP POST per command. Out of the box it has gaps that matter for
money, each closed here:

* **No timeout** (its httpx client uses ``timeout=None``): a stalled request would hang a
  worker forever. Its httpx client is swapped for one with the client's ``timeout``.
* **Blind retries**: it re-POSTs any failed request, writes included, after 3 s. That is
  turned off (``rest_retries=0``); the SDK's recovery procedure retries instead, only
  failures classified as transient, with a short jittered backoff. Re-sending is safe
  for every request the SDK makes: each script carries its idempotency key (the server
  applies it once and a repeat replays the first outcome), and reads change nothing.
* **No NOSCRIPT fallback**: EVALSHA's NOSCRIPT error comes back as text; on it the script
  is sent once with EVAL (which also caches it for the next EVALSHA).
* **Request-level failures leak** as JSONDecodeError (an HTML 502 page), AttributeError
  (a JSON body of the wrong shape) or a bare UpstashError: a response hook checks status
  and shape first and raises :class:`~.errors.BadResponse`, which :func:`classify` reads
  by status, so the BackendError says whether the call may have applied.

Read-your-writes: Upstash may serve reads from replicas. upstash-redis's
``read_your_writes`` (kept on) sends back the ``Upstash-Sync-Token`` of the last reply, so
the next request of the same client observes that client's earlier writes, e.g. a
``get_balance`` right after a ``debit``. Separate clients (other processes) get no such
guarantee for plain reads; every mutation runs on the primary and is always current.

Results arrive base64-encoded (``Upstash-Encoding: base64``) and decoded to ``str`` by the
client; the SDK's decoders take ``str`` and ``bytes`` alike.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import httpx
import upstash_redis
import upstash_redis.asyncio
from upstash_redis.errors import UpstashError

from ..errors import ConfigurationError
from .base import AsyncBackend, SyncBackend
from .errors import BadResponse, classify_os, classify_reply
from .recovery import Failure

if TYPE_CHECKING:
    from .registry import Settings

__all__ = [
    "AsyncUpstashBackend",
    "UpstashBackend",
    "check_body",
    "classify",
    "open_async",
    "open_sync",
]


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


def _bad_response(exc: BadResponse) -> Failure:
    status = exc.status
    if status in (401, 403):
        return Failure(
            f"authentication failed (HTTP {status}): check the token "
            f"(UPSTASH_REDIS_REST_TOKEN); {exc.detail}",
            False,
            False,
        )
    if status == 429:
        return Failure(f"rate limited (HTTP 429): {exc.detail}", False, True)
    if status >= 500:
        # A gateway error: the request may or may not have reached the database.
        return Failure(f"server or gateway error (HTTP {status}): {exc.detail}", True, True)
    if status == 200:
        return Failure(f"unreadable reply from the REST API: {exc.detail}", True, False)
    return Failure(f"request refused (HTTP {status}): {exc.detail}", False, False)


def classify(exc: BaseException) -> Failure:
    """httpx's and upstash-redis's failures, by class; else the operating system's view."""
    if isinstance(exc, BadResponse):
        return _bad_response(exc)
    if isinstance(exc, json.JSONDecodeError):
        return Failure(f"reply is not JSON: {exc}", True, False)
    # Never left this machine: certainly not applied.
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
        return Failure(f"could not connect: {type(exc).__name__}: {exc}", False, True)
    if isinstance(exc, httpx.TimeoutException):
        return Failure(f"no reply within the timeout ({type(exc).__name__})", True, True)
    if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError):
        return Failure(f"connection closed mid-request: {type(exc).__name__}: {exc}", True, True)
    if isinstance(exc, httpx.HTTPError):
        return Failure(f"{type(exc).__name__}: {exc}", True, True)
    if isinstance(exc, UpstashError):
        text = str(exc)
        if text.startswith("Error decoding data"):
            return Failure(f"unreadable reply from the REST API: {text}", True, False)
        return classify_reply(text)
    return classify_os(exc)


def _is_pipeline(url: str) -> bool:
    return url.rstrip("/").endswith(("/pipeline", "/multi-exec"))


def _checked_http(timeout: float, asyncio_: bool) -> Any:
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
    transport._client = _checked_http(timeout, asyncio_)
    return client


class UpstashBackend(SyncBackend):
    """A blocking upstash-redis client: one HTTP request per call (two after a NOSCRIPT)."""

    def __init__(self, client: Any, retries: int) -> None:
        self.client = client
        self.retries = retries

    def _call(self, *command: Any) -> Any:
        return self.client.execute([str(part) for part in command])

    def classify(self, exc: BaseException) -> Failure:
        return classify(exc)

    def close(self) -> None:
        self.client.close()


class AsyncUpstashBackend(AsyncBackend):
    """An asyncio upstash-redis client, the twin of :class:`UpstashBackend`."""

    def __init__(self, client: Any, retries: int) -> None:
        self.client = client
        self.retries = retries

    async def _call(self, *command: Any) -> Any:
        return await self.client.execute([str(part) for part in command])

    def classify(self, exc: BaseException) -> Failure:
        return classify(exc)

    async def close(self) -> None:
        await self.client.close()


def open_sync(url: str, settings: Settings) -> UpstashBackend:
    client = _make_client(url, settings.token, settings.timeout, False)
    return UpstashBackend(client, settings.retries)


def open_async(url: str, settings: Settings) -> AsyncUpstashBackend:
    client = _make_client(url, settings.token, settings.timeout, True)
    return AsyncUpstashBackend(client, settings.retries)
