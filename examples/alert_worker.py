"""Deliver low-balance alerts to a webhook URL, signed and retried with backoff.

    REDIS_URL=redis://localhost:6379/0 ALERT_WEBHOOK_URL=https://hooks.example.com/credits \\
    ALERT_WEBHOOK_SECRET=... python examples/alert_worker.py

Each alert is POSTed as JSON with ``X-Alert-Id`` (its id: the receiver's deduplication
key) and ``X-Alert-Signature: sha256=<hex HMAC-SHA256 of the raw body with the secret>``
(the training webhook's scheme), retried with exponential backoff, and acknowledged only
after a 2xx. A worker that crashes between the POST and the acknowledgement sends that
alert again on its next run: the receiver drops a repeat of an id it has seen, so each
alert takes effect once.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
from collections.abc import Callable

from sparked_credits import Alert, CreditsClient

Post = Callable[[str, bytes, dict[str, str]], int]
"""(url, body, headers) -> HTTP status."""


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def http_post(url: str, body: bytes, headers: dict[str, str]) -> int:
    import httpx

    return httpx.post(url, content=body, headers=headers, timeout=10.0).status_code


def deliver(
    alert: Alert,
    *,
    url: str,
    secret: str,
    post: Post,
    attempts: int = 5,
    backoff: float = 0.5,
    sleep: Callable[[float], object] = time.sleep,
) -> bool:
    """POST one alert until a 2xx (True) or ``attempts`` failures (False)."""
    body = json.dumps(alert.model_dump(mode="json"), sort_keys=True).encode()
    headers = {
        "content-type": "application/json",
        "X-Alert-Id": alert.alert_id,
        "X-Alert-Signature": sign(secret, body),
    }
    for attempt in range(attempts):
        try:
            if 200 <= post(url, body, headers) < 300:
                return True
        except OSError:
            pass
        sleep(backoff * 2**attempt)
    return False


def run_once(
    credits: CreditsClient,
    *,
    url: str,
    secret: str,
    consumer: str = "webhook",
    post: Post = http_post,
    sleep: Callable[[float], object] = time.sleep,
) -> int:
    """Deliver what is pending, in order, acknowledging each after its delivery; stops at
    the first alert that cannot be delivered (it and the rest come back next run)."""
    sent = 0
    for alert in credits.alerts(consumer):
        if not deliver(alert, url=url, secret=secret, post=post, sleep=sleep):
            break
        credits.ack_alerts(consumer, [alert.alert_id])
        sent += 1
    return sent


def main() -> None:  # pragma: no cover - a loop for a process manager to run
    url, secret = os.environ["ALERT_WEBHOOK_URL"], os.environ["ALERT_WEBHOOK_SECRET"]
    with CreditsClient.from_env(app="alert-worker") as credits:
        while True:
            run_once(credits, url=url, secret=secret)
            time.sleep(5)


if __name__ == "__main__":  # pragma: no cover
    main()
