"""Call recording: both sides on one timeline, as the caller heard them, streamed to a stereo WAV.

The caller's track advances one frame per inbound frame (media time). The agent's audio is sent
ahead of real time, so it is placed where the provider's buffer will play it: right after the
agent audio before it, or at the caller's current position if that buffer has run dry. A
``clear`` drops what the provider had not played yet, so it is cut from the agent's track too.
``StereoTimeline`` is that bookkeeping, without I/O.

Everything before the caller's current position is final: a clear only cuts audio ahead of it.
``CallRecorder`` hands each second of final audio (``flush_s``) to a writer thread that appends
it to the WAV as 16-bit PCM (caller left, agent right) and then rewrites the header's sizes, so
memory stays at about a second per track (plus the agent audio queued ahead, ~``lead_ms``)
however long the call. ``aclose`` writes the rest (agent audio sent but never played included,
as before) and the final sizes.

The file is a valid WAV after every flush: a crash mid-call (the process killed, the server
restarted) leaves everything up to the last flush readable, header sizes right; at most the
last ``flush_s`` is lost. There is no ``fsync``: an operating-system crash can lose what the OS
had not written yet. The row of a call that never ended cleanly is not linked to its file.

Writes go to the event loop's default executor, one batch per recorder at a time (a batch holds
every chunk that waited). A disk too slow to keep up (``max_backlog_s`` of audio waiting) or a
failing one stops the recording (``error``) rather than hold the call's audio in memory.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import struct
from collections import deque
from pathlib import Path
from typing import BinaryIO

from ringline.engine.audio.formats import AudioFormat, Encoding
from ringline.engine.audio.g711 import decode, encode
from ringline.engine.dtmf import tones
from ringline.engine.transports.base import Briefing, MediaTransport

log = logging.getLogger(__name__)

_SILENCE = b"\xff"  # mu-law zero
HEADER_BYTES = 44
MAX_DATA_BYTES = 0xFFFFFFFF - 36
"""A RIFF file's sizes are 32-bit: about 37 hours of 8 kHz stereo."""


class StereoTimeline:
    """Both sides as mu-law at the wire's sample rate (one byte a sample), from ``base`` on:
    samples before ``base`` were taken (``take``) and are no longer held."""

    def __init__(self) -> None:
        self.base = 0
        self.caller = bytearray()
        self.agent = bytearray()

    def heard(self, mulaw: bytes) -> None:
        self.caller += mulaw

    def said(self, mulaw: bytes) -> None:
        now = len(self.caller)
        if len(self.agent) < now:  # the provider's buffer ran dry: this plays from now
            self.agent += _SILENCE * (now - len(self.agent))
        self.agent += mulaw

    def cleared(self) -> None:
        del self.agent[len(self.caller) :]

    @property
    def settled(self) -> int:
        """Samples held that can no longer change (those before the caller's position)."""
        return len(self.caller)

    @property
    def held_bytes(self) -> int:
        return len(self.caller) + len(self.agent)

    @property
    def end(self) -> int:
        """Samples in the recording so far, taken ones included."""
        return self.base + max(len(self.caller), len(self.agent))

    def take(self, *, everything: bool = False) -> tuple[bytes, bytes]:
        """The settled samples of each track (or all of them, padded to one length) and forget them."""
        n = max(len(self.caller), len(self.agent)) if everything else len(self.caller)
        left = bytes(self.caller[:n]).ljust(n, _SILENCE)
        right = bytes(self.agent[:n]).ljust(n, _SILENCE)
        del self.caller[:n], self.agent[:n]
        self.base += n
        return left, right


# -- the file ------------------------------------------------------------------------------------


def wav_header(sample_rate: int, data_bytes: int) -> bytes:
    """The 44-byte header of a stereo 16-bit PCM WAV holding ``data_bytes`` of samples."""
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        36 + data_bytes,
        b"WAVE",
        b"fmt ",
        16,
        1,  # PCM
        2,
        sample_rate,
        sample_rate * 4,
        4,
        16,
        b"data",
        data_bytes,
    )


