"""How each backend reports a failed call, against real servers and real closed ports.

``may_have_applied`` is False only when the request provably was not carried out (it never
left: connection refused, a host name that does not resolve), True otherwise, including
after several attempts of which any one may have reached the server. Each backend reads
its own client library's exceptions; one mapper turns them into BackendError.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import uuid
from typing import Any

import pytest
import redis

from conftest import UPSTASH_TOKEN
from proxy import DroppingProxy
from redis_servers import RedisServer, free_port
from sparked_credits import AsyncCreditsClient, BackendError, ConfigurationError, CreditsClient
from sparked_credits._core.steps import Sleep
from sparked_credits._drive import drive
from sparked_credits.backends import registry
from sparked_credits.backends.recovery import Failure, GaveUp, recover

ACCT = "user_2abc"
UNRESOLVABLE = "no-such-host.invalid"


async def _async_failure(url: str, call: str, **options: Any) -> BackendError:
    client = AsyncCreditsClient(url, **options)
    try:
        if call == "debit":
            await client.debit(ACCT, 1, action="chat_message", idempotency_key="k-1")
        else:
            await client.get_balance(ACCT)
    except BackendError as exc:
        return exc
    finally:
        await client.aclose()
    raise AssertionError("no BackendError")


def _sync_failure(url: str, call: str, **options: Any) -> BackendError:
    with CreditsClient(url, **options) as client:
        try:
            if call == "debit":
                client.debit(ACCT, 1, action="chat_message", idempotency_key="k-1")
            else:
                client.get_balance(ACCT)
        except BackendError as exc:
            return exc
    raise AssertionError("no BackendError")


def _never_left_urls() -> list[tuple[str, dict[str, Any]]]:
    port = free_port()
    return [
        (f"redis://127.0.0.1:{port}/0", {}),
        (f"redis://{UNRESOLVABLE}:6379/0", {}),
        (f"redis+cluster://127.0.0.1:{port}", {}),
        (f"http://127.0.0.1:{port}", {"token": UPSTASH_TOKEN}),
        (f"http://{UNRESOLVABLE}:8080", {"token": UPSTASH_TOKEN}),
    ]


@pytest.mark.parametrize(
    ("url", "options"),
    _never_left_urls(),
    ids=["redis-refused", "redis-dns", "cluster-refused", "upstash-refused", "upstash-dns"],
)
@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_a_request_that_never_left_did_not_apply(
    url: str, options: dict[str, Any], mode: str
) -> None:
    for call in ("debit", "get_balance"):
        options = {**options, "retries": 1, "timeout": 1.0}
        if mode == "sync":
            err = _sync_failure(url, call, **options)
        else:
            err = await _async_failure(url, call, **options)
        assert err.may_have_applied is False, (call, str(err))
        assert err.retry_safe is True
        assert isinstance(err.__cause__, Exception)
        assert not isinstance(err.__cause__, GaveUp)
    assert err.idempotency_key is None  # the read; the debit carried k-1


class _DropThenRefuse(DroppingProxy):
    """Loses the next reply (Redis ran the command), then refuses every new connection."""

    def _pump(self, src: socket.socket, dst: socket.socket, is_reply: bool) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                if is_reply and self._armed.is_set():
                    self._armed.clear()
                    self.dropped += 1
                    self._closing = True
                    # Stop listening before the client learns of the loss (shutdown wakes
                    # the accept() blocked in the other thread; close alone would not).
                    self._listener.shutdown(socket.SHUT_RDWR)
                    self._listener.close()
                    break
                dst.sendall(data)
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()


def test_an_attempt_that_reached_redis_counts_even_if_the_retry_is_refused(
    redis_server: RedisServer, redis_url: str
) -> None:
    proxy = _DropThenRefuse(redis_server.port)
    try:
        with CreditsClient(proxy.url, retries=2) as client:
            client.initialize_user(ACCT)
            client.debit(ACCT, 1, action="warm_up")
            proxy.drop_next_reply()
            with pytest.raises(BackendError) as info:
                client.debit(ACCT, 10, action="chat_message", idempotency_key="pay-1")
        assert proxy.dropped == 1
        assert "could not connect" in str(info.value)  # the last attempt's failure...
        assert info.value.may_have_applied is True  # ...but the first one reached Redis
        assert isinstance(info.value.__cause__, redis.ConnectionError)
    finally:
        proxy.close()
    with CreditsClient(redis_url) as direct:
        assert direct.get_balance(ACCT) == 89  # it had applied
        assert direct.debit(ACCT, 10, action="chat_message", idempotency_key="pay-1").replayed


@pytest.mark.parametrize("url_kind", ["memory", "redis"])
def test_an_error_raised_inside_a_script_may_have_applied(
    url_kind: str, redis_url: str, raw_redis: redis.Redis
) -> None:
    """Redis does not roll a script back when it fails halfway, so an error reply from a
    script is never reported as 'not applied'."""
    url = f"memory://script-error-{uuid.uuid4().hex}" if url_kind == "memory" else redis_url
    with CreditsClient(url) as client:
        client.initialize_user(ACCT)
        store: Any = raw_redis if url_kind == "redis" else client._backend.client
        store.delete(f"balance:{ACCT}")
        store.hset(f"balance:{ACCT}", "not", "a number")  # WRONGTYPE for the script's GET
        with pytest.raises(BackendError) as info:
            client.debit(ACCT, 1, action="chat_message")
        assert "WRONGTYPE" in str(info.value)
        assert info.value.may_have_applied is True
        assert info.value.retry_safe is True
        with pytest.raises(BackendError) as read:
            client.get_balance(ACCT)
        assert read.value.may_have_applied is False  # reads change nothing


def test_recovery_evals_after_noscript_and_gives_up_with_every_attempt() -> None:
    noscript = Failure("NOSCRIPT", False, False, noscript=True)
    lost = Failure("lost", True, True)
    refused = Failure("refused", False, True)
    failures = iter([noscript, lost, refused, refused])
    sent: list[tuple[Any, ...]] = []

    def send(command: tuple[Any, ...]) -> Any:
        sent.append(command)
        raise OSError("down")

    with pytest.raises(GaveUp) as info:
        drive(
            recover(OSError("first"), ("EVALSHA",), lambda e: next(failures), 2, ("EVAL",)),
            send,
            lambda s: None,
        )
    assert sent == [("EVAL",), ("EVAL",), ("EVAL",)]
    assert info.value.failure == Failure("refused", True, True)

    steps = recover(OSError("x"), ("GET", "k"), lambda e: Failure("t", False, True), 1)
    assert isinstance(next(steps), Sleep)
    assert steps.send(None) == ("GET", "k")
    with pytest.raises(StopIteration) as done:
        steps.send(b"7")
    assert done.value.value == b"7"


@pytest.mark.parametrize(
    ("url", "module", "extra"),
    [
        ("memory://", "fakeredis", "memory"),
        ("redis://127.0.0.1:1/0", "redis", "redis"),
        ("redis+cluster://127.0.0.1:1", "redis", "redis"),
        ("https://x.upstash.io", "upstash_redis", "upstash"),
    ],
)
def test_a_missing_client_library_names_the_extra(
    url: str, module: str, extra: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, kind = registry.kind_of(url)
    for name in list(sys.modules):
        if (
            name == module
            or name.startswith(f"{module}.")
            or name.startswith(f"sparked_credits.backends{kind.module}")
        ):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, module, None)  # import raises ImportError(name=module)
    with pytest.raises(ConfigurationError, match=rf"pip install 'sparked-credits\[{extra}\]'"):
        CreditsClient(url, token="t" if kind.needs_token else None)


def test_every_scheme_has_one_backend() -> None:
    schemes = [s for kind in registry.BACKENDS for s in kind.schemes]
    assert len(schemes) == len(set(schemes))
    with pytest.raises(ConfigurationError, match="unknown storage URL scheme"):
        registry.kind_of("ftp://x")


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_cluster_scripts_go_to_the_slot_owner_and_follow_moved(
    cluster_url: str, mode: str
) -> None:
    """A script goes straight to the primary of the account's slot; when that guess is
    wrong (a MOVED reply), RedisCluster carries it and the route is learned again."""
    key = f"balance:{{{ACCT}}}"
    if mode == "sync":
        client: Any = CreditsClient(cluster_url)
        client.initialize_user(ACCT)
        backend = client._backend
        owner = backend._routes[key]
        cluster = backend._cluster
        wrong = next(
            cluster.get_redis_connection(n).execute_command
            for n in cluster.get_primaries()
            if cluster.get_redis_connection(n).execute_command != owner
        )
        backend._routes[key] = wrong
        assert client.debit(ACCT, 10, action="chat_message").balance == 90
        assert client.debit(ACCT, 10, action="chat_message").balance == 80  # learns again
        assert backend._routes[key] == owner
        assert client.get_balance(ACCT) == 80
        client.close()
        return
    aclient = AsyncCreditsClient(cluster_url)
    try:
        await aclient.initialize_user(ACCT)
        backend = aclient._backend
        owner = backend._routes[key]
        wrong = next(
            n.execute_command for n in backend.client.get_primaries() if n.execute_command != owner
        )
        backend._routes[key] = wrong
        assert (await aclient.debit(ACCT, 10, action="chat_message")).balance == 90
        assert (await aclient.debit(ACCT, 10, action="chat_message")).balance == 80
        assert backend._routes[key] == owner
        assert await aclient.get_balance(ACCT) == 80
    finally:
        await aclient.aclose()
