"""Ambient background sound under the agent's audio (``[agents.NAME.ambience]``).

An ``AmbienceLoop`` is the sound at one wire format and level, made once per (sound, format,
level) and shared by every call that uses it: ``office`` is generated (pink noise shaped like a
quiet room; the inverse FFT of a shaped spectrum is periodic, so the loop has no seam), anything
else is read from a WAV file (mixed to mono, resampled with soxr, its seam crossfaded). Either way
it is scaled to an RMS level. An ``AmbienceBed`` is one call's place in a loop: frames of the
ambience alone while the agent is silent (sliced from the pre-encoded loop, no per-frame work),
or the agent's audio with the ambience added (decode, saturating add, encode: ~1 us a frame).
"""

from __future__ import annotations

import asyncio
import logging
import math
import warnings
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soxr

from ringline.config.behaviours import AmbienceConfig
from ringline.engine.errors import RinglineError

from .formats import AudioFormat, Encoding
from .g711 import decode, encode

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop  # saturating add in C (see g711.py on audioop and Python 3.13)

log = logging.getLogger(__name__)

LOOP_S = 8.0
"""Length of the generated loop."""
MAX_FILE_S = 120.0
"""A longer WAV file is cut to this (memory: a loop is kept twice, PCM and wire encoded)."""
CROSSFADE_S = 0.05
"""The end of a file's loop fades into its start over this long."""
_SEED = 7


class AmbienceError(RinglineError):
    """The ambience cannot be made (a file that is missing, not a 16-bit PCM WAV, or silent)."""


@dataclass(frozen=True, slots=True)
class AmbienceLoop:
    format: AudioFormat
    pcm: bytes
    """The loop as PCM16 at ``format.sample_rate``, at its level."""
    wire: bytes
    """The same in ``format.encoding``."""

    @property
    def samples(self) -> int:
        return len(self.pcm) // 2


def office(rate: int, seconds: float = LOOP_S) -> np.ndarray:
    """A quiet office's room tone: pink noise (-3 dB an octave) between ~80 Hz and ~1.5 kHz,
    a seamless loop of ``seconds``, unit RMS."""
    n = round(rate * seconds)
    rng = np.random.default_rng(_SEED)
    freqs = np.fft.rfftfreq(n, 1 / rate)
    spectrum = rng.standard_normal(freqs.size) + 1j * rng.standard_normal(freqs.size)
    shape = np.zeros(freqs.size)
    audible = freqs > 0
    f = freqs[audible]
    shape[audible] = f**-0.5 / np.sqrt(1 + (f / 1500) ** 4) / np.sqrt(1 + (80 / f) ** 4)
    signal = np.fft.irfft(spectrum * shape, n)
    return signal / _rms(signal)


def read_wav(path: str | Path, rate: int) -> np.ndarray:
    """A WAV file as a mono loop at ``rate``, its seam crossfaded, unit RMS."""
    try:
        with wave.open(str(path), "rb") as wav:
            width, channels, src_rate, frames = (
                wav.getsampwidth(),
                wav.getnchannels(),
                wav.getframerate(),
                wav.getnframes(),
            )
            if width != 2:
                raise AmbienceError(f"{path}: want 16-bit PCM, got {8 * width}-bit samples")
            raw = wav.readframes(min(frames, round(MAX_FILE_S * src_rate)))
    except (OSError, EOFError, wave.Error) as exc:
        raise AmbienceError(f"{path}: cannot read it as a WAV file: {exc}") from None
    samples = np.frombuffer(raw, dtype="<i2").astype(np.float64)
    if channels > 1:
        samples = samples[: samples.size - samples.size % channels].reshape(-1, channels).mean(axis=1)
    if src_rate != rate:
        samples = soxr.resample(samples, src_rate, rate)
    fade = round(CROSSFADE_S * rate)
    if samples.size < 4 * fade or samples.size < rate // 10:
        raise AmbienceError(f"{path}: too short for a loop ({samples.size / rate:.3f} s)")
    ramp = np.linspace(0.0, 1.0, fade, endpoint=False)
    loop = samples[:-fade].copy()
    loop[:fade] = samples[:fade] * ramp + samples[-fade:] * (1 - ramp)
    level = _rms(loop)
    if level < 1.0:
        raise AmbienceError(f"{path}: the file is silent")
    return loop / level


