"""SIP URIs and the structured header values built on them: name-addr (From, To, Contact, Route),
Via and CSeq (RFC 3261 section 19, 20 and 25).

Every type is a frozen, slotted dataclass with ``parse(text)`` and ``__str__``; malformed input
raises ``SipError`` with an exact message. Parameters keep their order as ``(name, value)`` pairs,
``value`` being ``None`` for a flag such as ``;lr`` or ``;rport``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from ringline.engine.transports.sip.headers import SipError

Params = tuple[tuple[str, str | None], ...]

_TOKEN = r"[A-Za-z0-9.!%*_+`'~-]+"
_TOKEN_RE = re.compile(_TOKEN)
_HOST_RE = re.compile(r"[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]")
_USER_BAD = re.compile(r"[\s<>\"]")
_VIA_RE = re.compile(rf"\s*({_TOKEN})\s*/\s*({_TOKEN})\s*/\s*({_TOKEN})\s+(\S.*)", re.S)
_CSEQ_RE = re.compile(rf"\s*([0-9]{{1,10}})\s+({_TOKEN})\s*")
MAX_CSEQ = 2**31 - 1


def is_number(text: str | None, max_digits: int = 10) -> bool:
    """``text`` is 1 to ``max_digits`` ASCII digits (``str.isdigit`` also accepts "²")."""
    return text is not None and 0 < len(text) <= max_digits and text.isascii() and text.isdigit()


def _show(text: str) -> str:
    return repr(text if len(text) <= 80 else text[:80] + "...")


def split_unquoted(text: str, sep: str) -> list[str]:
    """Split ``text`` on ``sep`` outside double-quoted strings."""
    parts, start, quoted, escaped = [], 0, False, False
    for i, ch in enumerate(text):
        if quoted:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == sep:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def parse_params(text: str) -> Params:
    """``;a=1;lr;b="x y"`` (leading ``;`` optional) to ``(("a", "1"), ("lr", None), ("b", '"x y"'))``.
    Quoted values keep their quotes; ``unquote`` removes them."""
    out = []
    for part in split_unquoted(text, ";"):
        part = part.strip()
        if not part:
            continue
        name, eq, value = part.partition("=")
        name = name.strip()
        if not _TOKEN_RE.fullmatch(name):
            raise SipError(f"invalid parameter {_show(part)}")
        out.append((name.lower(), value.strip() if eq else None))
    return tuple(out)


def format_params(params: Params) -> str:
    return "".join(f";{n}" if v is None else f";{n}={v}" for n, v in params)


def get_param(params: Params, name: str) -> str | None:
    """The value of ``name`` (``""`` for a flag), or None when absent."""
    for n, v in params:
        if n == name:
            return "" if v is None else unquote(v)
    return None


def set_param(params: Params, name: str, value: str | None) -> Params:
    kept = tuple((n, v) for n, v in params if n != name)
    return (*kept, (name, value))


def unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1], flags=re.S)
    return value


def quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True, slots=True)
class SipUri:
    """A ``sip:``, ``sips:`` or ``tel:`` URI. For ``tel:`` the number is ``user`` and ``host`` is
    empty. ``user`` keeps its %-escapes as written."""

    scheme: str
    user: str | None
    host: str
    port: int | None = None
    params: Params = ()
    headers: tuple[tuple[str, str], ...] = ()
    password: str | None = None

    @classmethod
    def parse(cls, text: str) -> SipUri:
        text = text.strip()
        scheme, colon, rest = text.partition(":")
        if not colon or not rest or not _TOKEN_RE.fullmatch(scheme):
            raise SipError(f"invalid URI {_show(text)}")
        scheme = scheme.lower()
        if scheme not in ("sip", "sips", "tel"):
            raise SipError(f"unsupported URI scheme {scheme!r}", status=416)
        if scheme == "tel":
            number, _, params = rest.partition(";")
            if not number or _USER_BAD.search(number):
                raise SipError(f"invalid URI {_show(text)}")
            return cls("tel", number, "", None, parse_params(params))
        rest, _, hdrs = rest.partition("?")
        user = password = None
        if "@" in rest:
            userinfo, _, rest = rest.rpartition("@")
            user, _, pw = userinfo.partition(":")
            password = pw or None
            if not user or _USER_BAD.search(userinfo):
                raise SipError(f"invalid URI {_show(text)}")
        hostport, _, params = rest.partition(";")
        if hostport.startswith("["):
            host, _, port_text = hostport.partition("]")
            host += "]"
            if port_text and not port_text.startswith(":"):
                raise SipError(f"invalid host in URI {_show(text)}")
            port_text = port_text[1:]
        else:
            host, _, port_text = hostport.partition(":")
        if not _HOST_RE.fullmatch(host):
            raise SipError(f"invalid host in URI {_show(text)}")
        port = None
        if port_text or hostport.endswith(":"):
            if not is_number(port_text, 5) or int(port_text) > 65535:
                raise SipError(f"invalid port in URI {_show(text)}")
            port = int(port_text)
        headers = tuple(
            (n, v) for h in hdrs.split("&") if h for n, _, v in [h.partition("=")]
        )  # fmt: skip
        return cls(scheme, user, host.lower(), port, parse_params(params), headers, password)

    def __str__(self) -> str:
        if self.scheme == "tel":
            return f"tel:{self.user}{format_params(self.params)}"
        out = [self.scheme, ":"]
        if self.user is not None:
            out += [self.user, f":{self.password}" if self.password else "", "@"]
        out.append(self.host)
        if self.port is not None:
            out.append(f":{self.port}")
        out.append(format_params(self.params))
        if self.headers:
            out.append("?" + "&".join(f"{n}={v}" for n, v in self.headers))
        return "".join(out)

    def param(self, name: str) -> str | None:
        return get_param(self.params, name)

    def without_headers(self) -> SipUri:
        """The URI as a Request-URI (RFC 3261 19.1.5: no headers) with no ``method`` parameter."""
        return replace(self, headers=(), params=tuple(p for p in self.params if p[0] != "method"))


@dataclass(frozen=True, slots=True)
class NameAddr:
    """``"Display" <uri>;params`` (From, To, Contact, Route, Record-Route, Refer-To). ``uri`` is the
    URI text as written (any scheme); ``sip_uri()`` parses it."""

    uri: str
    display_name: str | None = None
    params: Params = ()

    @classmethod
    def parse(cls, text: str) -> NameAddr:
        text = text.strip()
        lt = _find_unquoted(text, "<")
        if lt >= 0:
            gt = text.find(">", lt)
            if gt < 0:
                raise SipError(f"invalid name-addr {_show(text)}")
            display = text[:lt].strip()
            uri, after = text[lt + 1 : gt].strip(), text[gt + 1 :].strip()
            if after and not after.startswith(";"):
                raise SipError(f"invalid name-addr {_show(text)}")
            if display.startswith('"'):
                if len(display) < 2 or not display.endswith('"'):
                    raise SipError(f"invalid name-addr {_show(text)}")
                display = unquote(display)
            name = display or None
        else:
            uri, _, after = text.partition(";")
            uri, name = uri.strip(), None
        if not uri or ":" not in uri or re.search(r"[\s<>]", uri):
            raise SipError(f"invalid name-addr {_show(text)}")
        return cls(uri, name, parse_params(after))

    def __str__(self) -> str:
        name = f"{quote(self.display_name)} " if self.display_name else ""
        return f"{name}<{self.uri}>{format_params(self.params)}"

    @property
    def tag(self) -> str | None:
        return get_param(self.params, "tag") or None

    def with_tag(self, tag: str) -> NameAddr:
        return replace(self, params=set_param(self.params, "tag", tag))

    def param(self, name: str) -> str | None:
        return get_param(self.params, name)

    def sip_uri(self) -> SipUri:
        return SipUri.parse(self.uri)


def _find_unquoted(text: str, ch: str) -> int:
    quoted = escaped = False
    for i, c in enumerate(text):
        if quoted:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                quoted = False
        elif c == '"':
            quoted = True
        elif c == ch:
            return i
    return -1


@dataclass(frozen=True, slots=True)
class Via:
    """One Via element: ``SIP/2.0/UDP host:port;branch=z9hG4bK...;rport;received=...``."""

    transport: str
    host: str
    port: int | None = None
    params: Params = ()

    @classmethod
    def parse(cls, text: str) -> Via:
        m = _VIA_RE.fullmatch(text)
        if not m:
            raise SipError(f"invalid Via {_show(text.strip())}")
        name, version, transport, rest = m.groups()
        if name.upper() != "SIP" or version != "2.0":
            raise SipError(f"unsupported Via protocol {name + '/' + version!r}")
        rest = re.sub(r"\([^)]*\)", "", rest)  # comments are allowed after the sent-by
        sent_by, _, params = rest.partition(";")
        sent_by = re.sub(r"\s*:\s*", ":", sent_by.strip())
        try:
            uri = SipUri.parse("sip:" + sent_by)
        except SipError:
            raise SipError(f"invalid Via {_show(text.strip())}") from None
        if uri.user is not None or uri.params or uri.headers:
            raise SipError(f"invalid Via {_show(text.strip())}")
        return cls(transport.upper(), uri.host, uri.port, parse_params(params))

    def __str__(self) -> str:
        port = "" if self.port is None else f":{self.port}"
        return f"SIP/2.0/{self.transport} {self.host}{port}{format_params(self.params)}"

    @property
    def branch(self) -> str | None:
        return get_param(self.params, "branch") or None

    @property
    def received(self) -> str | None:
        return get_param(self.params, "received") or None

    @property
    def rport(self) -> int | None:
        """The ``rport`` value a proxy or UAS filled in; None when absent or still empty."""
        value = get_param(self.params, "rport")
        return int(value) if is_number(value, 5) else None

    @property
    def wants_rport(self) -> bool:
        """The sender asked for symmetric response routing (RFC 3581): ``;rport`` is present."""
        return get_param(self.params, "rport") is not None

    @property
    def sent_by(self) -> tuple[str, int]:
        """``(host, port)`` with the default port 5060 (5061 for TLS)."""
        return self.host, self.port or (5061 if self.transport == "TLS" else 5060)

    def with_param(self, name: str, value: str | None) -> Via:
        return replace(self, params=set_param(self.params, name, value))


@dataclass(frozen=True, slots=True)
class CSeq:
    number: int
    method: str

    @classmethod
    def parse(cls, text: str) -> CSeq:
        m = _CSEQ_RE.fullmatch(text)
        if not m:
            raise SipError(f"invalid CSeq {_show(text.strip())}")
        number = int(m.group(1))
        if number > MAX_CSEQ:
            raise SipError("CSeq number out of range")
        return cls(number, m.group(2))

    def __str__(self) -> str:
        return f"{self.number} {self.method}"
