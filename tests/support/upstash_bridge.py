"""An Upstash-REST-compatible HTTP server in front of a real redis-server, for tests.

It speaks what upstash-redis (1.x) sends and expects:

* ``POST /`` with a JSON array ``["SET", "k", "v"]`` -> ``{"result": ...}``, or HTTP 400
  ``{"error": "NOSCRIPT ..."}`` with the Redis error text (code included) kept;
* ``POST /pipeline`` with an array of commands -> an array of ``{"result"}``/``{"error"}``;
* ``POST /multi-exec``: the same, inside MULTI/EXEC (an aborted transaction is one error);
* ``Authorization: Bearer <token>``, else HTTP 401;
* ``Upstash-Encoding: base64``: every string in a result base64-encoded, except "OK";
* an ``Upstash-Sync-Token`` response header, and the token the client sends back is
  recorded (read-your-writes).

Redis is spoken to in RESP2 over a plain socket per bridge thread, with hiredis's reader,
so error replies keep their code. Requests are counted (``requests``, per path), and
faults can be armed for the next requests: an HTTP status (before or after Redis ran the
command), a connection closed after Redis ran it, or a reply delayed past the client's
timeout.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import json
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import hiredis

from redis_servers import free_port

TOKEN = "bridge-test-token"


@dataclass
class Fault:
    kind: str  # "status", "drop", "delay" or "body"
    status: int = 502
    execute: bool = True  # run the command on Redis before failing
    seconds: float = 0.0
    body: bytes = b"<html>Bad Gateway</html>"


class _RedisConnection:
    """One RESP2 connection to redis-server (one per bridge thread)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = hiredis.Reader()

    def call(self, *commands: list[Any]) -> list[Any]:
        """Send commands in one write; their replies, errors as hiredis.ReplyError."""
        out = bytearray()
        for args in commands:
            out += b"*%d\r\n" % len(args)
            for arg in args:
                data = arg if isinstance(arg, bytes) else str(arg).encode()
                out += b"$%d\r\n%s\r\n" % (len(data), data)
        self.sock.sendall(out)
        replies: list[Any] = []
        while len(replies) < len(commands):
            reply = self.reader.gets()
            if reply is False:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError("redis-server closed the connection")
                self.reader.feed(chunk)
                continue
            replies.append(reply)
        return replies

    def close(self) -> None:
        self.sock.close()


def _encode(value: Any, b64: bool) -> Any:
    if isinstance(value, hiredis.ReplyError):
        raise ValueError  # nested errors are handled by the caller
    if isinstance(value, bytes):
        if value == b"OK" or not b64:
            return value.decode("utf-8", "replace")
        return base64.b64encode(value).decode()
    if isinstance(value, list):
        return [_encode(v, b64) for v in value]
    return value


def _as_response(reply: Any, b64: bool) -> dict[str, Any]:
    if isinstance(reply, hiredis.ReplyError):
        return {"error": str(reply)}
    if isinstance(reply, list) and any(isinstance(r, hiredis.ReplyError) for r in reply):
        # A script/EXEC reply holding an error: report the first, as Upstash does.
        return {"error": str(next(r for r in reply if isinstance(r, hiredis.ReplyError)))}
    return {"result": _encode(reply, b64)}


