"""Playout: pace a reply's audio to the transport slightly ahead of real time, and know what the
caller has actually heard.

The reply's timeline starts at ``origin`` (clock time at which its first byte plays); frame k
is due at ``origin + k * frame - lead`` and frames go out two at a time as they fall due, so the
provider holds between ``lead - frame`` and ``lead`` of unplayed audio and a ``clear``
silences the caller at once. If synthesis falls behind, the
timeline slips (``origin`` moves later) rather than bursting to catch up. Marks placed at phrase
boundaries and at the end come back when the caller has heard up to them; between marks, what
was heard is estimated from the timeline and never exceeds what was sent.

With an ambience bed (``AmbienceBed``) the caller hears a background sound throughout: reply
frames go out with it mixed in, and whenever no reply audio is ready a second task keeps the
provider's buffer topped up with the ambience alone, like a reply: between ``lead`` less three
frames and ``lead`` ahead (three frames a wake-up). A reply (or a resumed one) that finds only
ambience queued clears it first and starts at once; one that finds reply audio still queued
starts where that ends (``_wire_until``). A synthesis stall mid-reply is filled with ambience.
"""

from __future__ import annotations

import asyncio
import bisect
import enum
import logging
from typing import Protocol

from ringline.config.settings import PlayoutConfig
from ringline.engine.audio.ambience import AmbienceBed
from ringline.engine.audio.clock import Clock
from ringline.engine.audio.formats import AudioFormat
from ringline.engine.audio.framing import silence_byte
from ringline.engine.transports.base import MediaTransport

log = logging.getLogger(__name__)

_EPSILON = 1e-6
"""Deadlines are sums of float frame lengths: a frame due within this of now is due."""

FRAMES_PER_WAKE = 2
"""Frames sent per pacing wake-up once the lead is built (timers cost more than sends)."""

MARK_GRACE = 2.0
"""Seconds past the expected end of playback after which a missing final mark is given up on."""

BED_FRAMES_PER_WAKE = 3
"""Ambience frames sent per wake-up of its task: it tops the buffer up to ``lead`` once it holds
less than ``lead`` less this many frames."""


class PlayoutListener(Protocol):
    def playout_started(self) -> None:
        """The first frame of a reply went out."""
        ...

    def playout_finished(self) -> None:
        """The caller has heard the whole reply."""
        ...


class PlayoutState(enum.Enum):
    IDLE = "idle"
    PLAYING = "playing"
    PAUSED = "paused"
    """Stopped by a barge-in; unheard audio kept in case the agent resumes."""
    DRAINED = "drained"
    """Everything sent; waiting for the caller to hear the end."""
    HELD = "held"
    """A reply prepared before the caller's turn ended: audio is kept, nothing is sent yet."""


