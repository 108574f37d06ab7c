"""The ITU-T G.711 reference coder (Sun ``g711.c``), as NumPy tables built from the algorithm.

An oracle for the tests, independent of the C codec Ringline runs: the encoder reduces a sample
to 14 (mu-law) or 13 (A-law) bits, finds its segment by searching the segment end points, and
packs sign, segment and four mantissa bits; the decoder inverts that.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

_SIGN_BIT = 0x80
_QUANT_MASK = 0x0F
_SEG_SHIFT = 4
_SEG_MASK = 0x70

# Upper end of each segment's magnitude range.
_SEG_UEND = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF])
_SEG_AEND = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF])
_ULAW_BIAS = 0x84
_ULAW_CLIP = 8159  # largest 14-bit magnitude mu-law represents


def _all_samples() -> npt.NDArray[np.int32]:
    """Every int16 value, placed at the index of its uint16 view (0, 1, ..., 32767, -32768, ..., -1)."""
    return np.arange(65536, dtype=np.uint16).view(np.int16).astype(np.int32)


def _segment(magnitude: npt.NDArray[np.int32], seg_end: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Index of the first segment whose end is >= magnitude; ``len(seg_end)`` when none is."""
    return np.searchsorted(seg_end, magnitude, side="left")


def _build_ulaw_encode() -> npt.NDArray[np.uint8]:
    pcm = _all_samples() >> 2  # 14-bit
    negative = pcm < 0
    mask = np.where(negative, 0x7F, 0xFF)
    magnitude = np.minimum(np.abs(pcm), _ULAW_CLIP) + (_ULAW_BIAS >> 2)
    seg = _segment(magnitude, _SEG_UEND)
    code = (seg << _SEG_SHIFT) | ((magnitude >> (seg + 1)) & _QUANT_MASK)
    code = np.where(seg >= 8, 0x7F, code)  # out of range: maximum code
    return (code ^ mask).astype(np.uint8)


def _build_ulaw_decode() -> npt.NDArray[np.int16]:
    code = ~np.arange(256, dtype=np.int32) & 0xFF
    t = (((code & _QUANT_MASK) << 3) + _ULAW_BIAS) << ((code & _SEG_MASK) >> _SEG_SHIFT)
    pcm = np.where(code & _SIGN_BIT, _ULAW_BIAS - t, t - _ULAW_BIAS)
    return pcm.astype("<i2")


def _build_alaw_encode() -> npt.NDArray[np.uint8]:
    pcm = _all_samples() >> 3  # 13-bit
    negative = pcm < 0
    mask = np.where(negative, 0x55, 0xD5)
    magnitude = np.where(negative, -pcm - 1, pcm)
    seg = _segment(magnitude, _SEG_AEND)
    mantissa = np.where(seg < 2, magnitude >> 1, magnitude >> seg) & _QUANT_MASK
    code = np.where(seg >= 8, 0x7F, (seg << _SEG_SHIFT) | mantissa)  # out of range: maximum code
    return (code ^ mask).astype(np.uint8)


def _build_alaw_decode() -> npt.NDArray[np.int16]:
    code = np.arange(256, dtype=np.int32) ^ 0x55
    seg = (code & _SEG_MASK) >> _SEG_SHIFT
    t = (code & _QUANT_MASK) << 4
    t = np.where(seg == 0, t + 8, (t + 0x108) << np.maximum(seg - 1, 0))
    pcm = np.where(code & _SIGN_BIT, t, -t)
    return pcm.astype("<i2")


_ULAW_ENCODE = _build_ulaw_encode()
_ULAW_DECODE = _build_ulaw_decode()
_ALAW_ENCODE = _build_alaw_encode()
_ALAW_DECODE = _build_alaw_decode()


def reference_ulaw_encode(pcm: bytes) -> bytes:
    return _ULAW_ENCODE.take(np.frombuffer(pcm, "<u2")).tobytes()


def reference_ulaw_decode(data: bytes) -> bytes:
    return _ULAW_DECODE.take(np.frombuffer(data, np.uint8)).tobytes()


def reference_alaw_encode(pcm: bytes) -> bytes:
    return _ALAW_ENCODE.take(np.frombuffer(pcm, "<u2")).tobytes()


def reference_alaw_decode(data: bytes) -> bytes:
    return _ALAW_DECODE.take(np.frombuffer(data, np.uint8)).tobytes()
