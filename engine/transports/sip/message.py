"""SIP messages, sans-IO (RFC 3261 section 7, 8.2.6, 18.3 for UDP).

``parse(datagram)`` turns one UDP datagram into a ``Request`` or ``Response`` or raises
``SipError`` with an exact message; ``bytes(message)`` serializes it with a correct
Content-Length. For a request that failed to parse, ``error_response(datagram, error)`` builds the
4xx/5xx answer when enough of Via/From/To/Call-ID/CSeq survived, else returns None (drop and log).

The structured header types (``SipUri``, ``NameAddr``, ``Via``, ``CSeq``) live in ``uri.py`` and the
header multi-dict in ``headers.py``; both are re-exported here.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, replace

from ringline.engine.transports.sip.headers import LIST_HEADERS, Headers, SipError, canonical_name, split_commas
from ringline.engine.transports.sip.uri import CSeq, NameAddr, SipUri, Via, quote

__all__ = [
    "MAGIC_COOKIE",
    "MAX_HEADERS",
    "MAX_MESSAGE_SIZE",
    "REASONS",
    "CSeq",
    "Headers",
    "NameAddr",
    "Request",
    "Response",
    "SipError",
    "SipUri",
    "Via",
    "error_response",
    "make_response",
    "new_branch",
    "new_call_id",
    "new_tag",
    "parse",
]

MAX_MESSAGE_SIZE = 65535
"""Largest datagram accepted (the UDP payload limit); bigger ones get 513 Message Too Large."""
MAX_HEADERS = 128
"""Most header lines (after unfolding) accepted in one message."""
MAGIC_COOKIE = "z9hG4bK"
"""Prefix of every RFC 3261 branch parameter (section 8.1.1.7)."""

REASONS = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
    183: "Session Progress", 200: "OK", 202: "Accepted", 300: "Multiple Choices",
    301: "Moved Permanently", 302: "Moved Temporarily", 400: "Bad Request", 401: "Unauthorized",
    403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 407: "Proxy Authentication Required",
    408: "Request Timeout", 413: "Request Entity Too Large", 415: "Unsupported Media Type",
    416: "Unsupported URI Scheme", 420: "Bad Extension", 480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist", 482: "Loop Detected", 483: "Too Many Hops",
    484: "Address Incomplete", 486: "Busy Here", 487: "Request Terminated",
    488: "Not Acceptable Here", 491: "Request Pending", 500: "Server Internal Error",
    501: "Not Implemented", 503: "Service Unavailable", 504: "Server Time-out",
    505: "Version Not Supported", 513: "Message Too Large", 600: "Busy Everywhere", 603: "Decline",
}  # fmt: skip

_TOKEN_RE = re.compile(r"[A-Za-z0-9.!%*_+`'~-]+")
_STATUS_RE = re.compile(r"SIP/2\.0 ([1-6][0-9][0-9])(?: (.*))?")
_VERSION_RE = re.compile(r"SIP/[0-9]+\.[0-9]+", re.I)
_CTL_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_SINGLE = ("From", "To", "Call-ID", "CSeq", "Max-Forwards")


def _show(text: str) -> str:
    return repr(text if len(text) <= 80 else text[:80] + "...")


class _Message:
    """Accessors shared by requests and responses (each parses its header on demand)."""

    __slots__ = ()
    headers: Headers
    body: bytes

    @property
    def call_id(self) -> str:
        return self.headers.get("Call-ID") or ""

    @property
    def cseq(self) -> CSeq:
        return CSeq.parse(self.headers.get("CSeq") or "")

    @property
    def vias(self) -> list[Via]:
        return [Via.parse(v) for v in self.headers.get_all("Via")]

    @property
    def top_via(self) -> Via:
        return Via.parse(self.headers.get("Via") or "")

    @property
    def branch(self) -> str | None:
        return self.top_via.branch

    @property
    def from_addr(self) -> NameAddr:
        return NameAddr.parse(self.headers.get("From") or "")

    @property
    def to_addr(self) -> NameAddr:
        return NameAddr.parse(self.headers.get("To") or "")

    @property
    def from_tag(self) -> str | None:
        return self.from_addr.tag

    @property
    def to_tag(self) -> str | None:
        return self.to_addr.tag

    @property
    def contact(self) -> NameAddr | None:
        value = self.headers.get("Contact")
        return None if value is None or value.strip() == "*" else NameAddr.parse(value)

    def _serialize(self, start: str) -> bytes:
        length = f"Content-Length: {len(self.body)}"
        lines = [start]
        for name, value in self.headers:
            if name != "Content-Length":
                lines.append(f"{name}: {value}")
            elif length:  # the first Content-Length stays in place with the true value
                lines.append(length)
                length = ""
        if length:
            lines.append(length)
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + self.body


@dataclass(frozen=True, slots=True)
class Request(_Message):
    """A SIP request. ``uri`` is the Request-URI as written; ``sip_uri()`` parses it."""

    method: str
    uri: str
    headers: Headers
    body: bytes = b""

    @classmethod
    def parse(cls, data: bytes) -> Request:
        """``parse(data)``, insisting on a request."""
        message = parse(data)
        if not isinstance(message, Request):
            raise SipError("expected a request, got a response")
        return message

    def __bytes__(self) -> bytes:
        return self._serialize(f"{self.method} {self.uri} SIP/2.0")

    def sip_uri(self) -> SipUri:
        return SipUri.parse(self.uri)

    def with_headers(self, headers: Headers) -> Request:
        return replace(self, headers=headers)


@dataclass(frozen=True, slots=True)
class Response(_Message):
    """A SIP response."""

    status: int
    reason: str
    headers: Headers
    body: bytes = b""

    @classmethod
    def parse(cls, data: bytes) -> Response:
        """``parse(data)``, insisting on a response."""
        message = parse(data)
        if not isinstance(message, Response):
            raise SipError("expected a response, got a request")
        return message

    def __bytes__(self) -> bytes:
        return self._serialize(f"SIP/2.0 {self.status} {self.reason}")

    @property
    def is_provisional(self) -> bool:
        return self.status < 200

    def with_headers(self, headers: Headers) -> Response:
        return replace(self, headers=headers)


# -- parsing ------------------------------------------------------------------------------------


def _split(data: bytes, strict: bool) -> tuple[str, list[tuple[str, str]], bytes]:
    """Start line, unfolded ``(name, value)`` header lines and the raw rest of the datagram."""
    data = data.lstrip(b"\r\n")  # RFC 3261 7.5: CRLFs before the start line are ignored
    if not data:
        raise SipError("empty message")
    ends = [(i, n) for i, n in ((data.find(b"\r\n\r\n"), 4), (data.find(b"\n\n"), 2)) if i >= 0]
    if not ends:
        raise SipError("truncated message: no blank line after headers")
    end, sep = min(ends)
    try:
        head = data[:end].decode("utf-8")
    except UnicodeDecodeError:
        raise SipError("headers are not valid UTF-8") from None
    lines = re.split(r"\r?\n", head)
    if strict and any(_CTL_RE.search(line) for line in lines):
        raise SipError("control character in headers")
    raw: list[str] = []
    for line in lines[1:]:
        if _CTL_RE.search(line):
            continue  # only reached when lenient
        if line[:1] in (" ", "\t"):  # folded continuation (RFC 3261 7.3.1)
            if not raw:
                if strict:
                    raise SipError("continuation line before any header")
                continue
            raw[-1] = raw[-1].rstrip() + " " + line.strip()
        else:
            raw.append(line)
    if strict and len(raw) > MAX_HEADERS:
        raise SipError(f"more than {MAX_HEADERS} headers")
    headers = []
    for line in raw:
        name, colon, value = line.partition(":")
        name = name.rstrip(" \t")
        if not colon or not _TOKEN_RE.fullmatch(name):
            if strict:
                raise SipError(f"malformed header line {_show(line)}")
            continue
        headers.append((name, value.strip()))
    return lines[0], headers, data[end + sep :]


def _build_headers(pairs: Iterable[tuple[str, str]]) -> Headers:
    items = []
    for name, value in pairs:
        name = canonical_name(name)
        if name.lower() in LIST_HEADERS:
            items += [(name, part) for part in split_commas(value)]
        else:
            items.append((name, value))
    return Headers(items)


def _start_line(line: str) -> tuple[str, str] | tuple[int, str]:
    if line.startswith("SIP/"):
        m = _STATUS_RE.fullmatch(line)
        if m:
            return int(m.group(1)), (m.group(2) or "").strip()
        version = line.split(" ", 1)[0]
        if _VERSION_RE.fullmatch(version) and version != "SIP/2.0":
            raise SipError(f"unsupported SIP version {_show(version)}")
        raise SipError(f"malformed status line {_show(line)}")
    parts = line.split(" ")
    if len(parts) != 3 or not _TOKEN_RE.fullmatch(parts[0]) or not parts[1]:
        raise SipError(f"malformed request line {_show(line)}")
    method, uri, version = parts
    if version != "SIP/2.0":
        if _VERSION_RE.fullmatch(version):
            raise SipError(f"unsupported SIP version {_show(version)}", status=505)
        raise SipError(f"malformed request line {_show(line)}")
    return method, uri


def parse(data: bytes) -> Request | Response:
    """Parse one UDP datagram holding one SIP message.

    Content-Length is enforced (RFC 3261 18.3): a shorter body is an error, extra bytes after the
    declared length are dropped; without Content-Length the rest of the datagram is the body.
    Raises ``SipError`` (with the status a UAS should answer) for anything malformed.
    """
    if len(data) > MAX_MESSAGE_SIZE:
        raise SipError(f"message larger than {MAX_MESSAGE_SIZE} bytes", status=513)
    start, pairs, rest = _split(data, strict=True)
    first = _start_line(start)
    headers = _build_headers(pairs)
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        if name not in headers:
            raise SipError(f"missing {name} header")
    for name in _SINGLE:
        if len(headers.get_all(name)) > 1:
            raise SipError(f"multiple {name} headers")
    call_id = headers.get("Call-ID") or ""
    if not call_id or any(c.isspace() for c in call_id):
        raise SipError(f"invalid Call-ID {_show(call_id)}")
    for via in headers.get_all("Via"):
        Via.parse(via)
    NameAddr.parse(headers.get("From") or "")
    NameAddr.parse(headers.get("To") or "")
    cseq = CSeq.parse(headers.get("CSeq") or "")
    body = _body(headers, rest)
    if isinstance(first[0], int):
        return Response(first[0], str(first[1]), headers, body)
    method, uri = first
    assert isinstance(method, str)
    if cseq.method != method:
        raise SipError(f"CSeq method {cseq.method!r} does not match request method {method!r}")
    max_forwards = headers.get("Max-Forwards")
    if max_forwards is not None and not re.fullmatch(r"[0-9]{1,10}", max_forwards):
        raise SipError(f"invalid Max-Forwards {_show(max_forwards)}")
    if ":" not in uri:
        raise SipError(f"invalid Request-URI {_show(uri)}")
    if uri.split(":", 1)[0].lower() in ("sip", "sips", "tel"):
        SipUri.parse(uri)
    return Request(method, uri, headers, body)


def _body(headers: Headers, rest: bytes) -> bytes:
    values = {v.strip() for v in headers.get_all("Content-Length")}
    if not values:
        return rest
    if len(values) > 1:
        raise SipError("conflicting Content-Length headers")
    text = values.pop()
    if not text.isascii() or not text.isdigit():
        raise SipError(f"invalid Content-Length {_show(text)}")
    length = int(text) if len(text) <= 6 else MAX_MESSAGE_SIZE + 1
    if length > MAX_MESSAGE_SIZE:
        raise SipError(f"Content-Length {text[:12]} exceeds {MAX_MESSAGE_SIZE}")
    if len(rest) < length:
        raise SipError(f"body shorter than Content-Length ({len(rest)} < {length})")
    return rest[:length]


# -- building -----------------------------------------------------------------------------------


def new_branch() -> str:
    """A fresh RFC 3261 branch (``z9hG4bK`` + 80 random bits)."""
    return MAGIC_COOKIE + secrets.token_hex(10)


def new_tag() -> str:
    """A fresh From/To tag (48 random bits)."""
    return secrets.token_hex(6)


def new_call_id(host: str | None = None) -> str:
    """A fresh, globally unique Call-ID, ``random@host`` when a host is given."""
    value = secrets.token_hex(12)
    return f"{value}@{host}" if host else value


def make_response(
    request: Request,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    content_type: str | None = None,
) -> Response:
    """A response to ``request`` per RFC 3261 8.2.6: Via (all, in order), From, Call-ID and CSeq
    copied; To copied with ``to_tag`` added when it has none (never on 100 Trying); Timestamp
    echoed on 100. ``headers`` are appended; ``content_type`` is written when there is a body."""
    out: list[tuple[str, str]] = [("Via", v) for v in request.headers.get_all("Via")]
    to = request.headers.get("To") or ""
    if to_tag and status != 100 and NameAddr.parse(to).tag is None:
        to = str(NameAddr.parse(to).with_tag(to_tag))
    out += [("From", request.headers.get("From") or ""), ("To", to)]
    out += [("Call-ID", request.call_id), ("CSeq", request.headers.get("CSeq") or "")]
    if status == 100 and (timestamp := request.headers.get("Timestamp")):
        out.append(("Timestamp", timestamp))
    out += list(headers)
    if body and content_type:
        out.append(("Content-Type", content_type))
    return Response(status, reason or REASONS.get(status, ""), Headers(out), body)


def error_response(data: bytes, error: SipError) -> Response | None:
    """The response answering a request that failed to parse with ``error``, or None when it
    cannot be answered: a response, an ACK, or too little of Via/From/To/Call-ID/CSeq survived.

    The status is ``error.status`` (400, 505, 513...), the reason the standard phrase, and the
    detail travels in a ``Warning: 399 ringline "..."`` header (RFC 3261 20.43)."""
    try:
        start, pairs, _ = _split(data[:MAX_MESSAGE_SIZE], strict=False)
    except SipError:
        return None
    method = start.split(" ", 1)[0]
    if start.startswith("SIP/") or not _TOKEN_RE.fullmatch(method) or method == "ACK":
        return None
    headers = _build_headers(pairs)
    if not headers.get_all("Via") or any(len(headers.get_all(n)) != 1 for n in ("From", "To", "Call-ID", "CSeq")):
        return None
    try:
        for via in headers.get_all("Via"):
            Via.parse(via)
        to = NameAddr.parse(headers.get("To") or "")
        NameAddr.parse(headers.get("From") or "")
    except SipError:
        return None
    cseq = headers.get("CSeq") or ""
    call_id = headers.get("Call-ID") or ""
    if (
        not call_id
        or _CTL_RE.search(start)
        or re.search(r"\s", call_id)
        or not re.fullmatch(r"[0-9]{1,10} +[A-Za-z0-9.!%*_+`'~-]+", cseq.strip())
    ):
        return None
    out = [("Via", v) for v in headers.get_all("Via")]
    out += [("From", headers.get("From") or ""), ("To", str(to) if to.tag else str(to.with_tag(new_tag())))]
    out += [("Call-ID", call_id), ("CSeq", cseq), ("Warning", f"399 ringline {quote(str(error))}")]
    try:
        return Response(error.status, REASONS.get(error.status, "Bad Request"), Headers(out))
    except ValueError:
        return None
