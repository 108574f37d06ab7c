"""Embedded TTS (Piper with the joe voice, eSpeak NG in-process): real engines, real audio.

Timing is checked only as proportions of the same engine's own work in the same test (first
audio long before the last, a cancel far quicker than the rest of the phrase, loop gaps far
shorter than an inference), never against wall-clock goals: those are in
benchmarks/tts_embedded.py.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import AsyncIterator, Sequence

import numpy as np
import pytest

from ringline.config.providers import EspeakTtsConfig, PiperTtsConfig
from ringline.engine.audio.clock import LoopClock
from ringline.engine.audio.formats import MULAW_8K, AudioFormat, Encoding
from ringline.engine.errors import ProviderError
from ringline.engine.providers import build_tts
from ringline.engine.tts import espeak, piper
from ringline.engine.tts.base import SpeechAudio, Tts

pytestmark = pytest.mark.timeout(120)  # the first test loads the Piper voice (seconds on a busy box)

PIPER = PiperTtsConfig(provider="piper")
ESPEAK = EspeakTtsConfig(provider="espeak")
ENGINES = pytest.mark.parametrize("config", [PIPER, ESPEAK], ids=["piper", "espeak"])
NATIVE = AudioFormat(Encoding.PCM16, 22050)
SENTENCE = "Your appointment with Doctor Lee is booked for Tuesday at three in the afternoon."  # 14 words
LONG_SENTENCE = (
    "I have checked every available slot this week and the only opening that fits both your schedule "
    "and the clinic's is on Thursday morning at half past nine, right after the staff meeting, "
    "so if that works for you I can put your name down now and send a reminder the evening before."
)
LONG = {"piper": LONG_SENTENCE, "espeak": " ".join([LONG_SENTENCE] * 12)}
"""Text whose synthesis takes a good while (hundreds of ms) on each engine."""


@pytest.fixture(scope="module", autouse=True)
def _loaded() -> None:
    """Load both engines once (their caches are per process, not per event loop)."""
    asyncio.run(piper.warm_up(PIPER))
    asyncio.run(espeak.warm_up(ESPEAK))


async def listed(texts: Sequence[str]) -> AsyncIterator[str]:
    for text in texts:
        yield text


async def speak(tts: Tts, texts: Sequence[str]) -> list[SpeechAudio]:
    return [audio async for audio in tts.stream(listed(texts), MULAW_8K)]


def by_phrase(audio: Sequence[SpeechAudio]) -> dict[int, bytes]:
    joined: dict[int, bytes] = {}
    for item in audio:
        joined[item.phrase] = joined.get(item.phrase, b"") + item.chunk.data
    return joined


def samples(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype="<i2").astype(np.float64)


def name(config: PiperTtsConfig | EspeakTtsConfig) -> str:
    return config.provider


async def mid_synthesis(config: PiperTtsConfig | EspeakTtsConfig) -> None:
    """Return once the engine is inside a synthesis call. eSpeak NG speaks a phrase in one call, so
    any moment before its last audio is mid-synthesis; Piper runs one inference per sentence and
    checks for cancellation between them, so wait (watching the worker's stack from a helper
    thread) until an inference is really running."""
    if name(config) != "piper":
        return

    def inferring() -> bool:
        for frame in sys._current_frames().values():
            while frame is not None:
                if frame.f_code is piper._infer.__code__:
                    return True
                frame = frame.f_back
        return False

    def wait() -> None:
        deadline = time.monotonic() + 30
        while not inferring():
            assert time.monotonic() < deadline, "no Piper inference started"
            time.sleep(0.0005)

    await asyncio.to_thread(wait)


# -- what comes out -------------------------------------------------------------------------------


@ENGINES
async def test_a_sentence_is_speech_of_plausible_length(config):
    audio = await speak(build_tts(config, LoopClock()), [SENTENCE])
    assert {a.chunk.format for a in audio} == {NATIVE}  # the voice's own format: the call converts
    pcm = samples(by_phrase(audio)[0])
    seconds = len(pcm) / NATIVE.sample_rate
    assert 14 * 0.2 < seconds < 14 * 0.6, seconds  # 100 to 300 words a minute
    frames = pcm[: len(pcm) // 441 * 441].reshape(-1, 441)  # 20 ms
    loud = np.sqrt((frames**2).mean(axis=1)) > 300
    assert loud.mean() > 0.5, loud.mean()  # speaking most of the time, not a click and silence
    assert np.abs(pcm).max() < 32767  # not clipped


async def test_espeak_uses_its_rate_setting():
    slow = by_phrase(
        await speak(espeak.EspeakTts(ESPEAK.model_copy(update={"words_per_minute": 100}), LoopClock()), [SENTENCE])
    )
    fast = by_phrase(
        await speak(espeak.EspeakTts(ESPEAK.model_copy(update={"words_per_minute": 300}), LoopClock()), [SENTENCE])
    )
    assert len(slow[0]) > 2 * len(fast[0])


async def test_piper_uses_its_length_scale():
    slow = by_phrase(
        await speak(piper.PiperTts(PIPER.model_copy(update={"length_scale": 1.5}), LoopClock()), [SENTENCE])
    )
    fast = by_phrase(
        await speak(piper.PiperTts(PIPER.model_copy(update={"length_scale": 0.7}), LoopClock()), [SENTENCE])
    )
    assert len(slow[0]) > 1.5 * len(fast[0])


# -- phrases --------------------------------------------------------------------------------------


THREE = ["Sure.", LONG_SENTENCE, "Anything else I can do for you?"]


@ENGINES
async def test_phrases_are_spoken_as_they_arrive_and_attributed_in_order(config):
    """Each phrase is only given once the previous one is heard: an engine that waited for more
    text before speaking would never finish."""
    queue: asyncio.Queue[str | None] = asyncio.Queue()

    async def phrases() -> AsyncIterator[str]:
        while (text := await queue.get()) is not None:
            yield text

    given = 1
    queue.put_nowait(THREE[0])
    audio = []
    async with asyncio.timeout(60):
        async for item in build_tts(config, LoopClock()).stream(phrases(), MULAW_8K):
            audio.append(item)
            if item.phrase == given - 1:
                queue.put_nowait(THREE[given] if given < len(THREE) else None)
                given += 1
    order = [a.phrase for a in audio]
    assert order == sorted(order) and set(order) == {0, 1, 2}
    seconds = {i: len(pcm) / NATIVE.bytes_per_second for i, pcm in by_phrase(audio).items()}
    assert seconds[1] > 3 * seconds[0] and seconds[1] > seconds[2] > seconds[0], seconds


async def test_espeak_phrase_audio_is_each_phrase_alone():
    """eSpeak NG times a text the same every time (to a fraction of a percent: its wave generator
    carries a little state from one utterance to the next), so each phrase's share is checkable."""
    tts = espeak.EspeakTts(ESPEAK, LoopClock())
    together = by_phrase(await speak(tts, THREE))
    alone = [by_phrase(await speak(tts, [text]))[0] for text in THREE]
    assert sorted(together) == [0, 1, 2]
    for i, pcm in enumerate(alone):
        assert len(together[i]) == pytest.approx(len(pcm), rel=0.01), i


