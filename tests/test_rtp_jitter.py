"""The jitter buffer: played in order, one frame a 20 ms tick, whatever the network does."""

from __future__ import annotations

from ringline.engine.audio.formats import MULAW_8K, PCM16_8K
from ringline.engine.audio.g711 import ulaw_decode, ulaw_encode
from ringline.engine.transports.rtp.jitter import Concealed, Concealer, JitterBuffer, JitterState
from ringline.engine.transports.rtp.packet import RtpPacket

TICK = 0.02
SILENCE = b"\xff" * 160


def frame(n: int) -> bytes:
    """A distinct recognisable frame per sequence number (mu-law bytes avoiding silence)."""
    return bytes([n % 200]) * 160


def packet(seq: int, ssrc: int = 1) -> RtpPacket:
    return RtpPacket(0, seq & 0xFFFF, seq * 160 & 0xFFFFFFFF, ssrc, frame(seq))


def make(**kwargs) -> JitterBuffer:
    return JitterBuffer(Concealer(MULAW_8K), **kwargs)


class Net:
    """Drives a buffer: packets arrive at set times, pops happen every tick; records what played."""

    def __init__(self, jb: JitterBuffer) -> None:
        self.jb = jb
        self.now = 0.0
        self.out: list[bytes | Concealed | None] = []

    def tick(self, *arrivals: RtpPacket) -> None:
        for p in arrivals:
            self.jb.push(p, self.now + 0.005)
        self.now += TICK
        self.out.append(self.jb.pop(self.now))

    def played(self) -> list[int | str | None]:
        """Sequence numbers (mod 200) of the frames played, 'C' for concealed, None before start."""
        return [
            None if f is None else "C" if isinstance(f, Concealed) else f[0]  # type: ignore[index]
            for f in self.out
        ]


def test_in_order_stream_starts_after_target_delay() -> None:
    net = Net(make(target_delay=0.04))
    for seq in range(10):
        net.tick(packet(seq))
    assert net.played() == [None, None, 0, 1, 2, 3, 4, 5, 6, 7]
    assert net.jb.state is JitterState.PLAYING
    assert net.jb.counters.received == 10
    assert net.jb.counters.lost == net.jb.counters.concealed == 0


def test_reordering_within_the_delay_costs_nothing() -> None:
    net = Net(make())
    net.tick(packet(1))
    net.tick(packet(0), packet(3))
    net.tick(packet(2))
    for seq in range(4, 8):
        net.tick(packet(seq))
    assert net.played() == [None, None, 0, 1, 2, 3, 4]
    assert net.jb.counters.late == net.jb.counters.lost == 0


def test_loss_is_concealed_and_late_arrival_dropped() -> None:
    net = Net(make())
    for seq in range(4):
        net.tick(packet(seq))
    net.tick()  # 4 lost in the network...
    for seq in range(5, 9):
        net.tick(packet(seq))
    net.tick(packet(4))  # ...and turns up too late
    net.tick()
    assert net.played() == [None, None, 0, 1, 2, 3, "C", 5, 6, 7, 8]
    counters = net.jb.counters
    assert (counters.lost, counters.late, counters.concealed) == (1, 1, 1)


def test_concealment_fades_the_last_frame_then_goes_silent() -> None:
    jb = make(target_delay=0.0)
    speech = ulaw_encode(b"\x00\x40" * 160)  # PCM 16384
    jb.push(RtpPacket(0, 10, 0, 1, speech), 0.0)
    jb.push(RtpPacket(0, 14, 640, 1, speech), 0.0)
    assert jb.pop(0.02) == speech
    levels = []
    for _ in range(3):
        out = jb.pop(0.04)
        assert isinstance(out, Concealed)
        levels.append(int.from_bytes(ulaw_decode(out.payload)[:2], "little", signed=True))
    assert levels[0] in range(7800, 8400) and levels[1] in range(3900, 4200)  # -6 dB, -12 dB
    assert levels[2] == 0
    assert jb.pop(0.1) == speech


