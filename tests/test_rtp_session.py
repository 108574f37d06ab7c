"""RtpSession, sans-IO: sequence/timestamp/marker continuity, DTMF, marks, latching, RTCP."""

from __future__ import annotations

import random
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ringline.engine.audio.formats import ALAW_8K, MULAW_8K, AudioFormat, Encoding
from ringline.engine.audio.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from ringline.engine.transports.events import AudioReceived, DtmfReceived, MarkPlayed
from ringline.engine.transports.rtp.packet import RtpError, RtpPacket, pack_rtp
from ringline.engine.transports.rtp.rtcp import (
    ReceiverReport,
    ReportBlock,
    Sdes,
    SenderReport,
    compound,
    ntp_timestamp,
    parse_rtcp,
)
from ringline.engine.transports.rtp.session import LatchState, RtpSession

SDP_ADDR = ("192.0.2.1", 30000)
NAT_ADDR = ("198.51.100.7", 41000)
OTHER = ("203.0.113.9", 5000)
SILENCE = b"\xff" * 160


def frame(n: int) -> bytes:
    return bytes([n]) * 160


def session(**kwargs) -> RtpSession:
    kwargs.setdefault("rng", random.Random(7))
    kwargs.setdefault("remote", SDP_ADDR)
    return RtpSession(**kwargs)


def run(s: RtpSession, ticks: range) -> list[RtpPacket | None]:
    out = []
    for tick in ticks:
        data, _ = s.poll(tick, tick * 0.02)
        out.append(None if data is None else RtpPacket.parse(data))
    return out


def test_continuous_stream_headers() -> None:
    s = session()
    s.send_audio(b"".join(frame(i) for i in range(1, 4)))
    packets = run(s, range(100, 105))
    assert all(p is not None for p in packets)
    first = packets[0]
    assert first is not None and first.marker and first.ssrc == s.ssrc
    for i, p in enumerate(packets):
        assert p is not None
        assert p.sequence == (first.sequence + i) & 0xFFFF
        assert p.timestamp == (first.timestamp + 160 * i) & 0xFFFFFFFF
        assert p.payload_type == 0 and p.ssrc == s.ssrc
        assert p.marker == (i == 0)
    assert [p.payload for p in packets if p] == [frame(1), frame(2), frame(3), SILENCE, SILENCE]  # comfort
    assert s.packets_sent == 5 and s.octets_sent == 800


def test_random_initial_values() -> None:
    a, b = session(rng=random.Random(1)), session(rng=random.Random(2))
    pa, pb = run(a, range(1))[0], run(b, range(1))[0]
    assert pa is not None and pb is not None
    assert (pa.sequence, pa.timestamp, pa.ssrc) != (pb.sequence, pb.timestamp, pb.ssrc)
    assert session(rng=None).ssrc != session(rng=None).ssrc


def test_silence_gap_without_comfort() -> None:
    s = session(comfort=False)
    s.send_audio(frame(1) + frame(2))
    packets = run(s, range(0, 2))
    assert run(s, range(2, 7)) == [None] * 5
    s.send_audio(frame(3) + frame(4) + frame(5)[:100])  # a partial frame waits for the rest
    later = run(s, range(7, 10))
    a, b, c = packets[1], later[0], later[1]
    assert a is not None and b is not None and c is not None and later[2] is None
    assert b.sequence == (a.sequence + 1) & 0xFFFF  # no sequence gap across the pause
    assert b.timestamp == (a.timestamp + 160 * 6) & 0xFFFFFFFF  # the timestamp kept the wall clock
    assert b.marker and not c.marker  # a talk spurt starts with the marker bit


def test_timestamp_and_sequence_wrap() -> None:
    s = session()
    s._seq, s._ts0 = 0xFFFE, 0xFFFFFF00  # white-box: start right before both wrap
    packets = run(s, range(3))
    assert [p.sequence for p in packets if p] == [0xFFFF, 0, 1]
    assert [p.timestamp for p in packets if p] == [0xFFFFFF00, 0xFFFFFFA0, 0x40]


