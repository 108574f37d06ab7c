"""HTTP Digest authentication for SIP (RFC 2617, RFC 7616, RFC 3261 22.4), sans-IO.

Client: ``authorize(request, challenge_response, username, password)`` answers a 401/407 with
the same request carrying ``Authorization``/``Proxy-Authorization`` (next CSeq, new branch).
Server: ``DigestVerifier`` issues time-bound, HMAC-signed nonces (``challenge(now)``) and checks
credentials (``verify``), telling a wrong password from a stale nonce and refusing replayed counts.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import re
import secrets
import struct
from collections.abc import Callable
from dataclasses import dataclass, replace

from ringline.engine.errors import RemoteProtocolError
from ringline.engine.transports.sip.message import Request, Response, new_branch
from ringline.engine.transports.sip.uri import quote

MAX_TRACKED_NONCES = 100_000
"""Most nonces whose highest ``nc`` a verifier remembers (the oldest are forgotten first)."""
_HASHES = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}
_PARAM_RE = re.compile(r'\s*([A-Za-z0-9_-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,]*)\s*(?:,|$)', re.S)


class DigestError(RemoteProtocolError):
    """A challenge or credentials header that cannot be used."""


def parse_auth_params(value: str) -> tuple[str, dict[str, str]]:
    """``Digest realm="a", nonce="b", qop="auth"`` -> ``("Digest", {"realm": "a", ...})``; names
    lower-cased, quotes and escapes removed."""
    scheme, _, rest = value.strip().partition(" ")
    params: dict[str, str] = {}
    pos, rest = 0, rest.strip()
    while pos < len(rest):
        m = _PARAM_RE.match(rest, pos)
        if not m or m.end() == pos:
            raise DigestError(f"malformed auth parameters {value[:80]!r}")
        raw = m.group(2)
        params[m.group(1).lower()] = re.sub(r"\\(.)", r"\1", raw[1:-1]) if raw.startswith('"') else raw
        pos = m.end()
    return scheme, params


def _hash(algorithm: str) -> Callable[[str], str]:
    base = algorithm.upper().removesuffix("-SESS")
    if base not in _HASHES:
        raise DigestError(f"unsupported digest algorithm {algorithm!r}")
    fn = _HASHES[base]
    return lambda text: fn(text.encode()).hexdigest()


def digest_response(
    *,
    algorithm: str,
    username: str,
    realm: str,
    password: str,
    method: str,
    uri: str,
    nonce: str,
    qop: str | None = None,
    nc: str | None = None,
    cnonce: str | None = None,
    body: bytes = b"",
) -> str:
    """The ``response`` value (RFC 7616 3.4.1), for MD5/SHA-256, ``-sess`` variants, qop auth/auth-int."""
    h = _hash(algorithm)
    ha1 = h(f"{username}:{realm}:{password}")
    if algorithm.upper().endswith("-SESS"):
        ha1 = h(f"{ha1}:{nonce}:{cnonce}")
    ha2 = h(f"{method}:{uri}:{h(body.decode('latin-1'))}" if qop == "auth-int" else f"{method}:{uri}")
    if qop:
        return h(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
    return h(f"{ha1}:{nonce}:{ha2}")


@dataclass(frozen=True, slots=True)
class Challenge:
    """A ``WWW-Authenticate``/``Proxy-Authenticate`` Digest challenge."""

    realm: str
    nonce: str
    algorithm: str = "MD5"
    qop: tuple[str, ...] = ()
    opaque: str | None = None
    stale: bool = False

    @classmethod
    def parse(cls, value: str) -> Challenge:
        scheme, p = parse_auth_params(value)
        if scheme.lower() != "digest":
            raise DigestError(f"unsupported auth scheme {scheme[:20]!r}")
        if "realm" not in p or "nonce" not in p:
            raise DigestError("challenge without realm or nonce")
        qop = tuple(q.strip() for q in p.get("qop", "").split(",") if q.strip())
        stale = p.get("stale", "").lower() == "true"
        return cls(p["realm"], p["nonce"], p.get("algorithm", "MD5"), qop, p.get("opaque"), stale)

    def __str__(self) -> str:
        out = f"Digest realm={quote(self.realm)}, nonce={quote(self.nonce)}, algorithm={self.algorithm}"
        if self.qop:
            out += f", qop={quote(','.join(self.qop))}"
        if self.opaque is not None:
            out += f", opaque={quote(self.opaque)}"
        return out + (", stale=TRUE" if self.stale else "")


@dataclass(frozen=True, slots=True)
class Credentials:
    """An ``Authorization``/``Proxy-Authorization`` Digest header."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str = "MD5"
    qop: str | None = None
    nc: str | None = None
    cnonce: str | None = None
    opaque: str | None = None

    @classmethod
    def parse(cls, value: str) -> Credentials:
        scheme, p = parse_auth_params(value)
        if scheme.lower() != "digest":
            raise DigestError(f"unsupported auth scheme {scheme[:20]!r}")
        missing = [k for k in ("username", "realm", "nonce", "uri", "response") if k not in p]
        if missing:
            raise DigestError(f"credentials without {missing[0]}")
        return cls(
            p["username"], p["realm"], p["nonce"], p["uri"], p["response"], p.get("algorithm", "MD5"),
            p.get("qop"), p.get("nc"), p.get("cnonce"), p.get("opaque"),
        )  # fmt: skip

    def __str__(self) -> str:
        out = (
            f"Digest username={quote(self.username)}, realm={quote(self.realm)}, nonce={quote(self.nonce)}, "
            f"uri={quote(self.uri)}, response={quote(self.response)}, algorithm={self.algorithm}"
        )
        if self.qop:
            out += f", qop={self.qop}, nc={self.nc}, cnonce={quote(self.cnonce or '')}"
        return out + (f", opaque={quote(self.opaque)}" if self.opaque is not None else "")


