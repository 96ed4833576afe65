"""One flat JSON error shape for every refusal, whatever the web framework.

Every 4xx a route answers is ``{"error": code, "message": text, ...fields}``: a
:class:`~sparked_credits.CreditsError`'s ``to_dict()``, a refused session (401), a
non-admin (403), a rate limit (429), a malformed body (422, with the fields at fault but
never the input itself: a NaN or a lone surrogate echoed back would make the answer
unserializable). 5xx answers carry the code only. The FastAPI and Flask integrations
both build their responses here, so their bodies are the same byte for byte.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

from ..clerk.errors import TokenVerificationError
from ..errors import CreditsError

__all__ = [
    "HTTPRefusal",
    "PayloadTooLargeError",
    "dumps",
    "error_parts",
    "read_limited",
    "status_code_name",
    "validation_body",
]

logger = logging.getLogger("sparked_credits.integrations")

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
}


def status_code_name(status: int) -> str:
    """The error code of a bare HTTP status (a framework's own 404, 405...)."""
    return _CODES.get(status, "server_error" if status >= 500 else "http_error")


class HTTPRefusal(CreditsError):
    """A refusal at the HTTP edge with its own status: ``HTTPRefusal(403, "forbidden",
    "admins only")``. Extra keyword fields join the body; ``headers`` the response."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        **fields: Any,
    ) -> None:
        super().__init__(message)
        self.http_status = status
        self.code = code
        self.headers = dict(headers or {})
        self.fields = fields

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), **self.fields}


class PayloadTooLargeError(HTTPRefusal):
    """The request body is over the route's limit (413); it was not read whole."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            413, "payload_too_large", f"the request body is over {limit} bytes", limit=limit
        )


def dumps(body: Any) -> bytes:
    """JSON that always encodes: ASCII escapes (a lone surrogate survives), no NaN."""
    try:
        return json.dumps(body, ensure_ascii=True, allow_nan=False, default=str).encode()
    except (ValueError, TypeError, RecursionError):
        safe = {"error": str(body.get("error", "error")) if isinstance(body, dict) else "error"}
        return json.dumps(safe, ensure_ascii=True).encode()


def error_parts(exc: CreditsError) -> tuple[int, dict[str, Any], dict[str, str]]:
    """(status, body, headers) for a CreditsError.

    Server-side failures (5xx: storage down, misconfiguration) answer with the error code
    only: their messages can name hosts or settings, which a client has no business seeing.
    An :class:`HTTPRefusal` is the route's own answer, written for the client: its message
    and fields are kept at any status (``502 generation_failed``).
    """
    status = exc.http_status
    headers: dict[str, str] = dict(getattr(exc, "headers", None) or {})
    if status >= 500 and isinstance(exc, HTTPRefusal):
        logger.error("answered %d %s: %s", status, exc.code, exc.message)
        return status, exc.to_dict(), headers
    if status >= 500:
        logger.error("credits error answered %d: %s", status, exc, exc_info=exc)
        body: dict[str, Any] = {"error": exc.code, "message": "the credits service failed"}
        if status == 503:
            headers.setdefault("Retry-After", "1")
        return status, body, headers
    body = exc.to_dict()
    if isinstance(exc, TokenVerificationError):
        headers["WWW-Authenticate"] = (
            f'Bearer error="invalid_token", error_description="{exc.reason}"'
        )
    retry_after = getattr(exc, "retry_after", None)
    if isinstance(retry_after, int) and status in (409, 429):
        headers["Retry-After"] = str(retry_after)
    return status, body, headers


def _loc(loc: Iterable[Any]) -> str:
    return ".".join(str(part) for part in loc)


def validation_body(errors: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The 422 body for pydantic/FastAPI validation errors: where and why, never the input."""
    items = [
        {
            "loc": _loc(e.get("loc", ())),
            "msg": str(e.get("msg", "")),
            "type": str(e.get("type", "")),
        }
        for e in errors
    ][:20]
    first = items[0] if items else {"loc": "body", "msg": "invalid request"}
    return {
        "error": "validation_error",
        "message": f"{first['loc']}: {first['msg']}",
        "field": first["loc"],
        "errors": items,
    }


async def read_limited(
    chunks: AsyncIterator[bytes], content_length: str | None, limit: int
) -> bytes:
    """The body, refused (413) as soon as it is known to be over ``limit``: from the
    Content-Length header before reading anything, else while streaming it."""
    if content_length is not None:
        try:
            declared = int(content_length)
        except ValueError:
            raise HTTPRefusal(
                400, "bad_request", "the Content-Length header is not a number"
            ) from None
        if declared > limit:
            raise PayloadTooLargeError(limit)
    received = bytearray()
    async for chunk in chunks:
        received += chunk
        if len(received) > limit:
            raise PayloadTooLargeError(limit)
    return bytes(received)