def _rms(signal: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(signal))))


def make_loop(sound: str, fmt: AudioFormat, level_dbfs: float) -> AmbienceLoop:
    """The ambience ``sound`` (``office`` or a WAV path) for ``fmt`` at ``level_dbfs`` RMS.
    Blocking (file I/O, FFT): run it off the event loop."""
    if fmt.channels != 1:
        raise AmbienceError(f"ambience needs mono audio, the call has {fmt.channels} channels")
    unit = office(fmt.sample_rate) if sound == "office" else read_wav(sound, fmt.sample_rate)
    scaled = np.clip(np.round(unit * 32768 * 10 ** (level_dbfs / 20)), -32768, 32767).astype("<i2")
    pcm = scaled.tobytes()
    return AmbienceLoop(fmt, pcm, encode(pcm, fmt.encoding))


_LOOPS: dict[tuple[str, AudioFormat, float], AmbienceLoop] = {}
_MAX_LOOPS = 16


async def load_loop(config: AmbienceConfig, fmt: AudioFormat) -> AmbienceLoop:
    """``make_loop`` for an agent's config, made in a thread the first time and kept: the calls of
    an agent share one loop (a file is read once per process)."""
    key = (config.sound, fmt, config.level_dbfs)
    if (loop := _LOOPS.get(key)) is None:
        loop = await asyncio.to_thread(make_loop, *key)
        if len(_LOOPS) >= _MAX_LOOPS:
            _LOOPS.pop(next(iter(_LOOPS)))
        _LOOPS[key] = loop
    return loop


class AmbienceBed:
    """One call's place in an ``AmbienceLoop``: the ambience alone, or mixed into the agent's
    audio. Every frame handed out moves the place on, so the sound runs on unbroken whether the
    agent speaks or not."""

    __slots__ = ("_encoding", "_loop", "_pcm", "_pos", "_size", "_width", "_wire")

    def __init__(self, loop: AmbienceLoop) -> None:
        self._loop = loop
        self._pcm = loop.pcm
        self._wire = loop.wire
        self._encoding = loop.format.encoding
        self._width = loop.format.encoding.sample_width
        self._size = loop.samples
        self._pos = 0

    def _take(self, samples: int) -> tuple[int, int]:
        start = self._pos
        self._pos = (start + samples) % self._size
        return start, samples

    def _slice(self, data: bytes, width: int, start: int, samples: int) -> bytes:
        end = start + samples
        if end <= self._size:
            return data[start * width : end * width]
        out = data[start * width :]
        rest = end - self._size
        while rest > self._size:  # a chunk longer than the whole loop
            out += data
            rest -= self._size
        return out + data[: rest * width]

    def frame(self, nbytes: int) -> bytes:
        """``nbytes`` of the ambience alone, in the wire encoding."""
        start, samples = self._take(nbytes // self._width)
        return self._slice(self._wire, self._width, start, samples)

    def mix(self, chunk: bytes) -> bytes:
        """``chunk`` (wire encoding) with the ambience added under it."""
        start, samples = self._take(len(chunk) // self._width)
        bed = self._slice(self._pcm, 2, start, samples)
        if self._encoding is Encoding.PCM16:
            return audioop.add(chunk, bed, 2)
        return encode(audioop.add(decode(chunk, self._encoding), bed, 2), self._encoding)


def level_dbfs(pcm: bytes) -> float:
    """RMS level of PCM16 audio in dB full scale (-inf for digital silence)."""
    value = audioop.rms(pcm, 2) if pcm else 0
    return 20 * math.log10(value / 32768) if value else -math.inf
