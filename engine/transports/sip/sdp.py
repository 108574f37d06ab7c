"""SDP (RFC 4566 subset) and the offer/answer model (RFC 3264) for G.711 audio with DTMF events.

``SessionDescription.parse`` / ``bytes(sdp)`` read and write v, o, s, c, t, m and a lines (other
lines are skipped). ``answer(offer, ...)`` answers a remote offer (raising ``SdpError("no common
codec")``, which the UA turns into 488); ``make_offer`` builds our offer and ``negotiate(offer,
answer)`` reads the remote's answer to it. Both sides end with a ``NegotiatedMedia``: what the RTP
session needs.
"""

from __future__ import annotations

import enum
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, replace

from ringline.engine.errors import RemoteProtocolError
from ringline.engine.transports.sip.uri import is_number

Attributes = tuple[tuple[str, str | None], ...]


class SdpError(RemoteProtocolError):
    """An unusable session description (malformed, or nothing we can answer)."""


class Direction(enum.Enum):
    SENDRECV = "sendrecv"
    SENDONLY = "sendonly"
    RECVONLY = "recvonly"
    INACTIVE = "inactive"

    @property
    def sends(self) -> bool:
        return self in (Direction.SENDRECV, Direction.SENDONLY)

    @property
    def receives(self) -> bool:
        return self in (Direction.SENDRECV, Direction.RECVONLY)

    @classmethod
    def of(cls, sends: bool, receives: bool) -> Direction:
        return {(True, True): cls.SENDRECV, (True, False): cls.SENDONLY, (False, True): cls.RECVONLY}.get(
            (sends, receives), cls.INACTIVE
        )

    def reversed(self) -> Direction:
        """The same stream seen from the other end (sendonly <-> recvonly)."""
        return Direction.of(self.receives, self.sends)


@dataclass(frozen=True, slots=True)
class Codec:
    name: str
    payload_type: int
    clock_rate: int = 8000


PCMU = Codec("PCMU", 0)
PCMA = Codec("PCMA", 8)
TELEPHONE_EVENT = "telephone-event"
_STATIC = {0: ("PCMU", 8000), 8: ("PCMA", 8000), 3: ("GSM", 8000), 9: ("G722", 8000), 18: ("G729", 8000)}


@dataclass(frozen=True, slots=True)
class Media:
    """One ``m=`` section: ``formats`` are payload-type strings as written."""

    kind: str
    port: int
    proto: str
    formats: tuple[str, ...]
    connection: str | None = None
    attributes: Attributes = ()

    def attr(self, name: str) -> str | None:
        """The value of the first ``a=name`` (``""`` for a flag), None when absent."""
        return next(("" if v is None else v for n, v in self.attributes if n == name), None)

    def rtpmap(self, payload_type: str) -> tuple[str, int] | None:
        """``(encoding name, clock rate)`` of a payload type, from a=rtpmap or the static table."""
        for n, v in self.attributes:
            if n == "rtpmap" and v:
                pt, _, enc = v.partition(" ")
                name, _, rate = enc.strip().partition("/")
                if pt == payload_type and is_number(rate.split("/")[0]):
                    return name, int(rate.split("/")[0])
        return _STATIC.get(int(payload_type)) if is_number(payload_type, 3) else None

    def direction(self, default: Direction = Direction.SENDRECV) -> Direction:
        return next((Direction(n) for n, _ in self.attributes if n in _DIRECTIONS), default)


_DIRECTIONS = {d.value for d in Direction}