def test_pcm16_conceals_with_silence() -> None:
    jb = JitterBuffer(Concealer(PCM16_8K), target_delay=0.0)
    jb.push(RtpPacket(11, 1, 0, 1, b"\x01\x02" * 160), 0.0)
    jb.push(RtpPacket(11, 3, 0, 1, b"\x01\x02" * 160), 0.0)
    jb.pop(0.0)
    assert jb.pop(0.02) == Concealed(b"\x00" * 320)


def test_duplicates_are_dropped() -> None:
    net = Net(make())
    net.tick(packet(0))
    net.tick(packet(1), packet(0))  # a duplicate held
    net.tick(packet(2))
    net.tick(packet(3), packet(0))  # a duplicate of one already played
    net.tick(packet(4))
    assert net.played() == [None, None, 0, 1, 2]
    assert net.jb.counters.duplicates == 2
    assert net.jb.counters.late == 0


def test_sequence_wraparound() -> None:
    net = Net(make())
    seqs = [65533, 65534, 65535, 0, 1, 2, 3, 4]
    net.tick(packet(seqs[0]))
    net.tick(packet(seqs[2]), packet(seqs[1]))  # reordered just before the wrap
    net.tick(packet(seqs[4]), packet(seqs[3]))  # and across it
    for s in seqs[5:]:
        net.tick(packet(s))
    net.tick()
    net.tick()
    assert net.played()[2:] == [65533 % 200, 65534 % 200, 65535 % 200, 0, 1, 2]
    assert net.jb.counters.lost == net.jb.counters.late == 0


def test_sender_pause_with_contiguous_sequence_loses_nothing() -> None:
    """Silence suppression: the sender stops, then resumes with the next sequence number."""
    net = Net(make())
    for seq in range(5):
        net.tick(packet(seq))
    for _ in range(10):
        net.tick()
    for seq in range(5, 10):
        net.tick(packet(seq))
    played = net.played()
    assert played[2:5] == [0, 1, 2]
    assert played[5:17] == [3, 4] + ["C"] * 10  # 8 ticks of pause, then 2 re-buffering the target delay
    assert played[17:] == [5, 6, 7]
    assert net.jb.counters.lost == 0
    assert net.jb.counters.concealed == 10


def test_ssrc_change_resyncs() -> None:
    net = Net(make())
    for seq in range(5):
        net.tick(packet(seq))
    for seq in range(40000, 40005):  # a new source with its own numbering
        net.tick(packet(seq, ssrc=2))
    assert net.jb.counters.resyncs == 1
    assert net.played()[5:] == ["C", "C", 40000 % 200, 40001 % 200, 40002 % 200]
    assert net.jb.counters.lost == 2  # 3 and 4, held when the new source took over


def test_big_forward_jump_resyncs() -> None:
    net = Net(make())
    for seq in range(5):
        net.tick(packet(seq))
    for seq in range(1000, 1005):
        net.tick(packet(seq))
    assert net.jb.counters.resyncs == 1
    assert net.played()[-3:] == [1000 % 200, 1001 % 200, 1002 % 200]


def test_restarted_numbering_behind_resyncs_after_two_in_sequence() -> None:
    net = Net(make())
    for seq in range(500, 505):
        net.tick(packet(seq))
    for seq in range(10, 15):
        net.tick(packet(seq))
    assert net.jb.counters.resyncs == 1
    assert net.jb.counters.late == 1  # the first of them, before the second confirmed the restart
    assert net.played()[-2:] == [11, 12]


def test_overflow_drops_the_oldest() -> None:
    jb = make(target_delay=0.0, max_frames=5)
    for seq in range(12):
        jb.push(packet(seq), 0.0)
    out = jb.pop(0.0)
    assert out == frame(7)  # 12 held, at most 5 kept
    assert jb.counters.overflow == 7
    assert jb.pop(0.02) == frame(8)


def test_nothing_heard_yet_pops_none() -> None:
    jb = make()
    assert jb.pop(0.0) is None
    assert jb.pop(1.0) is None
    assert jb.counters.concealed == 0