class Playout:
    def __init__(
        self,
        transport: MediaTransport,
        clock: Clock,
        config: PlayoutConfig,
        listener: PlayoutListener,
        *,
        call_id: str = "",
    ) -> None:
        self._transport = transport
        self._clock = clock
        self._listener = listener
        self._call_id = call_id
        fmt = transport.format
        self.format: AudioFormat = fmt
        self._bps = fmt.bytes_per_second
        self._frame = fmt.bytes_for(config.frame_ms)
        self._frame_s = config.frame_ms / 1000
        self._lead = config.lead_ms / 1000
        self._silence = bytes([silence_byte(fmt.encoding)])
        self.state = PlayoutState.IDLE
        self._reply = 0
        self._epoch = 0
        self._audio = bytearray()
        self._phrase_starts: list[int] = []
        """Offset of each phrase's first byte, by phrase index."""
        self._marks: list[int] = []
        """Offsets at which to place a mark (phrase boundaries), ascending."""
        self._next_mark = 0
        self._sent = 0
        self._heard = 0
        self._ended = False
        self._origin: float | None = None
        self._end_mark_sent = False
        self._started = False
        self.underruns = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._bed: AmbienceBed | None = None
        self._bed_task: asyncio.Task[None] | None = None
        self._wire_until = 0.0
        """Clock time by which the caller will have heard everything sent so far."""
        self._reply_until = 0.0
        """Clock time by which the caller will have heard the reply audio sent so far (what is
        queued after it is ambience)."""

    def _set_state(self, new: PlayoutState) -> None:
        log.debug("playout %s -> %s", self.state.value, new.value, extra={"call_id": self._call_id})
        self.state = new

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, ambience: AmbienceBed | None = None) -> None:
        """Start pacing; with ``ambience``, the caller hears it from now on, under everything."""
        self._task = asyncio.create_task(self._run(), name=f"playout-{self._call_id}")
        self._bed = ambience
        if ambience is not None:
            self._bed_task = asyncio.create_task(self._run_bed(ambience), name=f"ambience-{self._call_id}")

    async def aclose(self) -> None:
        tasks = [t for t in (self._task, self._bed_task) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task = self._bed_task = None

    # -- feeding a reply ----------------------------------------------------------------------

    def begin(self, *, held: bool = False) -> None:
        """Start a new reply (dropping whatever is left of the previous one). A ``held`` reply
        buffers its audio until ``release``."""
        self._reply += 1
        self._audio.clear()
        self._phrase_starts.clear()
        self._marks.clear()
        self._next_mark = self._sent = self._heard = 0
        self._ended = self._end_mark_sent = self._started = False
        self._origin = None
        self._set_state(PlayoutState.HELD if held else PlayoutState.PLAYING)

    def release(self) -> None:
        """Start sending a held reply."""
        if self.state is PlayoutState.HELD:
            self._set_state(PlayoutState.PLAYING)
            self._wake.set()

    def push(self, audio: bytes, phrase: int) -> None:
        """Queue wire-format audio belonging to phrase number ``phrase`` of the reply."""
        while len(self._phrase_starts) <= phrase:
            start = len(self._audio)
            if self._phrase_starts and start > self._phrase_starts[-1]:
                self._marks.append(start)
            self._phrase_starts.append(start)
        self._audio += audio
        self._wake.set()

    def end(self) -> None:
        """No more audio for this reply."""
        self._ended = True
        self._wake.set()

    # -- barge-in -----------------------------------------------------------------------------

    async def pause(self) -> None:
        """Stop the caller hearing the agent now; keep unheard audio for a ``resume``."""
        if self.state not in (PlayoutState.PLAYING, PlayoutState.DRAINED):
            return
        self._heard = self.heard_bytes()
        self._sent = self._heard
        self._next_mark = bisect.bisect_right(self._marks, self._sent)
        self._end_mark_sent = False
        self._epoch += 1
        self._origin = None
        self._set_state(PlayoutState.PAUSED)
        self._wire_until = self._reply_until = self._clock.now()
        await self._transport.clear()

    def resume(self) -> None:
        if self.state is PlayoutState.PAUSED:
            self._set_state(PlayoutState.PLAYING)
            self._wake.set()

    async def abandon(self) -> None:
        """Drop the reply. Clears the provider's buffer if audio may still be playing."""
        playing = self.state in (PlayoutState.PLAYING, PlayoutState.DRAINED) and self._sent > self._heard
        if self.state is not PlayoutState.PAUSED:
            self._heard = self.heard_bytes()
        self._epoch += 1
        self._set_state(PlayoutState.IDLE)
        if playing:
            self._wire_until = self._reply_until = self._clock.now()
            await self._transport.clear()

    # -- what the caller heard ----------------------------------------------------------------

    def heard_bytes(self) -> int:
        if self.state in (PlayoutState.PAUSED, PlayoutState.IDLE, PlayoutState.HELD) or self._origin is None:
            return self._heard
        estimate = round((self._clock.now() - self._origin) * self._bps)
        return max(self._heard, min(estimate, self._sent))

    def heard_fractions(self) -> list[float]:
        """For each phrase of the reply, the fraction of its audio the caller heard."""
        heard = self.heard_bytes()
        bounds = [*self._phrase_starts, len(self._audio)]
        out = []
        for start, end in zip(bounds, bounds[1:], strict=False):
            out.append(1.0 if end <= start else min(1.0, max(0.0, (heard - start) / (end - start))))
        return out

    def on_mark(self, name: str) -> None:
        try:
            reply, epoch, offset = (int(p) for p in name.split("."))
        except ValueError:
            log.warning("unknown mark %r", name, extra={"call_id": self._call_id})
            return
        if reply != self._reply or epoch != self._epoch or self.state in (PlayoutState.IDLE, PlayoutState.PAUSED):
            return  # echoed by a clear, or from an abandoned reply
        self._heard = max(self._heard, offset)
        if self._origin is not None:  # playback runs later than we thought: follow it
            self._origin = max(self._origin, self._clock.now() - offset / self._bps)
        if self.state is PlayoutState.DRAINED and offset >= len(self._audio):
            self._finish()

    def poll(self) -> None:
        """Give up on a final mark the provider never echoed (called now and then)."""
        if self.state is not PlayoutState.DRAINED or self._origin is None:
            return
        if self._clock.now() > self._origin + len(self._audio) / self._bps + MARK_GRACE:
            log.warning("final mark never came back", extra={"call_id": self._call_id})
            self._heard = len(self._audio)
            self._finish()

    def _finish(self) -> None:
        self._set_state(PlayoutState.IDLE)
        self._listener.playout_finished()

    # -- pacing -------------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self._send_due()

    async def _send_due(self) -> None:
        frame = self._frame
        while self.state is PlayoutState.PLAYING:
            available = len(self._audio) - self._sent
            if available < frame and not (self._ended and available > 0):
                if self._ended and available == 0:
                    await self._drained()
                return
            now = self._clock.now()
            if self._origin is None and self._bed is not None and self._reply_until <= now < self._wire_until:
                # Only ambience is queued at the provider: drop it, the reply starts now.
                self._wire_until = now
                self._origin = now - self._sent / self._bps
                await self._transport.clear()
                continue  # a barge-in may have paused us meanwhile
            start = max(now, self._wire_until)  # where the caller's buffer runs out
            if self._origin is None:  # a reply starts (or resumes) playing then
                self._origin = start - self._sent / self._bps
            play_at = self._origin + self._sent / self._bps
            if play_at < start - _EPSILON:  # synthesis fell behind playback: slip the timeline
                self.underruns += 1
                self._origin = start - self._sent / self._bps
                play_at = start
            if play_at - self._lead > now + _EPSILON:
                # Not due yet. Wake when the frame after it is due and send both: half the
                # timer wake-ups, and the provider holds between lead - frame and lead.
                await self._clock.sleep_until(play_at + self._frame_s * (FRAMES_PER_WAKE - 1) - self._lead)
                continue  # a barge-in may have paused us meanwhile
            chunk = bytes(self._audio[self._sent : self._sent + frame])
            self._sent += len(chunk)
            if len(chunk) < frame:
                chunk += self._silence * (frame - len(chunk))
            if self._bed is not None:
                chunk = self._bed.mix(chunk)
            self._wire_until = self._reply_until = play_at + frame / self._bps
            if not self._started:
                self._started = True
                self._listener.playout_started()
            await self._transport.send_audio(chunk)
            marks = self._marks
            while self._next_mark < len(marks) and marks[self._next_mark] <= self._sent:
                self._next_mark += 1
                await self._transport.mark(f"{self._reply}.{self._epoch}.{self._sent}")

    def _reply_ready(self) -> bool:
        """A reply has audio to send (its pacing loop keeps the buffer filled)."""
        if self.state is not PlayoutState.PLAYING:
            return False
        available = len(self._audio) - self._sent
        return available >= self._frame or (self._ended and available > 0)

    async def _run_bed(self, bed: AmbienceBed) -> None:
        """Keep the ambience going whenever no reply audio is ready to go: top the provider's
        buffer up to ``lead`` ahead once it holds less than ``lead`` less a few frames."""
        clock, frame, frame_s = self._clock, self._frame, self._frame_s
        high = max(self._lead, frame_s * BED_FRAMES_PER_WAKE)
        low = high - frame_s * BED_FRAMES_PER_WAKE
        while True:
            now = clock.now()
            if self._wire_until - now < low + _EPSILON:
                while (ahead := self._wire_until - now) < high - _EPSILON and not self._reply_ready():
                    self._wire_until = now + max(ahead, 0.0) + frame_s
                    await self._transport.send_audio(bed.frame(frame))
            await clock.sleep_until(max(self._wire_until - low, now + frame_s))

    async def _drained(self) -> None:
        self._set_state(PlayoutState.DRAINED)
        if not self._audio:
            self._finish()
            return
        if not self._end_mark_sent:
            self._end_mark_sent = True
            await self._transport.mark(f"{self._reply}.{self._epoch}.{len(self._audio)}")
