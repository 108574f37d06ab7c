"""Real-speech clips the caller simulator speaks, and their loader.

The clips live in ``audio/`` as 8 kHz mono G.711 mu-law WAV files (format tag 7), made with
eSpeak NG (the benchmark clips) or Piper's joe voice pitched up (the demo caller, whose words the
embedded recognizers get right far more often than eSpeak's) and SoX by ``audio/make_clips.sh``,
which reads its table from this module
(``python3 clips.py table``) so the texts have one home. Each clip is trimmed so speech starts
at its first sample and ends at its last, and holds no pause longer than ``MAX_GAP_MS``
(``python3 clips.py check`` verifies that with webrtcvad).

The stdlib ``wave`` module reads only PCM, so ``parse_ulaw_wav`` walks the RIFF chunks itself.
This module imports only the standard library at load time, so the shell script can run it
as a plain script.
"""

from __future__ import annotations

import functools
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

AUDIO_DIR = Path(__file__).resolve().parent / "audio"
RATE = 8000
FRAME_BYTES = 160  # 20 ms of 8 kHz mu-law
MAX_GAP_MS = 150  # longest non-speech run (webrtcvad mode 3) allowed inside a benchmark clip
DEMO_MAX_GAP_MS = 200  # inside a demo clip: commas pause, but never as long as a turn's end (300 ms)
WAVE_FORMAT_MULAW = 7


@dataclass(frozen=True, slots=True)
class ClipSpec:
    text: str
    speed: int = 175  # eSpeak NG words per minute
    short: bool = False  # a back-channel sound for false-interruption tests, not a turn
    voice: str = "espeak"  # "espeak" (benchmark clips) or "piper" (the demo caller)


CLIPS: dict[str, ClipSpec] = {
    "book_table.wav": ClipSpec("Hi, I'd like to book a table for two."),
    "open_tomorrow.wav": ClipSpec("What time do you open tomorrow?"),
    "prices.wav": ClipSpec("Can you tell me about your prices?"),
    "reschedule.wav": ClipSpec("I need to move my appointment to Friday."),
    "speak_person.wav": ClipSpec("Could I speak to someone about my order?"),
    "delivery.wav": ClipSpec("Do you deliver to the city center?"),
    "thanks.wav": ClipSpec("Thank you so much for your help."),
    "mmhm.wav": ClipSpec("Mm-hm.", speed=300, short=True),
    "demo_book.wav": ClipSpec("I'd like to book a table for two, please.", voice="piper"),
    "demo_time.wav": ClipSpec("Seven o'clock tonight, please.", voice="piper"),
    "demo_hours.wav": ClipSpec("What time do you open tomorrow?", voice="piper"),
    "demo_thanks.wav": ClipSpec("Thank you so much for your help.", voice="piper"),
}
CLIP_TEXTS: dict[str, str] = {name: spec.text for name, spec in CLIPS.items()}
SPEECH_CLIPS: tuple[str, ...] = tuple(name for name, spec in CLIPS.items() if not spec.short and spec.voice == "espeak")
"""The benchmark turns (one synthetic voice, so runs compare)."""
DEMO_CLIPS: tuple[str, ...] = tuple(name for name, spec in CLIPS.items() if spec.voice == "piper")
SHORT_CLIP = "mmhm.wav"


class ClipError(ValueError):
    """A clip file is not 8 kHz mono mu-law WAV."""


