"""Scripted STT for tests and benchmarks: each utterance (speech, then ``finalize``) yields the next
scripted transcript after a set latency. Speech is told from silence by frame peak level.

It takes the call's native encoding as is (as a cloud STT would), and tells loud G.711 bytes by a
translation table (~0.3 us a frame) rather than decoding them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np

from ringline.config.providers import FakeSttConfig
from ringline.engine.audio.clock import Clock
from ringline.engine.audio.formats import AudioFormat, Encoding
from ringline.engine.audio.g711 import decode
from ringline.engine.stt.base import Transcript

_SPEECH_PEAK = 1000  # PCM16 peak above which a frame counts as sound


def _loud_table(encoding: Encoding) -> bytes:
    """A ``bytes.translate`` table mapping G.711 codes louder than the peak to 1, others to 0."""
    levels = np.frombuffer(decode(bytes(range(256)), encoding), dtype=np.int16).astype(np.int32)
    return bytes(int(abs(v) > _SPEECH_PEAK) for v in levels)


class FakeStt:
    def __init__(self, config: FakeSttConfig, clock: Clock) -> None:
        self._config = config
        self._clock = clock

    async def open(self, offered: AudioFormat) -> FakeSttSession:
        return FakeSttSession(self._config, self._clock, offered)


class FakeSttSession:
    def __init__(self, config: FakeSttConfig, clock: Clock, fmt: AudioFormat) -> None:
        self._config = config
        self._clock = clock
        self.format = fmt
        self._loud = None if fmt.encoding is Encoding.PCM16 else _loud_table(fmt.encoding)
        self._utterance = 0
        self._sound_bytes = 0
        self._interim_bytes = fmt.bytes_for(int(config.interim_after_ms)) or 1
        self._interim_sent = False
        self._queue: asyncio.Queue[tuple[float, Transcript] | None] = asyncio.Queue()
        """Transcripts with the clock time they are due, in order (a stream keeps its order)."""
        self._closed = False

    def _scripted(self) -> str:
        script = self._config.transcripts
        return script[self._utterance] if self._utterance < len(script) else self._config.fallback

    def _is_loud(self, audio: bytes) -> bool:
        if self._loud is not None:
            return b"\x01" in audio.translate(self._loud)
        samples = np.frombuffer(audio, dtype=np.int16)
        return bool(samples.size) and max(int(samples.max()), -int(samples.min())) > _SPEECH_PEAK

    async def send(self, audio: bytes) -> None:
        if self._is_loud(audio):
            self._sound_bytes += len(audio)
            if not self._interim_sent and self._sound_bytes >= self._interim_bytes:
                self._interim_sent = True
                words = self._scripted().split()
                if words:
                    interim = Transcript(" ".join(words[: max(1, len(words) // 2)]), False)
                    self._queue.put_nowait((self._clock.now(), interim))

    def speech(self, active: bool) -> None:
        pass  # scripted: the transcript does not depend on when audio arrives

    async def finalize(self) -> None:
        if self._sound_bytes:
            text = self._scripted()
            self._utterance += 1
        else:
            text = ""  # nothing but silence since the last final
        self._sound_bytes = 0
        self._interim_sent = False
        due = self._clock.now() + self._config.final_latency_ms / 1000
        self._queue.put_nowait((due, Transcript(text, True)))

    async def __aiter__(self) -> AsyncIterator[Transcript]:
        while (item := await self._queue.get()) is not None:
            due, transcript = item
            await self._clock.sleep_until(due)
            if self._closed:
                return
            yield transcript

    async def aclose(self) -> None:
        """End the session: transcripts not yet delivered are dropped."""
        self._closed = True
        self._queue.put_nowait(None)
