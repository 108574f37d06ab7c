"""The scripted agent: intents matched by word overlap, slots asked for and filled, tools called
and their results spoken, the call ended on goodbye; alone, and driving a whole call."""

from __future__ import annotations

import asyncio
import logging
import tomllib

import pytest

from ringline.benchmarks.clips import load_clip
from ringline.config.providers import Intent, ScriptedLlmConfig, Slot
from ringline.config.settings import AgentConfig, load_settings
from ringline.engine.audio.clock import FakeClock
from ringline.engine.call import CallStatus
from ringline.engine.errors import ConfigError
from ringline.engine.llm import scripted
from ringline.engine.llm.base import Context, Message, TextDelta, Tool, ToolCall
from ringline.engine.llm.scripted import TOOL_FAILED, ScriptedLlm, content_words, score
from ringline.engine.record import EndReason
from ringline.engine.tools import END_CALL, default_registry
from ringline.engine.turns import TurnState
from tests.helpers import CallDriver

PARTY_SIZE = r"(?<!at )(?<!:)\b(\d+|one|two|three|four|five|six|seven|eight)\b(?! ?(?:[ap]\.?m|o'clock|:))"
TIME = r"\b((?:\d\d?(?::\d\d)?|one|two|three|four|five|six|seven|eight|nine|ten)(?: ?[ap]\.?m)?|noon)\b"
BISTRO = ScriptedLlmConfig(
    provider="scripted",
    fallback="Sorry, I can book a table or tell you our opening hours. Which would you like?",
    min_score=0.3,
    slots=(
        Slot(name="party_size", question="Sure. How many people is the table for?", pattern=PARTY_SIZE),
        Slot(name="time", question="And for what time?", pattern=TIME),
    ),
    intents=(
        Intent(
            name="book_table",
            examples=("I'd like to book a table", "can I make a reservation", "a table for two please"),
            slots=("party_size", "time"),
            tool="book_table",
            answer="You're booked for {party_size} at {time}. Your confirmation number is {result}. Anything else?",
        ),
        Intent(
            name="opening_hours",
            examples=("what time do you open", "what are your opening hours", "are you open today"),
            answer="We're open from noon to ten every day, and the kitchen closes at nine thirty.",
        ),
        Intent(
            name="goodbye",
            examples=("goodbye", "bye", "that's all thank you", "no thanks bye"),
            answer="Thanks for calling Ringline Bistro. Goodbye!",
            end_call=True,
        ),
    ),
)
HOURS = BISTRO.intents[1].answer
GOODBYE = BISTRO.intents[2].answer
ASK_PARTY, ASK_TIME = (s.question for s in BISTRO.slots)
BOOK_TABLE = Tool("book_table", "Book a table", {"type": "object", "properties": {}})
TOOLS = (BOOK_TABLE, END_CALL)


class Dialog:
    """Plays the responder's part: each caller turn streams a reply, runs its tool calls (results
    from ``results``), and streams again after tool results until a reply calls no tool."""

    def __init__(
        self, config: ScriptedLlmConfig = BISTRO, tools: tuple[Tool, ...] = TOOLS, book_result: str = "R42"
    ) -> None:
        self.llm = ScriptedLlm(config, FakeClock())
        self.tools = tools
        self.context = Context("You answer the phone for Ringline Bistro.")
        self.results = {"book_table": book_result, "end_call": "ok: the call ends after this reply"}
        self.calls: list[ToolCall] = []

    async def turn(self, text: str) -> str:
        self.context.add(Message("user", text))
        said: list[str] = []
        for _ in range(4):
            message = Message("assistant", "")
            async for event in self.llm.stream(self.context, self.tools):
                if isinstance(event, TextDelta):
                    message.content += event.text
                else:
                    message.tool_calls += (event,)
            self.context.add(message)
            said.append(message.content)
            for call in message.tool_calls:
                self.calls.append(call)
                self.context.add_tool_result(call, self.results[call.name])
            if not message.tool_calls or any(c.name == "end_call" for c in message.tool_calls):
                break
        return " ".join(s for s in said if s)