@ENGINES
async def test_an_empty_phrase_is_silent_and_keeps_its_number(config):
    audio = await speak(build_tts(config, LoopClock()), ["Hello.", " ", "Goodbye."])
    assert sorted(by_phrase(audio)) == [0, 2]


@ENGINES
async def test_calls_share_one_engine_at_once(config):
    """Two calls speaking at the same time each get their own phrases, whole."""
    first, second = await asyncio.gather(
        speak(build_tts(config, LoopClock()), ["Hello.", SENTENCE]),
        speak(build_tts(config, LoopClock()), [SENTENCE, "Goodbye.", "Bye."]),
    )
    assert sorted(by_phrase(first)) == [0, 1] and sorted(by_phrase(second)) == [0, 1, 2]
    assert len(by_phrase(first)[1]) > 2 * len(by_phrase(first)[0])


# -- streaming, stopping, the loop ------------------------------------------------------------------


async def test_piper_first_sentence_plays_before_the_phrase_is_synthesized():
    text = "Sure. " + LONG_SENTENCE + " " + SENTENCE
    started = time.perf_counter()
    arrivals = []
    async for _ in piper.PiperTts(PIPER, LoopClock()).stream(listed([text]), MULAW_8K):
        arrivals.append(time.perf_counter())
    assert len(arrivals) == 3  # one piece per sentence
    total = arrivals[-1] - started
    # Handed over whole at the end, every piece would arrive at ~total.
    assert arrivals[0] - started < 0.4 * total, (arrivals[0] - started, total)


