"""SIP header names and the ordered, case-insensitive header multi-dict.

``Headers`` is immutable: every "modifying" method returns a new ``Headers``. Names are stored in
their canonical spelling (compact forms expanded, ``call-id`` -> ``Call-ID``), lookups ignore case
and accept compact forms, and values of comma-list headers (Via, Route, Contact, ...) hold one
element each, so ``get_all("Via")`` lists every hop whether it arrived on one line or many.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from ringline.engine.errors import RemoteProtocolError


class SipError(RemoteProtocolError):
    """A SIP message (or part of one) is malformed. ``status`` is the response a UAS should answer
    a request that caused it with (400 unless stated), when a response can be built at all."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


COMPACT = {
    "a": "Accept-Contact",
    "b": "Referred-By",
    "c": "Content-Type",
    "d": "Request-Disposition",
    "e": "Content-Encoding",
    "f": "From",
    "i": "Call-ID",
    "j": "Reject-Contact",
    "k": "Supported",
    "l": "Content-Length",
    "m": "Contact",
    "n": "Identity-Info",
    "o": "Event",
    "r": "Refer-To",
    "s": "Subject",
    "t": "To",
    "u": "Allow-Events",
    "v": "Via",
    "x": "Session-Expires",
    "y": "Identity",
}
"""Compact header forms (RFC 3261 7.3.3 and the extensions that registered one)."""

_KNOWN = [
    *COMPACT.values(),
    "Accept", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow", "Authentication-Info",
    "Authorization", "Call-Info", "Content-Disposition", "Content-Language", "CSeq", "Date",
    "Error-Info", "Expires", "In-Reply-To", "Max-Forwards", "MIME-Version", "Min-Expires",
    "Min-SE", "Organization", "P-Asserted-Identity", "Path", "Priority", "Privacy",
    "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Require", "RAck", "Reason",
    "Record-Route", "Reply-To", "Require", "Retry-After", "Route", "RSeq", "Server",
    "Service-Route", "Subscription-State", "Timestamp", "Unsupported", "User-Agent", "Warning",
    "WWW-Authenticate",
]  # fmt: skip
_CANONICAL = {name.lower(): name for name in _KNOWN}

LIST_HEADERS = frozenset(
    name.lower()
    for name in (
        "Accept", "Accept-Encoding", "Accept-Language", "Allow", "Allow-Events", "Contact",
        "Content-Encoding", "In-Reply-To", "Path", "Proxy-Require", "Record-Route", "Require",
        "Route", "Service-Route", "Supported", "Unsupported", "Via",
    )
)  # fmt: skip
"""Headers whose value is a comma-separated list (RFC 3261 7.3.1); stored one element per entry."""


def canonical_name(name: str) -> str:
    """The canonical spelling of a header name: compact forms expanded, known names re-cased,
    unknown names kept as written."""
    if len(name) == 1 and (full := COMPACT.get(name.lower())):
        return full
    return _CANONICAL.get(name.lower(), name)


def split_commas(value: str) -> list[str]:
    """Split a header value on commas outside quoted strings and ``<...>``; strip each part and
    drop empty ones. ``'"a, b" <sip:x>, <sip:y;p=1,2>'`` gives two elements."""
    parts: list[str] = []
    start = 0
    quoted = escaped = False
    angle = 0
    for i, ch in enumerate(value):
        if quoted:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == "<":
            angle += 1
        elif ch == ">" and angle:
            angle -= 1
        elif ch == "," and not angle:
            parts.append(value[start:i])
            start = i + 1
    parts.append(value[start:])
    return [p for part in parts if (p := part.strip())]


class Headers:
    """An immutable, ordered multi-dict of SIP headers with case-insensitive lookup."""

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        checked = []
        for name, value in items:
            if not name or any(c in name for c in " \t\r\n:") or "\r" in value or "\n" in value:
                raise ValueError(f"invalid header {name!r}: {value!r}")
            checked.append((canonical_name(name), value))
        self._items: tuple[tuple[str, str], ...] = tuple(checked)

    @classmethod
    def _trusted(cls, items: tuple[tuple[str, str], ...]) -> Headers:
        new = cls.__new__(cls)
        new._items = items
        return new

    # -- reading -------------------------------------------------------------------------------

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of ``name`` (any case, compact form allowed), else ``default``."""
        key = canonical_name(name).lower()
        for n, v in self._items:
            if n.lower() == key:
                return v
        return default

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name`` in order (one element per entry for comma-list headers)."""
        key = canonical_name(name).lower()
        return [v for n, v in self._items if n.lower() == key]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Headers) and self._items == other._items

    def __hash__(self) -> int:
        return hash(self._items)

    def __repr__(self) -> str:
        return f"Headers({list(self._items)!r})"

    # -- building (each returns a new Headers) --------------------------------------------------

    def add(self, name: str, value: str) -> Headers:
        """Append a header."""
        return Headers((*self._items, (name, value)))

    def prepend(self, name: str, value: str) -> Headers:
        """Insert a header before all others (a proxy's or UAC's new top Via)."""
        return Headers(((name, value), *self._items))

    def remove(self, name: str) -> Headers:
        """Drop every value of ``name``."""
        key = canonical_name(name).lower()
        return Headers._trusted(tuple(item for item in self._items if item[0].lower() != key))

    def set(self, name: str, value: str) -> Headers:
        """Replace every value of ``name`` by one, at the position of the first (else appended)."""
        key = canonical_name(name).lower()
        out: list[tuple[str, str]] = []
        placed = False
        for n, v in self._items:
            if n.lower() != key:
                out.append((n, v))
            elif not placed:
                out.append((n, value))
                placed = True
        if not placed:
            out.append((name, value))
        return Headers(out)

    def replace_first(self, name: str, value: str) -> Headers:
        """Replace only the first value of ``name`` (the top Via); appended when absent."""
        key = canonical_name(name).lower()
        items = list(self._items)
        for i, (n, _) in enumerate(items):
            if n.lower() == key:
                items[i] = (n, value)
                return Headers(items)
        return Headers((*items, (name, value)))
