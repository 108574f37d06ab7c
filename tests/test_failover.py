"""What a reply does when providers fail: retry, fallback, apology; every fault recorded."""

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import pytest

from ringline.config.providers import FakeLlmConfig, FakeTtsConfig
from ringline.engine.audio.clock import FakeClock
from ringline.engine.audio.formats import MULAW_8K
from ringline.engine.errors import ProviderError, parse_retry_after
from ringline.engine.failover import FailoverLlm, FailoverTts, LlmUnavailable, TtsUnavailable
from ringline.engine.llm.base import Context, Message, TextDelta
from ringline.engine.llm.fake import FakeLlm
from ringline.engine.providers import build_providers
from ringline.engine.record import EndReason
from ringline.engine.tts.base import PhraseReplay, SpeechAudio
from ringline.engine.tts.fake import FakeTts
from ringline.engine.turns import TurnState
from tests.helpers import CallDriver
from tests.test_call import BOOK, agent


class Faults:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def fault(self, stage: str, detail: str) -> None:
        self.seen.append((stage, detail))


def context() -> Context:
    ctx = Context("sys")
    ctx.add(Message("user", "hello"))
    return ctx


async def text_of(llm: FailoverLlm) -> str:
    return "".join([e.text async for e in llm.stream(context(), []) if isinstance(e, TextDelta)])


def fake_llm(reply: str, fail_first: int = 0) -> FakeLlm:
    return FakeLlm(FakeLlmConfig(replies=(reply,), fail_first=fail_first), FakeClock())


class Refusing:
    """An LLM whose key is wrong: not worth retrying."""

    def __init__(self) -> None:
        self.calls = 0

    async def stream(self, context, tools) -> AsyncIterator[TextDelta]:
        self.calls += 1
        raise ProviderError("401 invalid key", retryable=False)
        yield TextDelta("")  # pragma: no cover - makes this an async generator


class RateLimited:
    """An LLM that answers 429 with ``Retry-After`` the first time, then replies."""

    def __init__(self, retry_after: float) -> None:
        self.retry_after = retry_after
        self.calls: list[float] = []

    async def stream(self, context, tools) -> AsyncIterator[TextDelta]:
        self.calls.append(asyncio.get_running_loop().time())
        if len(self.calls) == 1:
            raise ProviderError("HTTP 429", retryable=True, retry_after=self.retry_after)
        yield TextDelta("After the wait.")


class Hanging:
    async def stream(self, context, tools) -> AsyncIterator[TextDelta]:
        await asyncio.Event().wait()
        yield TextDelta("")  # pragma: no cover


async def test_a_failure_before_the_first_token_is_retried_once():
    faults = Faults()
    assert await text_of(FailoverLlm(fake_llm("Hi there.", fail_first=1), None, faults)) == "Hi there."
    assert faults.seen == [("llm", "llm: scripted failure 1 of 1")]


async def test_two_failures_go_to_the_fallback():
    faults = Faults()
    llm = FailoverLlm(fake_llm("primary", fail_first=2), fake_llm("From the fallback."), faults)
    assert await text_of(llm) == "From the fallback."
    assert [d for _, d in faults.seen] == ["llm: scripted failure 1 of 2", "llm retry: scripted failure 2 of 2"]


async def test_a_non_retryable_error_skips_the_retry():
    faults = Faults()
    primary = Refusing()
    assert await text_of(FailoverLlm(primary, fake_llm("Fallback."), faults)) == "Fallback."
    assert primary.calls == 1
    assert faults.seen == [("llm", "llm: 401 invalid key")]


async def test_nothing_answering_raises_unavailable():
    faults = Faults()
    with pytest.raises(LlmUnavailable):
        await text_of(FailoverLlm(fake_llm("x", fail_first=5), fake_llm("y", fail_first=5), faults))
    assert len(faults.seen) == 3


async def test_a_retry_after_within_the_budget_is_waited_for():
    faults = Faults()
    primary = RateLimited(retry_after=0.2)
    assert await text_of(FailoverLlm(primary, fake_llm("Fallback."), faults, budget_s=1.0)) == "After the wait."
    assert len(primary.calls) == 2 and primary.calls[1] - primary.calls[0] >= 0.2
    assert faults.seen == [("llm", "llm: HTTP 429")]


