"""G.711 mu-law and A-law, bit-exact with the reference coder (Sun ``g711.c``, as in ``audioop``).

Every conversion is one table lookup a sample. The tables are built once at import, vectorized,
from the reference algorithm: the encoder reduces a sample to 14 (mu-law) or 13 (A-law) bits,
finds its segment (exponent) by searching the segment end points, and packs sign, segment and
four mantissa bits; the decoder inverts that. Encode tables have 65536 entries, indexed by the
uint16 view of the PCM16 sample, so encoding needs no arithmetic at all.

PCM16 is signed 16-bit little-endian, as everywhere in Ringline.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from .formats import Encoding

__all__ = [
    "ALAW_SILENCE",
    "MULAW_SILENCE",
    "alaw_decode",
    "alaw_encode",
    "decode",
    "encode",
    "ulaw_decode",
    "ulaw_encode",
]

MULAW_SILENCE = 0xFF  # the mu-law code of PCM 0
ALAW_SILENCE = 0xD5  # the A-law code of PCM 0

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
for _table in (_ULAW_ENCODE, _ULAW_DECODE, _ALAW_ENCODE, _ALAW_DECODE):
    _table.flags.writeable = False
del _table

# Bound methods and dtypes looked up once: these functions run for every 20 ms frame.
_frombuffer = np.frombuffer
_U8 = np.dtype(np.uint8)
_U16 = np.dtype("<u2")
_ulaw_decode_take = _ULAW_DECODE.take
_ulaw_encode_take = _ULAW_ENCODE.take
_alaw_decode_take = _ALAW_DECODE.take
_alaw_encode_take = _ALAW_ENCODE.take


def _odd_length(pcm: bytes) -> ValueError:
    return ValueError(f"PCM16 audio must have an even number of bytes, got {len(pcm)}")


def ulaw_decode(data: bytes) -> bytes:
    """mu-law bytes to PCM16 little-endian."""
    return _ulaw_decode_take(_frombuffer(data, _U8)).tobytes()


def ulaw_encode(pcm: bytes) -> bytes:
    """PCM16 little-endian to mu-law bytes."""
    if len(pcm) & 1:
        raise _odd_length(pcm)
    return _ulaw_encode_take(_frombuffer(pcm, _U16)).tobytes()


def alaw_decode(data: bytes) -> bytes:
    """A-law bytes to PCM16 little-endian."""
    return _alaw_decode_take(_frombuffer(data, _U8)).tobytes()


def alaw_encode(pcm: bytes) -> bytes:
    """PCM16 little-endian to A-law bytes."""
    if len(pcm) & 1:
        raise _odd_length(pcm)
    return _alaw_encode_take(_frombuffer(pcm, _U16)).tobytes()


def decode(data: bytes, encoding: Encoding) -> bytes:
    """Audio in ``encoding`` to PCM16. PCM16 input is returned as is."""
    if encoding is Encoding.MULAW:
        return ulaw_decode(data)
    if encoding is Encoding.ALAW:
        return alaw_decode(data)
    if encoding is Encoding.PCM16:
        return data
    raise ValueError(f"unsupported encoding: {encoding!r}")


def encode(pcm: bytes, encoding: Encoding) -> bytes:
    """PCM16 to ``encoding``. With ``Encoding.PCM16`` the input is returned as is."""
    if encoding is Encoding.MULAW:
        return ulaw_encode(pcm)
    if encoding is Encoding.ALAW:
        return alaw_encode(pcm)
    if encoding is Encoding.PCM16:
        return pcm
    raise ValueError(f"unsupported encoding: {encoding!r}")
