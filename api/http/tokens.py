"""Short-lived signed tokens for browsers, which cannot set headers on a WebSocket.

``POST /calls/{id}/events/token`` (with an API key) issues one; the live-events WebSocket accepts
it as ``?token=``. A token is bound to one call, names the key that asked for it, and expires
after five minutes by default::

    v1.<base64url(JSON payload)>.<base64url(HMAC-SHA256(secret, "v1." + payload))>

The payload is ``{"aud": "call-events", "call": call_id, "key": key_id, "exp": unix_seconds}``.
The signature is checked (in constant time) before anything in the payload is believed. The
secret is server-side only and must be shared by every node that verifies.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from ringline.api.http.errors import Unauthorized

VERSION = "v1"
AUDIENCE = "call-events"
MIN_SECRET_BYTES = 32


class TokenError(Unauthorized):
    """A token that is malformed, forged, expired or for another call (answers 401)."""


@dataclass(frozen=True, slots=True)
class EventToken:
    token: str
    call_id: str
    key_id: str
    expires_at: float
    """Unix seconds."""


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class EventTokenSigner:
    """Issues and verifies event tokens. ``now`` is the wall clock (tokens cross processes)."""

    def __init__(self, secret: bytes, *, ttl_s: float = 300.0, now: Callable[[], float] = time.time) -> None:
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"token secret must be at least {MIN_SECRET_BYTES} bytes, got {len(secret)}")
        if ttl_s <= 0:
            raise ValueError("ttl_s must be positive")
        self._secret = secret
        self._ttl = ttl_s
        self._now = now

    @staticmethod
    def generate_secret() -> bytes:
        return secrets.token_bytes(MIN_SECRET_BYTES)

    def _sign(self, signed_part: str) -> str:
        return _b64encode(hmac.new(self._secret, signed_part.encode("ascii"), hashlib.sha256).digest())

    def issue(self, call_id: str, key_id: str) -> EventToken:
        expires_at = int(self._now() + self._ttl)
        payload = {"aud": AUDIENCE, "call": call_id, "key": key_id, "exp": expires_at}
        signed_part = f"{VERSION}.{_b64encode(orjson.dumps(payload))}"
        return EventToken(f"{signed_part}.{self._sign(signed_part)}", call_id, key_id, expires_at)

    def verify(self, token: str, call_id: str) -> EventToken:
        """The token's claims if it is genuine, unexpired and for ``call_id``; else TokenError."""
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != VERSION or len(token) > 2048:
            raise TokenError("malformed token")
        signed_part = f"{parts[0]}.{parts[1]}"
        if not hmac.compare_digest(self._sign(signed_part), parts[2]):
            raise TokenError("bad token signature")
        try:
            payload = orjson.loads(_b64decode(parts[1]))
            claims = EventToken(token, payload["call"], payload["key"], payload["exp"])
            audience = payload["aud"]
        except (binascii.Error, ValueError, TypeError, KeyError) as exc:  # orjson.JSONDecodeError is a ValueError
            raise TokenError("malformed token") from exc
        if audience != AUDIENCE or not isinstance(claims.expires_at, int | float):
            raise TokenError("malformed token")
        if self._now() >= claims.expires_at:
            raise TokenError("token expired")
        if claims.call_id != call_id:
            raise TokenError("token is for another call")
        return claims
