"""Fixed-size framing of audio byte streams."""

from __future__ import annotations

import array

import pytest

from ringline.engine.audio import (
    ALAW_8K,
    MULAW_8K,
    PCM16_8K,
    PCM16_16K,
    AudioFormat,
    Encoding,
    Framer,
    frame_bytes,
    silence,
    silence_byte,
    ulaw_decode,
)


def test_frame_bytes_for_20_ms() -> None:
    assert frame_bytes(MULAW_8K) == 160
    assert frame_bytes(ALAW_8K) == 160
    assert frame_bytes(PCM16_8K) == 320
    assert frame_bytes(PCM16_16K) == 640
    assert frame_bytes(AudioFormat(Encoding.PCM16, 24000)) == 960
    assert frame_bytes(PCM16_8K, ms=10) == 160


def test_frame_bytes_rejects_frames_without_a_sample() -> None:
    with pytest.raises(ValueError) as info:
        frame_bytes(AudioFormat(Encoding.MULAW, 100), ms=5)
    assert str(info.value).startswith("a 5 ms frame of AudioFormat(")
    assert str(info.value).endswith(") holds no whole sample")


def test_silence_bytes() -> None:
    assert silence_byte(Encoding.PCM16) == 0x00
    assert silence_byte(Encoding.MULAW) == 0xFF
    assert silence_byte(Encoding.ALAW) == 0xD5
    assert silence(MULAW_8K) == b"\xff" * 160
    assert ulaw_decode(silence(MULAW_8K)) == silence(PCM16_8K)


def test_exact_frames_pass_through() -> None:
    framer = Framer(4)
    frame = b"abcd"
    assert framer.feed(frame) == [frame]
    assert framer.feed(frame)[0] is frame  # no copy in the common case
    assert framer.pending == 0


def test_remainder_is_kept_across_feeds() -> None:
    framer = Framer(4)
    assert framer.feed(b"ab") == []
    assert framer.pending == 2
    assert framer.feed(b"c") == []
    assert framer.feed(b"defghij") == [b"abcd", b"efgh"]
    assert framer.pending == 2
    assert framer.feed(b"klmnopqrst") == [b"ijkl", b"mnop", b"qrst"]
    assert framer.pending == 0
    assert framer.feed(b"") == []


def test_every_split_of_a_stream_gives_the_same_frames() -> None:
    data = bytes(range(256)) * 3
    expected = [data[i : i + 160] for i in range(0, 640, 160)]
    for step in (1, 3, 7, 159, 160, 161, 319, 500, 768):
        framer = Framer(160)
        frames: list[bytes] = []
        for i in range(0, len(data), step):
            frames += framer.feed(data[i : i + step])
        assert frames == expected, step
        assert framer.pending == len(data) - 640
        assert framer.flush(pad=False) == data[640:]


def test_accepts_bytearray_and_memoryview() -> None:
    framer = Framer(3)
    assert framer.feed(bytearray(b"abcd")) == [b"abc"]
    assert framer.feed(memoryview(b"efghi")) == [b"def", b"ghi"]
    frames = framer.feed(bytearray(b"xyz"))
    assert frames == [b"xyz"]
    assert type(frames[0]) is bytes


def test_accepts_a_memoryview_of_wider_items() -> None:
    samples = array.array("h", [1, -1, 2])  # PCM16 on a little-endian host
    framer = Framer(4)
    assert framer.feed(memoryview(samples)) == [samples.tobytes()[:4]]
    assert framer.flush(pad=False) == samples.tobytes()[4:]


def test_frames_do_not_alias_the_input() -> None:
    framer = Framer(2)
    source = bytearray(b"abcd")
    frames = framer.feed(source)
    source[:] = b"zzzz"
    assert frames == [b"ab", b"cd"]


@pytest.mark.parametrize(
    ("fmt", "fill"),
    [(PCM16_8K, b"\x00"), (MULAW_8K, b"\xff"), (ALAW_8K, b"\xd5")],
)
def test_flush_pads_with_the_encodings_silence(fmt: AudioFormat, fill: bytes) -> None:
    framer = Framer.for_format(fmt)
    size = frame_bytes(fmt)
    assert framer.frame_size == size
    assert framer.feed(b"\x12" * (size + 10)) == [b"\x12" * size]
    frame = framer.flush(pad=True)
    assert frame == b"\x12" * 10 + fill * (size - 10)
    assert framer.pending == 0
    assert framer.flush(pad=True) == b""


def test_flush_without_padding_returns_the_partial_frame() -> None:
    framer = Framer(160, silence=0xFF)
    framer.feed(b"\x01" * 170)
    assert framer.flush(pad=False) == b"\x01" * 10
    assert framer.flush(pad=False) == b""


def test_clear_drops_the_partial_frame() -> None:
    framer = Framer(4)
    framer.feed(b"abcdef")
    framer.clear()
    assert framer.pending == 0
    assert framer.feed(b"wxyz") == [b"wxyz"]


@pytest.mark.parametrize(
    ("size", "message"), [(0, "frame size must be positive, got 0"), (-160, "frame size must be positive, got -160")]
)
def test_bad_frame_size_raises(size: int, message: str) -> None:
    with pytest.raises(ValueError) as info:
        Framer(size)
    assert str(info.value) == message


def test_bad_silence_raises() -> None:
    with pytest.raises(ValueError) as info:
        Framer(160, silence=256)
    assert str(info.value) == "silence must be a byte value, got 256"