@dataclass(frozen=True, slots=True)
class SessionDescription:
    """A session description: origin ``o=`` fields, session-level ``c=`` address and attributes,
    and the media sections."""

    address: str
    session_id: str = "0"
    session_version: str = "0"
    username: str = "-"
    session_name: str = "-"
    connection: str | None = None
    timing: str = "0 0"
    attributes: Attributes = ()
    media: tuple[Media, ...] = ()

    @classmethod
    def parse(cls, data: bytes | str) -> SessionDescription:
        if isinstance(data, bytes):
            try:
                data = data.decode("utf-8")
            except UnicodeDecodeError:
                raise SdpError("SDP is not valid UTF-8") from None
        lines = [line for line in re.split(r"\r?\n", data.strip()) if line]
        if not lines or lines[0].strip() != "v=0":
            raise SdpError("SDP does not start with v=0")
        session: dict = {"attributes": []}
        media: list[dict] = []
        for line in lines[1:]:
            if len(line) < 2 or line[1] != "=":
                raise SdpError(f"malformed SDP line {line[:80]!r}")
            kind, value = line[0], line[2:].strip()
            target = media[-1] if media else session
            if kind == "o":
                parts = value.split()
                if len(parts) != 6:
                    raise SdpError(f"malformed o= line {value[:80]!r}")
                session.update(username=parts[0], session_id=parts[1], session_version=parts[2], address=parts[5])
            elif kind == "s" and not media:
                session["session_name"] = value
            elif kind == "t" and not media:
                session["timing"] = value
            elif kind == "c":
                parts = value.split()
                if len(parts) != 3 or parts[0] != "IN":
                    raise SdpError(f"malformed c= line {value[:80]!r}")
                target["connection"] = parts[2].split("/")[0]
            elif kind == "m":
                parts = value.split()
                port = parts[1].split("/")[0] if len(parts) >= 3 else ""
                if len(parts) < 3 or not is_number(port, 5) or int(port) > 65535:
                    raise SdpError(f"malformed m= line {value[:80]!r}")
                media.append(
                    dict(kind=parts[0], port=int(port), proto=parts[2], formats=tuple(parts[3:]), attributes=[])
                )
            elif kind == "a":
                name, colon, attr_value = value.partition(":")
                target["attributes"].append((name, attr_value if colon else None))
        if "address" not in session:
            raise SdpError("missing o= line")
        session["attributes"] = tuple(session["attributes"])
        sections = tuple(Media(**{**m, "attributes": tuple(m["attributes"])}) for m in media)
        return cls(**session, media=sections)

    def __str__(self) -> str:
        lines = [
            "v=0",
            f"o={self.username} {self.session_id} {self.session_version} IN {_addrtype(self.address)} {self.address}",
            f"s={self.session_name or '-'}",
        ]
        if self.connection:
            lines.append(f"c=IN {_addrtype(self.connection)} {self.connection}")
        lines.append(f"t={self.timing}")
        lines += [_attr_line(a) for a in self.attributes]
        for m in self.media:
            lines.append(f"m={m.kind} {m.port} {m.proto} {' '.join(m.formats)}".rstrip())
            if m.connection:
                lines.append(f"c=IN {_addrtype(m.connection)} {m.connection}")
            lines += [_attr_line(a) for a in m.attributes]
        return "\r\n".join(lines) + "\r\n"

    def __bytes__(self) -> bytes:
        return str(self).encode()

    def attr(self, name: str) -> str | None:
        return next(("" if v is None else v for n, v in self.attributes if n == name), None)


def _addrtype(address: str) -> str:
    return "IP6" if ":" in address else "IP4"


def _attr_line(attr: tuple[str, str | None]) -> str:
    return f"a={attr[0]}" if attr[1] is None else f"a={attr[0]}:{attr[1]}"


@dataclass(frozen=True, slots=True)
class NegotiatedMedia:
    """The outcome of an offer/answer exchange, from our side: the codec to send and expect, the
    DTMF (RFC 4733) payload type or None, where to send RTP, the remote's packet time, and our
    ``direction`` (``RECVONLY``/``INACTIVE`` when the remote put us on hold)."""

    codec: str
    payload_type: int
    clock_rate: int
    dtmf_payload_type: int | None
    remote_host: str
    remote_port: int
    ptime: int
    direction: Direction
    rtcp_port: int | None = None

    @property
    def on_hold(self) -> bool:
        """The remote stopped wanting our audio (sendonly/inactive from them, or c=0.0.0.0)."""
        return not self.direction.sends or self.remote_host in ("0.0.0.0", "::")


def _media_section(
    port: int, codec: Codec, dtmf_pt: int | None, ptime: int, direction: Direction, proto: str = "RTP/AVP"
) -> Media:
    formats = [str(codec.payload_type)]
    attrs: list[tuple[str, str | None]] = [("rtpmap", f"{codec.payload_type} {codec.name}/{codec.clock_rate}")]
    if dtmf_pt is not None:
        formats.append(str(dtmf_pt))
        attrs += [("rtpmap", f"{dtmf_pt} {TELEPHONE_EVENT}/8000"), ("fmtp", f"{dtmf_pt} 0-16")]
    attrs += [("ptime", str(ptime)), (direction.value, None)]
    return Media("audio", port, proto, tuple(formats), None, tuple(attrs))


def make_offer(
    address: str,
    port: int,
    *,
    codecs: Sequence[Codec] = (PCMU, PCMA),
    dtmf_payload_type: int | None = 101,
    ptime: int = 20,
    direction: Direction = Direction.SENDRECV,
    session_id: str | None = None,
    session_version: int = 0,
) -> SessionDescription:
    """Our offer: one audio stream with ``codecs`` in preference order and telephone-event."""
    section = _media_section(port, codecs[0], dtmf_payload_type, ptime, direction)
    formats = [str(c.payload_type) for c in codecs] + ([str(dtmf_payload_type)] if dtmf_payload_type else [])
    rtpmaps = tuple(("rtpmap", f"{c.payload_type} {c.name}/{c.clock_rate}") for c in codecs[1:])
    section = replace(
        section, formats=tuple(formats), attributes=section.attributes[:1] + rtpmaps + section.attributes[1:]
    )
    sid = session_id or str(secrets.randbelow(2**31))
    return SessionDescription(address, sid, str(session_version), connection=address, media=(section,))


