"""RTP and RTCP packets: golden bytes, round trips, every malformed case with its exact message.

aiortc's independent implementation (``aiortc.rtp``) serves as a second opinion on the wire format.
"""

from __future__ import annotations

import struct

import pytest
from aiortc import rtp as aiortc_rtp
from hypothesis import given
from hypothesis import strategies as st

from ringline.engine.errors import RemoteProtocolError
from ringline.engine.transports.rtp.packet import RtpError, RtpPacket, is_rtcp, pack_rtp
from ringline.engine.transports.rtp.rtcp import (
    Bye,
    ReceiverReport,
    ReportBlock,
    Sdes,
    SenderReport,
    compound,
    ntp_middle,
    ntp_timestamp,
    parse_rtcp,
)

GOLDEN = bytes.fromhex("808004d20000162edeadbeef") + b"\xff" * 160
"""Version 2, marker, PT 0 (PCMU), sequence 1234, timestamp 5678, SSRC 0xdeadbeef, 160 bytes."""


def test_golden_rtp_parses() -> None:
    packet = RtpPacket.parse(GOLDEN)
    assert packet == RtpPacket(0, 1234, 5678, 0xDEADBEEF, b"\xff" * 160, marker=True)
    assert bytes(packet) == GOLDEN
    assert pack_rtp(0, 1234, 5678, 0xDEADBEEF, b"\xff" * 160, True) == GOLDEN


def test_error_is_a_remote_protocol_error() -> None:
    assert issubclass(RtpError, RemoteProtocolError)


def test_csrc_extension_and_padding() -> None:
    ext = bytes.fromhex("be de 0001 10ff0000".replace(" ", ""))  # one-byte header extension, one word
    data = (
        bytes.fromhex("b2 65 0001 00000002 00000003".replace(" ", ""))  # P, X, CC=2; PT 101
        + struct.pack("!II", 7, 8)
        + ext
        + b"\x01\x02\x03"
        + b"\x00\x00\x03"  # 3 bytes of padding, the last one counting them
    )
    packet = RtpPacket.parse(data)
    assert packet.csrc == (7, 8)
    assert packet.extension == (0xBEDE, bytes.fromhex("10ff0000"))
    assert packet.payload == b"\x01\x02\x03"
    assert (packet.payload_type, packet.sequence, packet.timestamp, packet.ssrc) == (101, 1, 2, 3)
    assert not packet.marker
    again = bytes(packet)  # padding is not written back
    assert again == bytes([data[0] & ~0x20]) + data[1:-3]
    assert RtpPacket.parse(again) == packet


def test_agrees_with_aiortc() -> None:
    ours = RtpPacket(8, 65535, 0xFFFFFFFF, 1, b"abc", marker=False, csrc=(5,))
    theirs = aiortc_rtp.RtpPacket(payload_type=8, sequence_number=65535, timestamp=0xFFFFFFFF, ssrc=1, payload=b"abc")
    theirs.csrc = [5]
    assert bytes(ours) == theirs.serialize()
    back = aiortc_rtp.RtpPacket.parse(bytes(ours))
    assert (back.payload_type, back.sequence_number, back.timestamp, back.csrc) == (8, 65535, 0xFFFFFFFF, [5])


@given(
    pt=st.integers(0, 127),
    seq=st.integers(0, 0xFFFF),
    ts=st.integers(0, 0xFFFFFFFF),
    ssrc=st.integers(0, 0xFFFFFFFF),
    payload=st.binary(max_size=300),
    marker=st.booleans(),
    csrc=st.lists(st.integers(0, 0xFFFFFFFF), max_size=15).map(tuple),
    ext=st.none() | st.tuples(st.integers(0, 0xFFFF), st.binary(max_size=40).map(lambda b: b[: len(b) // 4 * 4])),
)
def test_round_trip(pt, seq, ts, ssrc, payload, marker, csrc, ext) -> None:
    packet = RtpPacket(pt, seq, ts, ssrc, payload, marker, csrc, ext)
    assert RtpPacket.parse(bytes(packet)) == packet


@given(st.binary(max_size=100))
def test_garbage_raises_only_rtp_error(data: bytes) -> None:
    try:
        RtpPacket.parse(data)
    except RtpError:
        pass
    try:
        parse_rtcp(data)
    except RtpError:
        pass


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "RTP packet of 0 bytes, shorter than the 12-byte header"),
        (GOLDEN[:11], "RTP packet of 11 bytes, shorter than the 12-byte header"),
        (b"\x40" + GOLDEN[1:], "RTP version 1, expected 2"),
        (b"\x00" + GOLDEN[1:], "RTP version 0, expected 2"),
        (b"\x83" + GOLDEN[1:12] + b"\x00" * 8, "RTP packet of 20 bytes, too short for its 3 CSRCs"),
        (b"\x90" + GOLDEN[1:12] + b"\xbe\xde", "RTP packet of 14 bytes, too short for its header extension"),
        (
            b"\x90" + GOLDEN[1:12] + b"\xbe\xde\x00\x02" + b"\x00" * 4,
            "RTP header extension of 8 bytes runs past the end of the packet",
        ),
        (b"\xa0" + GOLDEN[1:12] + b"\x01\x00", "RTP padding count of 0"),
        (b"\xa0" + GOLDEN[1:12] + b"\x01\x05", "RTP padding of 5 bytes, more than the 2 bytes after the header"),
    ],
)
def test_malformed_rtp(data: bytes, message: str) -> None:
    with pytest.raises(RtpError) as info:
        RtpPacket.parse(data)
    assert str(info.value) == message


