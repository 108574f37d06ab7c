"""A whole call in memory, frame by frame on a fake clock: turn-taking, replies, barge-in,
tools and hang-up, with the provider side played by ``Phone``."""

import asyncio
import dataclasses

import pytest

from ringline.benchmarks.clips import SHORT_CLIP, load_clip
from ringline.config.settings import load_settings
from ringline.engine.audio.clock import FakeClock
from ringline.engine.call import CallStatus
from ringline.engine.llm.base import Tool
from ringline.engine.providers import build_providers
from ringline.engine.record import EndReason
from ringline.engine.registry import CallRegistry
from ringline.engine.tools import default_registry
from ringline.engine.turns import TurnState
from tests.helpers import CallDriver

BOOK = load_clip("book_table.wav")
PRICES = load_clip("prices.wav")


def agent(**overrides):
    """The bench agent (zero latencies, 1 s replies, 200 ms end-of-turn), with overrides."""
    settings = load_settings("config/bench.toml")
    data = settings.agents["default"].model_dump()
    for path, value in overrides.items():
        node = data
        *parents, leaf = path.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return type(settings.agents["default"]).model_validate(data)


@pytest.fixture
async def driver():
    drivers = []

    async def make(agent_config, registry=None):
        d = CallDriver(agent_config, registry)
        drivers.append(d)
        await d.start()
        return d

    yield make
    for d in drivers:
        await d.call.end(EndReason.CALLER_HANGUP)


async def test_reply_arrives_after_the_end_of_turn_silence(driver):
    d = await driver(agent())
    last = await d.say(BOOK)
    first_audio = await d.until(lambda: d.phone.media_times)
    # 200 ms of silence after the last voiced frame, give or take a frame.
    assert 0.18 <= first_audio - last <= 0.24
    await d.until(lambda: d.call.turn_state is TurnState.LISTENING)
    assert d.phone.heard_seconds() == pytest.approx(1.0, abs=0.021)
    record = d.call.record
    assert [(t["role"], t["content"]) for t in d.call.transcript()] == [
        ("user", "Tell me more."),
        ("assistant", "Sure, here is the answer"),
    ]
    breakdown = record.turns[0].breakdown_ms()
    assert all(
        breakdown[k] is not None for k in ("stt_final", "llm_first_token", "tts_first_audio", "first_audio_sent")
    )
    assert breakdown["first_audio_sent"] == pytest.approx((first_audio - last) * 1000, abs=25)


class HintedStt:
    """The agent's STT, with every ``speech`` hint its sessions got written down."""

    def __init__(self, inner) -> None:
        self._inner = inner
        self.hints: list[bool] = []

    async def open(self, offered):
        return _HintedSession(await self._inner.open(offered), self.hints)


class _HintedSession:
    def __init__(self, session, hints: list[bool]) -> None:
        self._session = session
        self._hints = hints

    def __getattr__(self, name):
        return getattr(self._session, name)

    def __aiter__(self):
        return self._session.__aiter__()

    def speech(self, active: bool) -> None:
        self._hints.append(active)
        self._session.speech(active)


async def test_the_stt_session_is_told_when_the_caller_starts_and_stops_speaking():
    config = agent()
    providers = build_providers(config, FakeClock())
    stt = HintedStt(providers.stt)
    d = CallDriver(config, providers=dataclasses.replace(providers, stt=stt))
    await d.start()
    try:
        await d.wait(0.5)
        assert stt.hints == []  # silence: nothing to say
        await d.say(BOOK)
        await d.until(lambda: d.phone.media_times)  # the turn ended: the caller stopped
        assert len(stt.hints) >= 2 and stt.hints == [i % 2 == 0 for i in range(len(stt.hints))]
    finally:
        await d.call.end(EndReason.CALLER_HANGUP)


async def test_agent_speaks_first(driver):
    d = await driver(agent(first_speaker="agent", first_message="Hello, thanks for calling."))
    assert d.phone.media_times, "the first message starts before the caller says anything"
    assert d.call.turn_state is TurnState.AGENT_SPEAKING
    await d.until(lambda: d.call.turn_state is TurnState.LISTENING)
    assert d.call.transcript() == [{"role": "assistant", "content": "Hello, thanks for calling."}]


async def test_caller_speaks_first_means_silence_until_they_do(driver):
    d = await driver(agent(first_message="Hello."))
    await d.wait(1.0)
    assert d.phone.media_times == []