def _ptime(offer: SessionDescription, media: Media, default: int) -> int:
    value = media.attr("ptime") or offer.attr("ptime") or ""
    return int(value) if is_number(value, 3) and 10 <= int(value) <= 200 else default


def _pick(media: Media, codecs: Sequence[Codec]) -> tuple[Codec, str | None] | None:
    """The first format of ``media`` (its order) that is one of ``codecs``, and its telephone-event PT."""
    chosen = dtmf = None
    for fmt in media.formats:
        mapping = media.rtpmap(fmt) if is_number(fmt, 3) and int(fmt) < 128 else None
        if mapping is None:
            continue
        name, rate = mapping
        if name.lower() == TELEPHONE_EVENT and rate == 8000 and dtmf is None:
            dtmf = fmt
        elif chosen is None:
            chosen = next((c for c in codecs if c.name.lower() == name.lower() and c.clock_rate == rate), None)
            chosen = replace(chosen, payload_type=int(fmt)) if chosen else None
    return (chosen, dtmf) if chosen else None


def _outcome(sdp: SessionDescription, media: Media, codec: Codec, dtmf: str | None, ours: Direction) -> NegotiatedMedia:
    host = media.connection or sdp.connection
    if host is None:
        raise SdpError("missing connection address")
    rtcp = (media.attr("rtcp") or "").split(" ")[0]
    return NegotiatedMedia(
        codec.name.upper(),
        codec.payload_type,
        codec.clock_rate,
        int(dtmf) if dtmf is not None else None,
        host,
        media.port,
        _ptime(sdp, media, 20),
        ours,
        int(rtcp) if is_number(rtcp, 5) else None,
    )


def answer(
    offer: SessionDescription,
    address: str,
    port: int,
    *,
    codecs: Sequence[Codec] = (PCMU, PCMA),
    ptime: int = 20,
    direction: Direction = Direction.SENDRECV,
    session_id: str | None = None,
    session_version: int = 0,
) -> tuple[SessionDescription, NegotiatedMedia]:
    """Answer ``offer`` (RFC 3264 section 6): the first RTP/AVP audio stream gets the offerer's
    first codec among ``codecs`` (plus telephone-event when offered); every other stream is
    rejected with port 0. Our direction is ``direction`` narrowed by the offer's."""
    sections: list[Media] = []
    result: NegotiatedMedia | None = None
    for media in offer.media:
        picked = _pick(media, codecs) if media.kind == "audio" and media.proto == "RTP/AVP" else None
        if result is None and media.port != 0 and picked is not None:
            codec, dtmf = picked
            remote = media.direction(_session_direction(offer))
            ours = Direction.of(direction.sends and remote.receives, direction.receives and remote.sends)
            result = _outcome(offer, media, codec, dtmf, ours)
            sections.append(_media_section(port, codec, result.dtmf_payload_type, ptime, ours))
        else:
            sections.append(Media(media.kind, 0, media.proto, media.formats[:1] or ("0",)))
    if result is None:
        raise SdpError("no common codec")
    sid = session_id or str(secrets.randbelow(2**31))
    return SessionDescription(address, sid, str(session_version), connection=address, media=tuple(sections)), result


def _session_direction(sdp: SessionDescription) -> Direction:
    return next((Direction(n) for n, _ in sdp.attributes if n in _DIRECTIONS), Direction.SENDRECV)


def negotiate(offer: SessionDescription, answer: SessionDescription) -> NegotiatedMedia:
    """Read the remote's ``answer`` to our ``offer`` (m-lines pair up by position): the first
    accepted audio stream's first codec that we offered, its telephone-event PT, where to send, and
    our direction (what we offered narrowed by what they answered)."""
    for ours, theirs in zip(offer.media, answer.media, strict=False):
        if theirs.kind != "audio" or theirs.port == 0 or ours.port == 0:
            continue
        offered = [Codec(m[0], int(f), m[1]) for f in ours.formats if (m := ours.rtpmap(f)) and is_number(f, 3)]
        picked = _pick(theirs, [c for c in offered if c.name.lower() != TELEPHONE_EVENT])
        if picked is not None:
            codec, dtmf = picked
            mine = ours.direction(_session_direction(offer))
            remote = theirs.direction(_session_direction(answer))
            direction = Direction.of(mine.sends and remote.receives, mine.receives and remote.sends)
            return _outcome(answer, theirs, codec, dtmf, direction)
    raise SdpError("no common codec")
