"""The scripted STT, LLM and TTS used by tests and benchmarks, on a fake clock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np
import pytest

from ringline.config.providers import FakeLlmConfig, FakeSttConfig, FakeTtsConfig
from ringline.engine.audio.clock import FakeClock
from ringline.engine.audio.formats import MULAW_8K, PCM16_8K, PCM16_16K, AudioFormat, Encoding
from ringline.engine.audio.g711 import encode
from ringline.engine.llm.base import Context, Message, TextDelta, Tool, ToolCall
from ringline.engine.llm.fake import FakeLlm, parse_reply
from ringline.engine.stt.base import Transcript
from ringline.engine.stt.fake import FakeStt, FakeSttSession
from ringline.engine.tts.base import SpeechAudio
from ringline.engine.tts.fake import FakeTts

T0 = 100.0


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


# -- clock ----------------------------------------------------------------------------------------


async def test_fake_clock_wakes_sleepers_in_deadline_order_at_their_deadlines() -> None:
    clock = FakeClock(T0)
    woke: list[tuple[str, float]] = []

    async def sleeper(name: str, deadline: float) -> None:
        await clock.sleep_until(deadline)
        woke.append((name, clock.now()))

    tasks = [asyncio.create_task(sleeper(n, d)) for n, d in (("c", T0 + 0.3), ("a", T0 + 0.1), ("b", T0 + 0.2))]
    await settle()
    await clock.advance(0.15)
    assert woke == [("a", T0 + 0.1)]
    await clock.advance(1.0)
    assert woke == [("a", T0 + 0.1), ("b", T0 + 0.2), ("c", T0 + 0.3)]
    assert clock.now() == pytest.approx(T0 + 1.15)
    await asyncio.gather(*tasks)


async def test_fake_clock_fires_timers_at_their_deadlines_and_never_a_cancelled_one() -> None:
    clock = FakeClock(T0)
    fired: list[tuple[str, float]] = []
    later = clock.call_at(T0 + 0.2, lambda: fired.append(("later", clock.now())))
    clock.call_at(T0 + 0.1, lambda: fired.append(("sooner", clock.now())))
    cancelled = clock.call_at(T0 + 0.15, lambda: fired.append(("cancelled", clock.now())))
    assert later.when() == T0 + 0.2
    cancelled.cancel()
    await clock.advance(1.0)
    assert fired == [("sooner", T0 + 0.1), ("later", T0 + 0.2)]


async def test_fake_clock_sleep_until_the_past_returns_at_once() -> None:
    clock = FakeClock(T0)
    await clock.sleep_until(T0 - 1)
    await clock.sleep_until(T0)
    assert clock.now() == T0


# -- LLM -----------------------------------------------------------------------------------------


def context(user: str = "I need a table") -> Context:
    ctx = Context("You are a test agent.")
    ctx.add(Message("user", user))
    return ctx


WEATHER = Tool("weather", "Weather in a city", {"type": "object", "properties": {"city": {"type": "string"}}})


async def events_of(llm: FakeLlm, ctx: Context, tools: tuple[Tool, ...] = ()) -> list[TextDelta | ToolCall]:
    return [e async for e in llm.stream(ctx, tools)]


async def test_llm_streams_word_deltas_that_join_to_the_reply() -> None:
    llm = FakeLlm(FakeLlmConfig(replies=("Sure, a table for two at seven.",)), FakeClock(T0))
    events = await events_of(llm, context())
    assert events == [TextDelta(t) for t in ("Sure,", " a", " table", " for", " two", " at", " seven.")]


async def test_llm_plays_replies_in_order_then_the_fallback_with_the_user_words() -> None:
    llm = FakeLlm(FakeLlmConfig(replies=("One.", "Two."), fallback="You said: {user}"), FakeClock(T0))
    texts = []
    for user in ("a", "b", "book it", "and then"):
        texts.append("".join(e.text for e in await events_of(llm, context(user)) if isinstance(e, TextDelta)))
    assert texts == ["One.", "Two.", "You said: book it", "You said: and then"]


async def test_llm_fallback_uses_the_last_user_message() -> None:
    ctx = context("first")
    ctx.add(Message("assistant", "ok"))
    ctx.add(Message("user", "second"))
    ctx.add(Message("assistant", "hm"))
    llm = FakeLlm(FakeLlmConfig(fallback="<{user}>"), FakeClock(T0))
    assert await events_of(llm, ctx) == [TextDelta("<second>")]


async def test_llm_tool_call_with_json_arguments() -> None:
    llm = FakeLlm(FakeLlmConfig(replies=('Let me check. [tool:weather {"city": "Oslo"}]',)), FakeClock(T0))
    events = await events_of(llm, context(), (WEATHER,))
    assert events[:3] == [TextDelta("Let"), TextDelta(" me"), TextDelta(" check.")]
    call = events[3]
    assert isinstance(call, ToolCall)
    assert (call.name, call.arguments) == ("weather", {"city": "Oslo"})
    assert call.id.startswith("call_")
    assert len(events) == 4


def test_parse_reply_tool_without_arguments_and_nested_json() -> None:
    events = parse_reply('Bye. [tool:end_call] [tool:book {"slot": {"day": "Fri", "at": [19, 30]}}]')
    assert events[0] == TextDelta("Bye.")
    first, second = events[1], events[2]
    assert isinstance(first, ToolCall) and isinstance(second, ToolCall)
    assert (first.name, first.arguments) == ("end_call", {})
    assert (second.name, second.arguments) == ("book", {"slot": {"day": "Fri", "at": [19, 30]}})
    assert first.id != second.id
    assert len(events) == 3


def test_parse_reply_without_tools_is_words() -> None:
    assert parse_reply("  Hello   there  ") == [TextDelta("Hello"), TextDelta("   there")]
    assert parse_reply("") == []


def test_parse_reply_text_after_a_tool_call_keeps_its_space() -> None:
    events = parse_reply("Let me check. [tool:weather {}] It is sunny.")
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert text == "Let me check. It is sunny."


async def test_llm_refuses_an_unregistered_scripted_tool() -> None:
    llm = FakeLlm(FakeLlmConfig(replies=("Checking. [tool:weather {}]",)), FakeClock(T0))
    seen = []
    with pytest.raises(ValueError) as info:
        async for event in llm.stream(context(), (Tool("end_call", "End"),)):
            seen.append(event)
    assert str(info.value) == "scripted tool 'weather' is not registered"
    assert seen == [TextDelta("Checking.")]


async def collect(source: AsyncIterator[object], clock: FakeClock, into: list[tuple[float, object]]) -> None:
    async for item in source:
        into.append((clock.now(), item))


async def test_llm_honours_ttft_and_token_rate_on_the_clock() -> None:
    clock = FakeClock(T0)
    llm = FakeLlm(FakeLlmConfig(replies=("one two three four",), ttft_ms=300, tokens_per_s=10), clock)
    got: list[tuple[float, object]] = []
    task = asyncio.create_task(collect(llm.stream(context(), ()), clock, got))
    await settle()
    await clock.advance(0.29)
    assert got == []
    await clock.advance(0.011)
    assert [e for _, e in got] == [TextDelta("one")]
    await clock.advance(5.0)
    await task
    assert [t for t, _ in got] == pytest.approx([T0 + 0.3, T0 + 0.4, T0 + 0.5, T0 + 0.6])
    assert [e for _, e in got] == [TextDelta("one"), TextDelta(" two"), TextDelta(" three"), TextDelta(" four")]


async def test_llm_without_latency_streams_everything_at_once() -> None:
    clock = FakeClock(T0)
    llm = FakeLlm(FakeLlmConfig(replies=("a b c",)), clock)
    got: list[tuple[float, object]] = []
    await collect(llm.stream(context(), ()), clock, got)
    assert [t for t, _ in got] == [T0, T0, T0]


# -- TTS ------------------------------------------------------------------------------------------


async def phrases(*texts: str) -> AsyncIterator[str]:
    for text in texts:
        yield text


async def speak(tts: FakeTts, *texts: str) -> list[SpeechAudio]:
    return [a async for a in tts.stream(phrases(*texts), PCM16_8K)]


async def test_tts_renders_exactly_seconds_per_phrase_in_chunks() -> None:
    tts = FakeTts(FakeTtsConfig(sample_rate=16000, seconds_per_phrase=0.5, chunk_ms=100), FakeClock(T0))
    audio = await speak(tts, "Hello there.", "A much longer second phrase with many words.")
    assert tts.format == PCM16_16K
    assert [a.phrase for a in audio] == [0] * 5 + [1] * 5
    assert all(a.chunk.format == PCM16_16K and len(a.chunk.data) == 3200 for a in audio)  # 100 ms each
    for phrase in (0, 1):
        assert sum(a.chunk.duration for a in audio if a.phrase == phrase) == pytest.approx(0.5)


async def test_tts_last_chunk_holds_the_remainder() -> None:
    tts = FakeTts(FakeTtsConfig(seconds_per_phrase=0.25, chunk_ms=100), FakeClock(T0))
    audio = await speak(tts, "Hi.")
    assert [len(a.chunk.data) for a in audio] == [1600, 1600, 800]  # 100 + 100 + 50 ms at 8 kHz


async def test_tts_without_seconds_per_phrase_renders_per_word() -> None:
    tts = FakeTts(FakeTtsConfig(seconds_per_word=0.2, chunk_ms=1000), FakeClock(T0))
    audio = await speak(tts, "one two three", "", "x")
    per_phrase = {p: sum(a.chunk.duration for a in audio if a.phrase == p) for p in (0, 1, 2)}
    assert per_phrase == pytest.approx({0: 0.6, 1: 0.2, 2: 0.2})  # at least one word's worth


async def test_tts_phrase_indexes_count_in_order() -> None:
    tts = FakeTts(FakeTtsConfig(seconds_per_phrase=0.1, chunk_ms=20), FakeClock(T0))
    audio = await speak(tts, *[f"phrase {i}." for i in range(7)])
    indexes = [a.phrase for a in audio]
    assert indexes == sorted(indexes)
    assert sorted(set(indexes)) == list(range(7))
    assert all(indexes.count(i) == 5 for i in range(7))


async def test_tts_tone_is_audible_pcm16() -> None:
    tts = FakeTts(FakeTtsConfig(seconds_per_phrase=0.1, tone_hz=440.0), FakeClock(T0))
    (audio,) = await speak(tts, "Hi.")
    samples = np.frombuffer(audio.chunk.data, dtype="<i2")
    assert len(samples) == 800
    assert 7900 <= np.abs(samples).max() <= 8000
    assert samples[0] == 0


async def test_tts_canned_audio_is_repeated_to_length() -> None:
    canned = np.array([1, 2, 3], dtype="<i2").tobytes()
    tts = FakeTts(FakeTtsConfig(seconds_per_phrase=0.001, chunk_ms=100), FakeClock(T0), canned=canned)
    (audio,) = await speak(tts, "Hi.")
    assert np.frombuffer(audio.chunk.data, dtype="<i2").tolist() == [1, 2, 3, 1, 2, 3, 1, 2]


async def test_tts_honours_ttfb_and_realtime_factor_on_the_clock() -> None:
    clock = FakeClock(T0)
    config = FakeTtsConfig(seconds_per_phrase=0.3, chunk_ms=100, ttfb_ms=200, realtime_factor=0.5)
    tts = FakeTts(config, clock)
    got: list[tuple[float, object]] = []
    task = asyncio.create_task(collect(tts.stream(phrases("One.", "Two."), PCM16_8K), clock, got))
    await settle()
    await clock.advance(0.249)
    assert got == []
    await clock.advance(5.0)
    await task
    # Each phrase: ttfb, then each 100 ms chunk takes 50 ms; the next phrase starts after the last chunk.
    assert [t for t, _ in got] == pytest.approx([T0 + 0.25, T0 + 0.30, T0 + 0.35, T0 + 0.60, T0 + 0.65, T0 + 0.70])


async def test_tts_ignores_the_preferred_format_it_cannot_make() -> None:
    tts = FakeTts(FakeTtsConfig(seconds_per_phrase=0.1), FakeClock(T0))
    audio = [a async for a in tts.stream(phrases("Hi."), MULAW_8K)]
    assert {a.chunk.format for a in audio} == {PCM16_8K}


# -- STT ------------------------------------------------------------------------------------------

LOUD = (np.sin(np.arange(160) / 3) * 5000).astype("<i2").tobytes()  # 20 ms, peak 5000
QUIET = (np.sin(np.arange(160) / 3) * 900).astype("<i2").tobytes()  # peak under the 1000 threshold


async def session(clock: FakeClock | None = None, **config: object) -> FakeSttSession:
    return await FakeStt(FakeSttConfig(**config), clock or FakeClock(T0)).open(PCM16_8K)


class Reader:
    """Reads a session's transcripts in a task, stamping each with the clock."""

    def __init__(self, stt: FakeSttSession, clock: FakeClock | None = None) -> None:
        self.got: list[tuple[float, Transcript]] = []
        self._clock = clock
        self.task = asyncio.create_task(self._read(stt))

    async def _read(self, stt: FakeSttSession) -> None:
        async for transcript in stt:
            self.got.append((self._clock.now() if self._clock else 0.0, transcript))

    @property
    def transcripts(self) -> list[Transcript]:
        return [t for _, t in self.got]


