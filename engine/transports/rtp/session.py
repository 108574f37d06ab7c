"""One call's RTP session, sans-IO: what to send each 20 ms tick, what to make of what arrives.

Outbound. ``send_audio`` queues audio (cut into 20 ms frames), ``send_dtmf`` queues RFC 4733 key
presses after it, ``mark`` queues a mark. ``outgoing(tick)`` is called once per tick of the shared
``RtpTicker`` and returns the datagram to send (or None); ``incoming(now)``, called after it in the
same tick, returns the events for the call (``poll`` does both). Each tick takes one item off the
queue:

- a frame goes out as an audio packet; the RTP timestamp follows the tick count (160 samples a
  tick at 8 kHz), so it keeps running through pauses, as RFC 3550 wants;
- with nothing queued, ``comfort=True`` (the default) sends a frame of digital silence, so the
  stream never pauses (carriers time out silent media, and a far end behind NAT latches on what we
  send); ``comfort=False`` sends nothing and the next packet carries the marker bit, which the
  first packet of the session always does;
- a key press is ``tone_payloads``: one telephone-event packet a tick, the first with the marker
  bit, all with the timestamp of the tick the press started at; keys are separated by ``gap_ms``
  of silence and ``w`` is a half-second pause;
- a mark is reported (``MarkPlayed``) on the tick at which everything queued before it has been
  sent, and ``clear()`` drops queued audio and reports the marks it passes over at once.

If the ticker skipped ticks (a stalled loop, see ``RtpTicker``), as many queued frames are dropped
as ticks were missed, so what the caller hears keeps to the playout timeline.

Inbound. ``receive(data, source, now)`` takes a datagram from the RTP port (RTCP too when muxed:
told apart by ``is_rtcp``); it raises ``RtpError`` for garbage and returns DTMF events. Audio goes
through the ``JitterBuffer``; ``incoming`` hands the call exactly one ``AudioReceived`` frame every
tick (silence until the stream starts, concealment for losses), as the call's behaviours expect.
Both directions assume 20 ms packets (offer and expect ``a=ptime:20``): the jitter buffer plays one
packet a tick.

Symmetric RTP (RFC 4961) and latching (RFC 7362): we send to the address from the SDP until we
latch. A valid packet (a negotiated payload type) from the SDP address latches at once; from
anywhere else (the far end is behind NAT) it takes ``LATCH_PACKETS`` in sequence from one source
and SSRC, so a stray or hostile datagram cannot steer our media (the first packet of a NATed far
end is dropped: 20 ms). Once latched, packets from other sources are ignored (``foreign``) except
that a new source relatches once it has sent ``RELATCH_PACKETS`` packets in sequence while the
latched one has been silent for ``RELATCH_SILENCE`` seconds (the far end moved: NAT rebinding, a
media server swap). A new SSRC from the latched source is a new stream: the jitter buffer
resynchronises. ``set_remote`` (a re-INVITE) unlatches. With ``symmetric=False`` we always send to
the SDP address and accept any source.

RTCP: ``rtcp_report(tick, now)`` returns an SR (or RR while we have sent nothing since the last one)
with a report block on the latched source and an SDES CNAME, about every ``RTCP_INTERVAL``
seconds (randomised by half either way, RFC 3550 6.2); ``receive_rtcp`` notes the far end's
sender reports (for LSR/DLSR) and its report on us (``peer_report``, ``rtt``).
"""

from __future__ import annotations

import enum
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace

from ringline.engine.audio.formats import FRAME_MS, MULAW_8K, AudioFormat
from ringline.engine.audio.framing import Framer, silence
from ringline.engine.audio.g711 import translation
from ringline.engine.transports.events import AudioReceived, DtmfReceived, InboundEvent, MarkPlayed

from .dtmf import DtmfReceiver, event_code, tone_payloads
from .jitter import Concealed, Concealer, JitterBuffer
from .packet import RtpError, RtpPacket, is_rtcp, pack_rtp
from .rtcp import Bye, ReceiverReport, ReceptionStats, ReportBlock, Sdes, SenderReport, compound, ntp_middle, parse_rtcp
from .rtcp import ntp_timestamp as to_ntp

log = logging.getLogger(__name__)

__all__ = ["Address", "LatchState", "RtpSession"]

Address = tuple[str, int]
LATCH_PACKETS = 2
RELATCH_PACKETS = 3
RELATCH_SILENCE = 0.5
RTCP_INTERVAL = 5.0
MAX_PAYLOAD = 1000
"""Largest audio payload accepted (G.711 at 20 ms is 160 bytes; 1000 leaves room for L16)."""
PAUSE_MS = 500


