"""A local stand-in for the Stripe API (the real one cannot be reached from the tests).

It answers what the example app asks of Stripe, in Stripe's documented shapes: ``POST
/v1/payment_intents`` (an off-session top-up, with ``Idempotency-Key``), ``POST
/v1/checkout/sessions`` (form-encoded, as the ``stripe`` library sends it) returns a
Checkout Session object, or Stripe's error object (``{"error": {"type", "code", "param",
"message"}}``) for a bad key or an unknown price. The ``stripe`` library reaches it with
its API base pointed here. :meth:`StripeStandIn.pay` then plays the buyer and Stripe:
it completes a session and returns the ``checkout.session.completed`` event Stripe would
deliver (unsigned: the tests sign it as Stripe does).
"""

from __future__ import annotations

import itertools
import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

API_KEY = "sk_test_standin_" + secrets.token_hex(8)
DECLINING_METHODS = {
    "pm_card_chargeDeclined": "card_declined",
    "pm_card_authenticationRequired": "authentication_required",
}
"""Stripe's test payment methods that fail off-session, and their error codes."""


def _nested(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Stripe's form encoding (``line_items[0][price]=x``) back into objects."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        parts = key.replace("]", "").split("[")
        node: Any = out
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
    return out


def _listify(value: Any) -> Any:
    if isinstance(value, dict):
        if value and all(k.isdigit() for k in value):
            return [_listify(value[k]) for k in sorted(value, key=int)]
        return {k: _listify(v) for k, v in value.items()}
    return value


class StripeStandIn:
    """The server, on a free loopback port; ``prices`` maps price id -> (amount, currency)."""

    def __init__(self, prices: dict[str, tuple[int, str]]) -> None:
        self.prices = prices
        self.sessions: dict[str, dict[str, Any]] = {}
        self.payment_intents: dict[str, dict[str, Any]] = {}
        self._idempotent: dict[str, tuple[int, dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self.requests: list[dict[str, Any]] = []
        self._ids = itertools.count(1)
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Request-Id", f"req_{next(standin._ids)}")
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = _listify(_nested(parse_qsl(self.rfile.read(length).decode())))
                standin.requests.append(
                    {"path": self.path, "form": form, "auth": self.headers.get("Authorization")}
                )
                if self.headers.get("Authorization") != f"Bearer {API_KEY}":
                    self._send(
                        401,
                        {
                            "error": {
                                "type": "invalid_request_error",
                                "message": "Invalid API Key provided",
                            }
                        },
                    )
                    return
                if self.path == "/v1/payment_intents":
                    status, body = standin.create_payment_intent(
                        form, self.headers.get("Idempotency-Key")
                    )
                    self._send(status, body)
                    return
                if self.path != "/v1/checkout/sessions":
                    self._send(
                        404,
                        {
                            "error": {
                                "type": "invalid_request_error",
                                "message": f"Unrecognized request URL (POST: {self.path})",
                            }
                        },
                    )
                    return
                status, body = standin.create_session(form)
                self._send(status, body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def create_session(self, form: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        items = form.get("line_items") or []
        if not items:
            return 400, {
                "error": {
                    "type": "invalid_request_error",
                    "code": "parameter_missing",
                    "param": "line_items",
                    "message": "Missing line_items.",
                }
            }
        price = items[0].get("price")
        if price not in self.prices:
            return 400, {
                "error": {
                    "type": "invalid_request_error",
                    "code": "resource_missing",
                    "param": "line_items[0][price]",
                    "message": f"No such price: '{price}'",
                }
            }
        amount, currency = self.prices[price]
        quantity = int(items[0].get("quantity", "1"))
        session_id = f"cs_test_{secrets.token_hex(12)}"
        session = {
            "id": session_id,
            "object": "checkout.session",
            "amount_subtotal": amount * quantity,
            "amount_total": amount * quantity,
            "cancel_url": form.get("cancel_url"),
            "client_reference_id": form.get("client_reference_id"),
            "created": int(time.time()),
            "currency": currency,
            "customer": None,
            "expires_at": int(time.time()) + 86400,
            "livemode": False,
            "metadata": form.get("metadata") or {},
            "mode": form.get("mode", "payment"),
            "payment_intent": None,
            "payment_status": "unpaid",
            "status": "open",
            "success_url": form.get("success_url"),
            "url": f"https://checkout.stripe.com/c/pay/{session_id}",
        }
        self.sessions[session_id] = session
        return 200, session

    def create_payment_intent(
        self, form: dict[str, Any], idempotency_key: str | None
    ) -> tuple[int, dict[str, Any]]:
        """``POST /v1/payment_intents`` with ``confirm=true``: Stripe's PaymentIntent
        object, ``succeeded`` for a good card; for a declining one
        (:data:`DECLINING_METHODS`) Stripe's 402 ``card_error`` carrying the PaymentIntent
        (``requires_payment_method``). A repeated ``Idempotency-Key`` answers the first
        response again, as Stripe does (a decline too)."""
        with self._lock:
            if idempotency_key is not None and idempotency_key in self._idempotent:
                return self._idempotent[idempotency_key]
            answer = self._payment_intent(form)
            if idempotency_key is not None:
                self._idempotent[idempotency_key] = answer
            return answer

    def _payment_intent(self, form: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        for field in ("amount", "currency"):
            if field not in form:
                return 400, {
                    "error": {
                        "type": "invalid_request_error",
                        "code": "parameter_missing",
                        "param": field,
                        "message": f"Missing required param: {field}.",
                    }
                }
        method = form.get("payment_method")
        declined = method in DECLINING_METHODS
        intent = {
            "id": f"pi_{secrets.token_hex(12)}",
            "object": "payment_intent",
            "amount": int(form["amount"]),
            "amount_received": 0 if declined else int(form["amount"]),
            "confirmation_method": "automatic",
            "created": int(time.time()),
            "currency": form["currency"],
            "customer": form.get("customer"),
            "last_payment_error": None,
            "latest_charge": None if declined else f"ch_{secrets.token_hex(12)}",
            "livemode": False,
            "metadata": form.get("metadata") or {},
            "payment_method": None if declined else method,
            "status": "requires_payment_method" if declined else "succeeded",
        }
        self.payment_intents[intent["id"]] = intent
        if not declined:
            return 200, intent
        code = DECLINING_METHODS[str(method)]
        error = {
            "type": "card_error",
            "code": code,
            "decline_code": "generic_decline" if code == "card_declined" else None,
            "message": "Your card was declined."
            if code == "card_declined"
            else "This payment requires authentication.",
            "payment_intent": intent,
        }
        intent["last_payment_error"] = {k: v for k, v in error.items() if k != "payment_intent"}
        return 402, {"error": error}

    def pay(self, session_id: str) -> dict[str, Any]:
        """The buyer pays: the session completes with a PaymentIntent; returns the
        ``checkout.session.completed`` event Stripe would send."""
        session = dict(self.sessions[session_id])
        session.update(
            status="complete",
            payment_status="paid",
            payment_intent=f"pi_{secrets.token_hex(12)}",
        )
        self.sessions[session_id] = session
        return {
            "id": f"evt_{secrets.token_hex(12)}",
            "object": "event",
            "api_version": "2024-06-20",
            "created": int(time.time()),
            "livemode": False,
            "type": "checkout.session.completed",
            "data": {"object": session},
        }