async def test_stt_takes_the_offered_format_as_is() -> None:
    """Like a cloud STT that accepts G.711: no decoding or resampling on the way in."""
    for offered in (MULAW_8K, PCM16_8K, AudioFormat(Encoding.MULAW, 16000), PCM16_16K):
        stt = await FakeStt(FakeSttConfig(), FakeClock(T0)).open(offered)
        assert stt.format == offered
        await stt.aclose()


@pytest.mark.parametrize("encoding", [Encoding.MULAW, Encoding.ALAW])
async def test_stt_tells_loud_g711_from_quiet_without_decoding(encoding: Encoding) -> None:
    clock = FakeClock(T0)
    stt = await FakeStt(FakeSttConfig(transcripts=("Hi.",)), clock).open(AudioFormat(encoding, 8000))
    reader = Reader(stt, clock)
    await stt.send(encode(QUIET, encoding))
    await stt.finalize()  # only quiet audio so far: an empty final, the script is not used up
    await stt.send(encode(LOUD, encoding))
    await stt.finalize()
    await settle()
    assert reader.transcripts == [Transcript("", True), Transcript("Hi.", True)]
    await stt.aclose()


async def test_stt_interim_after_interim_after_ms_of_loud_audio() -> None:
    stt = await session(transcripts=("I'd like to book a table.",), interim_after_ms=100)
    reader = Reader(stt)
    for _ in range(4):  # 80 ms
        await stt.send(LOUD)
    await settle()
    assert reader.transcripts == []
    await stt.send(LOUD)  # 100 ms
    await settle()
    assert reader.transcripts == [Transcript("I'd like to", False)]  # the first half of the words
    for _ in range(20):
        await stt.send(LOUD)
    await settle()
    assert len(reader.transcripts) == 1  # one interim per utterance
    await stt.aclose()
    await reader.task


