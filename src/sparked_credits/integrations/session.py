"""The session check both web integrations share: a Clerk session token from a request's
``Authorization`` header or ``__session`` cookie, verified with fixed settings."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Any

from ..clerk.errors import TokenVerificationError
from ..clerk.tokens import (
    DEFAULT_LEEWAY,
    ClerkPrincipal,
    load_jwt_key,
    session_token_from,
    verify_session_token,
)
from ..errors import ConfigurationError

__all__ = ["SessionAuth"]

logger = logging.getLogger("sparked_credits.integrations")


class SessionAuth:
    """Verifies the session token of a request (framework-free).

    The key source is checked when the app starts, not on the first request.
    """

    def __init__(
        self,
        *,
        jwt_key: str | None = None,
        jwks_url: str | None = None,
        jwks: Any | None = None,
        authorized_parties: Iterable[str] | None = None,
        leeway: timedelta | float = DEFAULT_LEEWAY,
    ) -> None:
        given = [x for x in (jwt_key, jwks_url, jwks) if x]
        if len(given) != 1:
            raise ConfigurationError(
                "ClerkAuth needs exactly one of jwt_key= (CLERK_JWT_KEY), jwks_url= or jwks="
            )
        if jwt_key:
            load_jwt_key(jwt_key)  # fail at startup on a bad key, not per request
        self._key: dict[str, Any] = {"jwt_key": jwt_key, "jwks_url": jwks_url, "jwks": jwks}
        self._key = {k: v for k, v in self._key.items() if v}
        self.authorized_parties = None if authorized_parties is None else tuple(authorized_parties)
        self.leeway = leeway

    def verify(self, token: str) -> ClerkPrincipal:
        """Verify one token with this dependency's settings (raises TokenVerificationError)."""
        return verify_session_token(
            token, authorized_parties=self.authorized_parties, leeway=self.leeway, **self._key
        )

    def from_request(
        self, authorization: str | None, cookies: Mapping[str, str] | str | None
    ) -> ClerkPrincipal:
        """The principal of a request's ``Authorization`` header or ``__session`` cookie;
        a TokenVerificationError (401) when there is none or it does not verify."""
        try:
            return self.verify(session_token_from(authorization, cookies))
        except TokenVerificationError as exc:
            logger.info("session token refused: %s", exc.reason)
            raise
