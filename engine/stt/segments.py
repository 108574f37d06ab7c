"""What the embedded recognizers (Whisper, Moonshine) share: a session that buffers one utterance
and transcribes it whole when the call's VAD says the caller paused, and one loaded model per
process run by a bounded pool of worker threads.

Frame path: ``send`` appends the call's native audio (G.711 or PCM16, any rate) to a
``bytearray``; nothing is decoded or resampled per frame. The buffer keeps the last
``BUFFER_S`` seconds (the call sends every frame, silence included, and finalizes only after
speech, so the newest audio is the one that matters).

``finalize`` hands the buffer to the engine's pool and returns at once. On a worker thread the
audio is decoded, its quiet edges are cut (a buffer with no loud frame is silence: "" without
running the model), resampled to 16 kHz in one soxr call at high quality (no streaming delay to
pay), and transcribed. Finals come out in the order of the ``finalize`` calls.

The pool runs ``workers`` transcriptions at once and lets ``max_queue`` more wait. Past that a
``finalize`` is refused: a warning is logged and the final is empty, at once. A refused utterance
then looks like noise to the turn logic, which keeps listening; a ``ProviderError`` instead would
end the call (``Call._read_transcripts`` treats it as "the agent can no longer hear").

Models load once per process per configuration (``load_engine``, thread-safe, off the event
loop); the server calls ``warm_up`` before the first call so no caller waits for a load.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Hashable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np
import soxr

from ringline.engine.audio.clock import Clock
from ringline.engine.audio.formats import PCM16_16K, AudioFormat
from ringline.engine.audio.g711 import decode
from ringline.engine.errors import ProviderError
from ringline.engine.stt.base import Transcript

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
"""What both models hear: float32 mono 16 kHz in [-1, 1]."""
BUFFER_S = 30.0
"""Audio kept per utterance (the newest); older audio is dropped."""
_SLACK_S = 5.0
"""The buffer may grow this far past ``BUFFER_S`` before its head is cut (one move per 5 s)."""
QUIET_RMS = 150.0
"""A 20 ms frame quieter than this (PCM16 RMS, about -47 dBFS) is not speech."""
MARGIN_S = 0.5
"""Audio kept on each side of the loud frames (soft onsets and endings are quiet)."""
_FRAME_S = 0.02

T = TypeVar("T")


class Recognizer(Protocol):
    def transcribe(self, audio: np.ndarray) -> str:
        """The words of one utterance ("" if none): ``audio`` is float32 mono 16 kHz in [-1, 1].

        Runs on a worker thread, possibly on several at once: must be thread-safe."""
        ...


def speech_span(pcm: np.ndarray, rate: int) -> slice | None:
    """The part of ``pcm`` (int16) from its first to its last loud frame plus ``MARGIN_S`` on
    each side, or None when no frame is loud."""
    frame = int(rate * _FRAME_S)
    count = len(pcm) // frame
    if count == 0:
        return None
    frames = pcm[: count * frame].reshape(count, frame).astype(np.float32)
    loud = np.flatnonzero(np.sqrt(np.mean(frames * frames, axis=1)) > QUIET_RMS)
    if loud.size == 0:
        return None
    margin = int(rate * MARGIN_S)
    return slice(max(0, int(loud[0]) * frame - margin), min(len(pcm), (int(loud[-1]) + 1) * frame + margin))


def model_input(audio: bytes | bytearray, fmt: AudioFormat) -> np.ndarray | None:
    """``audio`` in ``fmt`` as the models want it, cut to its loud part; None for silence."""
    pcm = np.frombuffer(decode(audio[: len(audio) - len(audio) % fmt.encoding.sample_width], fmt.encoding), np.int16)
    span = speech_span(pcm, fmt.sample_rate)
    if span is None:
        return None
    samples = pcm[span].astype(np.float32) / 32768.0
    if fmt.sample_rate != SAMPLE_RATE:
        samples = soxr.resample(samples, fmt.sample_rate, SAMPLE_RATE, quality="HQ")
    return np.ascontiguousarray(samples, dtype=np.float32)


class InferencePool:
    """``workers`` threads and a bound on the jobs in flight (running or waiting)."""

    def __init__(self, name: str, workers: int, max_queue: int) -> None:
        self.name = name
        self.workers = workers
        self.limit = workers + max_queue
        self._executor = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix=f"stt-{name}")
        self._lock = threading.Lock()
        self._in_flight = 0
        self.refused = 0
        """Jobs refused since start (a process-wide count for metrics)."""

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def submit(self, fn: Callable[..., T], *args: Any) -> concurrent.futures.Future[T] | None:
        """Run ``fn(*args)`` on a worker, or return None (and count a refusal) when full."""
        with self._lock:
            if self._in_flight >= self.limit:
                self.refused += 1
                return None
            self._in_flight += 1
        try:
            future = self._executor.submit(fn, *args)
        except BaseException:
            self._done(None)
            raise
        future.add_done_callback(self._done)  # also runs when a waiting job is cancelled
        return future

    def _done(self, _: object) -> None:
        with self._lock:
            self._in_flight -= 1


@dataclass(frozen=True, eq=False, slots=True)
class Engine:
    """A loaded model and the pool that runs it: one per configuration per process."""

    name: str
    recognizer: Recognizer
    pool: InferencePool
    load_s: float

    def run(self, audio: bytes | bytearray, fmt: AudioFormat) -> str:
        """Transcribe one buffered utterance (on a worker thread)."""
        samples = model_input(audio[-fmt.bytes_for(int(BUFFER_S * 1000)) :], fmt)
        return "" if samples is None else self.recognizer.transcribe(samples)


_engines: dict[Hashable, Engine] = {}
_engines_lock = threading.Lock()


def load_engine(config: Any, load: Callable[[Any], Recognizer]) -> Engine:
    """The engine of ``config`` (a frozen, hashable provider config), loading it on first use.
    Blocks: call it off the event loop. Loads one model at a time."""
    engine = _engines.get(config)
    if engine is not None:
        return engine
    with _engines_lock:
        engine = _engines.get(config)
        if engine is None:
            started = time.perf_counter()
            recognizer = load(config)
            load_s = time.perf_counter() - started
            pool = InferencePool(config.provider, config.workers, config.max_queue)
            engine = _engines[config] = Engine(config.provider, recognizer, pool, load_s)
            log.info("%s model loaded in %.2f s", config.provider, load_s)
    return engine


async def shared_engine(config: Any, load: Callable[[Any], Recognizer]) -> Engine:
    engine = _engines.get(config)
    if engine is None:
        engine = await asyncio.to_thread(load_engine, config, load)
    return engine


async def warm_up_engine(config: Any, load: Callable[[Any], Recognizer]) -> Engine:
    """Load the model and run one dummy transcription on the pool (first runs are slow)."""
    engine = await shared_engine(config, load)
    t = np.arange(SAMPLE_RATE, dtype=np.float32) / SAMPLE_RATE
    dummy = (0.1 * np.sin(2 * np.pi * 220 * t) * np.sin(np.pi * t)).astype(np.float32)
    future = engine.pool.submit(engine.recognizer.transcribe, dummy)
    if future is not None:
        await asyncio.wrap_future(future)
    return engine


def session_format(offered: AudioFormat) -> AudioFormat:
    """The call's own format when it is mono (decoded and resampled per utterance on a worker),
    else PCM16 16 kHz."""
    return offered if offered.channels == 1 else PCM16_16K


class EmbeddedStt:
    """``Stt`` of an embedded model: sessions of one configuration share its engine."""

    def __init__(self, config: Any, clock: Clock, load: Callable[[Any], Recognizer]) -> None:
        self._config = config
        self._clock = clock  # finals carry no timings yet
        self._load = load

    async def open(self, offered: AudioFormat) -> EmbeddedSttSession:
        engine = await shared_engine(self._config, self._load)
        return EmbeddedSttSession(engine, session_format(offered))


_REFUSED = ""
"""The final of an utterance the pool refused (or of no audio at all)."""


class EmbeddedSttSession:
    """One call's recognition: ``send`` buffers, ``finalize`` transcribes the buffer on the pool."""

    def __init__(self, engine: Engine, fmt: AudioFormat) -> None:
        self.engine = engine
        self.format = fmt
        self._buffer = bytearray()
        self._keep = fmt.bytes_for(int(BUFFER_S * 1000))
        self._cut_at = self._keep + fmt.bytes_for(int(_SLACK_S * 1000))
        self._results: asyncio.Queue[asyncio.Future[str] | str | None] = asyncio.Queue()
        """Finals in ``finalize`` order: a transcription under way, or a ready text."""
        self._under_way: dict[asyncio.Future[str], concurrent.futures.Future[str]] = {}
        """Transcriptions not yet done, by the future the iterator awaits."""
        self._closed = False

    async def send(self, audio: bytes) -> None:
        buffer = self._buffer
        buffer += audio
        if len(buffer) > self._cut_at:
            del buffer[: len(buffer) - self._keep]

    def speech(self, active: bool) -> None:
        pass  # the audio is transcribed whole at finalize: nothing to pace

    async def finalize(self) -> None:
        if self._closed:
            return
        audio, self._buffer = self._buffer, bytearray()  # handed over whole: no copy on the loop
        if not audio:
            self._results.put_nowait(_REFUSED)
            return
        engine = self.engine
        future = engine.pool.submit(engine.run, audio, self.format)
        if future is None:
            log.warning(
                "%s: %d utterances in flight (workers + max_queue): refused %.1f s of audio, final is empty",
                engine.name,
                engine.pool.limit,
                self.format.duration(len(audio)),
            )
            self._results.put_nowait(_REFUSED)
            return
        wrapped = asyncio.wrap_future(future)
        self._under_way[wrapped] = future
        wrapped.add_done_callback(self._forget)
        self._results.put_nowait(wrapped)

    def _forget(self, wrapped: asyncio.Future[str]) -> None:
        self._under_way.pop(wrapped, None)

    async def __aiter__(self) -> AsyncIterator[Transcript]:
        while (item := await self._results.get()) is not None:
            if isinstance(item, str):
                text = item
            else:
                await asyncio.wait((item,))  # returns on cancellation too (by aclose)
                if item.cancelled():
                    return
                exc = item.exception()
                if exc is not None:
                    log.error("%s transcription failed", self.engine.name, exc_info=exc)
                    raise ProviderError(f"{self.engine.name} transcription failed: {exc!r}") from exc
                text = item.result()
            if self._closed:
                return
            yield Transcript(text, True)

    async def aclose(self) -> None:
        """End the session: finals not yet delivered are dropped, waiting transcriptions cancelled."""
        self._closed = True
        self._buffer.clear()
        for wrapped, future in tuple(self._under_way.items()):
            future.cancel()  # frees its place in the pool now if it has not started
            wrapped.cancel()
        self._results.put_nowait(None)