async def test_barge_in_clears_within_150_ms_and_truncates_to_what_was_heard(driver):
    d = await driver(
        agent(**{"tts.seconds_per_phrase": 4.0, "llm.fallback": "one two three four five six seven eight"})
    )
    await d.say(BOOK)
    await d.until(lambda: d.phone.media_times)
    await d.wait(1.0)  # a quarter of the reply heard
    await d.say(PRICES)
    barge_start = d.speech_started_at[-1]
    assert len(d.phone.clears) == 1
    assert d.phone.clears[0] - barge_start <= 0.15
    await d.until(lambda: d.call.turn_state is TurnState.AGENT_SPEAKING)
    messages = [m for m in d.call.context.messages if m.role == "assistant"]
    assert messages[0].interrupted
    # About 1.1 s of 4 s heard: two of eight words.
    assert messages[0].content == "one two"
    assert [m.content for m in d.call.context.messages if m.role == "user"] == ["Tell me more.", "Tell me more."]


async def test_false_interruption_resumes_and_keeps_the_whole_reply(driver):
    d = await driver(agent(**{"tts.seconds_per_phrase": 3.0, "stt.transcripts": ["Book a table.", ""]}))
    await d.say(BOOK)
    await d.until(lambda: d.phone.media_times)
    await d.wait(0.5)
    await d.say(PRICES)  # speech the STT finds no words in: noise
    assert len(d.phone.clears) == 1
    await d.until(lambda: d.call.turn_state is TurnState.LISTENING)
    assistant = [m for m in d.call.context.messages if m.role == "assistant"]
    assert len(assistant) == 1 and not assistant[0].interrupted
    assert assistant[0].content == "Sure, here is the answer"
    # The caller heard the reply to its end: 3 s in all, split around the interruption.
    assert d.phone.heard_seconds() == pytest.approx(3.0, abs=0.05)


async def test_backchannel_does_not_interrupt(driver):
    d = await driver(agent(**{"tts.seconds_per_phrase": 3.0, "stt.transcripts": ["Book a table.", "Mm-hm."]}))
    await d.say(BOOK)
    await d.until(lambda: d.phone.media_times)
    await d.wait(0.5)
    await d.say(load_clip(SHORT_CLIP))
    await d.until(lambda: d.call.turn_state is TurnState.LISTENING)
    assistant = [m for m in d.call.context.messages if m.role == "assistant"]
    assert not assistant[0].interrupted
    assert [m.content for m in d.call.context.messages if m.role == "user"] == ["Book a table."]
    assert d.phone.heard_seconds() == pytest.approx(3.0, abs=0.05)


async def test_end_call_tool_hangs_up_after_the_goodbye_is_heard(driver):
    d = await driver(agent(**{"llm.replies": ["Goodbye! [tool:end_call {}]"]}))
    await d.say(BOOK)
    await d.until(lambda: d.call.status is CallStatus.ENDED)
    assert d.phone.hung_up
    assert d.call.record.end_reason is EndReason.AGENT_HANGUP
    assert d.phone.heard_seconds() == pytest.approx(1.0, abs=0.021)
    roles = [m.role for m in d.call.context.messages]
    assert roles == ["system", "user", "assistant", "tool"]


async def test_tool_result_feeds_the_next_llm_round(driver):
    registry = default_registry()

    async def weather(args, control):
        return f"sunny in {args['city']}"

    registry.register(Tool("weather", "Weather for a city"), weather)
    d = await driver(
        agent(**{"llm.replies": ['Let me check. [tool:weather {"city": "Oslo"}]', "It is sunny."]}), registry
    )
    await d.say(BOOK)
    await d.until(lambda: d.call.turn_state is TurnState.LISTENING and len(d.call.context.messages) >= 5)
    msgs = [(m.role, m.content) for m in d.call.context.messages[1:]]
    assert msgs == [
        ("user", "Tell me more."),
        ("assistant", "Let me check."),
        ("tool", "sunny in Oslo"),
        ("assistant", "It is sunny."),
    ]
    assert d.phone.heard_seconds() == pytest.approx(2.0, abs=0.05)  # two phrases, 1 s each


async def test_tool_result_lands_even_when_the_caller_interrupts(driver):
    registry = default_registry()
    release = asyncio.Event()

    async def slow(args, control):
        await release.wait()
        return "done"

    registry.register(Tool("slow", "A slow lookup"), slow)
    d = await driver(
        agent(**{"tts.seconds_per_phrase": 3.0, "llm.replies": ["Checking that now. [tool:slow {}]"]}), registry
    )
    await d.say(BOOK)
    await d.until(lambda: d.phone.media_times)
    await d.wait(0.3)
    await d.say(PRICES)  # interrupts while the tool is still running
    await d.until(lambda: d.call.turn_state in (TurnState.THINKING, TurnState.AGENT_SPEAKING))
    release.set()
    await d.wait(0.1)
    roles = [m.role for m in d.call.context.messages]
    call_index = next(i for i, m in enumerate(d.call.context.messages) if m.tool_calls)
    assert d.call.context.messages[call_index + 1].role == "tool"
    assert d.call.context.messages[call_index + 1].content == "done"
    assert roles.count("user") == 2