def test_dtmf_between_audio() -> None:
    s = session()
    s.send_audio(frame(1))
    s.send_dtmf("5", duration_ms=60, gap_ms=40)
    s.send_audio(frame(2))
    packets = [p for p in run(s, range(10)) if p]
    assert [p.payload_type for p in packets] == [0, 101, 101, 101, 101, 101, 0, 0, 0, 0]
    events = packets[1:6]  # start, one update, three ends
    assert [p.marker for p in events] == [True, False, False, False, False]
    assert len({p.timestamp for p in events}) == 1
    assert events[0].timestamp == packets[0].timestamp + 160  # the press starts at its tick
    assert [p.payload[1] & 0x80 for p in events] == [0, 0, 0x80, 0x80, 0x80]
    assert [p.payload for p in packets[6:9]] == [SILENCE, SILENCE, frame(2)]  # the gap, then audio
    assert packets[6].timestamp == packets[0].timestamp + 6 * 160
    assert not packets[6].marker
    seqs = [p.sequence for p in packets]
    assert seqs == [(seqs[0] + i) & 0xFFFF for i in range(10)]


def test_dtmf_pause_and_invalid_keys() -> None:
    s = session(comfort=False)
    s.send_dtmf("1w2", duration_ms=20, gap_ms=0)
    packets = run(s, range(40))
    sent = [i for i, p in enumerate(packets) if p]
    assert sent == [0, 1, 2] + [28, 29, 30]  # a 20 ms press is its 3 end packets; 25 ticks of pause
    with pytest.raises(ValueError, match="not a DTMF digit: 'x'"):
        s.send_dtmf("1x")
    with pytest.raises(ValueError, match="did not accept telephone-event"):
        session(dtmf_payload_type=None).send_dtmf("1")


def test_marks_report_when_reached_and_on_clear() -> None:
    s = session()
    s.send_audio(frame(1) + frame(2))
    s.mark("a")
    s.send_audio(frame(3))
    s.mark("b")
    s.send_dtmf("1", duration_ms=20, gap_ms=0)
    s.send_audio(frame(4) * 5)
    seen = []
    for tick in range(3):
        _, events = s.poll(tick, 0.0)
        seen.append([e for e in events if isinstance(e, MarkPlayed)])
    assert seen == [[], [], [MarkPlayed("a")]]
    assert s.queued == 3 + 5
    s.clear()  # barge-in
    data, events = s.poll(3, 0.0)
    assert MarkPlayed("b") in events
    assert data is not None
    packets = [RtpPacket.parse(data), *run(s, range(4, 8))]
    assert [p.payload_type for p in packets if p] == [101, 101, 101, 0, 0]  # the key press survived clear
    assert packets[-1] is not None and packets[-1].payload == SILENCE


def test_skipped_ticks_drop_what_would_have_played() -> None:
    s = session()
    s.send_audio(b"".join(frame(i) for i in range(1, 10)))
    s.mark("m")
    run(s, range(0, 2))  # frames 1, 2
    after = run(s, range(7, 9))  # ticks 2-6 skipped: frames 3-7 gone
    assert [p.payload for p in after if p] == [frame(8), frame(9)]
    assert after[0] is not None and after[0].marker  # a gap on the wire
    _, events = s.poll(9, 0.2)
    assert MarkPlayed("m") in events


def test_poll_always_feeds_one_frame() -> None:
    s = session(jitter_delay=0.0)
    _, events = s.poll(0, 0.0)
    assert events == [AudioReceived(SILENCE)]  # nothing heard yet: silence
    s.receive(pack_rtp(0, 5, 800, 99, frame(9)), SDP_ADDR, 0.01)
    _, events = s.poll(1, 0.02)
    assert events == [AudioReceived(frame(9))]
    _, events = s.poll(2, 0.04)
    assert len(events) == 1 and isinstance(events[0], AudioReceived) and len(events[0].payload) == 160


def test_a_codec_switch_translates_both_ways_and_the_call_keeps_its_format() -> None:
    s = session(jitter_delay=0.0)
    speech = ulaw_encode(struct.pack("<160h", *range(-8000, 8000, 100)))
    s.switch_codec(8, ALAW_8K, 101)
    s.send_audio(speech)
    sent = RtpPacket.parse(s.outgoing(0) or b"")
    assert sent.payload_type == 8 and sent.payload == alaw_encode(ulaw_decode(speech))
    s.receive(pack_rtp(0, 5, 800, 99, speech), SDP_ADDR, 0.01)  # the old codec: no longer expected
    assert s.unknown_payload_type == 1
    s.receive(pack_rtp(8, 6, 960, 99, sent.payload), SDP_ADDR, 0.01)
    assert s.incoming(0.02) == [AudioReceived(ulaw_encode(alaw_decode(sent.payload)))]  # back in mu-law
    s.switch_codec(0, MULAW_8K, 101)  # and back: nothing to translate
    s.send_audio(speech)
    assert RtpPacket.parse(s.outgoing(1) or b"").payload == speech
    with pytest.raises(ValueError, match="16000 Hz"):
        s.switch_codec(96, AudioFormat(Encoding.PCM16, 16000), 101)