class WavStream:
    """A stereo WAV file being appended to (blocking: used from the writer thread only)."""

    def __init__(self, path: Path, sample_rate: int) -> None:
        self.path = path
        self._rate = sample_rate
        self._file: BinaryIO | None = None
        self.data_bytes = 0

    def append(self, chunks: list[tuple[bytes, bytes]]) -> None:
        """Write mu-law ``(left, right)`` chunks as interleaved PCM, then the sizes, then flush."""
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "wb")  # noqa: SIM115 -- open until close()
            self._file.write(wav_header(self._rate, 0))
        out = self._file
        written = 0
        for left_ulaw, right_ulaw in chunks:
            left, right = decode(left_ulaw, Encoding.MULAW), decode(right_ulaw, Encoding.MULAW)
            interleaved = bytearray(2 * len(left))
            interleaved[0::4], interleaved[1::4] = left[0::2], left[1::2]
            interleaved[2::4], interleaved[3::4] = right[0::2], right[1::2]
            if self.data_bytes + written + len(interleaved) > MAX_DATA_BYTES:
                raise OSError(f"{self.path}: a WAV file holds at most {MAX_DATA_BYTES} bytes of audio")
            out.write(interleaved)
            written += len(interleaved)
        self.data_bytes += written
        out.seek(4)
        out.write(struct.pack("<I", 36 + self.data_bytes))
        out.seek(40)
        out.write(struct.pack("<I", self.data_bytes))
        out.seek(0, 2)
        out.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


# -- the recorder ----------------------------------------------------------------------------------


class RecorderState(enum.Enum):
    IDLE = "idle"
    """Not given a file yet: final audio is dropped as it settles (memory stays bounded)."""
    RECORDING = "recording"
    FAILED = "failed"
    """The disk failed or fell behind: nothing more is kept (see ``error``)."""
    CLOSED = "closed"