class UpstashBridge:
    """The bridge server. ``start()`` it, point upstash-redis at ``url`` with ``TOKEN``."""

    def __init__(self, redis_port: int, token: str = TOKEN) -> None:
        self.redis_port = redis_port
        self.token = token
        self.port = free_port()
        self.requests = 0
        self.by_path: collections.Counter[str] = collections.Counter()
        self.sync_tokens_seen: list[str] = []
        self._sync_counter = 0
        self._faults: collections.deque[Fault] = collections.deque()
        self._lock = threading.Lock()
        self._local = threading.local()
        self._connections: list[_RedisConnection] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- faults and counters --------------------------------------------------------------

    def fail_next(self, status: int = 502, *, execute: bool = True, count: int = 1) -> None:
        """Answer the next ``count`` requests with ``status`` and an HTML body, after
        (``execute=True``) or instead of running them on Redis."""
        with self._lock:
            self._faults.extend(Fault("status", status, execute) for _ in range(count))

    def garble_next(self, body: bytes, status: int = 200) -> None:
        """Run the next request on Redis, then answer ``status`` with ``body`` as JSON
        (a reply upstash-redis cannot read: not JSON, or JSON of the wrong shape)."""
        with self._lock:
            self._faults.append(Fault("body", status, body=body))

    def drop_next(self, count: int = 1) -> None:
        """Run the next ``count`` requests on Redis, then close the connection unanswered."""
        with self._lock:
            self._faults.extend(Fault("drop") for _ in range(count))

    def delay_next(self, seconds: float, count: int = 1) -> None:
        """Run the next ``count`` requests on Redis, then wait ``seconds`` before replying."""
        with self._lock:
            self._faults.extend(Fault("delay", seconds=seconds) for _ in range(count))

    def reset(self) -> None:
        with self._lock:
            self._faults.clear()
            self.requests = 0
            self.by_path.clear()
            self.sync_tokens_seen.clear()

    def _take(self, path: str, sync_token: str | None) -> Fault | None:
        with self._lock:
            self.requests += 1
            self.by_path[path] += 1
            if sync_token is not None:
                self.sync_tokens_seen.append(sync_token)
            return self._faults.popleft() if self._faults else None

    def _next_sync_token(self) -> str:
        with self._lock:
            self._sync_counter += 1
            return f"sync-{self._sync_counter}"

    def _redis(self) -> _RedisConnection:
        conn: _RedisConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = _RedisConnection(self.redis_port)
            with self._lock:
                self._connections.append(conn)
        return conn

    # -- serving --------------------------------------------------------------------------

    def execute(self, path: str, body: Any, b64: bool) -> tuple[int, Any]:
        """(HTTP status, JSON reply) for one request body."""
        if path == "/":
            if not _is_command(body):
                return 400, {"error": "ERR bad request: expected a JSON array command"}
            (reply,) = self._redis().call(body)
            response = _as_response(reply, b64)
            return (400 if "error" in response else 200), response
        if not isinstance(body, list) or not all(_is_command(c) for c in body):
            return 400, {"error": "ERR bad request: expected an array of commands"}
        if path == "/pipeline":
            return 200, [_as_response(r, b64) for r in self._redis().call(*body)]
        replies = self._redis().call(["MULTI"], *body, ["EXEC"])
        executed = replies[-1]
        if isinstance(executed, hiredis.ReplyError):
            return 400, {"error": str(executed)}
        return 200, [_as_response(r, b64) for r in executed]

    def start(self) -> UpstashBridge:
        bridge = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _reply(self, status: int, payload: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                if status == 200:
                    self.send_header("Upstash-Sync-Token", bridge._next_sync_token())
                self.end_headers()
                self.wfile.write(payload)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                path = self.path.split("?", 1)[0].rstrip("/") or "/"
                fault = bridge._take(path, self.headers.get("Upstash-Sync-Token"))
                if self.headers.get("Authorization") != f"Bearer {bridge.token}":
                    body = b'{"error":"Unauthorized: invalid or missing auth token"}'
                    self._reply(401, body, "application/json")
                    return
                if fault is not None and fault.kind == "status" and not fault.execute:
                    self._reply(fault.status, fault.body, "text/html")
                    return
                try:
                    command = json.loads(raw)
                except ValueError:
                    self._reply(400, b'{"error":"ERR body is not JSON"}', "application/json")
                    return
                b64 = self.headers.get("Upstash-Encoding") == "base64"
                status, reply = bridge.execute(path, command, b64)
                if fault is not None:
                    if fault.kind == "drop":
                        self.close_connection = True
                        with contextlib.suppress(OSError):
                            self.connection.shutdown(socket.SHUT_RDWR)
                        return
                    if fault.kind == "delay":
                        time.sleep(fault.seconds)
                    elif fault.kind == "status":
                        self._reply(fault.status, fault.body, "text/html")
                        return
                    elif fault.kind == "body":
                        self._reply(fault.status, fault.body, "application/json")
                        return
                with contextlib.suppress(OSError):
                    self._reply(status, json.dumps(reply).encode(), "application/json")

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()

    def __enter__(self) -> UpstashBridge:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _is_command(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) > 0
        and all(isinstance(a, str | int | float) for a in value)
    )
