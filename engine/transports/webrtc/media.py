"""Audio between a call and its WebRTC peer connection.

Outbound, the call's paced 20 ms frames (``send_audio``, up to ~200 ms ahead of real time) and
its marks queue in a ``ReplyQueue``; ``ReplyTrack`` is the aiortc track that the RTP sender pulls,
one frame every 20 ms on its own clock (``pts`` counts samples; frame k is due at
``origin + k * 20 ms``). A mark is reported once every frame queued before it has been emitted
and has had its 20 ms to play. With nothing queued the track emits silence, so the far end's
jitter buffer never starves.

The track emits PCM16 ``av.AudioFrame``s when the call speaks PCM (aiortc's Opus encoder takes
them), and ready-made G.711 ``av.Packet``s when the call speaks mu-law or A-law: the bytes the
engine produced go out as they are, with no decode and re-encode.

Inbound, ``InboundAudio`` turns the frames aiortc decodes (Opus: 48 kHz stereo; G.711: 8 kHz
mono; any size) into 20 ms frames of the call's format.
"""

from __future__ import annotations

import fractions
import logging
from collections import deque
from collections.abc import Callable

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from ringline.engine.audio.clock import Clock
from ringline.engine.audio.formats import FRAME_MS, AudioFormat, Encoding
from ringline.engine.audio.framing import Framer, silence_byte
from ringline.engine.audio.g711 import encode
from ringline.engine.audio.resample import Resampler

log = logging.getLogger(__name__)

MAX_QUEUED_S = 10.0
"""Audio the queue holds at most; past it the oldest frames are dropped. The call's playout keeps
~200 ms queued; more means the sender stopped pulling (a stalled connection)."""
RESYNC_AFTER_S = 0.2
"""A track this late (the sender stalled) restarts its timeline at now instead of bursting."""

_I16 = np.dtype(np.int16)


class ReplyQueue:
    """Outbound frames and marks in order, sans-IO. One ``pop`` per 20 ms of the track's timeline."""

    def __init__(self, fmt: AudioFormat) -> None:
        self.format = fmt
        self.frame_bytes = fmt.bytes_for(FRAME_MS)
        self._silence = bytes([silence_byte(fmt.encoding)]) * self.frame_bytes
        self._framer = Framer.for_format(fmt)
        self._items: deque[bytes | str] = deque()
        """Frames (bytes) and mark names (str), in the order they were sent."""
        self._frames = 0
        self._limit = int(MAX_QUEUED_S * 1000 / FRAME_MS)
        self.dropped = 0

    @property
    def queued_frames(self) -> int:
        return self._frames

    def push(self, audio: bytes) -> None:
        """Queue audio (whole 20 ms frames, or any length: the remainder waits for the next push)."""
        for frame in self._framer.feed(audio):
            self._items.append(frame)
            self._frames += 1
        while self._frames > self._limit:
            self._drop_oldest_frame()

    def mark(self, name: str) -> None:
        """Queue a mark after everything pushed so far (a partial frame is padded out first)."""
        if self._framer.pending:
            self._items.append(self._framer.flush())
            self._frames += 1
        self._items.append(name)

    def clear(self) -> None:
        """Drop every frame and mark not yet emitted."""
        self._items.clear()
        self._framer.clear()
        self._frames = 0

    def pop(self) -> tuple[list[str], bytes]:
        """The marks whose audio has all been emitted (and has played by now), then the next
        frame to emit (silence when none is queued)."""
        items = self._items
        marks: list[str] = []
        while items and isinstance(items[0], str):
            marks.append(items.popleft())  # type: ignore[arg-type]
        if not items:
            return marks, self._silence
        self._frames -= 1
        frame = items.popleft()
        assert isinstance(frame, bytes)
        return marks, frame

    def _drop_oldest_frame(self) -> None:
        for i, item in enumerate(self._items):
            if isinstance(item, bytes):
                del self._items[i]
                self._frames -= 1
                self.dropped += 1
                if self.dropped == 1 or self.dropped % 500 == 0:
                    log.warning("outbound audio queue full: %d frames dropped so far", self.dropped)
                return


class ReplyTrack(MediaStreamTrack):
    """The agent's audio as an aiortc track, paced by ``clock``: ``recv`` returns one 20 ms
    frame (``av.AudioFrame`` for PCM16, ``av.Packet`` for G.711) when it is due."""

    kind = "audio"

    def __init__(self, fmt: AudioFormat, clock: Clock, on_mark: Callable[[str], None] | None = None) -> None:
        super().__init__()
        self.queue = ReplyQueue(fmt)
        self.on_mark = on_mark
        """Told each mark's name once the audio before it has played (the call's ``on_mark``)."""
        self._clock = clock
        self._rate = fmt.sample_rate
        self._samples = fmt.sample_rate * FRAME_MS // 1000
        self._time_base = fractions.Fraction(1, fmt.sample_rate)
        self._pcm = fmt.encoding is Encoding.PCM16
        self._pts = 0
        self._origin: float | None = None
        """Clock time at which sample 0 was due (moved later when the sender stalls)."""

    async def recv(self) -> av.AudioFrame | av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        clock = self._clock
        if self._origin is None:
            self._origin = clock.now()
        else:
            self._pts += self._samples
            due = self._origin + self._pts / self._rate
            if clock.now() - due > RESYNC_AFTER_S:
                self._origin = clock.now() - self._pts / self._rate
            else:
                await clock.sleep_until(due)
            if self.readyState != "live":
                raise MediaStreamError
        marks, payload = self.queue.pop()
        if marks and self.on_mark is not None:
            for name in marks:
                self.on_mark(name)
        return self._frame(payload)

    def _frame(self, payload: bytes) -> av.AudioFrame | av.Packet:
        frame: av.AudioFrame | av.Packet
        if self._pcm:
            frame = av.AudioFrame(format="s16", layout="mono", samples=self._samples)
            frame.planes[0].update(payload)
            frame.sample_rate = self._rate
        else:
            frame = av.Packet(payload)
        frame.pts = self._pts
        frame.time_base = self._time_base
        return frame


class InboundAudio:
    """Decoded remote audio (``av.AudioFrame``, s16, mono or stereo, any rate and size) to 20 ms
    frames of the call's format: downmix, resample (soxr ``LQ``: a frame out per frame in, ~2 ms
    of delay), frame, G.711-encode if the call speaks it."""

    def __init__(self, fmt: AudioFormat) -> None:
        self.format = fmt
        self._framer = Framer(AudioFormat(Encoding.PCM16, fmt.sample_rate).bytes_for(FRAME_MS))
        self._resampler: Resampler | None = None
        self._source_rate = 0

    def feed(self, frame: av.AudioFrame) -> list[bytes]:
        if frame.format.name != "s16":
            raise ValueError(f"expected s16 audio from the decoder, got {frame.format.name}")
        samples = frame.to_ndarray().reshape(-1)
        channels = len(frame.layout.channels)
        if channels == 2:
            samples = ((samples[0::2].astype(np.int32) + samples[1::2]) >> 1).astype(_I16)
        elif channels != 1:
            raise ValueError(f"expected mono or stereo audio from the decoder, got {channels} channels")
        if frame.sample_rate != self._source_rate:
            self._source_rate = frame.sample_rate
            self._resampler = Resampler(frame.sample_rate, self.format.sample_rate, quality="LQ")
        assert self._resampler is not None
        pcm = self._resampler.process(samples.tobytes())
        frames = self._framer.feed(pcm)
        if self.format.encoding is not Encoding.PCM16:
            return [encode(f, self.format.encoding) for f in frames]
        return frames
