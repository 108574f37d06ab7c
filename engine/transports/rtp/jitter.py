"""A jitter buffer for 20 ms audio packets, sans-IO.

``push(packet, now)`` as packets arrive; ``pop(now)`` once per 20 ms tick gives the next frame:
the payload of the next packet in sequence, a ``Concealed`` frame when it is missing, or None
while nothing has been heard yet (the session feeds silence then).

How it plays:

- Packets are keyed by their 16-bit sequence number extended across wraparound (relative to the
  highest received), and played strictly in sequence order, one per tick. Timestamps are not used
  for playout: a talk spurt after a pause the sender did not fill shows up as an underrun, below.
- ``BUFFERING``: playing starts (or resumes) ``target_delay`` after the first packet arrives, from
  the lowest sequence number held, so reordering within that delay costs nothing.
- ``PLAYING``: a missing packet with later ones held is lost: the frame is concealed and play
  moves on; if it arrives afterwards it is late and dropped. A packet already played or already
  held is a duplicate. An empty buffer at a tick is an underrun: the frame is concealed and the
  buffer goes back to buffering, so the next packet (the loss ended, or the next talk spurt)
  re-establishes the target delay. Sequence numbers skipped when playing resumes count as lost
  (none when the sender merely paused, e.g. silence suppression with the marker bit).
- More than ``max_frames`` of audio held (the sender's clock runs fast, or a burst after a
  stall) drops the oldest frame (``overflow``) to keep latency bounded.
- A new SSRC, or a sequence number more than ``max_jump`` ahead, or two consecutive packets far
  behind (a sender that restarted its numbering), resynchronises: everything held is dropped
  (counted as lost) and buffering starts over (``resyncs``).

Concealment (``Concealer``): the last frame repeated, attenuated 6 dB more each time, for
``fade_frames`` frames, then silence (comfort silence; G.711 has no comfort noise of its own).
"""

from __future__ import annotations

import enum
import logging
from array import array
from dataclasses import dataclass

from ringline.engine.audio.formats import FRAME_MS, AudioFormat, Encoding
from ringline.engine.audio.framing import silence
from ringline.engine.audio.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode

from .packet import RtpPacket

log = logging.getLogger(__name__)

__all__ = ["Concealed", "Concealer", "JitterBuffer", "JitterCounters", "JitterState"]

_FAR_BEHIND = 100
"""A packet this many sequence numbers behind what is playing is not a straggler (RFC 3550 A.1's
MAX_MISORDER): two in sequence mean the sender restarted its numbering."""
_RING = 128


@dataclass(frozen=True, slots=True)
class Concealed:
    """A frame made up for a missing packet."""

    payload: bytes


@dataclass(slots=True)
class JitterCounters:
    received: int = 0
    lost: int = 0
    """Sequence numbers never played (concealed or skipped); late arrivals are counted here too."""
    late: int = 0
    duplicates: int = 0
    concealed: int = 0
    """Frames made up while playing: for losses and for underruns (including sender pauses)."""
    overflow: int = 0
    resyncs: int = 0


class JitterState(enum.Enum):
    IDLE = "idle"
    BUFFERING = "buffering"
    PLAYING = "playing"


class Concealer:
    """Makes up frames: the last good frame faded out over ``fade_frames`` frames, then silence."""

    __slots__ = ("_fades", "silence")

    def __init__(self, fmt: AudioFormat, fade_frames: int = 2) -> None:
        self.silence = silence(fmt, FRAME_MS)
        self._fades: list[bytes] = []
        """Byte translation tables attenuating G.711 by 6, 12, ... dB (PCM16 just goes silent)."""
        codecs = {Encoding.MULAW: (ulaw_decode, ulaw_encode), Encoding.ALAW: (alaw_decode, alaw_encode)}
        if fmt.encoding in codecs:
            decode, encode = codecs[fmt.encoding]
            linear = array("h", decode(bytes(range(256))))
            for step in range(1, fade_frames + 1):
                scaled = array("h", (v >> step for v in linear))
                self._fades.append(encode(scaled.tobytes()))

    def conceal(self, last: bytes | None, run: int) -> bytes:
        """The ``run``-th (1-based) consecutive made-up frame after ``last`` (None: none yet)."""
        if last is None or run > len(self._fades) or len(last) != len(self.silence):
            return self.silence
        return last.translate(self._fades[run - 1])


