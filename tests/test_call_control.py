"""Live-call control (say, inject-context, end-call, transfer) and the events a call emits, on a
whole call in memory, frame by frame on a fake clock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import pytest

from ringline.benchmarks.clips import load_clip
from ringline.engine.call import CallNotActive, CallStatus
from ringline.engine.events import CallEvent, EventType
from ringline.engine.llm.base import Context, LlmEvent, Message, Tool
from ringline.engine.llm.fake import FakeLlm
from ringline.engine.providers import build_providers
from ringline.engine.record import EndReason
from ringline.engine.transports.base import TransferFailed
from ringline.engine.turns import TurnState
from tests.helpers import CallDriver
from tests.test_call import agent

BOOK = load_clip("book_table.wav")
PRICES = load_clip("prices.wav")


class Events:
    def __init__(self) -> None:
        self.seen: list[CallEvent] = []

    def on_event(self, event: CallEvent) -> None:
        self.seen.append(event)

    def of(self, type: EventType) -> list[dict]:
        return [dict(e.data) for e in self.seen if e.type is type]


class RecordingLlm:
    """The fake LLM, remembering the context of every request."""

    def __init__(self, llm: FakeLlm) -> None:
        self._llm = llm
        self.contexts: list[list[Message]] = []

    def stream(self, context: Context, tools: Sequence[Tool]) -> AsyncIterator[LlmEvent]:
        self.contexts.append(list(context.messages))
        return self._llm.stream(context, tools)


@pytest.fixture
async def call():
    made: list[CallDriver] = []

    async def make(config=None, *, record_llm: bool = False) -> tuple[CallDriver, Events]:
        config = config or agent()
        d = CallDriver(config)
        if record_llm:
            providers = build_providers(config, d.clock)
            llm = RecordingLlm(providers.llm)
            d = CallDriver(config, providers=type(providers)(providers.stt, llm, providers.tts))
            d.llm = llm
        events = Events()
        d.call.events.observe(events)
        made.append(d)
        await d.start()
        return d, events

    yield make
    for d in made:
        await d.call.end(EndReason.CALLER_HANGUP)


async def test_a_turn_emits_transcripts_settled_messages_speech_and_latency_in_order(call):
    d, events = await call()
    await d.say(BOOK)
    await d.until(lambda: d.call.turn_state is TurnState.LISTENING and d.phone.media_times)
    kinds = [e.type for e in events.seen]
    assert kinds[0] is EventType.STATUS and events.of(EventType.STATUS)[0] == {"status": "active"}
    assert [e.seq for e in events.seen] == list(range(1, len(events.seen) + 1))
    assert {"role": "user", "text": "Tell me more.", "final": True} in events.of(EventType.TRANSCRIPT)
    messages = events.of(EventType.MESSAGE)
    assert [(m["role"], m["content"], m["interrupted"]) for m in messages] == [
        ("user", "Tell me more.", False),
        ("assistant", "Sure, here is the answer", False),
    ]
    assert events.of(EventType.SPEECH) == [
        {"state": "started", "interrupted": False},
        {"state": "stopped", "interrupted": False},
    ]
    (latency,) = events.of(EventType.LATENCY)
    assert latency["turn"] == 1 and latency["first_audio_sent"] is not None
    # the caller's message settles before the reply's latency and speech; the reply last
    assert kinds.index(EventType.MESSAGE) < kinds.index(EventType.LATENCY) < kinds.index(EventType.SPEECH)
    assert max(i for i, k in enumerate(kinds) if k is EventType.MESSAGE) > kinds.index(EventType.SPEECH)


async def test_an_interrupted_reply_settles_as_what_was_heard(call):
    d, events = await call(agent(**{"tts.seconds_per_phrase": 3.0}))
    await d.say(BOOK)
    await d.until(lambda: d.call.turn_state is TurnState.AGENT_SPEAKING)
    await d.wait(0.5)
    await d.say(PRICES)
    await d.until(lambda: any(m["role"] == "assistant" for m in events.of(EventType.MESSAGE)))
    reply = next(m for m in events.of(EventType.MESSAGE) if m["role"] == "assistant")
    assert reply["interrupted"] is True
    assert reply["content"] and reply["content"] != "Sure, here is the answer"
    assert {"state": "stopped", "interrupted": True} in events.of(EventType.SPEECH)


async def test_say_speaks_at_once_and_is_part_of_the_conversation(call):
    d, events = await call()
    await d.wait(0.2)
    await d.call.say("Your order has shipped.")
    await d.until(lambda: d.call.turn_state is TurnState.LISTENING and d.phone.media_times)
    assert d.phone.heard_seconds() == pytest.approx(1.0, abs=0.05)  # the bench TTS: 1 s a phrase
    assert d.call.transcript() == [{"role": "assistant", "content": "Your order has shipped."}]
    assert {"command": "say", "content": "Your order has shipped.", "end_after": False} in events.of(EventType.CONTROL)
    assert d.call.status is CallStatus.ACTIVE


async def test_say_cuts_a_reply_in_progress_to_what_was_heard(call):
    d, events = await call(agent(**{"tts.seconds_per_phrase": 3.0}))
    await d.say(BOOK)
    await d.until(lambda: d.call.turn_state is TurnState.AGENT_SPEAKING)
    await d.wait(1.0)
    await d.call.say("One moment please.")
    await d.until(lambda: d.call.turn_state is TurnState.LISTENING)
    spoken = [(m["role"], m["content"], m["interrupted"]) for m in events.of(EventType.MESSAGE)]
    assert spoken[0] == ("user", "Tell me more.", False)
    assert spoken[1][0] == "assistant" and spoken[1][2] is True  # the LLM reply, cut short
    assert spoken[2] == ("assistant", "One moment please.", False)


async def test_say_with_end_after_hangs_up_once_heard(call):
    d, _ = await call()
    await d.call.say("Goodbye now.", end_after=True)
    await d.until(lambda: d.call.status is CallStatus.ENDED)
    assert d.phone.heard_seconds() == pytest.approx(1.0, abs=0.05)
    assert d.call.record.end_reason is EndReason.API_ENDED
    assert d.phone.hung_up


async def test_inject_context_reaches_the_llm_and_can_trigger_a_reply(call):
    d, events = await call(record_llm=True)
    assert await d.call.inject_context("The caller is a VIP customer.", respond=False) is False
    await d.wait(0.3)
    assert d.llm.contexts == [] and not d.phone.media_times  # silently added
    await d.say(BOOK)
    await d.until(lambda: d.llm.contexts)
    assert Message("system", "The caller is a VIP customer.") in d.llm.contexts[0]
    await d.until(lambda: d.call.turn_state is TurnState.LISTENING)
    assert await d.call.inject_context("Offer the caller a discount.", respond=True) is True
    await d.until(lambda: len(d.llm.contexts) == 2)
    assert d.llm.contexts[1][-1] == Message("system", "Offer the caller a discount.")
    await d.until(lambda: d.call.turn_state is TurnState.LISTENING)
    assert [m["role"] for m in events.of(EventType.MESSAGE)] == ["system", "user", "assistant", "system", "assistant"]


async def test_inject_context_does_not_talk_over_the_caller(call):
    d, _ = await call(record_llm=True)
    for frame_start in range(0, 800, 160):  # the caller is mid-sentence
        await d.step(BOOK[frame_start : frame_start + 160])
    assert d.call.turn_state is TurnState.USER_SPEAKING
    assert await d.call.inject_context("Be brief.", respond=True) is False
    await d.say(BOOK[800:])
    await d.until(lambda: d.llm.contexts)
    assert d.llm.contexts[0][-2:] == [Message("system", "Be brief."), Message("user", "Tell me more.")]


async def test_end_call_with_a_message_speaks_it_then_hangs_up(call):
    d, events = await call()
    await d.call.hang_up("Thanks for calling, goodbye.")
    await d.until(lambda: d.call.status is CallStatus.ENDED)
    assert d.call.record.end_reason is EndReason.API_ENDED
    assert d.call.transcript() == [{"role": "assistant", "content": "Thanks for calling, goodbye."}]
    assert [s["status"] for s in events.of(EventType.STATUS)] == ["active", "ending", "ended"]


async def test_end_call_without_a_message_ends_at_once(call):
    d, _ = await call()
    await d.call.hang_up()
    await d.until(lambda: d.call.status is CallStatus.ENDED, limit=0.1)
    assert d.call.record.end_reason is EndReason.API_ENDED and not d.phone.media_times


async def test_transfer_announces_then_hands_the_call_over(call):
    d, events = await call()
    await d.call.transfer("+14155550100", "Transferring you to our sales team.")
    assert d.call.status is CallStatus.TRANSFERRING
    await d.until(lambda: d.call.status is CallStatus.ENDED)
    assert d.phone.transferred_to == "+14155550100"
    assert d.phone.heard_seconds() == pytest.approx(1.0, abs=0.05)  # heard the announcement first
    assert (d.call.record.end_reason, d.call.record.end_detail) == (EndReason.TRANSFERRED, "+14155550100")
    assert [s["status"] for s in events.of(EventType.STATUS)] == ["active", "transferring", "ending", "ended"]


async def test_a_warm_transfer_briefs_in_the_agents_voice_and_the_waiting_caller_is_heard_not_answered(call):
    d, events = await call()
    d.phone.transfer_gate = gate = asyncio.Event()
    await d.call.transfer("sip:sales@example.com", briefing="A caller wants a table for four.")
    try:
        assert d.call.status is CallStatus.TRANSFERRING
        await d.say(BOOK)  # the caller talks while the far end rings
        await d.until(lambda: len(d.call.transcript()) == 1, limit=3.0)
        assert d.call.transcript()[0]["role"] == "user" and not d.phone.media_times  # heard, not answered
    finally:
        gate.set()
    await d.until(lambda: d.call.status is CallStatus.ENDED)
    assert d.phone.transferred_to == "sip:sales@example.com"
    assert d.phone.briefing is not None
    assert d.phone.format.duration(len(d.phone.briefing)) == pytest.approx(1.0, abs=0.05)  # one phrase of fake TTS
    (control,) = events.of(EventType.CONTROL)
    assert control["briefing"] == "A caller wants a table for four."
    assert d.call.record.end_reason is EndReason.TRANSFERRED


async def test_a_transfer_the_provider_refuses_is_told_to_the_caller_and_the_call_goes_on(call):
    d, events = await call(agent(transfer_failed_message="Sorry, the line is busy."))
    d.phone.refuse_transfer = True
    await d.call.transfer("sip:sales@example.com")
    assert await d.call.wait_transfer() == "provider refused the transfer to sip:sales@example.com"
    assert d.call.status is CallStatus.ACTIVE and not d.phone.hung_up
    await d.until(lambda: d.call.turn_state is TurnState.LISTENING and d.phone.media_times)
    assert d.phone.heard_seconds() == pytest.approx(1.0, abs=0.05)  # the apology, heard out
    assert d.call.transcript() == [{"role": "assistant", "content": "Sorry, the line is busy."}]
    (fault,) = events.of(EventType.FAULT)
    assert fault == {"stage": "transfer", "detail": "provider refused the transfer to sip:sales@example.com"}
    assert events.of(EventType.TRANSFER_FAILED) == [
        {"destination": "sip:sales@example.com", "detail": "provider refused the transfer to sip:sales@example.com"}
    ]
    assert [s["status"] for s in events.of(EventType.STATUS)] == ["active", "transferring", "active"]
    await d.say(BOOK)  # the conversation carries on
    await d.until(lambda: d.call.turn_state is TurnState.LISTENING and len(d.call.transcript()) == 3)
    assert d.call.record.end_reason is None


async def test_transfer_on_a_transport_that_cannot_is_refused_before_anything_is_said(call):
    d, _ = await call()
    d.phone.transfer_unavailable = "no REST credentials"
    with pytest.raises(TransferFailed, match="no REST credentials"):
        await d.call.transfer("+14155550100", "Transferring you.")
    assert d.call.status is CallStatus.ACTIVE and not d.phone.media_times


@pytest.mark.parametrize(
    "command",
    [
        lambda c: c.say("hi"),
        lambda c: c.inject_context("x"),
        lambda c: c.hang_up(),
        lambda c: c.transfer("+14155550100"),
    ],
    ids=["say", "inject-context", "end-call", "transfer"],
)
async def test_commands_on_an_ended_call_are_refused(call, command):
    d, _ = await call()
    await d.call.end(EndReason.CALLER_HANGUP)
    with pytest.raises(CallNotActive, match="the call is ended, not in progress"):
        await command(d.call)


async def test_tool_calls_and_results_are_events(call):
    d, events = await call(agent(**{"llm.replies": ['Bye! [tool:end_call {"reason": "done"}]']}))
    await d.say(BOOK)
    await d.until(lambda: d.call.status is CallStatus.ENDED)
    (tool_call,) = events.of(EventType.TOOL_CALL)
    assert tool_call["name"] == "end_call" and tool_call["arguments"] == {"reason": "done"}
    (result,) = events.of(EventType.TOOL_RESULT)
    assert result["id"] == tool_call["id"] and result["result"].startswith("ok")
    roles = [m["role"] for m in events.of(EventType.MESSAGE)]
    assert roles == ["user", "tool", "assistant"] or roles == ["user", "assistant", "tool"]


async def test_an_observer_that_raises_does_not_break_the_call(call):
    class Broken:
        def on_event(self, event: CallEvent) -> None:
            raise RuntimeError("observer bug")

    d, events = await call()
    d.call.events.observe(Broken())
    await d.say(BOOK)
    await d.until(lambda: d.call.turn_state is TurnState.LISTENING and d.phone.media_times)
    assert [m["role"] for m in events.of(EventType.MESSAGE)] == ["user", "assistant"]
