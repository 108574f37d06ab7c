"""RTCP (RFC 3550 section 6), minimal and sans-IO: sender and receiver reports, SDES CNAME, BYE.

``parse_rtcp(data)`` reads a compound datagram into a list of packets (SR, RR, SDES and BYE;
APP and unknown types are skipped) and raises ``RtpError`` with an exact message when a packet is
malformed. ``bytes(packet)`` writes one packet; a compound datagram is their concatenation
(``compound(...)``). ``ReceptionStats`` keeps what a report block says about one source
(appendix A.1, A.3 and A.8 of RFC 3550: extended highest sequence, loss, interarrival jitter).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .packet import RtpError

__all__ = [
    "Bye",
    "ReceiverReport",
    "ReceptionStats",
    "ReportBlock",
    "RtcpPacket",
    "Sdes",
    "SenderReport",
    "compound",
    "ntp_middle",
    "ntp_timestamp",
    "parse_rtcp",
]

SR, RR, SDES, BYE = 200, 201, 202, 203
_NTP_EPOCH_OFFSET = 2208988800  # seconds from 1900-01-01 to 1970-01-01
_HEAD = struct.Struct("!BBH")
_SR_INFO = struct.Struct("!IQIII")
_BLOCK = struct.Struct("!IIIIII")


def ntp_timestamp(unix_time: float) -> int:
    """64-bit NTP timestamp (32.32 fixed point seconds since 1900) of a Unix time."""
    return int((unix_time + _NTP_EPOCH_OFFSET) * (1 << 32)) & 0xFFFF_FFFF_FFFF_FFFF


def ntp_middle(ntp: int) -> int:
    """The middle 32 bits of an NTP timestamp, as LSR carries it (16.16 fixed point seconds)."""
    return (ntp >> 16) & 0xFFFF_FFFF


@dataclass(frozen=True, slots=True)
class ReportBlock:
    ssrc: int
    fraction_lost: int
    """Fraction lost since the previous report, in 1/256ths."""
    packets_lost: int
    """Cumulative number lost (signed 24 bits: duplicates can make it negative)."""
    highest_sequence: int
    """Extended highest sequence number received (cycles << 16 | sequence)."""
    jitter: int
    """Interarrival jitter in timestamp units."""
    lsr: int = 0
    dlsr: int = 0
    """Delay since that last SR, in 1/65536 s."""

    @classmethod
    def parse(cls, data: bytes, offset: int) -> ReportBlock:
        ssrc, lost, highest, jitter, lsr, dlsr = _BLOCK.unpack_from(data, offset)
        cumulative = lost & 0xFFFFFF
        if cumulative & 0x800000:
            cumulative -= 0x1000000
        return cls(ssrc, lost >> 24, cumulative, highest, jitter, lsr, dlsr)

    def __bytes__(self) -> bytes:
        lost = (self.fraction_lost & 0xFF) << 24 | (max(-0x800000, min(0x7FFFFF, self.packets_lost)) & 0xFFFFFF)
        return _BLOCK.pack(self.ssrc, lost, self.highest_sequence, self.jitter, self.lsr, self.dlsr)


def _header(count: int, packet_type: int, body_len: int) -> bytes:
    return _HEAD.pack(0x80 | count, packet_type, body_len // 4)


def _blocks(data: bytes, offset: int, count: int) -> tuple[ReportBlock, ...]:
    return tuple(ReportBlock.parse(data, offset + 24 * i) for i in range(count))


@dataclass(frozen=True, slots=True)
class SenderReport:
    ssrc: int
    ntp_timestamp: int
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: tuple[ReportBlock, ...] = ()

    def __bytes__(self) -> bytes:
        body = _SR_INFO.pack(self.ssrc, self.ntp_timestamp, self.rtp_timestamp, self.packet_count, self.octet_count)
        body += b"".join(bytes(block) for block in self.reports)
        return _header(len(self.reports), SR, len(body)) + body


@dataclass(frozen=True, slots=True)
class ReceiverReport:
    ssrc: int
    reports: tuple[ReportBlock, ...] = ()

    def __bytes__(self) -> bytes:
        body = struct.pack("!I", self.ssrc) + b"".join(bytes(block) for block in self.reports)
        return _header(len(self.reports), RR, len(body)) + body


@dataclass(frozen=True, slots=True)
class Sdes:
    """One SDES chunk with a CNAME item (other items are skipped on parse)."""

    ssrc: int
    cname: str

    def __bytes__(self) -> bytes:
        text = self.cname.encode()[:255]
        chunk = struct.pack("!IBB", self.ssrc, 1, len(text)) + text
        chunk += b"\x00" * (4 - len(chunk) % 4)  # the end item, then padding to a word
        return _header(1, SDES, len(chunk)) + chunk


@dataclass(frozen=True, slots=True)
class Bye:
    sources: tuple[int, ...]
    reason: str = ""

    def __bytes__(self) -> bytes:
        body = struct.pack(f"!{len(self.sources)}I", *self.sources)
        if self.reason:
            text = self.reason.encode()[:255]
            body += bytes((len(text),)) + text
            body += b"\x00" * (-len(body) % 4)
        return _header(len(self.sources), BYE, len(body)) + body


RtcpPacket = SenderReport | ReceiverReport | Sdes | Bye


def compound(*packets: RtcpPacket) -> bytes:
    """A compound RTCP datagram; RFC 3550 wants it to start with an SR or RR and hold an SDES CNAME."""
    return b"".join(bytes(packet) for packet in packets)


def _parse_sdes(data: bytes, start: int, end: int, count: int) -> list[Sdes]:
    chunks: list[Sdes] = []
    pos = start
    for _ in range(count):
        if pos + 4 > end:
            raise RtpError("RTCP SDES chunk runs past the end of its packet")
        (ssrc,) = struct.unpack_from("!I", data, pos)
        pos += 4
        cname = None
        while pos < end and data[pos] != 0:
            if pos + 2 > end or pos + 2 + data[pos + 1] > end:
                raise RtpError("RTCP SDES item runs past the end of its packet")
            kind, length = data[pos], data[pos + 1]
            if kind == 1:
                cname = data[pos + 2 : pos + 2 + length].decode("utf-8", "replace")
            pos += 2 + length
        pos = (pos // 4 + 1) * 4  # the end item and padding to the next word
        if cname is not None:
            chunks.append(Sdes(ssrc, cname))
    return chunks


def parse_rtcp(data: bytes) -> list[RtcpPacket]:
    """Every SR, RR, SDES (CNAME) and BYE packet of a compound RTCP datagram, in order."""
    packets: list[RtcpPacket] = []
    pos, size = 0, len(data)
    if size < 4:
        raise RtpError(f"RTCP packet of {size} bytes, shorter than the 4-byte header")
    while pos < size:
        if size - pos < 4:
            raise RtpError(f"RTCP packet of {size - pos} bytes, shorter than the 4-byte header")
        first, packet_type, words = _HEAD.unpack_from(data, pos)
        if first >> 6 != 2:
            raise RtpError(f"RTCP version {first >> 6}, expected 2")
        length = 4 * (words + 1)
        if pos + length > size:
            raise RtpError(f"RTCP packet of {length} bytes runs past the end of the datagram ({size - pos} left)")
        end = pos + length
        if first & 0x20:
            pad = data[end - 1]
            if pad == 0 or pad > length - 4:
                raise RtpError(f"RTCP padding of {pad} bytes in a packet of {length}")
            end -= pad
        count, body = first & 0x1F, pos + 4
        if packet_type == SR:
            if end - body < 24 + 24 * count:
                raise RtpError(f"RTCP SR of {length} bytes, too short for its {count} report blocks")
            ssrc, ntp, rtp_ts, packets_sent, octets = _SR_INFO.unpack_from(data, body)
            packets.append(SenderReport(ssrc, ntp, rtp_ts, packets_sent, octets, _blocks(data, body + 24, count)))
        elif packet_type == RR:
            if end - body < 4 + 24 * count:
                raise RtpError(f"RTCP RR of {length} bytes, too short for its {count} report blocks")
            (ssrc,) = struct.unpack_from("!I", data, body)
            packets.append(ReceiverReport(ssrc, _blocks(data, body + 4, count)))
        elif packet_type == SDES:
            packets.extend(_parse_sdes(data, body, end, count))
        elif packet_type == BYE:
            if end - body < 4 * count:
                raise RtpError(f"RTCP BYE of {length} bytes, too short for its {count} sources")
            sources = struct.unpack_from(f"!{count}I", data, body)
            reason, at = "", body + 4 * count
            if at < end and at + 1 + data[at] <= end:
                reason = data[at + 1 : at + 1 + data[at]].decode("utf-8", "replace")
            packets.append(Bye(sources, reason))
        pos += length
    return packets


class ReceptionStats:
    """What we know about one incoming source, for the report block we send about it.

    ``update`` takes every accepted packet's sequence and timestamp and its arrival time in the
    same timestamp units; the extended sequence follows RFC 3550 appendix A.1 (without its
    probation: the session validates sources), jitter appendix A.8.
    """

    __slots__ = (
        "_base",
        "_cycles",
        "_expected_prior",
        "_max_seq",
        "_received_prior",
        "_transit",
        "jitter",
        "last_sr",
        "last_sr_at",
        "received",
        "ssrc",
    )

    def __init__(self, ssrc: int, sequence: int) -> None:
        self.ssrc = ssrc
        self._base = sequence
        self._max_seq = sequence
        self._cycles = 0
        self.received = 0
        self._expected_prior = 0
        self._received_prior = 0
        self._transit: int | None = None
        self.jitter = 0.0
        self.last_sr = 0
        """Middle 32 bits of the NTP timestamp of the last SR from this source (0: none yet)."""
        self.last_sr_at = 0.0
        """Clock time at which that SR arrived."""

    def update(self, sequence: int, timestamp: int, arrival: int) -> None:
        self.received += 1
        delta = (sequence - self._max_seq) & 0xFFFF
        if 0 < delta < 3000:
            if sequence < self._max_seq:
                self._cycles += 1 << 16
            self._max_seq = sequence
        elif delta >= 0xFFFF - 3000 or delta == 0:
            pass  # reordered or duplicate
        else:  # a big jump: the source restarted its numbering
            self._base, self._max_seq, self._cycles = sequence, sequence, 0
            self.received = 1
            self._expected_prior = self._received_prior = 0
        transit = (arrival - timestamp) & 0xFFFFFFFF
        if self._transit is not None:
            d = abs(((transit - self._transit + 0x80000000) & 0xFFFFFFFF) - 0x80000000)
            self.jitter += (d - self.jitter) / 16
        self._transit = transit

    @property
    def extended_max(self) -> int:
        return self._cycles + self._max_seq

    @property
    def expected(self) -> int:
        return self.extended_max - self._base + 1

    @property
    def lost(self) -> int:
        return self.expected - self.received

    def report_block(self, now: float) -> ReportBlock:
        """The block for our next SR/RR; resets the interval that ``fraction_lost`` covers."""
        expected, received = self.expected, self.received
        expected_interval = expected - self._expected_prior
        lost_interval = expected_interval - (received - self._received_prior)
        self._expected_prior, self._received_prior = expected, received
        fraction = 0 if expected_interval <= 0 or lost_interval <= 0 else (lost_interval << 8) // expected_interval
        dlsr = int((now - self.last_sr_at) * 65536) if self.last_sr else 0
        return ReportBlock(
            self.ssrc, min(fraction, 255), expected - received, self.extended_max & 0xFFFFFFFF, int(self.jitter),
            self.last_sr, dlsr,
        )  # fmt: skip