class JitterBuffer:
    def __init__(
        self,
        concealer: Concealer,
        *,
        target_delay: float = 0.04,
        max_frames: int = 10,
        max_jump: int = 50,
        name: str = "",
    ) -> None:
        self._concealer = concealer
        self.target_delay = target_delay
        self.max_frames = max_frames
        self.max_jump = max_jump
        self._name = name
        self.counters = JitterCounters()
        self.state = JitterState.IDLE
        self._ssrc: int | None = None
        self._slots: dict[int, bytes] = {}
        self._high = 0
        """Highest extended sequence number held or played."""
        self._next = 0
        """Extended sequence number to play next (PLAYING), else the lowest one we may still play."""
        self._start_at: float | None = None
        self._played = array("q", [-1]) * _RING
        self._last: bytes | None = None
        self._run = 0
        self._far_probe: int | None = None

    def _set_state(self, new: JitterState) -> None:
        log.debug("jitter buffer %s: %s -> %s", self._name, self.state.value, new.value)
        self.state = new

    def reset(self) -> None:
        """Forget everything held: the next packet starts a new stream."""
        self._slots.clear()
        self._start_at = None
        self._far_probe = None
        self._set_state(JitterState.IDLE)

    def _begin(self, ext: int, now: float) -> None:
        """Start buffering a new stream at extended sequence ``ext`` (what was held is lost)."""
        self.counters.lost += len(self._slots)
        self._slots.clear()
        self._high = self._next = ext
        self._start_at = now + self.target_delay
        self._far_probe = None
        self._played = array("q", [-1]) * _RING
        self._set_state(JitterState.BUFFERING)

    def push(self, packet: RtpPacket, now: float) -> None:
        counters = self.counters
        counters.received += 1
        if packet.ssrc != self._ssrc or self.state is JitterState.IDLE:
            if self._ssrc is not None:
                counters.resyncs += 1
            self._ssrc = packet.ssrc
            self._begin(packet.sequence, now)
            self._slots[packet.sequence] = packet.payload
            return
        high = self._high
        ext = high + ((packet.sequence - high + 0x8000) & 0xFFFF) - 0x8000
        if ext < self._next:
            if ext < self._next - _FAR_BEHIND:
                if self._far_probe == ext - 1:
                    counters.resyncs += 1
                    self._begin(ext, now)
                    self._slots[ext] = packet.payload
                    return
                self._far_probe = ext
            if self._played[ext % _RING] == ext:
                counters.duplicates += 1
            elif self.state is JitterState.BUFFERING and ext >= self._next - self.max_frames and not self._has_played:
                self._next = ext  # reordered ahead of the first packet: still in time
                self._slots[ext] = packet.payload
            else:
                counters.late += 1
            return
        if ext in self._slots:
            counters.duplicates += 1
            return
        if ext - self._next > self.max_jump:
            counters.resyncs += 1
            self._begin(ext, now)
            self._slots[ext] = packet.payload
            return
        self._slots[ext] = packet.payload
        if ext > high:
            self._high = ext
        if self._start_at is None:
            self._start_at = now + self.target_delay

    @property
    def _has_played(self) -> bool:
        return self._last is not None or self._run > 0

    @property
    def depth(self) -> int:
        """Frames held."""
        return len(self._slots)

    def pop(self, now: float) -> bytes | Concealed | None:
        state = self.state
        if state is JitterState.PLAYING:
            if not self._slots:
                self._set_state(JitterState.BUFFERING)
                self._start_at = None
                return self._conceal()
            while self._high - self._next >= self.max_frames:
                self.counters.overflow += 1
                self.counters.lost += 1
                self._slots.pop(self._next, None)
                self._next += 1
            payload = self._slots.pop(self._next, None)
            self._next += 1
            if payload is None:
                self.counters.lost += 1
                return self._conceal()
            self._played[(self._next - 1) % _RING] = self._next - 1
            self._last = payload
            self._run = 0
            return payload
        if state is JitterState.IDLE or self._start_at is None or now < self._start_at or not self._slots:
            return self._conceal() if self._has_played else None
        first = min(self._slots)
        if self._has_played and first > self._next:
            self.counters.lost += first - self._next
        self._next = first
        self._set_state(JitterState.PLAYING)
        return self.pop(now)

    def _conceal(self) -> Concealed:
        self._run += 1
        self.counters.concealed += 1
        return Concealed(self._concealer.conceal(self._last, self._run))