def parse_ulaw_wav(data: bytes) -> bytes:
    """The mu-law samples of a RIFF/WAVE file holding 8 kHz mono G.711 mu-law."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ClipError("not a RIFF/WAVE file")
    pos = 12
    fmt: tuple[int, int, int, int] | None = None
    while pos + 8 <= len(data):
        chunk_id = data[pos : pos + 4]
        (size,) = struct.unpack_from("<I", data, pos + 4)
        body = data[pos + 8 : pos + 8 + size]
        if len(body) < size:
            raise ClipError(f"chunk {chunk_id.decode('latin-1')!r} truncated: {len(body)} of {size} bytes")
        if chunk_id == b"fmt ":
            if size < 16:
                raise ClipError(f"fmt chunk too short: {size} bytes")
            tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", body)
            fmt = (tag, channels, rate, bits)
            if fmt != (WAVE_FORMAT_MULAW, 1, RATE, 8):
                raise ClipError(
                    f"want mu-law (tag 7) mono 8000 Hz 8-bit, got tag {tag} channels {channels} rate {rate} bits {bits}"
                )
        elif chunk_id == b"data":
            if fmt is None:
                raise ClipError("data chunk before fmt chunk")
            return body
        pos += 8 + size + (size & 1)  # chunks are word-aligned
    raise ClipError("no data chunk")


@functools.cache
def load_clip(name: str) -> bytes:
    """The mu-law bytes of the clip ``name`` (a key of ``CLIPS``, or any file in ``audio/``)."""
    return parse_ulaw_wav((AUDIO_DIR / name).read_bytes())


def vad_flags(ulaw: bytes, mode: int = 3) -> list[bool]:
    """webrtcvad's verdict (``mode`` 0-3) on each whole 20 ms frame of ``ulaw``."""
    import webrtcvad

    from ringline.engine.audio import ulaw_decode

    vad = webrtcvad.Vad(mode)
    pcm = ulaw_decode(ulaw)
    return [vad.is_speech(pcm[i * 320 : (i + 1) * 320], RATE) for i in range(len(ulaw) // FRAME_BYTES)]


def speech_gaps_ms(ulaw: bytes, mode: int = 3) -> list[float]:
    """Lengths of the non-speech runs webrtcvad finds in ``ulaw``, in order, edges included."""
    gaps: list[float] = []
    run = 0
    for speech in vad_flags(ulaw, mode):
        if speech:
            if run:
                gaps.append(run * 20.0)
            run = 0
        else:
            run += 1
    if run:
        gaps.append(run * 20.0)
    return gaps


def clip_ok(name: str) -> tuple[bool, list[bool], float]:
    """Whether a clip keeps its rules: a benchmark clip is voiced from its first frame to its last
    with no gap over ``MAX_GAP_MS`` (so speech timings are exact); a demo clip may open on an
    unvoiced consonant ("th", "s") and pause up to ``DEMO_MAX_GAP_MS``."""
    audio = load_clip(name)
    flags = vad_flags(audio)
    longest = max(speech_gaps_ms(audio), default=0.0)
    if CLIPS[name].voice == "piper":
        return longest <= DEMO_MAX_GAP_MS and flags[-1], flags, longest
    return longest <= MAX_GAP_MS and flags[0] and flags[-1], flags, longest


def _check() -> int:
    bad = 0
    for name, spec in CLIPS.items():
        audio = load_clip(name)
        ok, flags, longest = clip_ok(name)
        bad += not ok
        print(
            f"{'ok ' if ok else 'BAD'} {name:20} {len(audio) / RATE:5.2f} s  longest gap {longest:4.0f} ms"
            f"  speech in first/last frame {flags[0]}/{flags[-1]}  {spec.text!r}"
        )
    return 1 if bad else 0


def _piper(text: str, out: str) -> None:
    """Speak ``text`` with the bundled Piper voice into the WAV file ``out`` (needs the venv)."""
    import wave

    from piper import PiperVoice

    from ringline.engine.tts.piper import voice_files

    model, config = voice_files("en_US-joe-medium")
    with wave.open(out, "wb") as file:
        PiperVoice.load(str(model), config_path=str(config)).synthesize_wav(text, file)


if __name__ == "__main__":
    if sys.argv[1:] == ["table"]:
        for name, spec in CLIPS.items():
            print(f"{name}|{spec.speed}|{spec.voice}|{spec.text}")
    elif sys.argv[1:] == ["check"]:
        sys.exit(_check())
    elif len(sys.argv) == 4 and sys.argv[1] == "piper":
        _piper(sys.argv[2], sys.argv[3])
    else:
        sys.exit("usage: clips.py table|check|piper TEXT OUT.wav")
