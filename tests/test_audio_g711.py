"""G.711 against the reference algorithm (every input, ``g711_reference``) and hand-checked golden values."""

from __future__ import annotations

import numpy as np
import pytest

from ringline.engine.audio import (
    ALAW_SILENCE,
    MULAW_SILENCE,
    Encoding,
    alaw_decode,
    alaw_encode,
    decode,
    encode,
    ulaw_decode,
    ulaw_encode,
)
from tests.g711_reference import (
    reference_alaw_decode,
    reference_alaw_encode,
    reference_ulaw_decode,
    reference_ulaw_encode,
)

EVERY_SAMPLE = np.arange(-32768, 32768, dtype="<i2").tobytes()  # all 65536 PCM16 values
EVERY_BYTE = bytes(range(256))


def pcm(*samples: int) -> bytes:
    return np.array(samples, dtype="<i2").tobytes()


def test_ulaw_encode_every_sample_matches_the_reference() -> None:
    assert ulaw_encode(EVERY_SAMPLE) == reference_ulaw_encode(EVERY_SAMPLE)


def test_alaw_encode_every_sample_matches_the_reference() -> None:
    assert alaw_encode(EVERY_SAMPLE) == reference_alaw_encode(EVERY_SAMPLE)


def test_ulaw_decode_every_byte_matches_the_reference() -> None:
    assert ulaw_decode(EVERY_BYTE) == reference_ulaw_decode(EVERY_BYTE)


def test_alaw_decode_every_byte_matches_the_reference() -> None:
    assert alaw_decode(EVERY_BYTE) == reference_alaw_decode(EVERY_BYTE)


@pytest.mark.parametrize(
    ("sample", "code"),
    [
        (0, 0xFF),
        (-1, 0x7E),  # -1 >> 2 is -1: the smallest negative step
        (32767, 0x80),  # clipped: largest positive code
        (-32768, 0x00),  # largest negative code
        (1000, 0xCE),
        (-1000, 0x4E),
    ],
)
def test_ulaw_encode_golden(sample: int, code: int) -> None:
    assert ulaw_encode(pcm(sample)) == bytes([code])


@pytest.mark.parametrize(
    ("code", "sample"),
    [(0xFF, 0), (0x7F, 0), (0x80, 32124), (0x00, -32124), (0xCE, 988), (0x7E, -8)],
)
def test_ulaw_decode_golden(code: int, sample: int) -> None:
    assert ulaw_decode(bytes([code])) == pcm(sample)


@pytest.mark.parametrize(
    ("sample", "code"),
    [(0, 0xD5), (-1, 0x55), (32767, 0xAA), (-32768, 0x2A), (1000, 0xFA), (-1000, 0x7A)],
)
def test_alaw_encode_golden(sample: int, code: int) -> None:
    assert alaw_encode(pcm(sample)) == bytes([code])


@pytest.mark.parametrize(
    ("code", "sample"),
    [(0xD5, 8), (0x55, -8), (0xAA, 32256), (0x2A, -32256), (0xFA, 1008)],
)
def test_alaw_decode_golden(code: int, sample: int) -> None:
    assert alaw_decode(bytes([code])) == pcm(sample)


def test_silence_constants_are_the_codes_of_zero() -> None:
    assert ulaw_encode(pcm(0)) == bytes([MULAW_SILENCE])
    assert alaw_encode(pcm(0)) == bytes([ALAW_SILENCE])


@pytest.mark.parametrize(("enc", "dec"), [(ulaw_encode, ulaw_decode), (alaw_encode, alaw_decode)])
def test_decode_then_encode_is_identity_on_codes(enc, dec) -> None:
    # Every code decodes to a value that encodes back to the same code, except mu-law's
    # negative zero 0x7F, which decodes to 0 and encodes as positive zero 0xFF.
    expected = bytearray(EVERY_BYTE)
    if enc is ulaw_encode:
        expected[0x7F] = 0xFF
    assert enc(dec(EVERY_BYTE)) == bytes(expected)


def test_frame_lengths() -> None:
    frame = bytes(range(160))
    assert len(ulaw_decode(frame)) == 320
    assert len(alaw_decode(frame)) == 320
    assert len(ulaw_encode(bytes(320))) == 160
    assert len(alaw_encode(bytes(320))) == 160
    assert ulaw_decode(b"") == b""
    assert ulaw_encode(b"") == b""


def test_accepts_bytearray_and_memoryview() -> None:
    data = bytes(range(0, 256, 7))
    assert ulaw_decode(bytearray(data)) == ulaw_decode(data)
    assert alaw_encode(memoryview(EVERY_SAMPLE)[:640]) == alaw_encode(EVERY_SAMPLE[:640])


@pytest.mark.parametrize("fn", [ulaw_encode, alaw_encode])
def test_encode_odd_length_pcm_raises(fn) -> None:
    with pytest.raises(ValueError) as info:
        fn(b"\x00\x01\x02")
    assert str(info.value) == "PCM16 audio must have an even number of bytes, got 3"


def test_dispatch_on_encoding() -> None:
    frame = bytes(range(160))
    assert decode(frame, Encoding.MULAW) == ulaw_decode(frame)
    assert decode(frame, Encoding.ALAW) == alaw_decode(frame)
    assert decode(frame, Encoding.PCM16) is frame
    samples = EVERY_SAMPLE[:320]
    assert encode(samples, Encoding.MULAW) == ulaw_encode(samples)
    assert encode(samples, Encoding.ALAW) == alaw_encode(samples)
    assert encode(samples, Encoding.PCM16) is samples
