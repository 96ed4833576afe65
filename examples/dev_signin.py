"""Development-only sign-in: session tokens for a demo user, signed with a throwaway key.

With ``CREDITS_DEV_SIGNIN=1`` and ``REDIS_URL=memory://`` (and no Clerk key), the example
app generates an RSA key pair when it starts, verifies session tokens with its public half
(exactly as it verifies Clerk's, RS256 through ``ClerkAuth``) and serves
``POST /api/dev/signin``, which mints a Clerk-shaped token for a demo user. The credits page
then works without a Clerk account. The key lives in memory only: restarting the app
invalidates every token, and nothing here is ever valid against a real deployment.

Never enable it where real users are: ``create_app`` refuses it on any store but
``memory://`` and next to a Clerk key.
"""

from __future__ import annotations

import re
import secrets
import time
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

ISSUER = "urn:sparked-credits:dev-signin"
# Demo user ids: Clerk-like, short, printable.
USER_ID = re.compile(r"^user_[A-Za-z0-9_]{1,60}$")


class DevSignin:
    """A throwaway RS256 key pair and the tokens it signs (60 s, like Clerk's)."""

    def __init__(self, default_user: str = "user_demo", lifetime: int = 60) -> None:
        if not USER_ID.match(default_user):
            raise ValueError(f"dev user ids look like user_demo, not {default_user!r}")
        self.default_user = default_user
        self.lifetime = lifetime
        self.kid = "dev-" + secrets.token_hex(4)
        self._private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.public_pem = (
            self._private.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )

    def mint(self, user_id: str, *, origin: str | None = None) -> dict[str, Any]:
        """A session token for ``user_id`` and when it expires: ``{"token", "user_id",
        "expires_in", "expires_at"}``."""
        if not USER_ID.match(user_id):
            raise ValueError(f"dev user ids look like user_demo, not {user_id!r}")
        now = int(time.time())
        claims: dict[str, Any] = {
            "sub": user_id,
            "sid": "sess_dev_" + secrets.token_hex(6),
            "iss": ISSUER,
            "iat": now,
            "nbf": now - 1,
            "exp": now + self.lifetime,
        }
        if origin:
            claims["azp"] = origin
        token = jwt.encode(claims, self._private, algorithm="RS256", headers={"kid": self.kid})
        return {
            "token": token,
            "user_id": user_id,
            "expires_in": self.lifetime,
            "expires_at": claims["exp"],
        }
