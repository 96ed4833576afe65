"""Helpers for the lots tests that look behind the SDK's back on every backend.

A test reaches an account's keys through the client's own backend (memory, redis, cluster
or the Upstash bridge alike), so the same test body runs on each, sync and async.
"""

from __future__ import annotations

import contextlib
import importlib
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

from sparked_credits._core.keys import AccountKeys


def _parts(client: Any) -> tuple[Any, Any]:
    """(the CreditsClient or AsyncCreditsClient, the facade's loop or None)."""
    inner = getattr(client, "_client", None)
    if inner is not None:
        return inner, client._loop
    return client, None


def raw(client: Any, *command: Any) -> Any:
    """One Redis command on the client's store, routed by its backend (a key's slot)."""
    inner, loop = _parts(client)
    sent = inner._backend.send(*command)
    return loop.run_until_complete(sent) if loop is not None else sent


def text(value: Any) -> Any:
    """Replies as str (bytes decoded), nested lists too."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, (list, tuple)):
        return [text(v) for v in value]
    return value


def account_keys(client: Any, account: str) -> AccountKeys:
    inner, _ = _parts(client)
    keys: AccountKeys = inner._ops.keys.account(account)
    return keys


def _fakeredis_stream_module() -> Any:
    """The fakeredis module whose ``time.time()`` makes stream ids (its path moved)."""
    for name in ("fakeredis.model._stream", "fakeredis._stream"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if hasattr(module, "time"):
            return module
    raise AssertionError("no fakeredis stream module with a clock to stop")


@contextlib.contextmanager
def one_millisecond(client: Any, backend_url: str, account: str) -> Iterator[None]:
    """Every entry the account's ledger gets inside the block lands in one millisecond
    (ids ``<ms>-1``, ``<ms>-2``, ... ``<ms>-16``), as many calls within 1 ms do: the
    ledger's last id is moved a minute ahead (XSETID: the ledger must have an entry), or,
    on ``memory://`` (fakeredis has no XSETID), its clock stands still."""
    if backend_url.startswith("memory"):
        stream = _fakeredis_stream_module()
        frozen = time.time() + 60
        saved = stream.time
        stream.time = SimpleNamespace(time=lambda: frozen)
        try:
            yield
        finally:
            stream.time = saved
        return
    ledger = account_keys(client, account).ledger
    ms = int(time.time() * 1000) + 60_000
    raw(client, "XSETID", ledger, f"{ms}-0")
    yield


DERIVED_FAMILIES = (
    "balance",
    "meta",
    "idempotency",
    "idempotency_previous",
    "holds",
    "hold_expiry",
    "refunds",
    "lots",
    "lot_order",
    "lot_expiry",
    "once",
)
"""Every key family of an account except its ledger: derived state (the ledger is the
commit record)."""


def snapshot(client: Any, account: str) -> dict[str, Any]:
    """Every derived key of the account by family: its type and content (comparable)."""
    keys = account_keys(client, account)
    out: dict[str, Any] = {}
    for family in DERIVED_FAMILIES:
        name = getattr(keys, family)
        kind = text(raw(client, "TYPE", name))
        if kind == "none":
            out[family] = None
        elif kind == "string":
            out[family] = ("string", text(raw(client, "GET", name)))
        elif kind == "hash":
            flat = text(raw(client, "HGETALL", name))
            if not isinstance(flat, dict):
                flat = dict(zip(flat[::2], flat[1::2], strict=True))
            pairs = flat
            out[family] = ("hash", {text(k): text(v) for k, v in pairs.items()})
        elif kind == "zset":
            flat = text(raw(client, "ZRANGE", name, 0, -1, "WITHSCORES"))
            if flat and isinstance(flat[0], list):
                pairs = [(m, float(s)) for m, s in flat]
            else:
                pairs = [(m, float(s)) for m, s in zip(flat[::2], flat[1::2], strict=False)]
            out[family] = ("zset", pairs)
        else:
            raise AssertionError(f"{family}: unexpected type {kind}")
    return out


def restore(client: Any, account: str, saved: dict[str, Any]) -> None:
    """Put the derived keys back as ``snapshot`` found them (the ledger is left alone)."""
    keys = account_keys(client, account)
    for family, value in saved.items():
        name = getattr(keys, family)
        raw(client, "DEL", name)
        if value is None:
            continue
        kind, content = value
        if kind == "string":
            raw(client, "SET", name, content)
        elif kind == "hash" and content:
            raw(client, "HSET", name, *[x for kv in content.items() for x in kv])
        elif kind == "zset" and content:
            raw(client, "ZADD", name, *[x for m, s in content for x in (repr(s), m)])
