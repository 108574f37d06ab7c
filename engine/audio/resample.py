"""Streaming sample-rate conversion and whole-format conversion of mono audio.

``Resampler`` wraps one ``soxr.ResampleStream`` on int16: its filter state carries over from one
chunk to the next, so a stream cut into chunks of any size sounds like the unbroken signal (no
clicks at chunk boundaries). libsoxr filters in blocks, so with the higher qualities output comes
in bursts (several 20 ms frames' worth at a time) and nothing may come out for the first
~100 ms; re-frame the output with ``Framer`` and call ``flush()`` at the end of a stream to get
the tail. soxr dithers int16 output, so digital silence comes out as +-1 LSB noise.

``AudioConverter`` chains G.711 decode, resampling and encode between two ``AudioFormat``s.
"""

from __future__ import annotations

import numpy as np
import soxr

from .formats import AudioFormat, Encoding
from .g711 import _odd_length, decode, encode, translation

__all__ = ["AudioConverter", "Resampler"]

_frombuffer = np.frombuffer
_I16 = np.dtype(np.int16)
_EMPTY = np.zeros((0, 1), dtype=np.int16)


def _check_mono(fmt: AudioFormat) -> None:
    if fmt.channels != 1:
        raise ValueError(f"only mono audio is supported, got {fmt.channels} channels")


class Resampler:
    """Stateful PCM16 mono resampler for one stream. Same-rate is a passthrough.

    ``quality`` is a soxr quality name: "QQ", "LQ", "MQ", "HQ" (default) or "VHQ". "QQ" (cubic
    interpolation) gives output for every chunk with ~2 ms delay but no anti-alias filter; the
    others filter properly and deliver output in blocks.
    """

    __slots__ = ("_stream", "dst_rate", "src_rate")

    def __init__(self, src_rate: int, dst_rate: int, *, quality: str = "HQ") -> None:
        for rate in (src_rate, dst_rate):
            if rate <= 0:
                raise ValueError(f"sample rate must be positive, got {rate}")
        self.src_rate = src_rate
        self.dst_rate = dst_rate
        self._stream: soxr.ResampleStream | None = None
        if src_rate != dst_rate:
            self._stream = soxr.ResampleStream(src_rate, dst_rate, 1, dtype=np.int16, quality=quality)

    @property
    def passthrough(self) -> bool:
        return self._stream is None

    def process(self, pcm: bytes) -> bytes:
        """Resample the next chunk of the stream. May return less (or more) than one chunk's worth."""
        if len(pcm) & 1:
            raise _odd_length(pcm)
        stream = self._stream
        if stream is None:
            return pcm
        # A (n, 1) array goes straight to libsoxr; a 1-D one costs a reshape each way.
        return stream.resample_chunk(_frombuffer(pcm, _I16).reshape(-1, 1)).tobytes()

    def flush(self) -> bytes:
        """End the stream: return the samples still held in the filter, then start afresh."""
        stream = self._stream
        if stream is None:
            return b""
        tail = stream.resample_chunk(_EMPTY, last=True).tobytes()
        stream.clear()
        return tail


class AudioConverter:
    """Stateful converter of one mono stream from ``src`` to ``dst`` format.

    Decodes G.711 if needed, resamples if the rates differ, encodes to the destination encoding.
    Converting a format to itself returns the input object unchanged.
    """

    __slots__ = ("_identity", "_resampler", "_translate", "dst", "src")

    def __init__(self, src: AudioFormat, dst: AudioFormat, *, quality: str = "HQ") -> None:
        _check_mono(src)
        _check_mono(dst)
        self.src = src
        self.dst = dst
        self._identity = src == dst
        self._resampler = Resampler(src.sample_rate, dst.sample_rate, quality=quality)
        # mu-law <-> A-law at one rate is a byte-to-byte map: one bytes.translate.
        same_rate = src.sample_rate == dst.sample_rate
        self._translate = translation(src.encoding, dst.encoding) if same_rate else None

    @property
    def identity(self) -> bool:
        return self._identity

    def convert(self, data: bytes) -> bytes:
        """Convert the next chunk of the stream."""
        if self._identity:
            if len(data) & 1 and self.src.encoding is Encoding.PCM16:
                raise _odd_length(data)
            return data
        if self._translate is not None:
            return data.translate(self._translate)
        # decode() returns PCM16 as is; Resampler.process checks its length.
        pcm = self._resampler.process(decode(data, self.src.encoding))
        return encode(pcm, self.dst.encoding)

    def flush(self) -> bytes:
        """End the stream: the converted tail of the resampler (empty when rates are equal)."""
        return encode(self._resampler.flush(), self.dst.encoding)