class CallRecorder:
    """Both sides of a call, streamed to a WAV file given by ``open``."""

    def __init__(self, wire: AudioFormat, *, flush_s: float = 1.0, max_backlog_s: float = 30.0) -> None:
        if wire.channels != 1:
            raise ValueError(f"cannot record {wire.channels}-channel audio")
        self._wire = wire
        self.rate = wire.sample_rate
        self.timeline = StereoTimeline()
        self.state = RecorderState.IDLE
        self.error: str | None = None
        self._flush_samples = max(1, round(flush_s * self.rate))
        self._max_backlog = max(1, round(max_backlog_s * self.rate))
        self._file: WavStream | None = None
        self._pending: deque[tuple[bytes, bytes]] = deque()
        self._pending_samples = 0
        self._writing: asyncio.Future[None] | None = None
        self._dropped = 0
        """Samples settled before ``open`` (not in the file)."""

    def _set_state(self, new: RecorderState) -> None:
        log.debug("recorder %s -> %s", self.state.value, new.value)
        self.state = new

    @property
    def path(self) -> Path | None:
        return self._file.path if self._file is not None else None

    def open(self, path: Path) -> None:
        """Record into ``path`` (created, or replaced, by the first write)."""
        if self.state is not RecorderState.IDLE:
            raise RuntimeError(f"the recorder is {self.state.value}")
        self._file = WavStream(path, self.rate)
        self._set_state(RecorderState.RECORDING)

    # -- the call's audio (on the event loop; cheap) ---------------------------------------------

    def _mulaw(self, payload: bytes) -> bytes:
        if self._wire.encoding is Encoding.MULAW:
            return payload
        pcm = payload if self._wire.encoding is Encoding.PCM16 else decode(payload, self._wire.encoding)
        return encode(pcm, Encoding.MULAW)

    def heard(self, payload: bytes) -> None:
        """One inbound frame (wire encoding)."""
        self.timeline.heard(self._mulaw(payload))
        if self.timeline.settled >= self._flush_samples:
            self._flush()

    def said(self, payload: bytes) -> None:
        """Agent audio handed to the provider (wire encoding)."""
        self.timeline.said(self._mulaw(payload))

    def said_pcm(self, pcm: bytes) -> None:
        """Agent audio as PCM16 at the wire's rate (tones the transport renders itself)."""
        self.timeline.said(encode(pcm, Encoding.MULAW))

    def cleared(self) -> None:
        """The provider dropped the agent audio it had not played."""
        self.timeline.cleared()

    @property
    def seconds(self) -> float:
        return self.timeline.end / self.rate

    @property
    def buffered_bytes(self) -> int:
        """Audio held in memory: both tracks since the last flush and chunks waiting for the disk."""
        return self.timeline.held_bytes + 2 * self._pending_samples

    # -- writing ------------------------------------------------------------------------------

    def _flush(self) -> None:
        left, right = self.timeline.take()
        if self.state is RecorderState.IDLE:
            self._dropped += len(left)
            return
        if self.state is not RecorderState.RECORDING:
            return
        self._pending.append((left, right))
        self._pending_samples += len(left)
        if self._pending_samples > self._max_backlog:
            self._fail(f"the disk fell behind: {self._pending_samples / self.rate:.0f} s of audio waiting")
            return
        if self._writing is None:
            self._write_pending()

    def _write_pending(self) -> None:
        assert self._file is not None
        batch = list(self._pending)
        self._pending.clear()
        self._pending_samples = 0
        self._writing = writing = asyncio.get_running_loop().run_in_executor(None, self._file.append, batch)
        writing.add_done_callback(self._written)

    def _written(self, done: asyncio.Future[None]) -> None:
        self._writing = None
        if done.cancelled():
            self._fail("the write was cancelled")
        elif (exc := done.exception()) is not None:
            self._fail(f"{type(exc).__name__}: {exc}")
        elif self._pending and self.state is RecorderState.RECORDING:
            self._write_pending()

    def _fail(self, error: str) -> None:
        if self.state in (RecorderState.FAILED, RecorderState.CLOSED):
            return
        self.error = error
        log.error("recording %s stopped: %s", self.path, error)
        self._pending.clear()
        self._pending_samples = 0
        self._set_state(RecorderState.FAILED)

    async def written(self) -> None:
        """Wait until the audio flushed so far is in the file (or the recording failed)."""
        while self._writing is not None:  # its callback may start the next batch
            await asyncio.gather(self._writing, return_exceptions=True)

    async def aclose(self) -> Path | None:
        """Write what is left and the final sizes; the file's path, or None if there is no usable
        file (never opened, or failed: ``error`` says why)."""
        if self.state is RecorderState.CLOSED:
            return self.path if self.error is None else None
        await self.written()
        if self.state is RecorderState.RECORDING:
            assert self._file is not None
            left, right = self.timeline.take(everything=True)
            batch = [*self._pending, (left, right)]
            self._pending.clear()
            self._pending_samples = 0
            try:
                await asyncio.to_thread(self._finish, batch)
            except OSError as exc:
                self._fail(f"{type(exc).__name__}: {exc}")
        file, ok = self._file, self.state is RecorderState.RECORDING
        if file is not None:
            await asyncio.to_thread(file.close)
        self._set_state(RecorderState.CLOSED)
        return file.path if file is not None and ok else None

    def _finish(self, batch: list[tuple[bytes, bytes]]) -> None:
        assert self._file is not None
        self._file.append(batch)


class RecordedTransport:
    """A ``MediaTransport`` that tells a recorder what the agent said, then passes it on."""

    def __init__(self, inner: MediaTransport, recorder: CallRecorder) -> None:
        self._inner = inner
        self._recorder = recorder

    @property
    def format(self) -> AudioFormat:
        return self._inner.format

    async def send_audio(self, payload: bytes) -> None:
        self._recorder.said(payload)
        await self._inner.send_audio(payload)

    async def mark(self, name: str) -> None:
        await self._inner.mark(name)

    async def clear(self) -> None:
        self._recorder.cleared()
        await self._inner.clear()

    async def hangup(self) -> None:
        await self._inner.hangup()

    @property
    def transfer_unavailable(self) -> str | None:
        return self._inner.transfer_unavailable

    async def transfer(self, destination: str, briefing: Briefing | None = None) -> None:
        await self._inner.transfer(destination, briefing)

    async def send_dtmf(self, keys: str) -> None:
        await self._inner.send_dtmf(keys)
        self._recorder.said_pcm(tones(keys, self._recorder.rate))  # what the far end hears, in-band or not
