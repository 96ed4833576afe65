"""Exactly once for an idempotent request across processes, on a real Redis.

Each worker is a separate uvicorn process serving tests/request_worker.py (a user's app
with one idempotent route that charges, then answers):

* a worker is SIGKILLed after its charge and before its answer is stored; the client's
  retry, sent to another process, is refused as in progress while the dead attempt's lease
  lasts, then runs with the same charge key: one charge, never two;
* two processes receive the same request at once, for many request ids: one charge each;
* a worker outlives its lease while another takes the request over: the work may run
  twice (that is what a lease means), the charge still once.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis

from clerk_keys import KeyPair
from uvicorn_process import UvicornProcess

HERE = Path(__file__).resolve().parent / "support"
KEYS = KeyPair("ins_worker")
USER = "user_worker"


class Worker(UvicornProcess):
    """One request_worker process on a free loopback port."""

    def __init__(self, redis_url: str, **env: str) -> None:
        super().__init__(
            "request_worker:create_app",
            HERE,
            {**os.environ, "REDIS_URL": redis_url, "WORKER_JWT_KEY": KEYS.public_pem, **env},
            "worker",
        )


@pytest.fixture
def workers(redis_url: str) -> Iterator[Callable[..., Worker]]:
    started: list[Worker] = []

    def start(**env: str) -> Worker:
        worker = Worker(redis_url, **env)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


def ready(*workers: Worker) -> None:
    for worker in workers:
        worker.wait_ready()


def send(worker: Worker, note: str, key: str, timeout: float = 15) -> httpx.Response:
    return httpx.post(worker.url + "/api/job", content=json.dumps({"note": note}),
                      headers={"Authorization": f"Bearer {KEYS.token(sub=USER)}",
                               "Idempotency-Key": key, "content-type": "application/json"},
                      timeout=timeout)


def debits(raw: redis.Redis) -> list[dict[bytes, bytes]]:
    return [f for _, f in raw.xrange(f"txs:{USER}") if f[b"type"] == b"debit"]


def check_ledger(raw: redis.Redis) -> int:
    balance = int(raw.get(f"balance:{USER}") or 0)
    assert balance == sum(int(f[b"delta"]) for _, f in raw.xrange(f"txs:{USER}"))
    return balance


@pytest.fixture
def raw(raw_redis: redis.Redis, redis_url: str) -> redis.Redis:
    from sparked_credits import CreditsClient

    with CreditsClient(redis_url, app="worker.sparked.world") as credits:
        credits.initialize_user(USER, 1000)
    return raw_redis


def test_sigkill_between_charge_and_stored_answer_charges_once(
    workers: Callable[..., Worker], raw: redis.Redis, tmp_path: Path
) -> None:
    marker = tmp_path / "charged"
    doomed = workers(WORKER_HANG_MARKER=str(marker), WORKER_LEASE_MS="2000")
    survivor = workers()
    ready(doomed, survivor)
    lost: list[BaseException] = []

    def first_attempt() -> None:
        try:
            send(doomed, "crash", "crash-1", timeout=30)
        except httpx.TransportError as exc:  # the process died under the request
            lost.append(exc)

    thread = threading.Thread(target=first_attempt)
    thread.start()
    deadline = time.monotonic() + 20
    while not marker.exists():
        assert time.monotonic() < deadline, doomed.output()
        time.sleep(0.02)
    assert check_ledger(raw) == 990  # charged ...
    doomed.kill()  # ... and gone before the answer was stored
    thread.join(timeout=10)
    assert lost, "the first attempt should have lost its connection"

    busy = send(survivor, "crash", "crash-1")  # the dead attempt's lease still runs
    assert busy.status_code == 409, busy.text
    assert busy.json()["error"] == "request_in_progress"
    assert check_ledger(raw) == 990
    time.sleep(2.1)
    retry = send(survivor, "crash", "crash-1")
    assert retry.status_code == 200, retry.text
    assert retry.headers["idempotent-replayed"] == "false"
    assert retry.json()["balance"] == 990  # the first attempt's charge, replayed
    assert int(raw.get("runs:crash") or 0) == 2  # the work ran again, the charge did not
    again = send(survivor, "crash", "crash-1")
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == retry.json()
    assert check_ledger(raw) == 990
    assert len(debits(raw)) == 1


def test_two_processes_redeliver_at_once(workers: Callable[..., Worker],
                                         raw: redis.Redis) -> None:
    """The same request reaches two processes at the same moment (a client retrying on
    a timeout behind a load balancer), for twenty request ids."""
    one, two = workers(WORKER_WORK_SECONDS="0.05"), workers(WORKER_WORK_SECONDS="0.05")
    ready(one, two)
    ids = [f"dup-{i}" for i in range(20)]
    answers: dict[str, list[httpx.Response]] = {key: [] for key in ids}

    def deliver(worker: Worker, key: str, barrier: threading.Barrier) -> None:
        barrier.wait()
        answers[key].append(send(worker, key, key))

    for key in ids:
        barrier = threading.Barrier(2)
        threads = [threading.Thread(target=deliver, args=(w, key, barrier)) for w in (one, two)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    for key in ids:
        statuses = sorted(r.status_code for r in answers[key])
        assert statuses in ([200, 200], [200, 409]), (key, [r.text for r in answers[key]])
        fresh = [r for r in answers[key]
                 if r.status_code == 200 and r.headers["idempotent-replayed"] == "false"]
        assert len(fresh) == 1, key  # one attempt ran; the other replayed or was refused
        assert int(raw.get(f"runs:{key}") or 0) == 1
    assert len(debits(raw)) == len(ids)
    assert check_ledger(raw) == 1000 - 10 * len(ids)


def test_lease_over_while_running_charges_once(workers: Callable[..., Worker],
                                               raw: redis.Redis) -> None:
    """A slow attempt outlives its lease; a retry in another process takes over and both
    run the work: one charge (the same key), and the record keeps one answer."""
    slow = workers(WORKER_WORK_SECONDS="1.5", WORKER_LEASE_MS="300")
    other = workers(WORKER_LEASE_MS="300")
    ready(slow, other)
    first: list[httpx.Response] = []
    thread = threading.Thread(target=lambda: first.append(send(slow, "slow", "slow-1")))
    thread.start()
    deadline = time.monotonic() + 10
    while not raw.get("runs:slow"):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    time.sleep(0.4)
    taken = send(other, "slow", "slow-1")
    thread.join(timeout=10)
    assert taken.status_code == 200, taken.text
    assert first[0].status_code == 200, first[0].text
    assert taken.json()["balance"] == first[0].json()["balance"] == 990
    assert int(raw.get("runs:slow") or 0) == 2
    assert len(debits(raw)) == 1
    assert check_ledger(raw) == 990
    stored = send(other, "slow", "slow-1")
    assert stored.headers["idempotent-replayed"] == "true"
    assert stored.json() == taken.json()  # the owner's answer; the outlived one was dropped
