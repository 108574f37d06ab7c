"""Embedded eSpeak NG behind the ``Tts`` seam: tiny, instant, robotic; the offline fallback voice.

The shared library and its data come from the ``espeakng-loader`` wheel and are driven in-process
through ``ctypes`` (no ``espeak-ng`` binary, no subprocess). eSpeak NG keeps one global
synthesizer, so the process has one: loaded once, driven by one worker thread that every call
shares, never on the event loop. Synthesis is synchronous (``AUDIO_OUTPUT_SYNCHRONOUS``): the
library calls back with ``BUFFER_MS`` of PCM16 at a time, and each piece goes to the loop at once.
A whole sentence takes a few milliseconds, so phrases are simply queued on the one worker.

The worker plumbing (``WorkerJob``, ``speak_phrases``) is shared with Piper: ``embedded``.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import logging
import os
import re
import threading
from collections.abc import AsyncIterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from ringline.config.providers import EspeakTtsConfig
from ringline.engine.audio.clock import Clock, LoopClock
from ringline.engine.audio.formats import AudioFormat, Encoding
from ringline.engine.errors import ProviderError
from ringline.engine.tts.base import SpeechAudio
from ringline.engine.tts.embedded import WorkerJob, speak_phrases

log = logging.getLogger(__name__)

BUFFER_MS = 100
"""Audio per synthesis callback: the granularity at which audio reaches the loop."""

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_ENDPAUSE = 0x1000
_RATE, _PITCH = 1, 3
_SENTENCE_END = re.compile(r"[.!?\u2026][\"')\]]*\s*$")

_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


@dataclass(slots=True)
class _Espeak:
    """The process's one eSpeak NG: the library, its output format and the job it speaks for."""

    lib: ctypes.CDLL
    format: AudioFormat
    callback: Any  # the ctypes callback object: must stay alive as long as the library may call it
    voice: str | None = None
    current: WorkerJob | None = None


_pool = ThreadPoolExecutor(1, thread_name_prefix="ringline-espeak")
"""eSpeak NG's one synthesizer is process-global: one worker drives it for every call."""
_lock = threading.Lock()
_loading: Future[_Espeak] | None = None


def _load() -> _Espeak:
    """Load and initialize the library (on the worker thread)."""
    try:
        import espeakng_loader
    except ImportError:
        raise ProviderError("eSpeak NG needs the espeakng-loader package") from None
    try:
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        data = espeakng_loader.get_data_path()
    except (OSError, RuntimeError) as exc:
        raise ProviderError(f"cannot load eSpeak NG: {exc}") from None
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_Synth.argtypes = [
        ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
        ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
    ]  # fmt: skip
    rate = lib.espeak_Initialize(
        _AUDIO_OUTPUT_SYNCHRONOUS, BUFFER_MS, os.path.dirname(data).encode(), _INITIALIZE_DONT_EXIT
    )
    if rate <= 0:
        raise ProviderError(f"eSpeak NG failed to initialize with data at {data}")
    engine: _Espeak

    def on_audio(wav: Any, samples: int, _events: Any) -> int:
        job = engine.current
        if job is None:
            return 1
        if samples > 0 and not job.emit(ctypes.string_at(wav, samples * 2)):
            return 1  # stop synthesizing: the phrase was cancelled
        return 0

    engine = _Espeak(lib, AudioFormat(Encoding.PCM16, rate), _SynthCallback(on_audio))
    lib.espeak_SetSynthCallback(engine.callback)
    return engine


async def _engine() -> _Espeak:
    global _loading
    with _lock:
        if _loading is None or (_loading.done() and _loading.exception() is not None):
            _loading = _pool.submit(_load)
        loading = _loading
    # shielded: one waiter giving up must not cancel the load the others wait for
    return await asyncio.shield(asyncio.wrap_future(loading))


def _synthesize(engine: _Espeak, config: EspeakTtsConfig, text: str, job: WorkerJob) -> None:
    """Speak ``text`` for ``job`` (on the worker thread)."""
    data = text.encode()
    flags = _CHARS_UTF8 | (_ENDPAUSE if _SENTENCE_END.search(text) else 0)
    lib = engine.lib
    with _lock:
        if engine.voice != config.voice:
            if lib.espeak_SetVoiceByName(config.voice.encode()) != 0:
                raise ProviderError(f"eSpeak NG has no voice {config.voice!r}")
            engine.voice = config.voice
        lib.espeak_SetParameter(_RATE, config.words_per_minute, 0)
        lib.espeak_SetParameter(_PITCH, config.pitch, 0)
        engine.current = job
        try:
            status = lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, flags, None, None)
        finally:
            engine.current = None
    if status != 0 and not job.cancelled:
        raise ProviderError(f"eSpeak NG synthesis failed (status {status})")


class EspeakTts:
    def __init__(self, config: EspeakTtsConfig, clock: Clock) -> None:
        self._config = config
        self._clock = clock

    async def stream(self, phrases: AsyncIterator[str], preferred: AudioFormat) -> AsyncIterator[SpeechAudio]:
        """Audio comes in eSpeak NG's own format (PCM16 22.05 kHz) whatever ``preferred`` is."""
        engine = await _engine()
        config = self._config

        def start(text: str) -> WorkerJob:
            job = WorkerJob("espeak")
            job.start(_pool, functools.partial(_synthesize, engine, config, text))
            return job

        async with aclosing(speak_phrases(phrases, start, engine.format, self._clock)) as audio:
            async for item in audio:
                yield item


async def warm_up(config: EspeakTtsConfig) -> None:
    """Load the library and speak one short phrase, before the first call needs it."""

    async def one() -> AsyncIterator[str]:
        yield "Hello."

    async for _ in EspeakTts(config, LoopClock()).stream(one(), AudioFormat(Encoding.PCM16, 22050)):
        pass