async def events_for(context: Context, tools: tuple[Tool, ...] = TOOLS, config: ScriptedLlmConfig = BISTRO):
    return [e async for e in ScriptedLlm(config, FakeClock()).stream(context, tools)]


def user(text: str) -> Context:
    context = Context("system")
    context.add(Message("user", text))
    return context


# -- matching ------------------------------------------------------------------------------------


def test_score_is_the_share_of_the_examples_content_words_heard() -> None:
    example = content_words("I'd like to book a table")
    assert example == ("book", "table")
    assert score(example, set(content_words("Can I book something?"))) == (0.5, 1.0)
    assert score(example, set(content_words("Booking a table, please."))) == (1.0, 2.0)  # same stem
    share, earned = score(example, set(content_words("I want to book a tabel")))  # misheard: partial credit
    assert share == pytest.approx(0.9) and earned == pytest.approx(1.8)
    assert score(content_words("that's all thank you"), {"think"}) == (0.0, 0.0)  # misheard words alone


@pytest.mark.parametrize(
    ("heard", "reply"),
    [
        ("What time do you open tomorrow?", HOURS),
        ("What time do you opn tomorrow?", HOURS),  # misrecognised words
        ("Hi, I'd like to book a tabel.", ASK_PARTY),
        ("Hmm, let me think.", BISTRO.fallback),  # "think" is close to "thank", but nothing is heard as such
        ("Thanks. Actually, can I book a table?", ASK_PARTY),  # the better match wins
        ("Do you sell gift cards?", BISTRO.fallback),
        ("What?", BISTRO.fallback),  # only stop words in common
    ],
)
async def test_the_caller_turn_is_matched_to_an_intent_or_gets_the_fallback(heard: str, reply: str) -> None:
    assert await Dialog().turn(heard) == reply


async def test_min_score_sets_how_much_of_an_example_must_be_heard() -> None:
    assert await Dialog().turn("Can I book?") == ASK_PARTY  # half of "book a table"
    strict = BISTRO.model_copy(update={"min_score": 0.6})
    assert await Dialog(strict).turn("Can I book?") == BISTRO.fallback


# -- slots ---------------------------------------------------------------------------------------


async def test_slots_are_asked_in_order_and_filled_across_turns() -> None:
    dialog = Dialog()
    assert await dialog.turn("Hello, I'd like to book a table.") == ASK_PARTY
    assert await dialog.turn("Four of us.") == ASK_TIME
    assert dialog.calls == []
    said = await dialog.turn("At 7:30, please.")
    assert said == "You're booked for Four at 7:30. Your confirmation number is R42. Anything else?"
    assert [(c.name, c.arguments) for c in dialog.calls] == [("book_table", {"party_size": "Four", "time": "7:30"})]


async def test_slots_said_up_front_are_not_asked_for() -> None:
    dialog = Dialog()
    said = await dialog.turn("Hi, can I book a table for two at 7 pm?")
    assert said == "You're booked for two at 7 pm. Your confirmation number is R42. Anything else?"
    assert [c.arguments for c in dialog.calls] == [{"party_size": "two", "time": "7 pm"}]

    dialog = Dialog()
    said = await dialog.turn("A table at noon for six people, please.")  # in any order
    assert said.startswith("You're booked for six at noon.")
    assert [c.arguments for c in dialog.calls] == [{"party_size": "six", "time": "noon"}]

    dialog = Dialog()
    assert await dialog.turn("I'd like a table for 3 tonight.") == ASK_TIME


async def test_an_open_ended_slot_is_filled_only_when_asked() -> None:
    callback = Intent(
        name="callback",
        examples=("can someone call me back",),
        slots=("name",),
        answer="Thanks {name}, we'll call you back.",
    )
    config = BISTRO.model_copy(
        update={
            "slots": (*BISTRO.slots, Slot(name="name", question="What name should we ask for?")),  # pattern ".+"
            "intents": (*BISTRO.intents, callback),
        }
    )
    dialog = Dialog(config)
    assert await dialog.turn("Could someone call me back?") == "What name should we ask for?"
    assert await dialog.turn("Alice Smith.") == "Thanks Alice Smith, we'll call you back."


