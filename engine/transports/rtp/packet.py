"""RTP packets (RFC 3550 section 5.1), sans-IO.

``RtpPacket.parse(data)`` reads one datagram and raises ``RtpError`` with an exact message for
anything malformed; ``bytes(packet)`` writes it back. The header extension (section 5.3.1) is kept
as ``(profile, data)`` so a packet round-trips; padding is stripped on parse and never written.

The hot path sends 50 packets a second per call, so the header goes through one precompiled
``struct.Struct`` and ``pack_rtp`` writes a datagram without building a packet object at all
(``benchmarks/rtp_clock.py`` and the report of the RTP work give ns per parse and per pack).

``is_rtcp(data)`` tells RTCP from RTP on one port (rtcp-mux, RFC 5761 section 4): the second
octet of RTCP is its packet type, 192-223 (SR 200, RR 201, SDES 202, BYE 203, APP 204), where RTP
has the marker bit and a payload type that RFC 5761 forbids from the range 64-95.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ringline.engine.errors import RemoteProtocolError

__all__ = ["HEADER_SIZE", "RtpError", "RtpPacket", "is_rtcp", "pack_rtp"]

HEADER_SIZE = 12
_HEADER = struct.Struct("!BBHII")
_EXT_HEADER = struct.Struct("!HH")
_unpack_header = _HEADER.unpack_from
_pack_header = _HEADER.pack


class RtpError(RemoteProtocolError):
    """A datagram on an RTP or RTCP port is not valid RTP/RTCP (or telephone-event)."""


def is_rtcp(data: bytes) -> bool:
    """Whether a datagram received on a muxed port is RTCP rather than RTP (RFC 5761 section 4)."""
    return len(data) >= 2 and 192 <= data[1] <= 223


def pack_rtp(
    payload_type: int, sequence: int, timestamp: int, ssrc: int, payload: bytes, marker: bool = False
) -> bytes:
    """One RTP datagram (version 2, no padding, extension or CSRC): the send path's fast way.

    Arguments are not range-checked beyond what ``struct`` does: the session owns them.
    """
    return _pack_header(0x80, (0x80 | payload_type) if marker else payload_type, sequence, timestamp, ssrc) + payload


@dataclass(frozen=True, slots=True)
class RtpPacket:
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    csrc: tuple[int, ...] = ()
    extension: tuple[int, bytes] | None = None
    """Header extension as ``(profile, data)``; ``data`` is a whole number of 32-bit words."""

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket:
        size = len(data)
        if size < HEADER_SIZE:
            raise RtpError(f"RTP packet of {size} bytes, shorter than the 12-byte header")
        first, second, sequence, timestamp, ssrc = _unpack_header(data)
        if first >> 6 != 2:
            raise RtpError(f"RTP version {first >> 6}, expected 2")
        start = HEADER_SIZE
        csrc: tuple[int, ...] = ()
        if count := first & 0x0F:
            start += 4 * count
            if size < start:
                raise RtpError(f"RTP packet of {size} bytes, too short for its {count} CSRCs")
            csrc = struct.unpack_from(f"!{count}I", data, HEADER_SIZE)
        extension = None
        if first & 0x10:
            if size < start + 4:
                raise RtpError(f"RTP packet of {size} bytes, too short for its header extension")
            profile, words = _EXT_HEADER.unpack_from(data, start)
            ext_end = start + 4 + 4 * words
            if size < ext_end:
                raise RtpError(f"RTP header extension of {4 * words} bytes runs past the end of the packet")
            extension = (profile, bytes(data[start + 4 : ext_end]))
            start = ext_end
        end = size
        if first & 0x20:
            pad = data[-1]
            if pad == 0:
                raise RtpError("RTP padding count of 0")
            if pad > size - start:
                raise RtpError(f"RTP padding of {pad} bytes, more than the {size - start} bytes after the header")
            end -= pad
        packet = _new(cls)
        _set_pt(packet, second & 0x7F)
        _set_seq(packet, sequence)
        _set_ts(packet, timestamp)
        _set_ssrc(packet, ssrc)
        _set_payload(packet, bytes(data[start:end]))
        _set_marker(packet, bool(second & 0x80))
        _set_csrc(packet, csrc)
        _set_ext(packet, extension)
        return packet

    def __bytes__(self) -> bytes:
        csrc = self.csrc
        if len(csrc) > 15:
            raise ValueError(f"an RTP packet holds at most 15 CSRCs, got {len(csrc)}")
        first = 0x80 | len(csrc)
        parts = []
        if csrc:
            parts.append(struct.pack(f"!{len(csrc)}I", *csrc))
        if self.extension is not None:
            profile, ext = self.extension
            if len(ext) % 4:
                raise ValueError(f"RTP header extension data must be whole 32-bit words, got {len(ext)} bytes")
            first |= 0x10
            parts.append(_EXT_HEADER.pack(profile, len(ext) // 4) + ext)
        second = (0x80 | self.payload_type) if self.marker else self.payload_type
        head = _pack_header(first, second, self.sequence, self.timestamp, self.ssrc)
        return b"".join((head, *parts, self.payload))


# ``parse`` fills a new packet through the slot descriptors: the generated frozen ``__init__``
# (``object.__setattr__`` per field) costs about twice as much, and parsing is the receive hot path.
_new = object.__new__
_set_pt, _set_seq, _set_ts, _set_ssrc, _set_payload, _set_marker, _set_csrc, _set_ext = (
    getattr(RtpPacket, name).__set__
    for name in ("payload_type", "sequence", "timestamp", "ssrc", "payload", "marker", "csrc", "extension")
)