async def test_a_retry_after_past_the_budget_skips_the_retry_for_the_fallback():
    faults = Faults()
    primary = RateLimited(retry_after=1.0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await text_of(FailoverLlm(primary, fake_llm("Fallback."), faults, budget_s=1.0)) == "Fallback."
    assert loop.time() - started < 0.5
    assert len(primary.calls) == 1
    assert faults.seen == [("llm", "llm: HTTP 429")]


async def test_a_hanging_provider_is_given_up_within_the_budget():
    faults = Faults()
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(LlmUnavailable):
        await text_of(FailoverLlm(Hanging(), fake_llm("never reached"), faults, budget_s=0.2))
    assert loop.time() - started < 1.0
    assert faults.seen == [("llm", "llm: no first token within the 0.2 s budget")]


class FailsAt:
    """A TTS that speaks phrases and fails on the phrase with the given text."""

    def __init__(self, bad: str) -> None:
        self.bad = bad
        self.spoken: list[str] = []

    async def stream(self, phrases, preferred) -> AsyncIterator[SpeechAudio]:
        from ringline.engine.audio.formats import AudioChunk

        index = 0
        async for phrase in phrases:
            if phrase == self.bad:
                raise ProviderError("socket closed", retryable=True)
            self.spoken.append(phrase)
            yield SpeechAudio(index, AudioChunk(b"\xff" * 160, MULAW_8K))
            index += 1


async def phrases(*texts: str) -> AsyncIterator[str]:
    for t in texts:
        yield t


async def test_the_next_tts_takes_over_from_the_failed_phrase():
    faults = Faults()
    first, second = FailsAt("two"), FailsAt("never")
    out = [
        a.phrase async for a in FailoverTts([first, second], faults).stream(phrases("one", "two", "three"), MULAW_8K)
    ]
    assert out == [0, 1, 2]  # global phrase numbers continue across providers
    assert first.spoken == ["one"] and second.spoken == ["two", "three"]
    assert faults.seen == [("tts", "tts 0: socket closed")]


async def test_every_tts_failing_raises_unavailable():
    faults = Faults()
    tts = [FakeTts(FakeTtsConfig(fail=True), FakeClock()), FakeTts(FakeTtsConfig(fail=True), FakeClock())]
    with pytest.raises(TtsUnavailable):
        [a async for a in FailoverTts(tts, faults).stream(phrases("hello"), MULAW_8K)]
    assert len(faults.seen) == 2


async def test_a_phrase_reader_cancelled_as_its_phrase_comes_in_leaves_it_for_the_next():
    started, ready = asyncio.Event(), asyncio.get_running_loop().create_future()

    async def llm() -> AsyncIterator[str]:
        started.set()
        await ready
        yield "one"
        yield "two"

    replay = PhraseReplay(llm())
    reader = asyncio.ensure_future(anext(replay.read(0)))  # a provider's sender, waiting for a phrase
    await started.wait()
    ready.set_result(None)  # the phrase comes in...
    reader.cancel()  # ...as the provider fails, before its sender saw it
    with pytest.raises(asyncio.CancelledError):
        await reader
    assert [p async for p in replay.read(0)] == ["one", "two"]  # the next provider gets every phrase


# -- whole calls ---------------------------------------------------------------------------------


async def call_with(**overrides) -> CallDriver:
    d = CallDriver(agent(**overrides))
    await d.start()
    return d


async def test_call_speaks_the_apology_when_no_llm_answers():
    d = await call_with(**{"llm.fail_first": 9, "apology": "Sorry, say that again?"})
    await d.say(BOOK)
    await d.until(lambda: d.phone.media_times)
    await d.until(lambda: d.call.turn_state is TurnState.LISTENING)
    assert d.call.transcript()[-1] == {"role": "assistant", "content": "Sorry, say that again?"}
    assert [f["stage"] for f in d.call.record.faults] == ["llm", "llm"]
    await d.call.end(EndReason.CALLER_HANGUP)


async def test_call_uses_the_fallback_tts():
    d = CallDriver(
        agent(**{"tts.fail": True}).model_copy(update={"tts_fallbacks": (FakeTtsConfig(seconds_per_phrase=1.0),)})
    )
    await d.start()
    await d.say(BOOK)
    await d.until(lambda: d.phone.media_times)
    await d.until(lambda: d.call.turn_state is TurnState.LISTENING)
    assert d.phone.heard_seconds() == pytest.approx(1.0, abs=0.021)
    assert d.call.record.faults[0]["stage"] == "tts"
    await d.call.end(EndReason.CALLER_HANGUP)


class DeadStt:
    """An STT whose connection is lost for good after the first utterance."""

    def __init__(self, inner) -> None:
        self._inner = inner

    async def open(self, offered):
        session = await self._inner.open(offered)
        dead = asyncio.Event()

        class Session:
            format = session.format

            async def send(self, audio):
                await session.send(audio)

            def speech(self, active):
                session.speech(active)

            async def finalize(self):
                dead.set()

            async def __aiter__(self):
                await dead.wait()
                raise ProviderError("reconnect failed for 3 s", retryable=False)
                yield  # pragma: no cover

            async def aclose(self):
                await session.aclose()

        return Session()


async def test_losing_the_stt_for_good_says_so_and_hangs_up():
    config = agent(stt_failure_message="I can't hear you. Goodbye.")
    providers = build_providers(config, FakeClock())
    d = CallDriver(config, providers=dataclasses.replace(providers, stt=DeadStt(providers.stt)))
    await d.start()
    await d.say(BOOK)
    await d.until(lambda: d.call.status.value == "ended")
    assert d.call.transcript() == [{"role": "assistant", "content": "I can't hear you. Goodbye."}]
    assert d.phone.heard_seconds() == pytest.approx(2.0, abs=0.021)  # two phrases, 1 s each
    assert d.call.record.end_reason is EndReason.ERROR
    assert d.call.record.end_detail == "stt failed: reconnect failed for 3 s"
    assert d.call.record.faults[0]["stage"] == "stt"


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("7", 7.0),
        (" 0.5 ", 0.5),
        ("-3", 0.0),
        ("Wed, 21 Oct 2015 07:28:10 GMT", 10.0),  # an HTTP-date, 10 s after "now"
        ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),  # already past
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after_is_read_as_seconds_or_an_http_date(header, seconds):
    now = 1445412480.0  # Wed, 21 Oct 2015 07:28:00 GMT
    assert parse_retry_after(header, now=now) == seconds
