"""Per-20-ms-frame CPU budget of the audio hot path.

Run ``python -m ringline.benchmarks.frame_budget``. Each row is the median over several repeats
of the microseconds one call takes on one frame (160 samples at 8 kHz unless the row says
otherwise), and its share of the 20 ms of audio that frame holds.

To add a row, append a ``(name, callable)`` pair in ``build_cases``; the callable processes one
frame and keeps any per-stream state in its closure, as the real pipeline would.
"""

from __future__ import annotations

import argparse
import base64
import math
import platform
import statistics
import timeit
from collections.abc import Callable, Sequence

import numpy as np
import orjson
import webrtcvad

from ringline.engine.audio import (
    FRAME_MS,
    MULAW_8K,
    PCM16_16K,
    AudioConverter,
    AudioFormat,
    Encoding,
    Framer,
    Resampler,
    alaw_decode,
    alaw_encode,
    ulaw_decode,
    ulaw_encode,
)
from ringline.engine.audio.ambience import AmbienceBed, make_loop
from ringline.engine.errors import ConfigError

Case = tuple[str, Callable[[], object]]

FRAME_US = FRAME_MS * 1000


def tone(rate: int, ms: int = FRAME_MS, freq: float = 440.0) -> bytes:
    """``ms`` of a sine at ``rate`` as PCM16, like a frame of speech-level audio."""
    t = np.arange(rate * ms // 1000) / rate
    return np.round(np.sin(2 * math.pi * freq * t) * 8000).astype("<i2").tobytes()


def twilio_media_message(payload: bytes) -> bytes:
    return orjson.dumps(
        {
            "event": "media",
            "sequenceNumber": "3",
            "media": {
                "track": "inbound",
                "chunk": "1",
                "timestamp": "5",
                "payload": base64.b64encode(payload).decode("ascii"),
            },
            "streamSid": "MZ18ad3ab5a668481ce02b83e7395059f0",
        }
    )


def silero_cases(pcm_8k: bytes, pcm_16k: bytes) -> list[Case]:
    """Silero VAD per frame (the model runs on 5 frames of 8, so the median over many frames is
    the average), and one model run (the cost of the frames it runs on); none without silero-vad."""
    from ringline.engine.vad.silero import SileroClassifier, load_model

    try:
        session = load_model()
    except ConfigError as exc:
        print(f"(no Silero rows: {exc})")
        return []
    at_8k, at_16k = SileroClassifier(8000, session=session), SileroClassifier(16000, session=session)
    window = {
        "input": np.zeros((1, 32 + 256), dtype=np.float32),
        "state": np.zeros((2, 1, 128), dtype=np.float32),
        "sr": np.array(8000, dtype=np.int64),
    }
    return [
        ("SileroClassifier.is_speech 8 kHz", lambda: at_8k.is_speech(pcm_8k)),
        ("SileroClassifier.is_speech 16 kHz", lambda: at_16k.is_speech(pcm_16k)),
        ("Silero one 32 ms window 8 kHz", lambda: session.run(None, window)),
    ]


def build_cases() -> list[Case]:
    pcm_8k = tone(8000)  # 320 bytes
    pcm_16k = tone(16000)
    pcm_24k = tone(24000)  # 960 bytes
    ulaw = ulaw_encode(pcm_8k)  # 160 bytes
    alaw = alaw_encode(pcm_8k)
    b64 = base64.b64encode(ulaw)
    message = twilio_media_message(ulaw).decode()  # str, as a WebSocket text frame arrives
    vad = webrtcvad.Vad(3)
    up = Resampler(8000, 16000)
    down = Resampler(24000, 8000)
    inbound = AudioConverter(MULAW_8K, PCM16_16K)
    outbound = AudioConverter(AudioFormat(Encoding.PCM16, 24000), MULAW_8K)
    framer = Framer.for_format(MULAW_8K)
    odd_chunk = ulaw[:100]  # feeding 100 bytes at a time: every other call completes a frame
    bed = AmbienceBed(make_loop("office", MULAW_8K, -45.0))

    return [
        ("mu-law decode", lambda: ulaw_decode(ulaw)),
        ("mu-law encode", lambda: ulaw_encode(pcm_8k)),
        ("A-law decode", lambda: alaw_decode(alaw)),
        ("A-law encode", lambda: alaw_encode(pcm_8k)),
        ("base64 decode+encode 160 B", lambda: base64.b64encode(base64.b64decode(b64))),
        ("orjson.loads Twilio media msg", lambda: orjson.loads(message)),
        ("webrtcvad.Vad(3).is_speech 8 kHz", lambda: vad.is_speech(pcm_8k, 8000)),
        *silero_cases(pcm_8k, pcm_16k),
        ("resample 8k->16k (stream)", lambda: up.process(pcm_8k)),
        ("resample 24k->8k (stream)", lambda: down.process(pcm_24k)),
        ("convert mu-law 8k -> PCM16 16k", lambda: inbound.convert(ulaw)),
        ("convert PCM16 24k -> mu-law 8k", lambda: outbound.convert(pcm_24k)),
        ("Framer.feed 100 B chunks", lambda: framer.feed(odd_chunk)),
        ("ambience mixed into a mu-law frame", lambda: bed.mix(ulaw)),
        ("ambience alone, mu-law frame", lambda: bed.frame(160)),
    ]


def measure(fn: Callable[[], object], *, repeat: int, min_time: float) -> float:
    """Median microseconds per call over ``repeat`` runs of at least ``min_time`` seconds each."""
    timer = timeit.Timer(fn)
    number = 1
    while timer.timeit(number) < min_time:
        number *= 2
    runs = timer.repeat(repeat=repeat, number=number)
    return statistics.median(runs) / number * 1e6


def print_table(rows: Sequence[tuple[str, float]]) -> None:
    width = max(len(name) for name, _ in rows)
    print(f"{'per 20 ms frame':<{width}}  {'us':>8}  {'% of frame':>10}")
    print(f"{'-' * width}  {'-' * 8}  {'-' * 10}")
    for name, us in rows:
        print(f"{name:<{width}}  {us:>8.2f}  {us / FRAME_US * 100:>9.3f}%")


def main(argv: Sequence[str] | None = None, cases: Sequence[Case] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7, help="timing runs per row (median is printed)")
    parser.add_argument("--min-time", type=float, default=0.05, help="minimum seconds per timing run")
    args = parser.parse_args(argv)
    print(f"Python {platform.python_version()}, numpy {np.__version__}, {platform.machine()}")
    rows = [
        (name, measure(fn, repeat=args.repeat, min_time=args.min_time))
        for name, fn in (cases if cases is not None else build_cases())
    ]
    print_table(rows)


if __name__ == "__main__":
    main()