@ENGINES
async def test_cancel_mid_phrase_stops_the_worker_promptly(config):
    tts = build_tts(config, LoopClock())
    text = "Okay. " + LONG[name(config)]
    began = time.perf_counter()
    whole = await speak(tts, [text])
    full = time.perf_counter() - began

    first = asyncio.Event()
    heard: list[SpeechAudio] = []

    async def listen() -> None:
        async for item in tts.stream(listed([text]), MULAW_8K):
            heard.append(item)
            first.set()

    task = asyncio.create_task(listen())
    await first.wait()
    await mid_synthesis(config)
    threads = threading.active_count()
    cancelled = time.perf_counter()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)  # returns once the worker has stopped
    stopped = time.perf_counter() - cancelled
    assert task.cancelled()
    assert stopped < 0.25 * full, (stopped, full)
    assert sum(len(a.chunk.data) for a in heard) < 0.5 * sum(len(a.chunk.data) for a in whole)
    assert threading.active_count() == threads  # no thread left behind
    assert by_phrase(await speak(tts, ["Still here."]))[0]  # and the engine still speaks


async def test_closing_the_stream_early_stops_the_worker():
    tts = piper.PiperTts(PIPER, LoopClock())
    stream = tts.stream(listed(["Okay. " + LONG_SENTENCE]), MULAW_8K)
    await anext(stream)
    await mid_synthesis(PIPER)
    began = time.perf_counter()
    await stream.aclose()
    closed = time.perf_counter() - began
    began = time.perf_counter()
    await speak(tts, [LONG_SENTENCE])
    assert closed < 0.25 * (time.perf_counter() - began)


@ENGINES
async def test_the_loop_keeps_ticking_during_synthesis(config):
    gaps: list[float] = []

    async def tick() -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    ticker = asyncio.create_task(tick())
    try:
        began = time.perf_counter()
        await speak(build_tts(config, LoopClock()), [LONG[name(config)]])
        took = time.perf_counter() - began
    finally:
        ticker.cancel()
        await asyncio.gather(ticker, return_exceptions=True)
    assert took > 0.05, took  # long enough for a blocked loop to show
    assert len(gaps) >= 5 and max(gaps) < 0.25 * took, (max(gaps), took)


# -- failures -------------------------------------------------------------------------------------


async def test_unknown_piper_voice_is_a_provider_error():
    with pytest.raises(ProviderError) as caught:
        await speak(piper.PiperTts(PIPER.model_copy(update={"voice": "en_GB-nobody-low"}), LoopClock()), ["Hi."])
    assert str(caught.value) == (
        "unknown Piper voice 'en_GB-nobody-low': use one of en_US-joe-medium or the path of a .onnx file"
    )
    assert not caught.value.retryable


async def test_missing_piper_model_file_is_a_provider_error(tmp_path):
    missing = tmp_path / "gone.onnx"
    with pytest.raises(ProviderError, match=r"^cannot load Piper voice gone\.onnx: "):
        await speak(piper.PiperTts(PIPER.model_copy(update={"voice": str(missing)}), LoopClock()), ["Hi."])


async def test_unknown_espeak_voice_is_a_provider_error_and_the_engine_carries_on():
    with pytest.raises(ProviderError) as caught:
        await speak(espeak.EspeakTts(ESPEAK.model_copy(update={"voice": "xx-nowhere"}), LoopClock()), ["Hi."])
    assert str(caught.value) == "eSpeak NG has no voice 'xx-nowhere'"
    assert by_phrase(await speak(espeak.EspeakTts(ESPEAK, LoopClock()), ["Hi."]))[0]