class LatchState(enum.Enum):
    UNLATCHED = "unlatched"
    LATCHED = "latched"


@dataclass(frozen=True, slots=True)
class _Mark:
    name: str


@dataclass(frozen=True, slots=True)
class _Event:
    payload: bytes
    first: bool


_GAP = None
"""A queued tick with no audio of ours (between key presses)."""


class RtpSession:
    def __init__(
        self,
        *,
        fmt: AudioFormat = MULAW_8K,
        payload_type: int = 0,
        dtmf_payload_type: int | None = 101,
        remote: Address | None = None,
        symmetric: bool = True,
        comfort: bool = True,
        jitter_delay: float = 0.04,
        rng: random.Random | None = None,
        wallclock: Callable[[], float] = time.time,
        cname: str = "ringline",
        call_id: str = "",
    ) -> None:
        rng = rng or random.SystemRandom()
        self.format = fmt
        self.payload_type = payload_type
        self.dtmf_payload_type = dtmf_payload_type
        self.remote = remote
        """Where we send: the SDP address until latched, then the latched source."""
        self.symmetric = symmetric
        self.comfort = comfort
        self.call_id = call_id
        self._extra = {"call_id": call_id}
        self._wallclock = wallclock
        self._cname = cname
        # outbound
        self.ssrc = rng.getrandbits(32) or 1
        self._seq = rng.getrandbits(16)
        self._ts0 = rng.getrandbits(32)
        self._samples = fmt.sample_rate * FRAME_MS // 1000
        self._framer = Framer.for_format(fmt)
        self._silence = silence(fmt)
        self._to_wire: bytes | None = None
        self._from_wire: bytes | None = None
        """Translation tables once the far end changed codec (``switch_codec``); None: same codec."""
        self._queue: deque[bytes | _Mark | _Event | None] = deque()
        self._first_tick: int | None = None
        self._last_tick = -2
        self._last_sent = -2
        """Tick of the last packet we sent (the next one after a gap gets the marker bit)."""
        self._event_ts = 0
        self._pending: list[InboundEvent] = []
        self.packets_sent = 0
        self.octets_sent = 0
        self._sent_at_report = 0
        # inbound
        self.latch = LatchState.UNLATCHED
        self.jitter = JitterBuffer(Concealer(fmt), target_delay=jitter_delay, name=call_id)
        self.dtmf = DtmfReceiver()
        self._source_ssrc: int | None = None
        self._reception: ReceptionStats | None = None
        self._heard_at = 0.0
        self._candidate: tuple[Address, int, int, int] | None = None
        """A would-be new source: address, SSRC, last sequence number, packets in sequence."""
        self.foreign = 0
        self.unknown_payload_type = 0
        # rtcp
        self._rng = rng
        self._next_rtcp: float | None = None
        self.peer_report: ReportBlock | None = None
        self.rtt: float | None = None

    def _set_latch(self, new: LatchState, remote: Address | None) -> None:
        log.debug("rtp %s -> %s (remote %s)", self.latch.value, new.value, remote, extra=self._extra)
        self.latch = new
        self.remote = remote

    def set_remote(self, remote: Address) -> None:
        """The far end's SDP address changed (re-INVITE): send there and latch anew."""
        self._candidate = None
        self._set_latch(LatchState.UNLATCHED, remote)

    # -- outbound --------------------------------------------------------------------------

    def send_audio(self, payload: bytes) -> None:
        self._queue.extend(self._framer.feed(payload))

    def _flush_framer(self) -> None:
        if tail := self._framer.flush():
            self._queue.append(tail)

    def mark(self, name: str) -> None:
        self._flush_framer()
        self._queue.append(_Mark(name))

    def send_dtmf(self, keys: str, *, duration_ms: int = 100, gap_ms: int = 60) -> None:
        """Queue key presses (0-9 * # A-D; ``w`` pauses half a second) after the audio queued.
        Raises ValueError for anything else, or if the far end took no telephone-event."""
        if self.dtmf_payload_type is None:
            raise ValueError("the far end did not accept telephone-event")
        for key in keys:
            if key.lower() != "w":
                event_code(key)
        self._flush_framer()
        for key in keys:
            if key.lower() == "w":
                self._queue.extend([_GAP] * (PAUSE_MS // FRAME_MS))
                continue
            payloads = tone_payloads(key, duration_ms, samples_per_packet=self._samples)
            self._queue.extend(_Event(payload, i == 0) for i, payload in enumerate(payloads))
            self._queue.extend([_GAP] * (gap_ms // FRAME_MS))

    def clear(self) -> None:
        """Drop queued audio (barge-in); queued key presses stay, passed-over marks are reported."""
        self._framer.clear()
        kept: deque[bytes | _Mark | _Event | None] = deque()
        for item in self._queue:
            if type(item) is _Mark:
                self._pending.append(MarkPlayed(item.name))
            elif type(item) is not bytes:
                kept.append(item)
        self._queue = kept

    @property
    def queued(self) -> int:
        """Ticks' worth of queued items (frames, key-press packets, gaps)."""
        return sum(1 for item in self._queue if type(item) is not _Mark)

    def _next_item(self) -> bytes | _Event | None:
        queue = self._queue
        while queue:
            item = queue.popleft()
            if type(item) is _Mark:
                self._pending.append(MarkPlayed(item.name))
                continue
            return item  # type: ignore[return-value]
        return _GAP

    def outgoing(self, tick: int) -> bytes | None:
        """This tick's datagram to send (None: nothing). Marks it reaches are reported by the
        next ``incoming``."""
        if self._first_tick is None:
            self._first_tick = tick
        else:  # ticks the ticker skipped: what would have played in them is gone
            for _ in range(tick - self._last_tick - 1):
                if not self._queue:
                    break
                self._next_item()
        self._last_tick = tick
        item = self._next_item()
        if item is _GAP:
            if not self.comfort:
                return None
            item = self._silence
        timestamp = (self._ts0 + (tick - self._first_tick) * self._samples) & 0xFFFFFFFF
        marker = self._last_sent != tick - 1
        if type(item) is _Event:
            if item.first:
                self._event_ts = timestamp
            payload, pt, timestamp, marker = item.payload, self.dtmf_payload_type, self._event_ts, item.first  # type: ignore[assignment]
        else:
            payload, pt = item, self.payload_type  # type: ignore[assignment]
            if self._to_wire is not None:
                payload = payload.translate(self._to_wire)  # type: ignore[union-attr]
        self._seq = (self._seq + 1) & 0xFFFF
        self._last_sent = tick
        self.packets_sent += 1
        self.octets_sent += len(payload)
        return pack_rtp(pt, self._seq, timestamp, self.ssrc, payload, marker)  # type: ignore[arg-type]

    def incoming(self, now: float) -> list[InboundEvent]:
        """This tick's events for the call: always one ``AudioReceived`` frame first (silence
        until the stream starts, concealment for losses), then marks reached."""
        frame = self.jitter.pop(now)
        if frame is None:
            frame = self._silence
        elif type(frame) is Concealed:
            frame = frame.payload
        events: list[InboundEvent] = [AudioReceived(frame)]  # type: ignore[arg-type]
        if self._pending:
            events.extend(self._pending)
            self._pending.clear()
        return events

    def poll(self, tick: int, now: float) -> tuple[bytes | None, list[InboundEvent]]:
        """``outgoing`` then ``incoming``, for callers that do both at once."""
        packet = self.outgoing(tick)
        return packet, self.incoming(now)

    # -- inbound ---------------------------------------------------------------------------

    def switch_codec(self, payload_type: int, wire: AudioFormat, dtmf_payload_type: int | None) -> None:
        """The far end moved the stream to ``wire`` audio on ``payload_type`` (a re-INVITE): send
        and expect that from now on, while the call keeps hearing and speaking ``format``, each
        payload translated here (G.711 at the same rate: a byte-to-byte map)."""
        if wire.sample_rate != self.format.sample_rate:
            raise ValueError(f"cannot switch a {self.format.sample_rate} Hz stream to {wire.sample_rate} Hz")
        self.payload_type = payload_type
        self.dtmf_payload_type = dtmf_payload_type
        self._to_wire = translation(self.format.encoding, wire.encoding)
        self._from_wire = translation(wire.encoding, self.format.encoding)
        if self._to_wire is None and wire.encoding is not self.format.encoding:
            raise ValueError(f"cannot translate {self.format.encoding.value} to {wire.encoding.value}")

    def receive(self, data: bytes, source: Address, now: float) -> list[InboundEvent]:
        """One datagram from the RTP port. Raises ``RtpError`` if it is not RTP/RTCP."""
        if is_rtcp(data):
            self.receive_rtcp(data, source, now)
            return []
        packet = RtpPacket.parse(data)
        if len(packet.payload) > MAX_PAYLOAD:
            raise RtpError(f"RTP payload of {len(packet.payload)} bytes, over {MAX_PAYLOAD}")
        pt = packet.payload_type
        if pt != self.payload_type and pt != self.dtmf_payload_type:
            self.unknown_payload_type += 1
            return []
        if not self._accept(packet, source, now):
            self.foreign += 1
            return []
        self._heard_at = now
        if packet.ssrc != self._source_ssrc or self._reception is None:
            self._source_ssrc = packet.ssrc
            self._reception = ReceptionStats(packet.ssrc, packet.sequence)
        self._reception.update(packet.sequence, packet.timestamp, int(now * self.format.sample_rate))
        if pt == self.payload_type:
            if self._from_wire is not None:
                packet = replace(packet, payload=packet.payload.translate(self._from_wire))
            self.jitter.push(packet, now)
            return []
        # a telephone-event packet takes its tick's place in the audio stream as silence
        self.jitter.push(replace(packet, payload=self._silence), now)
        digit = self.dtmf.feed(packet.timestamp, packet.payload)
        return [] if digit is None else [DtmfReceived(digit)]

    def _accept(self, packet: RtpPacket, source: Address, now: float) -> bool:
        if source[1] == 0:
            return False  # nothing can be sent back to port 0: never a media source
        if not self.symmetric:
            return True
        if source == self.remote:
            self._candidate = None
            if self.latch is LatchState.UNLATCHED:
                self._set_latch(LatchState.LATCHED, source)
            return True
        candidate = self._candidate
        if candidate is not None and candidate[0] == source and candidate[1] == packet.ssrc:
            in_sequence = (packet.sequence - candidate[2]) & 0xFFFF == 1
            count = candidate[3] + 1 if in_sequence else 1
        else:
            count = 1
        self._candidate = (source, packet.ssrc, packet.sequence, count)
        if self.latch is LatchState.UNLATCHED:
            if count < LATCH_PACKETS:
                return False
        elif count < RELATCH_PACKETS or now - self._heard_at < RELATCH_SILENCE:
            return False
        if self.latch is LatchState.LATCHED:
            log.info("rtp relatching from %s to %s", self.remote, source, extra=self._extra)
        self._candidate = None
        self._set_latch(LatchState.LATCHED, source)
        return True

    # -- rtcp ------------------------------------------------------------------------------

    def receive_rtcp(self, data: bytes, source: Address, now: float) -> None:
        """One RTCP datagram (from the RTCP port, or muxed). Raises ``RtpError`` if malformed."""
        packets = parse_rtcp(data)
        if self.symmetric and self.latch is LatchState.LATCHED and self.remote and source[0] != self.remote[0]:
            self.foreign += 1
            return
        for packet in packets:
            if type(packet) is SenderReport and self._reception is not None and packet.ssrc == self._source_ssrc:
                self._reception.last_sr = ntp_middle(packet.ntp_timestamp)
                self._reception.last_sr_at = now
            if type(packet) in (SenderReport, ReceiverReport):
                for block in packet.reports:  # type: ignore[union-attr]
                    if block.ssrc == self.ssrc:
                        self.peer_report = block
                        if block.lsr:
                            arrival = ntp_middle(to_ntp(self._wallclock()))
                            self.rtt = ((arrival - block.lsr - block.dlsr) & 0xFFFFFFFF) / 65536

    def rtcp_report(self, tick: int, now: float) -> bytes | None:
        """A compound SR/RR + SDES when one is due (call every tick), else None."""
        if self._next_rtcp is None:
            self._next_rtcp = now + RTCP_INTERVAL * self._rng.uniform(0.25, 0.75)
            return None
        if now < self._next_rtcp:
            return None
        self._next_rtcp = now + RTCP_INTERVAL * self._rng.uniform(0.5, 1.5)
        blocks = () if self._reception is None else (self._reception.report_block(now),)
        if self.packets_sent > self._sent_at_report:
            self._sent_at_report = self.packets_sent
            first = 0 if self._first_tick is None else self._first_tick
            rtp_ts = (self._ts0 + (tick - first) * self._samples) & 0xFFFFFFFF
            ntp = to_ntp(self._wallclock())
            report: SenderReport | ReceiverReport = SenderReport(
                self.ssrc, ntp, rtp_ts, self.packets_sent & 0xFFFFFFFF, self.octets_sent & 0xFFFFFFFF, blocks
            )
        else:
            report = ReceiverReport(self.ssrc, blocks)
        return compound(report, Sdes(self.ssrc, self._cname))

    def rtcp_bye(self, reason: str = "") -> bytes:
        """A compound RR + SDES + BYE to send when the call ends."""
        return compound(ReceiverReport(self.ssrc), Sdes(self.ssrc, self._cname), Bye((self.ssrc,), reason))
