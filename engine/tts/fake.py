"""Fake TTS for tests and benchmarks: a tone (or canned PCM) per phrase, with a set time to first
audio and realtime factor."""

from __future__ import annotations

from collections.abc import AsyncIterator

import numpy as np

from ringline.config.providers import FakeTtsConfig
from ringline.engine.audio.clock import Clock
from ringline.engine.audio.formats import AudioChunk, AudioFormat, Encoding
from ringline.engine.errors import ProviderError
from ringline.engine.tts.base import SpeechAudio


class FakeTts:
    def __init__(self, config: FakeTtsConfig, clock: Clock, canned: bytes | None = None) -> None:
        self._config = config
        self._clock = clock
        self.format = AudioFormat(Encoding.PCM16, config.sample_rate)
        self._canned = canned
        self._cache: dict[int, bytes] = {}

    def _render(self, text: str) -> bytes:
        cfg = self._config
        seconds = cfg.seconds_per_phrase or cfg.seconds_per_word * max(1, len(text.split()))
        n = round(seconds * cfg.sample_rate)
        if (pcm := self._cache.get(n)) is None:
            if self._canned is not None:
                reps = -(-2 * n // len(self._canned))
                pcm = (self._canned * reps)[: 2 * n]
            else:
                t = np.arange(n) / cfg.sample_rate
                pcm = (np.sin(2 * np.pi * cfg.tone_hz * t) * 8000).astype("<i2").tobytes()
            self._cache[n] = pcm
        return pcm

    async def stream(self, phrases: AsyncIterator[str], preferred: AudioFormat) -> AsyncIterator[SpeechAudio]:
        cfg = self._config
        step = self.format.bytes_for(cfg.chunk_ms)
        index = 0
        async for text in phrases:
            if cfg.fail:
                raise ProviderError("scripted failure", retryable=True)
            pcm = self._render(text)
            at = self._clock.now() + cfg.ttfb_ms / 1000
            for offset in range(0, len(pcm), step):
                chunk = AudioChunk(pcm[offset : offset + step], self.format)
                at += chunk.duration * cfg.realtime_factor
                await self._clock.sleep_until(at)
                yield SpeechAudio(index, chunk)
            index += 1