async def test_an_unanswered_question_is_asked_again_unless_the_caller_changes_the_subject() -> None:
    dialog = Dialog()
    assert await dialog.turn("I'd like to book a table") == ASK_PARTY
    assert await dialog.turn("Hmm, let me think.") == ASK_PARTY
    assert await dialog.turn("Actually, what are your opening hours?") == HOURS
    assert await dialog.turn("Five.") == BISTRO.fallback  # the booking was given up
    assert dialog.calls == []


async def test_the_dialog_state_is_read_from_the_context_not_kept() -> None:
    dialog = Dialog()
    await dialog.turn("I'd like to book a table")
    await dialog.turn("two people")
    # A fresh instance (and one reading a context without the agent's question) goes on the same.
    dialog.llm = ScriptedLlm(BISTRO, FakeClock())
    dialog.context.messages[:] = [m for m in dialog.context.messages if m.content != ASK_TIME]
    assert (
        await dialog.turn("at 8 pm") == "You're booked for two at 8 pm. Your confirmation number is R42. Anything else?"
    )


async def test_caller_messages_the_agent_did_not_answer_read_as_one_turn() -> None:
    """A turn cut in two by a pause (the first part's reply abandoned unheard) is read whole: the
    tail alone ("please") would get the fallback."""
    context = Context("system")
    context.add(Message("user", "I'd like to book a table for two."))
    context.add(Message("user", "Please."))
    events = await events_for(context)
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == ASK_TIME


async def test_a_turn_split_after_its_tool_call_does_not_call_the_tool_twice() -> None:
    dialog = Dialog()
    assert await dialog.turn("I'd like to book a table for two.") == ASK_TIME
    said = await dialog.turn("At 7:30 tonight.")
    assert said.startswith("You're booked for two at 7:30.")
    # The caller went on ("please") before hearing anything: the reply was dropped, the call kept.
    del dialog.context.messages[-1]
    said = await dialog.turn("Please.")
    assert said.startswith("You're booked for two at 7:30.")
    assert [c.name for c in dialog.calls] == ["book_table"]


# -- tools ---------------------------------------------------------------------------------------


async def test_the_tool_is_called_with_the_slots_then_its_result_is_spoken() -> None:
    context = user("A table for two at noon, please.")
    events = await events_for(context)
    assert len(events) == 1 and isinstance(events[0], ToolCall)
    call = events[0]
    assert (call.name, call.arguments) == ("book_table", {"party_size": "two", "time": "noon"})
    assert call.id.startswith("call_")

    context.add(Message("assistant", "", tool_calls=(call,)))
    context.add_tool_result(call, "R7")
    events = await events_for(context)
    assert all(isinstance(e, TextDelta) for e in events)  # no second booking
    assert "".join(e.text for e in events) == (
        "You're booked for two at noon. Your confirmation number is R7. Anything else?"
    )


async def test_a_failed_tool_is_apologised_for() -> None:
    dialog = Dialog(book_result="error: RuntimeError: fully booked")
    assert await dialog.turn("Table for four at 9 pm.") == TOOL_FAILED
    assert len(dialog.calls) == 1


async def test_a_tool_the_agent_does_not_have_is_not_called(caplog: pytest.LogCaptureFixture) -> None:
    dialog = Dialog(tools=(END_CALL,))
    with caplog.at_level(logging.WARNING, logger="ringline.engine.llm.scripted"):
        said = await dialog.turn("Table for four at 9 pm.")
    assert dialog.calls == []
    assert said == "You're booked for four at 9 pm. Anything else?"  # the sentence naming {result} left out
    assert "intent book_table: tool 'book_table' is not available, answering without it" in caplog.messages


# -- ending the call -----------------------------------------------------------------------------


async def test_goodbye_is_spoken_word_by_word_then_the_call_is_ended() -> None:
    events = await events_for(user("No, that's all. Thanks, bye!"))
    assert events[:-1] == [TextDelta(w) for w in ["Thanks", " for", " calling", " Ringline", " Bistro.", " Goodbye!"]]
    end = events[-1]
    assert isinstance(end, ToolCall) and (end.name, end.arguments) == ("end_call", {"reason": "goodbye"})