async def test_stt_quiet_audio_is_not_sound() -> None:
    stt = await session(transcripts=("Hello there.",), interim_after_ms=20)
    reader = Reader(stt)
    for _ in range(50):
        await stt.send(QUIET)
        await stt.send(bytes(320))
    await stt.finalize()
    await settle()
    assert reader.transcripts == [Transcript("", True)]
    await stt.aclose()
    await reader.task


async def test_stt_final_on_finalize_then_next_utterance() -> None:
    stt = await session(transcripts=("Hello there.", "Book a table."), interim_after_ms=1000)
    reader = Reader(stt)
    await stt.send(LOUD)
    await stt.finalize()
    await stt.send(LOUD)
    await stt.finalize()
    await settle()
    assert reader.transcripts == [Transcript("Hello there.", True), Transcript("Book a table.", True)]
    await stt.aclose()
    await reader.task


async def test_stt_finalize_without_sound_is_an_empty_final_and_keeps_the_script() -> None:
    stt = await session(transcripts=("Hello there.",))
    reader = Reader(stt)
    await stt.finalize()
    await stt.send(LOUD)
    await stt.finalize()
    await settle()
    assert reader.transcripts == [Transcript("", True), Transcript("Hello there.", True)]
    await stt.aclose()
    await reader.task


