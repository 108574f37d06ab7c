"""The caller's speech clips: format, length, continuity; the mu-law WAV reader."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import wave

import pytest

from ringline.benchmarks import clips
from ringline.benchmarks.clips import (
    CLIPS,
    DEMO_CLIPS,
    DEMO_MAX_GAP_MS,
    MAX_GAP_MS,
    SHORT_CLIP,
    SPEECH_CLIPS,
    ClipError,
    clip_ok,
    load_clip,
    parse_ulaw_wav,
    speech_gaps_ms,
    vad_flags,
)

pytestmark = pytest.mark.timeout(10)


def ulaw_wav(samples: bytes, *, tag: int = 7, channels: int = 1, rate: int = 8000, bits: int = 8) -> bytes:
    fmt = struct.pack("<HHIIHHH", tag, channels, rate, rate * channels, channels, bits, 0)
    fact = struct.pack("<I", len(samples))
    body = (
        b"WAVE"
        + b"fmt " + struct.pack("<I", len(fmt)) + fmt
        + b"fact" + struct.pack("<I", 4) + fact
        + b"data" + struct.pack("<I", len(samples)) + samples + b"\x00" * (len(samples) & 1)
    )  # fmt: skip
    return b"RIFF" + struct.pack("<I", len(body)) + body


def test_the_clip_set() -> None:
    assert 6 <= len(SPEECH_CLIPS) <= 8
    assert SHORT_CLIP in CLIPS and SHORT_CLIP not in SPEECH_CLIPS
    assert all(CLIPS[name].text for name in CLIPS)


@pytest.mark.parametrize("name", SPEECH_CLIPS + (SHORT_CLIP,))
def test_benchmark_clip_is_continuous_speech_from_first_to_last_frame(name: str) -> None:
    audio = load_clip(name)
    seconds = len(audio) / 8000
    if name == SHORT_CLIP:
        assert 0.3 <= seconds <= 0.5
    else:
        assert 1.0 <= seconds <= 2.5
    flags = vad_flags(audio)
    assert flags[0] and flags[-1], "speech must start at sample 0 and run to the end"
    assert max(speech_gaps_ms(audio), default=0.0) <= MAX_GAP_MS
    assert clip_ok(name)[0]


@pytest.mark.parametrize("name", DEMO_CLIPS)
def test_demo_clip_never_pauses_as_long_as_a_turn_end(name: str) -> None:
    audio = load_clip(name)
    assert 1.0 <= len(audio) / 8000 <= 2.5
    assert vad_flags(audio)[-1], "speech must run to the end"
    assert max(speech_gaps_ms(audio), default=0.0) <= DEMO_MAX_GAP_MS
    assert clip_ok(name)[0]


def test_every_clip_is_a_benchmark_turn_the_back_channel_sound_or_a_demo_line() -> None:
    assert sorted(CLIPS) == sorted((*SPEECH_CLIPS, SHORT_CLIP, *DEMO_CLIPS))


def test_parse_ulaw_wav_reads_odd_sized_data_and_skips_other_chunks() -> None:
    assert parse_ulaw_wav(ulaw_wav(b"\x01\x02\x03")) == b"\x01\x02\x03"


def pcm_wav() -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x00\x00" * 4)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"OggS" + b"\x00" * 20, "not a RIFF/WAVE file"),
        (pcm_wav(), "want mu-law (tag 7) mono 8000 Hz 8-bit, got tag 1 channels 1 rate 8000 bits 16"),
        (
            ulaw_wav(b"\xff" * 4, rate=16000),
            "want mu-law (tag 7) mono 8000 Hz 8-bit, got tag 7 channels 1 rate 16000 bits 8",
        ),
        (ulaw_wav(b"\xff" * 10)[:-4], "chunk 'data' truncated: 6 of 10 bytes"),
        (ulaw_wav(b"\xff")[:12], "no data chunk"),
        (b"RIFF\x10\x00\x00\x00WAVEdata\x00\x00\x00\x00", "data chunk before fmt chunk"),
    ],
)
def test_parse_ulaw_wav_errors(data: bytes, error: str) -> None:
    with pytest.raises(ClipError) as exc:
        parse_ulaw_wav(data)
    assert str(exc.value) == error


def test_clips_module_runs_as_a_plain_script_for_make_clips_sh() -> None:
    out = subprocess.run(
        [sys.executable, clips.__file__, "table"], capture_output=True, text=True, check=True, timeout=10
    ).stdout
    rows = [line.split("|", 3) for line in out.splitlines()]
    assert [(name, int(speed), voice, text) for name, speed, voice, text in rows] == [
        (name, spec.speed, spec.voice, spec.text) for name, spec in CLIPS.items()
    ]