def test_latches_at_once_on_the_sdp_address() -> None:
    s = session()
    assert s.latch is LatchState.UNLATCHED and s.remote == SDP_ADDR
    s.receive(pack_rtp(0, 1, 0, 5, frame(1)), SDP_ADDR, 0.0)
    assert s.latch is LatchState.LATCHED and s.remote == SDP_ADDR
    assert s.jitter.counters.received == 1


def test_packets_from_port_zero_never_latch() -> None:
    s = session()
    for seq in range(1, 5):
        s.receive(pack_rtp(0, seq, seq * 160, 5, frame(1)), ("127.0.0.1", 0), seq * 0.02)
    assert s.latch is LatchState.UNLATCHED and s.remote == SDP_ADDR and s.foreign == 4


def test_latches_behind_nat_on_packets_in_sequence() -> None:
    s = session()
    s.receive(pack_rtp(96, 1, 0, 5, b"x"), OTHER, 0.0)  # a payload type we did not negotiate
    assert s.unknown_payload_type == 1
    s.receive(pack_rtp(0, 77, 0, 6, frame(2)), OTHER, 0.0)  # a stray packet alone does not latch
    s.receive(pack_rtp(0, 1, 0, 5, frame(1)), NAT_ADDR, 0.0)
    assert s.latch is LatchState.UNLATCHED and s.foreign == 2
    s.receive(pack_rtp(0, 2, 160, 5, frame(1)), NAT_ADDR, 0.02)
    assert s.latch is LatchState.LATCHED and s.remote == NAT_ADDR
    s.receive(pack_rtp(0, 78, 0, 6, frame(2)), OTHER, 0.03)
    s.receive(pack_rtp(0, 79, 0, 6, frame(2)), OTHER, 0.04)
    assert s.remote == NAT_ADDR and s.foreign == 4
    assert s.jitter.counters.received == 1


def test_relatch_needs_silence_and_packets_in_sequence() -> None:
    s = session(remote=NAT_ADDR)
    s.receive(pack_rtp(0, 1, 0, 5, frame(1)), NAT_ADDR, 0.0)
    for i in range(5):  # while the latched source still talks, a newcomer is ignored
        s.receive(pack_rtp(0, 100 + i, 0, 6, frame(2)), OTHER, 0.1 + i * 0.02)
        s.receive(pack_rtp(0, 2 + i, 0, 5, frame(1)), NAT_ADDR, 0.1 + i * 0.02)
    assert s.remote == NAT_ADDR and s.foreign == 5
    s.receive(pack_rtp(0, 200, 0, 6, frame(2)), OTHER, 1.0)
    s.receive(pack_rtp(0, 202, 0, 6, frame(2)), OTHER, 1.02)  # out of sequence: the count restarts
    s.receive(pack_rtp(0, 203, 0, 6, frame(2)), OTHER, 1.04)
    assert s.remote == NAT_ADDR
    s.receive(pack_rtp(0, 204, 0, 6, frame(2)), OTHER, 1.06)
    assert s.remote == OTHER and s.latch is LatchState.LATCHED


def test_set_remote_unlatches_and_symmetric_off_keeps_sdp_address() -> None:
    s = session()
    s.receive(pack_rtp(0, 1, 0, 5, frame(1)), SDP_ADDR, 0.0)
    s.set_remote(("192.0.2.2", 4000))
    assert s.latch is LatchState.UNLATCHED and s.remote == ("192.0.2.2", 4000)
    fixed = session(symmetric=False)
    fixed.receive(pack_rtp(0, 1, 0, 5, frame(1)), NAT_ADDR, 0.0)
    fixed.receive(pack_rtp(0, 2, 0, 5, frame(1)), OTHER, 0.0)
    assert fixed.remote == SDP_ADDR and fixed.foreign == 0


def test_dtmf_end_to_end_between_two_sessions() -> None:
    alice, bob = session(rng=random.Random(1)), session(rng=random.Random(2), jitter_delay=0.0)
    alice.send_audio(frame(1) * 3)
    alice.send_dtmf("19#")
    alice.send_audio(frame(2) * 3)
    digits, frames = [], []
    for tick in range(60):
        data, _ = alice.poll(tick, tick * 0.02)
        assert data is not None
        if tick % 7 == 3:
            data2 = data  # the network duplicates some packets
            digits += bob.receive(data2, SDP_ADDR, tick * 0.02)
        digits += bob.receive(data, SDP_ADDR, tick * 0.02 + 0.001)
        _, events = bob.poll(tick, tick * 0.02 + 0.002)
        frames.append(events[0])
    assert digits == [DtmfReceived("1"), DtmfReceived("9"), DtmfReceived("#")]
    payloads = [e.payload for e in frames if isinstance(e, AudioReceived)]
    assert payloads[:3] == [frame(1)] * 3
    assert frame(2) in payloads
    assert bob.jitter.counters.lost == 0 and bob.jitter.counters.concealed == 0  # events fill their ticks