async def test_stt_empty_scripted_transcript_is_noise() -> None:
    stt = await session(transcripts=("",), interim_after_ms=20)
    reader = Reader(stt)
    for _ in range(5):
        await stt.send(LOUD)
    await stt.finalize()
    await settle()
    assert reader.transcripts == [Transcript("", True)]  # no interim for an utterance without words
    await stt.aclose()
    await reader.task


async def test_stt_falls_back_when_the_script_runs_out() -> None:
    stt = await session(transcripts=("One.",), fallback="Tell me more.", interim_after_ms=20)
    reader = Reader(stt)
    for _ in range(3):
        await stt.send(LOUD)
        await stt.finalize()
    await settle()
    assert reader.transcripts == [
        Transcript("One.", False),
        Transcript("One.", True),
        Transcript("Tell", False),
        Transcript("Tell me more.", True),
        Transcript("Tell", False),
        Transcript("Tell me more.", True),
    ]
    await stt.aclose()
    await reader.task


async def test_stt_final_latency_on_the_clock() -> None:
    clock = FakeClock(T0)
    stt = await session(clock, transcripts=("Hello there.",), final_latency_ms=300, interim_after_ms=1000)
    reader = Reader(stt, clock)
    await stt.send(LOUD)
    await stt.finalize()
    await settle()
    await clock.advance(0.29)
    assert reader.got == []
    await clock.advance(0.02)
    assert reader.got == [(T0 + 0.3, Transcript("Hello there.", True))]
    await stt.aclose()
    await reader.task


async def test_stt_finals_arrive_in_finalize_order() -> None:
    clock = FakeClock(T0)
    stt = await session(clock, transcripts=("Hello there.",), final_latency_ms=300, interim_after_ms=1000)
    reader = Reader(stt, clock)
    await stt.send(LOUD)
    await stt.finalize()  # the utterance's final is due in 300 ms ...
    await clock.advance(0.1)
    await stt.finalize()  # ... and a pause without sound is finalized meanwhile
    await clock.advance(1.0)
    assert reader.transcripts == [Transcript("Hello there.", True), Transcript("", True)]
    await stt.aclose()
    await reader.task


async def test_stt_aclose_ends_iteration_and_drops_pending_finals() -> None:
    clock = FakeClock(T0)
    stt = await session(clock, transcripts=("Hello there.",), final_latency_ms=300)
    reader = Reader(stt, clock)
    await stt.send(LOUD)
    await stt.finalize()
    await settle()
    await stt.aclose()
    await clock.advance(1.0)  # the pending final falls due after the close...
    await reader.task  # ...and is dropped: iteration ends without it
    assert reader.got == []
    assert reader.task.done() and reader.task.exception() is None
