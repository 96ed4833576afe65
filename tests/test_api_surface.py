"""The public surface: sync/async parity, exports, hash-tag slots, configuration."""

from __future__ import annotations

import inspect

import pytest
from redis.crc import key_slot

import sparked_credits
from sparked_credits import AsyncCreditsClient, ConfigurationError, CreditsClient
from sparked_credits._core.operations import Operations
from sparked_credits._core.options import make_options
from sparked_credits._core.requests import ScriptCall

PUBLIC = sorted(
    name
    for name, _ in inspect.getmembers(CreditsClient, inspect.isfunction)
    if not name.startswith("_")
)


def test_public_methods_listed() -> None:
    assert {
        "initialize_user",
        "get_balance",
        "debit",
        "credit",
        "refund",
        "adjust",
        "history",
        "close",
        "reserve",
        "settle",
        "release",
        "hold",
        "sweep_expired",
        "close_account",
    } <= set(PUBLIC)


ASYNC_NAMES = {"close": "aclose"}


# Methods that return a context manager: `with` on one client, `async with` on the other.
CONTEXT_MANAGERS = {"hold": ("HoldContext", "AsyncHoldContext")}


@pytest.mark.parametrize("name", PUBLIC)
def test_async_twin_has_same_signature(name: str) -> None:
    sync_fn = getattr(CreditsClient, name)
    # The asyncio client closes with ``aclose()``, as httpx and redis-py name it.
    async_fn = getattr(AsyncCreditsClient, ASYNC_NAMES.get(name, name))
    if sync_fn is async_fn:
        return  # shared, I/O-free (defined once on the common base)
    sync_sig, async_sig = inspect.signature(sync_fn), inspect.signature(async_fn)
    if name in CONTEXT_MANAGERS:
        assert (sync_sig.return_annotation, async_sig.return_annotation) == CONTEXT_MANAGERS[name]
        assert sync_sig.parameters == async_sig.parameters
        return
    assert inspect.iscoroutinefunction(async_fn), f"AsyncCreditsClient.{name} must be async"
    assert not inspect.iscoroutinefunction(sync_fn)
    assert sync_sig == async_sig


def test_same_classmethods() -> None:
    for name in ("from_url", "from_env"):
        assert inspect.signature(getattr(CreditsClient, name)) == inspect.signature(
            getattr(AsyncCreditsClient, name)
        )


def test_root_exports_everything_in_all() -> None:
    for name in sparked_credits.__all__:
        assert hasattr(sparked_credits, name), name
    assert issubclass(sparked_credits.ValidationError, ValueError)
    for name in (
        "AccountClosedError",
        "ConfigurationError",
        "ValidationError",
        "InsufficientCreditsError",
        "IdempotencyConflictError",
        "HoldNotFoundError",
        "HoldExpiredError",
        "BackendError",
        "WebhookVerificationError",
        "TokenVerificationError",
    ):
        assert issubclass(getattr(sparked_credits, name), sparked_credits.CreditsError)


def _script_calls(ops: Operations, account: str) -> list[ScriptCall]:
    built = [
        ops.initialize_user(account, credits=None, reason=None),
        ops.debit(account, 10, action="chat_message"),
        ops.credit(account, 10, source="admin_grant"),
        ops.adjust(account, -5, allow_overdraft=True, action=None),
        ops.refund(account, "1700000000000-0", amount=None),
        ops.reserve(account, 10, action="model_training", usage=None, ttl=60),
        ops.settle(account, "1700000000000-0", 5, allow_overage=False),
        ops.release(account, "1700000000000-0"),
        ops.sweep(account, limit=16),
        ops.close_account(account, reason=None, metadata=None),
    ]
    calls = [op.request for op in built]
    assert all(isinstance(c, ScriptCall) for c in calls)
    return [c for c in calls if isinstance(c, ScriptCall)]


@pytest.mark.parametrize("account", ["user_2abc", "org_9", "a:b", "x", "user_" + "z" * 120])
@pytest.mark.parametrize("prefix", ["", "tenant:"])
def test_hash_tags_put_every_key_of_a_script_in_one_slot(account: str, prefix: str) -> None:
    ops = Operations(make_options(hash_tags=True, key_prefix=prefix))
    for call in _script_calls(ops, account):
        slots = {key_slot(k.encode()) for k in call.keys}
        assert len(slots) == 1, (call.script.name, call.keys)
        assert slots == {key_slot(account.encode())}


def test_default_key_names_mirror_typescript_sdk() -> None:
    ops = Operations(make_options())
    call = _script_calls(ops, "user_2abc")[1]
    assert call.keys[:2] == ("balance:user_2abc", "txs:user_2abc")
    tagged = _script_calls(Operations(make_options(hash_tags=True)), "user_2abc")[1]
    assert tagged.keys[:2] == ("balance:{user_2abc}", "txs:{user_2abc}")


def test_from_env_refuses_without_storage(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("UPSTASH_REDIS_URL", "UPSTASH_REDIS_REST_URL", "REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigurationError, match="REDIS_URL"):
        CreditsClient.from_env()


def test_from_env_reads_redis_url(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("UPSTASH_REDIS_URL", "UPSTASH_REDIS_REST_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("REDIS_URL", "memory://from-env")
    client = CreditsClient.from_env(app="app.sparked.world")
    client.initialize_user("user_1")
    assert CreditsClient("memory://from-env").get_balance("user_1") == 100


def test_from_env_prefers_upstash_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UPSTASH_REDIS_URL", "https://example.upstash.io")
    monkeypatch.setenv("UPSTASH_REDIS_TOKEN", "t")
    monkeypatch.setenv("REDIS_URL", "memory://x")
    client = CreditsClient.from_env()  # no I/O until the first call
    assert client.storage.url == "https://example.upstash.io"
    assert client.storage.token == "t"
    assert type(client._backend).__name__ == "UpstashBackend"
    client.close()
    monkeypatch.delenv("UPSTASH_REDIS_URL")
    monkeypatch.setenv("UPSTASH_REDIS_REST_URL", "https://rest.upstash.io")
    monkeypatch.setenv("UPSTASH_REDIS_REST_TOKEN", "rest-token")
    client = CreditsClient.from_env()
    assert (client.storage.url, client.storage.token) == ("https://rest.upstash.io", "rest-token")
    client.close()


def test_upstash_url_needs_a_token_and_other_urls_refuse_one() -> None:
    with pytest.raises(ConfigurationError, match="token"):
        CreditsClient("https://example.upstash.io")
    with pytest.raises(ConfigurationError, match="token= is only used by Upstash"):
        CreditsClient("redis://127.0.0.1:1/0", token="t")


def test_cluster_url_forces_hash_tags_and_checks_nodes() -> None:
    client = CreditsClient("redis+cluster://127.0.0.1:1,127.0.0.1:2")  # connects lazily
    assert client.options.hash_tags is True
    client.close()
    with pytest.raises(ConfigurationError, match="hash_tags"):
        CreditsClient("redis+cluster://127.0.0.1:1", hash_tags=False)
    with pytest.raises(ConfigurationError, match="host:port"):
        CreditsClient("redis+cluster://127.0.0.1")


def test_repr_hides_credentials() -> None:
    client = CreditsClient("redis://:secret@127.0.0.1:1/0")
    assert "secret" not in repr(client)
    client.close()
