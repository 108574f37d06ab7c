"""Streaming resampling and format conversion."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import soxr

from ringline.engine.audio import (
    ALAW_8K,
    MULAW_8K,
    PCM16_8K,
    PCM16_16K,
    AudioConverter,
    AudioFormat,
    Encoding,
    Resampler,
    alaw_encode,
    frame_bytes,
    ulaw_decode,
    ulaw_encode,
)

RATES = [8000, 16000, 22050, 24000]
RATE_PAIRS = [(a, b) for a, b in itertools.permutations(RATES, 2)]


def tone(rate: int, seconds: float, freq: float = 440.0, amplitude: float = 0.4) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return np.round(np.sin(2 * np.pi * freq * t) * amplitude * 32767).astype("<i2")


def samples(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype="<i2").astype(np.int64)


def stream(resampler: Resampler, pcm: bytes, sizes: list[int]) -> bytes:
    """Feed ``pcm`` in chunks cycling through ``sizes`` (in samples), then flush."""
    out = bytearray()
    offset = 0
    for size in itertools.cycle(sizes):
        if offset >= len(pcm):
            break
        out += resampler.process(pcm[offset : offset + 2 * size])
        offset += 2 * size
    out += resampler.flush()
    return bytes(out)


def dominant_frequency(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[np.argmax(spectrum)])


@pytest.mark.parametrize(("src", "dst"), RATE_PAIRS)
def test_length_ratio_over_many_frames(src: int, dst: int) -> None:
    resampler = Resampler(src, dst)
    frame = tone(src, 0.02).tobytes()  # 20 ms
    frames = 100
    produced = 0
    for i in range(1, frames + 1):
        produced += len(resampler.process(frame)) // 2
        # Never ahead of the input, and never more than 200 ms behind it.
        expected_so_far = i * len(frame) // 2 * dst / src
        assert produced <= expected_so_far + 1
        assert produced >= expected_so_far - dst * 0.2
    produced += len(resampler.flush()) // 2
    assert produced == round(frames * len(frame) // 2 * dst / src)


@pytest.mark.parametrize(("src", "dst"), RATE_PAIRS)
def test_sine_frequency_preserved(src: int, dst: int) -> None:
    freq = 1000.0  # below every Nyquist in RATES; 1 s of signal gives 1 Hz bins
    out = samples(stream(Resampler(src, dst), tone(src, 1.0, freq).tobytes(), [160]))
    assert len(out) == dst
    assert dominant_frequency(out, dst) == pytest.approx(freq, abs=1.0)


@pytest.mark.parametrize(("src", "dst"), RATE_PAIRS)
def test_odd_size_chunks_match_one_shot(src: int, dst: int) -> None:
    signal = tone(src, 0.5, 700.0)
    one_shot = soxr.resample(signal, src, dst).astype(np.int64)
    chunked = samples(stream(Resampler(src, dst), signal.tobytes(), [1, 7, 13, 160, 333, 2]))
    assert len(chunked) == len(one_shot)
    # soxr dithers int16 output: allow a few LSB against a peak of ~13100.
    assert np.abs(chunked - one_shot).max() <= 3


@pytest.mark.parametrize("quality", ["QQ", "LQ", "HQ", "VHQ"])
def test_chunk_boundaries_do_not_click(quality: str) -> None:
    # Streamed in 20 ms frames, 8 kHz -> 16 kHz of a 300 Hz tone is the 16 kHz tone itself, to a
    # few LSB, delay compensated. Resampling each frame on its own is off by ~280 at the seams.
    out = samples(stream(Resampler(8000, 16000, quality=quality), tone(8000, 0.5, 300.0).tobytes(), [160]))
    ideal = tone(16000, 0.5, 300.0).astype(np.int64)
    assert len(out) == len(ideal)
    assert np.abs(out - ideal)[400:-400].max() <= 8


def test_same_rate_is_passthrough() -> None:
    resampler = Resampler(16000, 16000)
    chunk = tone(16000, 0.02).tobytes()
    assert resampler.passthrough
    assert resampler.process(chunk) is chunk
    assert resampler.flush() == b""


def test_flush_starts_a_fresh_stream() -> None:
    resampler = Resampler(8000, 16000)
    signal = tone(8000, 0.2).tobytes()
    first = stream(resampler, signal, [160])
    second = stream(resampler, signal, [160])
    assert len(first) == len(second) == 2 * len(signal)
    assert np.abs(samples(first) - samples(second)).max() <= 3


def test_odd_length_pcm_raises() -> None:
    with pytest.raises(ValueError) as info:
        Resampler(8000, 16000).process(b"\x00\x00\x00")
    assert str(info.value) == "PCM16 audio must have an even number of bytes, got 3"


def test_non_positive_rate_raises() -> None:
    with pytest.raises(ValueError) as info:
        Resampler(0, 8000)
    assert str(info.value) == "sample rate must be positive, got 0"


@pytest.mark.parametrize("fmt", [PCM16_8K, MULAW_8K, ALAW_8K, PCM16_16K])
def test_identity_conversion_returns_input(fmt: AudioFormat) -> None:
    converter = AudioConverter(fmt, fmt)
    data = bytes(range(160))
    assert converter.identity
    assert converter.convert(data) is data
    assert converter.flush() == b""


def test_mulaw_to_alaw_same_rate_is_decode_then_encode() -> None:
    every = bytes(range(256))
    assert AudioConverter(MULAW_8K, ALAW_8K).convert(every) == alaw_encode(ulaw_decode(every))


def test_mulaw_8k_to_pcm16_16k_and_back() -> None:
    up = AudioConverter(MULAW_8K, PCM16_16K)
    down = AudioConverter(PCM16_16K, MULAW_8K)
    source = ulaw_encode(tone(8000, 0.5, 500.0).tobytes())
    frame = frame_bytes(MULAW_8K)
    wide = b"".join(up.convert(source[i : i + frame]) for i in range(0, len(source), frame)) + up.flush()
    assert len(wide) == 2 * 2 * len(source)  # twice the samples, two bytes each
    assert dominant_frequency(samples(wide), 16000) == pytest.approx(500.0, abs=2.0)
    back = down.convert(wide) + down.flush()
    assert len(back) == len(source)
    restored = samples(ulaw_decode(back))
    original = samples(ulaw_decode(source))
    # Two filters and two G.711 quantizations: close, sample by sample, away from the edges.
    error = np.abs(restored - original)[200:-200]
    assert error.max() < 0.05 * np.abs(original).max()


def test_pcm16_24k_to_mulaw_8k() -> None:
    converter = AudioConverter(AudioFormat(Encoding.PCM16, 24000), MULAW_8K)
    chunk = tone(24000, 0.02).tobytes()
    out = b"".join(converter.convert(chunk) for _ in range(50)) + converter.flush()
    assert len(out) == 50 * 160  # one byte a sample at 8 kHz


def test_pcm16_odd_length_raises_in_converter() -> None:
    for dst in (PCM16_8K, MULAW_8K, PCM16_16K):
        with pytest.raises(ValueError) as info:
            AudioConverter(PCM16_8K, dst).convert(b"\x00" * 5)
        assert str(info.value) == "PCM16 audio must have an even number of bytes, got 5"


@pytest.mark.parametrize(
    ("src", "dst"),
    [(AudioFormat(Encoding.PCM16, 8000, channels=2), PCM16_8K), (MULAW_8K, AudioFormat(Encoding.MULAW, 8000, 2))],
)
def test_stereo_raises(src: AudioFormat, dst: AudioFormat) -> None:
    with pytest.raises(ValueError) as info:
        AudioConverter(src, dst)
    assert str(info.value) == "only mono audio is supported, got 2 channels"