def make_credentials(
    challenge: Challenge,
    *,
    method: str,
    uri: str,
    username: str,
    password: str,
    nc: int = 1,
    cnonce: str | None = None,
    body: bytes = b"",
) -> Credentials:
    """Answer ``challenge`` (qop ``auth`` when offered, else ``auth-int``, else none)."""
    qop = "auth" if "auth" in challenge.qop else "auth-int" if "auth-int" in challenge.qop else None
    nc_text = f"{nc:08x}" if qop else None
    cnonce = (cnonce or secrets.token_hex(8)) if qop else None
    response = digest_response(
        algorithm=challenge.algorithm, username=username, realm=challenge.realm, password=password,
        method=method, uri=uri, nonce=challenge.nonce, qop=qop, nc=nc_text, cnonce=cnonce, body=body,
    )  # fmt: skip
    return Credentials(
        username, challenge.realm, challenge.nonce, uri, response, challenge.algorithm, qop, nc_text, cnonce,
        challenge.opaque,
    )  # fmt: skip


def authorize(
    request: Request, response: Response, username: str, password: str, *, cnonce: str | None = None
) -> Request:
    """``request`` again, answering the 401 (``WWW-Authenticate`` -> ``Authorization``) or 407
    (``Proxy-Authenticate`` -> ``Proxy-Authorization``) ``response``: the strongest supported
    challenge (SHA-256 before MD5), CSeq + 1 and a new branch (RFC 3261 22.2)."""
    if response.status == 401:
        source, target = "WWW-Authenticate", "Authorization"
    else:
        source, target = "Proxy-Authenticate", "Proxy-Authorization"
    challenges = []
    for value in response.headers.get_all(source):
        try:
            challenge = Challenge.parse(value)
            _hash(challenge.algorithm)
        except DigestError:
            continue  # another scheme or algorithm: look at the next one
        challenges.append(challenge)
    if not challenges:
        raise DigestError(f"no usable {source} challenge")
    challenge = max(challenges, key=lambda c: c.algorithm.upper().startswith("SHA-256"))
    creds = make_credentials(
        challenge, method=request.method, uri=request.uri, username=username, password=password,
        cnonce=cnonce, body=request.body,
    )  # fmt: skip
    cseq = request.cseq
    via = request.top_via.with_param("branch", new_branch())
    headers = request.headers.remove(target).add(target, str(creds))
    headers = headers.set("CSeq", f"{cseq.number + 1} {cseq.method}").replace_first("Via", str(via))
    return replace(request, headers=headers)


