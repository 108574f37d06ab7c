"""Playout: pace a reply's audio to the transport slightly ahead of real time, and know what the
caller has actually heard.

The reply's timeline starts at ``origin`` (clock time at which its first byte plays); frame k
is due at ``origin + k * frame - lead`` and frames go out two at a time as they fall due, so the
provider holds between ``lead - frame`` and ``lead`` of unplayed audio and a ``clear``
silences the caller at once. If synthesis falls behind, the
timeline slips (``origin`` moves later) rather than bursting to catch up. Marks placed at phrase
boundaries and at the end come back when the caller has heard up to them; between marks, what
was heard is estimated from the timeline and never exceeds what was sent.
"""

from __future__ import annotations

import asyncio
import bisect
import enum
import logging
from typing import Protocol

from ringline.config.settings import PlayoutConfig
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

    def _set_state(self, new: PlayoutState) -> None:
        log.debug("playout %s -> %s", self.state.value, new.value, extra={"call_id": self._call_id})
        self.state = new

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"playout-{self._call_id}")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

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
            if self._origin is None:  # a reply starts (or resumes) playing now
                self._origin = now - self._sent / self._bps
            play_at = self._origin + self._sent / self._bps
            if play_at < now:  # synthesis fell behind playback: slip the timeline
                self.underruns += 1
                self._origin = now - self._sent / self._bps
                play_at = now
            if play_at - self._lead > now + _EPSILON:
                # Not due yet. Wake when the frame after it is due and send both: half the
                # timer wake-ups, and the provider holds between lead - frame and lead.
                await self._clock.sleep_until(play_at + self._frame_s * (FRAMES_PER_WAKE - 1) - self._lead)
                continue  # a barge-in may have paused us meanwhile
            chunk = bytes(self._audio[self._sent : self._sent + frame])
            self._sent += len(chunk)
            if len(chunk) < frame:
                chunk += self._silence * (frame - len(chunk))
            if not self._started:
                self._started = True
                self._listener.playout_started()
            await self._transport.send_audio(chunk)
            marks = self._marks
            while self._next_mark < len(marks) and marks[self._next_mark] <= self._sent:
                self._next_mark += 1
                await self._transport.mark(f"{self._reply}.{self._epoch}.{self._sent}")

    async def _drained(self) -> None:
        self._set_state(PlayoutState.DRAINED)
        if not self._audio:
            self._finish()
            return
        if not self._end_mark_sent:
            self._end_mark_sent = True
            await self._transport.mark(f"{self._reply}.{self._epoch}.{len(self._audio)}")
