"""API keys: format, hashing, scopes, and the lookup seam the key store implements.

A key is ``rl_`` + 43 URL-safe base64 characters (32 random bytes): recognizable in logs and
secret scanners, and high-entropy enough that a plain SHA-256 is the right stored form (a slow
password hash buys nothing against 256 bits of randomness and costs every request). The key itself
is shown once, at creation; only ``hash_key(key)`` is stored. Lookup is by that hash, so no secret
is ever compared byte by byte.

Keys arrive as ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass, field
from typing import Protocol

from aiohttp import web

from ringline.api.http.errors import Unauthorized
from ringline.api.scopes import Scope

KEY_PREFIX = "rl_"
_KEY_FORMAT = re.compile(r"rl_[A-Za-z0-9_-]{43}")


ALL_SCOPES = frozenset(s.value for s in Scope)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: one API key. ``id`` is the key's public id (never the secret)."""

    id: str
    name: str
    scopes: frozenset[str]

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or Scope.ADMIN in self.scopes

    def missing(self, scopes: frozenset[str]) -> list[str]:
        """The scopes of ``scopes`` this key lacks, sorted (empty when it may proceed)."""
        return sorted(s for s in scopes if not self.allows(s))


class KeyLookup(Protocol):
    """The key store, as the API sees it. Revoked keys are not found."""

    async def find_key(self, key_hash: str) -> Principal | None: ...


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """What is stored for a key: SHA-256 of the whole key, hex."""
    return hashlib.sha256(key.encode()).hexdigest()


def is_well_formed(key: str) -> bool:
    return _KEY_FORMAT.fullmatch(key) is not None


def check_scopes(scopes: frozenset[str]) -> frozenset[str]:
    if unknown := sorted(scopes - ALL_SCOPES):
        raise ValueError(f"unknown scopes {unknown}; known: {sorted(ALL_SCOPES)}")
    return frozenset(scopes)


def credentials(request: web.Request) -> str | None:
    """The API key the request carries, None when it carries none.

    Raises Unauthorized when the headers are there but unusable: another ``Authorization``
    scheme, an empty key, or two different keys in the two headers.
    """
    bearer = None
    if (auth := request.headers.get("Authorization")) is not None:
        scheme, _, value = auth.strip().partition(" ")
        if scheme.lower() != "bearer":
            raise Unauthorized("unsupported Authorization scheme: use 'Bearer KEY' or the X-API-Key header")
        bearer = value.strip()
        if not bearer:
            raise Unauthorized("empty bearer token")
    header = request.headers.get("X-API-Key")
    if header is not None:
        header = header.strip()
        if not header:
            raise Unauthorized("empty X-API-Key header")
        if bearer is not None and bearer != header:
            raise Unauthorized("Authorization and X-API-Key carry different keys")
    return bearer or header


async def authenticate(request: web.Request, keys: KeyLookup) -> Principal | None:
    """The principal of the request's key, None when it sent no key.

    Raises Unauthorized for a malformed, unknown or revoked key (the store is not asked about a
    malformed one).
    """
    key = credentials(request)
    if key is None:
        return None
    if not is_well_formed(key):
        raise Unauthorized("malformed API key")
    principal = await keys.find_key(hash_key(key))
    if principal is None:
        raise Unauthorized("invalid or revoked API key")
    return principal


@dataclass
class MemoryKeyStore:
    """Keys in a dict, for tests and single-process demos. Implements KeyLookup."""

    _by_hash: dict[str, Principal] = field(default_factory=dict)
    _hash_by_id: dict[str, str] = field(default_factory=dict)

    def create(self, name: str, scopes: frozenset[str] | set[str], key_id: str | None = None) -> tuple[str, Principal]:
        """A new key: returns the secret (show it once) and its principal."""
        key = generate_key()
        principal = Principal(key_id or "key_" + secrets.token_hex(8), name, check_scopes(frozenset(scopes)))
        if principal.id in self._hash_by_id:
            raise ValueError(f"key id {principal.id!r} exists")
        self._by_hash[hash_key(key)] = principal
        self._hash_by_id[principal.id] = hash_key(key)
        return key, principal

    def revoke(self, key_id: str) -> bool:
        if (key_hash := self._hash_by_id.pop(key_id, None)) is None:
            return False
        del self._by_hash[key_hash]
        return True

    async def find_key(self, key_hash: str) -> Principal | None:
        return self._by_hash.get(key_hash)
