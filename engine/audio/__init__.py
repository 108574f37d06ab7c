"""Audio primitives of the per-frame hot path: formats, G.711, resampling, framing, clocks."""

from .clock import Clock, FakeClock, LoopClock
from .formats import ALAW_8K, FRAME_MS, MULAW_8K, PCM16_8K, PCM16_16K, AudioChunk, AudioFormat, Encoding
from .framing import Framer, frame_bytes, silence, silence_byte
from .g711 import (
    ALAW_SILENCE,
    MULAW_SILENCE,
    alaw_decode,
    alaw_encode,
    decode,
    encode,
    ulaw_decode,
    ulaw_encode,
)
from .resample import AudioConverter, Resampler

__all__ = [
    "ALAW_8K",
    "ALAW_SILENCE",
    "FRAME_MS",
    "MULAW_8K",
    "MULAW_SILENCE",
    "PCM16_16K",
    "PCM16_8K",
    "AudioChunk",
    "AudioConverter",
    "AudioFormat",
    "Clock",
    "Encoding",
    "FakeClock",
    "Framer",
    "LoopClock",
    "Resampler",
    "alaw_decode",
    "alaw_encode",
    "decode",
    "encode",
    "frame_bytes",
    "silence",
    "silence_byte",
    "ulaw_decode",
    "ulaw_encode",
]
