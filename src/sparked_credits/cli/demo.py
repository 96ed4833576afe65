"""The seed guide's "Test the Integration" steps, run against any storage URL.

A new user gets 100 credits; a chat message costs 10 (90 left); a second app's client sees
the same 90; with 40 credits left a 60-second video (600 credits) is refused with the
402 details; the history lists every step. Each step is checked, so the demo doubles as a
smoke test of a deployment: ``sparked-credits demo --url redis://...``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable

from ..client import CreditsClient
from ..errors import InsufficientCreditsError

__all__ = ["DemoFailure", "run_demo"]

CHAT_MESSAGE = 10
CANVAS_SIMPLE = 50
VIDEO_PER_SECOND = 10


class DemoFailure(AssertionError):
    """A step did not give what the seed guide expects."""


def _expect(what: str, got: object, want: object) -> None:
    if got != want:
        raise DemoFailure(f"{what}: expected {want!r}, got {got!r}")


def run_demo(url: str = "memory://demo", echo: Callable[[str], None] = print) -> None:
    """Run every step, printing what happens; raises DemoFailure on the first mismatch."""
    account = f"user_demo_{uuid.uuid4().hex[:8]}"
    chat = CreditsClient(url, app="app.sparked.world", default_credits=100)
    canvas = CreditsClient(url, app="canvas.sparked.world")
    studio = CreditsClient(url, app="studio.sparked.world")
    try:
        echo(f"storage: {url.split('://', 1)[0]}://   account: {account}")

        init = chat.initialize_user(account)
        echo(f"1. user.created -> initialize_user: balance {init.balance}")
        _expect("starting balance", init.balance, 100)
        again = chat.initialize_user(account)
        echo(f"   webhook redelivered -> created={again.created}, balance {again.balance}")
        _expect("redelivered webhook", (again.created, again.balance), (False, 100))

        debit = chat.debit(account, CHAT_MESSAGE, action="chat_message", reason="Hello")
        echo(f"2. chat message (10 credits): balance {debit.balance}")
        _expect("balance after a chat message", debit.balance, 90)

        seen = canvas.get_balance(account)
        echo(f"3. canvas.sparked.world reads the shared balance: {seen}")
        _expect("balance seen by another app", seen, 90)

        canvas.debit(account, CANVAS_SIMPLE, action="canvas_simple")
        left = studio.get_balance(account)
        echo(f"   canvas (simple, 50 credits): balance {left}")
        _expect("balance after a canvas", left, 40)

        seconds = 60
        try:
            studio.debit(account, seconds * VIDEO_PER_SECOND, action="video_generation")
        except InsufficientCreditsError as exc:
            body = json.dumps(exc.to_dict())
            echo(f"4. 60 s video (600 credits) -> HTTP {exc.http_status} {body}")
            _expect("402 details", (exc.balance, exc.required), (40, 600))
        else:
            raise DemoFailure("a 600-credit video on a 40-credit balance was not refused")
        _expect("balance after the refusal", studio.get_balance(account), 40)

        page = chat.history(account, limit=20)
        echo("5. history, newest first:")
        for e in page.entries:
            echo(
                f"   {e.timestamp:%H:%M:%S} {e.type_name:<7} {e.delta:+5d} -> {e.balance_after:>4}"
                f"  {e.action or '':<14} {e.app or ''}"
            )
        _expect("history", [e.type_name for e in page.entries], ["debit", "debit", "init"])
        _expect("ledger sum", sum(e.delta for e in page.entries), 40)
        echo("all checks passed: balance == sum of the ledger == 40")
    finally:
        for client in (chat, canvas, studio):
            client.close()