async def test_caller_hangup_mid_reply_ends_cleanly(driver):
    d = await driver(agent(**{"tts.seconds_per_phrase": 3.0}))
    await d.say(BOOK)
    await d.until(lambda: d.phone.media_times)
    await d.wait(0.5)
    await d.call.end(EndReason.CALLER_HANGUP)
    assert d.call.status is CallStatus.ENDED
    assert not d.phone.hung_up  # the caller hung up: nothing to hang up
    assistant = d.call.record.transcript[-1]
    assert assistant["role"] == "assistant" and assistant.get("interrupted") is True
    pending = [t for t in asyncio.all_tasks() if t.get_name().endswith("CA-test") and not t.done()]
    assert pending == []


async def test_idle_watchdog_ends_a_call_whose_provider_went_silent(driver):
    d = await driver(agent())
    registry = CallRegistry()
    registry.add(d.call)
    watchdog = asyncio.create_task(registry.watch_idle(d.clock, 5.0))
    await d.wait(1.0)  # media flowing: nothing happens
    await d.clock.advance(4.9)
    assert d.call.status is CallStatus.ACTIVE
    await d.clock.advance(2.0)  # no message for more than 5 s
    await asyncio.wait_for(d.call.wait_ended(), 5)
    assert d.call.record.end_reason is EndReason.TRANSPORT_CLOSED
    assert d.call.record.end_detail == "no message from the provider for 5 s"
    assert d.phone.hung_up
    watchdog.cancel()
    await asyncio.gather(watchdog, return_exceptions=True)


def realistic(**overrides):
    """Published cloud latencies (STT final 150 ms, LLM first token 350 ms, TTS first audio
    150 ms) and a 500 ms end-of-turn silence, where preemptive generation has room to help."""
    base = {
        "stt.final_latency_ms": 150,
        "llm.ttft_ms": 350,
        "tts.ttfb_ms": 150,
        "turn.silence_ms": 500,
        "turn.sentence_end_silence_ms": 500,
        "turn.continuation_silence_ms": 500,
    }
    return agent(**(base | overrides))


async def first_reply_latency(d: CallDriver) -> float:
    last = await d.say(BOOK)
    return await d.until(lambda: d.phone.media_times) - last


async def test_preemptive_generation_answers_sooner_with_the_same_words(driver):
    slow = await driver(realistic(**{"turn.preemptive_generation": False}))
    fast = await driver(realistic(**{"turn.preemptive_generation": True}))
    without, with_ = await first_reply_latency(slow), await first_reply_latency(fast)
    # Without: silence 500 + LLM 350 + TTS 150. With: the LLM starts when the final lands
    # (VAD stop 160 + STT 150 after the speech), so about 190 ms sooner.
    assert without == pytest.approx(1.0, abs=0.03)
    assert without - with_ == pytest.approx(0.19, abs=0.03)
    await fast.until(lambda: fast.call.turn_state is TurnState.LISTENING)
    assert fast.call.transcript() == [
        {"role": "user", "content": "Tell me more."},
        {"role": "assistant", "content": "Sure, here is the answer"},
    ]
    assert fast.call.record.preemptive == {"started": 1, "used": 1, "discarded": 0}


async def test_a_prepared_reply_is_discarded_when_the_caller_goes_on(driver):
    d = await driver(realistic(**{"stt.transcripts": ["I'd like a table", "for two."]}))
    await d.say(BOOK)
    await d.wait(0.4)  # final in and a reply prepared, but not 500 ms of silence yet
    assert d.call.record.preemptive["started"] == 1
    assert d.phone.media_times == []  # a prepared reply sends nothing
    await d.say(PRICES)
    await d.until(lambda: d.phone.media_times)
    await d.until(lambda: d.call.turn_state is TurnState.LISTENING)
    assert [m.content for m in d.call.context.messages if m.role == "user"] == ["I'd like a table for two."]
    assert d.call.record.preemptive == {"started": 2, "used": 1, "discarded": 1}
    assert len([m for m in d.call.context.messages if m.role == "assistant"]) == 1


async def test_a_prepared_reply_runs_no_tool_before_the_turn_ends(driver):
    registry = default_registry()
    ran: list[float] = []

    async def book(args, control):
        ran.append(d.clock.now())
        return "booked"

    registry.register(Tool("book", "Book a table"), book)
    d = await driver(realistic(**{"llm.replies": ["[tool:book {}]", "Done."], "llm.ttft_ms": 0}), registry)
    last = await d.say(BOOK)
    await d.until(lambda: d.phone.media_times)
    assert ran and ran[0] - last >= 0.5 - 0.021  # only once the 500 ms silence had passed