def test_serialize_rejects_what_cannot_be_written() -> None:
    with pytest.raises(ValueError, match="at most 15 CSRCs, got 16"):
        bytes(RtpPacket(0, 0, 0, 0, csrc=tuple(range(16))))
    with pytest.raises(ValueError, match="whole 32-bit words, got 3 bytes"):
        bytes(RtpPacket(0, 0, 0, 0, extension=(1, b"abc")))


def test_is_rtcp_tells_rtcp_from_rtp() -> None:
    assert not is_rtcp(GOLDEN)
    assert not is_rtcp(pack_rtp(101, 1, 1, 1, b"x" * 4, marker=True))  # 0xe5: PT 101 + marker
    for packet_type in (200, 201, 202, 203, 204):
        assert is_rtcp(bytes([0x80, packet_type, 0, 1]))
    assert not is_rtcp(b"\x80")


def test_pt_95_with_marker_reads_as_rtcp() -> None:
    # RFC 5761 forbids RTP payload types 64-95 on a muxed port precisely because of this
    assert is_rtcp(pack_rtp(95, 1, 1, 1, b"", marker=True))


# -- RTCP ---------------------------------------------------------------------------------------

BLOCK = ReportBlock(
    ssrc=0x11223344, fraction_lost=25, packets_lost=-3, highest_sequence=70000, jitter=42, lsr=9, dlsr=65536
)
SR_GOLDEN = bytes.fromhex(
    "81c8000c"  # V=2, RC=1, SR, length 12 words
    "deadbeef"  # SSRC
    "e8d4a51000000000"  # NTP timestamp
    "0000162e"  # RTP timestamp
    "00000064"  # packets
    "00003e80"  # octets
    "11223344" "19fffffd" "00011170" "0000002a" "00000009" "00010000"
)  # fmt: skip


def test_sender_report_golden() -> None:
    sr = SenderReport(0xDEADBEEF, 0xE8D4A51000000000, 5678, 100, 16000, (BLOCK,))
    assert bytes(sr) == SR_GOLDEN
    assert parse_rtcp(SR_GOLDEN) == [sr]
    theirs = aiortc_rtp.RtcpPacket.parse(SR_GOLDEN)[0]
    assert theirs.sender_info.ntp_timestamp == 0xE8D4A51000000000
    assert theirs.reports[0].packets_lost == -3
    assert theirs.reports[0].fraction_lost == 25


def test_compound_rr_sdes_bye_round_trip() -> None:
    packets = [ReceiverReport(7, (BLOCK, BLOCK)), Sdes(7, "ringline@example"), Bye((7, 8), "call ended")]
    data = compound(*packets)
    assert len(data) % 4 == 0
    assert parse_rtcp(data) == packets
    theirs = aiortc_rtp.RtcpPacket.parse(data)
    assert [type(p).__name__ for p in theirs] == ["RtcpRrPacket", "RtcpSdesPacket", "RtcpByePacket"]
    assert theirs[1].chunks[0].items == [(1, b"ringline@example")]
    assert theirs[2].sources == [7, 8]


def test_sdes_cname_of_every_length_pads_to_words() -> None:
    for n in range(9):
        data = bytes(Sdes(1, "x" * n))
        assert len(data) % 4 == 0
        assert parse_rtcp(data) == [Sdes(1, "x" * n)]


def test_app_and_unknown_packets_are_skipped() -> None:
    app = bytes.fromhex("80cc0002") + b"\x00\x00\x00\x07" + b"NAME"
    assert parse_rtcp(app + bytes(ReceiverReport(3))) == [ReceiverReport(3)]


def test_ntp_helpers() -> None:
    assert ntp_timestamp(0.5) == (2208988800 << 32) + (1 << 31)
    assert ntp_middle(0x1122334455667788) == 0x33445566


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x81\xc8", "RTCP packet of 2 bytes, shorter than the 4-byte header"),
        (b"\x41\xc9\x00\x01\x00\x00\x00\x01", "RTCP version 1, expected 2"),
        (b"\x80\xc9\x00\x05\x00\x00\x00\x01", "RTCP packet of 24 bytes runs past the end of the datagram (8 left)"),
        (b"\x81\xc8\x00\x01\x00\x00\x00\x01", "RTCP SR of 8 bytes, too short for its 1 report blocks"),
        (b"\x81\xc9\x00\x01\x00\x00\x00\x01", "RTCP RR of 8 bytes, too short for its 1 report blocks"),
        (b"\x82\xcb\x00\x01\x00\x00\x00\x01", "RTCP BYE of 8 bytes, too short for its 2 sources"),
        (b"\xa0\xc9\x00\x01\x00\x00\x00\x09", "RTCP padding of 9 bytes in a packet of 8"),
        (b"\xa0\xc9\x00\x01\x00\x00\x00\x00", "RTCP padding of 0 bytes in a packet of 8"),
        (b"\x81\xca\x00\x00", "RTCP SDES chunk runs past the end of its packet"),
        (b"\x81\xca\x00\x02\x00\x00\x00\x01\x01\x09\x41\x41", "RTCP SDES item runs past the end of its packet"),
        (bytes(ReceiverReport(1)) + b"\x80\xc9", "RTCP packet of 2 bytes, shorter than the 4-byte header"),
    ],
)
def test_malformed_rtcp(data: bytes, message: str) -> None:
    with pytest.raises(RtpError) as info:
        parse_rtcp(data)
    assert str(info.value) == message