def test_oversized_payload_is_rejected() -> None:
    with pytest.raises(RtpError) as info:
        session().receive(pack_rtp(0, 1, 0, 5, b"\x00" * 1001), NAT_ADDR, 0.0)
    assert str(info.value) == "RTP payload of 1001 bytes, over 1000"


def test_rtcp_reports() -> None:
    clock = [1_700_000_000.0]
    s = session(wallclock=lambda: clock[0])
    peer_ssrc = 0xABCDEF
    for seq in range(10):
        if seq != 4:  # one lost
            s.receive(pack_rtp(0, 100 + seq, seq * 160, peer_ssrc, frame(1)), SDP_ADDR, seq * 0.02)
    peer_sr = SenderReport(peer_ssrc, ntp_timestamp(clock[0] - 1), 0, 10, 1600)
    s.receive(compound(peer_sr, Sdes(peer_ssrc, "peer")), SDP_ADDR, 0.5)  # rtcp-mux: same port
    reports = [r for tick in range(500) if (r := s.rtcp_report(tick, 1.0 + tick * 0.02)) is not None]
    assert 1 <= len(reports) <= 3  # every 5 s, randomised
    rr, sdes = parse_rtcp(reports[0])
    assert isinstance(rr, ReceiverReport) and rr.ssrc == s.ssrc  # nothing sent yet: RR
    assert sdes == Sdes(s.ssrc, "ringline")
    (block,) = rr.reports
    assert block.ssrc == peer_ssrc
    assert block.highest_sequence == 109
    assert block.packets_lost == 1
    assert block.fraction_lost == 256 // 10
    assert block.lsr == (ntp_timestamp(clock[0] - 1) >> 16) & 0xFFFFFFFF and block.dlsr > 0
    run(s, range(3))
    report = s.rtcp_report(1000, 100.0)
    assert report is not None
    sr = parse_rtcp(report)[0]
    assert isinstance(sr, SenderReport) and sr.packet_count == 3 and sr.octet_count == 480
    assert sr.ntp_timestamp == ntp_timestamp(clock[0])


def test_rtcp_report_on_us_gives_rtt() -> None:
    clock = [1_700_000_000.0]
    s = session(wallclock=lambda: clock[0])
    s.receive(pack_rtp(0, 1, 0, 9, frame(1)), SDP_ADDR, 0.0)
    run(s, range(2))
    s.rtcp_report(0, 0.0)
    report = s.rtcp_report(0, 10.0)
    assert report is not None
    our_sr = parse_rtcp(report)[0]
    assert isinstance(our_sr, SenderReport)
    lsr = (our_sr.ntp_timestamp >> 16) & 0xFFFFFFFF
    clock[0] += 0.3  # the peer holds our SR 0.1 s; the network takes 0.2 s round trip
    rr = ReceiverReport(9, (ReportBlock(s.ssrc, 0, 0, 2, 0, lsr, 6554),))
    s.receive_rtcp(bytes(rr), (SDP_ADDR[0], SDP_ADDR[1] + 1), 10.3)
    assert s.peer_report is not None and s.rtt == pytest.approx(0.2, abs=0.001)
    s.receive_rtcp(bytes(rr), OTHER, 10.4)  # RTCP from elsewhere is ignored
    assert s.foreign == 1


HEADS = st.sampled_from([b"", b"\x80\x00", b"\x80\x65", b"\xb0\x80", b"\x81\xc8", b"\x81\xc9", b"\x80\xca"])


@given(st.lists(st.tuples(HEADS, st.binary(max_size=200)).map(b"".join), max_size=20))
def test_hostile_datagrams_raise_only_rtp_error(datagrams: list[bytes]) -> None:
    s = session()
    for i, data in enumerate(datagrams):
        try:
            s.receive(data, SDP_ADDR if i % 2 else OTHER, i * 0.02)
        except RtpError:
            pass
        s.poll(i, i * 0.02)
        s.rtcp_report(i, i * 0.02)