async def test_without_the_end_call_tool_goodbye_is_only_said() -> None:
    events = await events_for(user("bye"), tools=(BOOK_TABLE,))
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == GOODBYE
    assert not any(isinstance(e, ToolCall) for e in events)


async def test_words_are_streamed_yielding_to_the_loop_between_them() -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    seen = [ticks async for _ in ScriptedLlm(BISTRO, FakeClock()).stream(user("bye"), TOOLS)]
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert len(seen) == 7  # six words and the end_call
    assert all(a < b for a, b in zip(seen, seen[1:], strict=False))


# -- configuration -------------------------------------------------------------------------------


def test_mistakes_in_the_config_are_reported_together() -> None:
    bad = ScriptedLlmConfig(
        provider="scripted",
        slots=(Slot(name="when", question="When?", pattern="(unclosed"),),
        intents=(Intent(name="book", examples=("book",), slots=("when", "who"), answer="For {who} at {where}."),),
    )
    with pytest.raises(ConfigError) as error:
        ScriptedLlm(bad, FakeClock())
    assert str(error.value) == (
        "scripted LLM config is invalid: slot 'when': bad pattern: missing ), unterminated subpattern at position 0; "
        "intent 'book': unknown slots ['who']; "
        "intent 'book': answer names ['where'], which are not its slots or tool result"
    )


def test_the_module_docstring_example_is_this_agent() -> None:
    block = scripted.__doc__.split("```toml\n")[1].split("```")[0]
    settings = load_settings(data={**tomllib.loads(block), "default_agent": "bistro"})
    assert settings.agent(None).llm == BISTRO


# -- a whole call --------------------------------------------------------------------------------


def bistro_agent(transcripts: list[str]) -> AgentConfig:
    """The bench agent (zero latencies, 1 s phrases) as the bistro line, hearing ``transcripts``."""
    data = load_settings("config/bench.toml").agents["default"].model_dump()
    data |= {
        "first_speaker": "agent",
        "first_message": "Thanks for calling Ringline Bistro, how can I help?",
        "llm": BISTRO.model_dump(),
    }
    data["stt"]["transcripts"] = transcripts
    return AgentConfig.model_validate(data)


async def test_a_whole_call_books_a_table_and_hangs_up() -> None:
    booked: list[dict[str, str]] = []

    async def book_table(args: dict[str, str], control: object) -> str:
        booked.append(args)
        return "R42"

    registry = default_registry()
    registry.register(BOOK_TABLE, book_table)
    agent = bistro_agent(["Hi, I'd like to book a table for four.", "At seven pm, please.", "No, that's all. Bye!"])
    clip = load_clip("book_table.wav")
    d = CallDriver(agent, registry)
    await d.start()
    try:
        for _ in range(2):
            await d.until(lambda: d.call.turn_state is TurnState.LISTENING)
            await d.say(clip)
            await d.until(lambda: d.call.turn_state is TurnState.AGENT_SPEAKING)
        await d.until(lambda: d.call.turn_state is TurnState.LISTENING)
        await d.say(clip)
        await d.until(lambda: d.call.status is CallStatus.ENDED, limit=15.0)
    finally:
        if d.call.status is not CallStatus.ENDED:
            await d.call.end(EndReason.CALLER_HANGUP)

    assert booked == [{"party_size": "four", "time": "seven pm"}]
    assert d.phone.hung_up and d.call.record.end_reason is EndReason.AGENT_HANGUP
    assert [(t["role"], t["content"]) for t in d.call.transcript()] == [
        ("assistant", "Thanks for calling Ringline Bistro, how can I help?"),
        ("user", "Hi, I'd like to book a table for four."),
        ("assistant", ASK_TIME),
        ("user", "At seven pm, please."),
        ("assistant", "You're booked for four at seven pm. Your confirmation number is R42. Anything else?"),
        ("user", "No, that's all. Bye!"),
        ("assistant", GOODBYE),
    ]
    tool_messages = [(m.role, m.content) for m in d.call.context.messages if m.role == "tool"]
    assert tool_messages == [("tool", "R42"), ("tool", "ok: the call ends after this reply")]
    calls = [c.name for m in d.call.context.messages for c in m.tool_calls]
    assert calls == ["book_table", "end_call"]
