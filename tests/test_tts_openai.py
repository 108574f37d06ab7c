"""OpenAI TTS: the real ``openai`` SDK against the local fake of ``POST /v1/audio/speech``."""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import AsyncIterator, Sequence

import pytest

from ringline.benchmarks.vendors.elevenlabs import Faults, Latency, tone
from ringline.benchmarks.vendors.openai_tts import FakeOpenAiTts
from ringline.config.providers import OpenAiTtsConfig
from ringline.engine.audio.clock import LoopClock
from ringline.engine.audio.formats import MULAW_8K, AudioFormat, Encoding
from ringline.engine.errors import ProviderError
from ringline.engine.tts.base import SpeechAudio
from ringline.engine.tts.openai import OpenAiTts

pytestmark = pytest.mark.timeout(30)

KEY = "sk-test-8d1e55c0a2"
SECONDS_PER_CHAR = 0.02
PCM_24K = AudioFormat(Encoding.PCM16, 24000)
THREE = ["Sure, I can help.", "Your table for two is booked at eight tonight.", "Anything else?"]


@pytest.fixture
async def fake():
    async with FakeOpenAiTts(KEY, latency=Latency(seconds_per_char=SECONDS_PER_CHAR)) as server:
        yield server


def make_tts(fake: FakeOpenAiTts, *, timeout_s: float = 5.0, **kw) -> OpenAiTts:
    kw.setdefault("api_key", KEY)
    return OpenAiTts(OpenAiTtsConfig(provider="openai", base_url=fake.url, **kw), LoopClock(), timeout_s=timeout_s)


async def listed(texts: Sequence[str]) -> AsyncIterator[str]:
    for text in texts:
        yield text


async def speak(tts: OpenAiTts, texts: Sequence[str]) -> list[SpeechAudio]:
    async with asyncio.timeout(10):
        return [audio async for audio in tts.stream(listed(texts), MULAW_8K)]


async def failure(tts: OpenAiTts, texts: Sequence[str] = ("Hello there.",)) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        await speak(tts, texts)
    return caught.value


async def test_phrases_come_back_as_24k_pcm_tagged_by_phrase(fake):
    audio = await speak(make_tts(fake), THREE)
    assert audio and {a.chunk.format for a in audio} == {PCM_24K}  # the call converts to mu-law
    phrases = [a.phrase for a in audio]
    assert phrases == sorted(phrases)
    joined: dict[int, bytes] = {}
    for item in audio:
        assert len(item.chunk.data) % 2 == 0
        joined[item.phrase] = joined.get(item.phrase, b"") + item.chunk.data
    assert joined == {i: tone(len(t) * SECONDS_PER_CHAR, PCM_24K) for i, t in enumerate(THREE)}
    assert [r.body["input"] for r in fake.requests] == THREE


async def test_model_voice_speed_and_instructions_reach_the_server(fake):
    tts = make_tts(fake, model="gpt-4o-mini-tts", voice="coral", speed=1.25, instructions="Warm and brief.")
    await speak(tts, ["Hello there."])
    body = fake.requests[0].body
    assert body == {
        "model": "gpt-4o-mini-tts",
        "voice": "coral",
        "input": "Hello there.",
        "response_format": "pcm",
        "speed": 1.25,
        "instructions": "Warm and brief.",
    }
    assert fake.requests[0].headers["Authorization"] == f"Bearer {KEY}"
    assert fake.requests[0].path == "/v1/audio/speech"


@pytest.mark.parametrize("model", ["tts-1", "tts-1-hd", "tts-1-1106"])
async def test_instructions_are_left_out_for_models_that_do_not_take_them(fake, model):
    audio = await speak(make_tts(fake, model=model, instructions="Warm and brief."), ["Hello."])
    assert audio  # the fake answers 400 to tts-1 with instructions
    assert "instructions" not in fake.requests[0].body and fake.requests[0].body["model"] == model


async def test_each_phrase_is_spoken_as_it_arrives(fake):
    heard = [asyncio.Event() for _ in THREE]

    async def llm() -> AsyncIterator[str]:
        for i, text in enumerate(THREE):
            yield text
            await heard[i].wait()  # the next phrase only exists once this one was voiced

    order = []
    async with asyncio.timeout(10):
        async for audio in make_tts(fake).stream(llm(), MULAW_8K):
            order.append(audio.phrase)
            heard[audio.phrase].set()
    assert sorted(set(order)) == [0, 1, 2] and order == sorted(order)


async def test_blank_phrase_keeps_its_number_but_is_not_sent(fake):
    audio = await speak(make_tts(fake), ["Hello.", " ", "Bye now."])
    assert sorted({a.phrase for a in audio}) == [0, 2]
    assert [r.body["input"] for r in fake.requests] == ["Hello.", "Bye now."]


@pytest.mark.parametrize(("status", "retryable"), [(400, False), (403, False), (500, True), (503, True)])
async def test_error_status_says_whether_to_retry(fake, status, retryable):
    fake.faults = Faults(status=status)
    error = await failure(make_tts(fake))
    assert error.retryable is retryable
    assert f"HTTP {status}" in str(error)


async def test_wrong_key_is_final(fake):
    error = await failure(make_tts(fake, api_key="sk-wrong-key-000"))
    assert not error.retryable
    assert "HTTP 401 invalid_api_key" in str(error)


async def test_rate_limit_is_retryable_and_says_when(fake):
    fake.faults = Faults(status=429, retry_after="2")
    error = await failure(make_tts(fake))
    assert error.retryable
    assert "HTTP 429" in str(error) and "retry after 2 s" in str(error)
    assert error.retry_after == 2.0


async def test_body_cut_short_is_retryable(fake):
    fake.faults = Faults(cut_after=1)
    got: list[SpeechAudio] = []
    with pytest.raises(ProviderError) as caught:
        async with asyncio.timeout(10):
            async for item in make_tts(fake).stream(listed(THREE), MULAW_8K):
                got.append(item)
    assert caught.value.retryable
    assert 0 < sum(len(a.chunk.data) for a in got) <= PCM_24K.bytes_for(100)


async def test_server_that_stops_answering_is_retryable(fake):
    fake.faults = Faults(hang_after=0)
    error = await failure(make_tts(fake, timeout_s=0.3))
    assert error.retryable
    assert "no answer within 0.3 s" in str(error)


async def test_server_that_is_down_is_retryable():
    server = await FakeOpenAiTts(KEY).start()
    await server.close()
    error = await failure(make_tts(server))
    assert error.retryable
    assert "connection failed" in str(error)


async def test_key_is_never_logged_nor_in_errors(fake, caplog):
    caplog.set_level(logging.DEBUG)
    await speak(make_tts(fake), ["Hello."])
    fake.faults = Faults(status=401, message=f"Incorrect API key provided: {KEY}")  # echoed back
    errors = [await failure(make_tts(fake))]
    fake.faults = Faults(cut_after=1)
    errors.append(await failure(make_tts(fake)))
    for error in errors:
        assert KEY not in str(error)
        assert KEY not in "".join(traceback.format_exception(error))
    assert "[redacted]" in str(errors[0])
    assert KEY not in caplog.text
    assert all(KEY not in str(record.args) for record in caplog.records)