class AuthResult(enum.Enum):
    OK = "ok"
    STALE = "stale"  # right password, expired nonce: challenge again with stale=TRUE
    INVALID = "invalid"  # wrong user, password, realm, forged nonce or replayed count: 403 or a new 401


class DigestVerifier:
    """The server side: nonces carry their issue time and an HMAC, so no state is kept per
    challenge; per nonce only the highest ``nc`` seen is remembered (to refuse replays)."""

    def __init__(
        self, realm: str, *, secret: bytes | None = None, lifetime: float = 300.0, algorithm: str = "MD5"
    ) -> None:
        _hash(algorithm)
        self.realm = realm
        self.lifetime = lifetime
        self.algorithm = algorithm
        self._secret = secret or secrets.token_bytes(32)
        self._seen: dict[str, tuple[float, int]] = {}

    def challenge(self, now: float, *, stale: bool = False) -> Challenge:
        """A fresh challenge with a nonce bound to ``now``."""
        stamp = struct.pack(">d", now)
        nonce = base64.urlsafe_b64encode(stamp + self._mac(stamp)).decode().rstrip("=")
        return Challenge(self.realm, nonce, self.algorithm, ("auth",), None, stale)

    def _mac(self, stamp: bytes) -> bytes:
        return hmac.new(self._secret, stamp + self.realm.encode(), hashlib.sha256).digest()[:16]

    def _issued(self, nonce: str) -> float | None:
        try:
            raw = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
        except ValueError:
            return None
        if len(raw) != 24 or not hmac.compare_digest(raw[8:], self._mac(raw[:8])):
            return None
        return struct.unpack(">d", raw[:8])[0]

    def verify(
        self,
        authorization: str | Credentials,
        *,
        method: str,
        now: float,
        password_for: Callable[[str], str | None],
        uri: str | None = None,
        body: bytes = b"",
    ) -> AuthResult:
        """Check credentials for a request with ``method`` (and Request-URI ``uri`` when given)."""
        try:
            creds = authorization if isinstance(authorization, Credentials) else Credentials.parse(authorization)
        except DigestError:
            return AuthResult.INVALID
        issued = self._issued(creds.nonce)
        password = password_for(creds.username)
        if issued is None or password is None or creds.realm != self.realm or (uri and creds.uri != uri):
            return AuthResult.INVALID
        if creds.qop not in (None, "auth", "auth-int") or (creds.qop and not (creds.nc and creds.cnonce)):
            return AuthResult.INVALID
        try:
            expected = digest_response(
                algorithm=creds.algorithm, username=creds.username, realm=self.realm, password=password,
                method=method, uri=creds.uri, nonce=creds.nonce, qop=creds.qop, nc=creds.nc,
                cnonce=creds.cnonce, body=body,
            )  # fmt: skip
        except DigestError:
            return AuthResult.INVALID
        if not hmac.compare_digest(expected, creds.response.lower()):
            return AuthResult.INVALID
        if now - issued > self.lifetime or now < issued:
            return AuthResult.STALE
        return self._count(creds, issued, now)

    def _count(self, creds: Credentials, issued: float, now: float) -> AuthResult:
        while self._seen:
            oldest = next(iter(self._seen))
            if now - self._seen[oldest][0] <= self.lifetime and len(self._seen) < MAX_TRACKED_NONCES:
                break
            del self._seen[oldest]
        if creds.nc is None:
            return AuthResult.OK  # no qop: nothing to count
        if not re.fullmatch(r"[0-9a-fA-F]{8}", creds.nc):
            return AuthResult.INVALID
        nc = int(creds.nc, 16)
        last = self._seen.get(creds.nonce, (issued, 0))[1]
        if nc <= last:
            return AuthResult.INVALID
        self._seen[creds.nonce] = (issued, nc)
        return AuthResult.OK
