"""Tool registry (results, never exceptions), the built-in end_call, and where tool results land
in the conversation context."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from ringline.engine.llm.base import Context, Message, Tool, ToolCall
from ringline.engine.tools import END_CALL, CallControl, ToolRegistry, default_registry


class Control:
    """A CallControl that records hang-up requests."""

    call_id = "CA-test"

    def __init__(self) -> None:
        self.hangups: list[str] = []

    def request_hangup(self, reason: str) -> None:
        self.hangups.append(reason)


WEATHER = Tool("weather", "Weather in a city", {"type": "object", "properties": {"city": {"type": "string"}}})


async def weather(arguments: dict[str, Any], control: CallControl) -> str:
    return f"sunny in {arguments['city']} (call {control.call_id})"


async def broken(arguments: dict[str, Any], control: CallControl) -> str:
    raise RuntimeError("backend down")


def call(name: str, **arguments: Any) -> ToolCall:
    return ToolCall(Context.new_call_id(), name, arguments)


# -- registry --------------------------------------------------------------------------------------


async def test_registry_runs_a_tool_with_its_arguments_and_control() -> None:
    registry = ToolRegistry()
    registry.register(WEATHER, weather)
    assert await registry.run(call("weather", city="Oslo"), Control()) == "sunny in Oslo (call CA-test)"


async def test_unknown_tool_is_an_error_result() -> None:
    assert await ToolRegistry().run(call("teleport"), Control()) == "error: unknown tool 'teleport'"


async def test_raising_tool_is_an_error_result_and_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    registry = ToolRegistry()
    registry.register(Tool("broken", "Always fails"), broken)
    with caplog.at_level(logging.WARNING, logger="ringline.engine.tools"):
        result = await registry.run(call("broken"), Control())
    assert result == "error: RuntimeError: backend down"
    (record,) = caplog.records
    assert record.getMessage() == "tool broken failed"
    assert record.exc_info is not None and isinstance(record.exc_info[1], RuntimeError)
    assert record.call_id == "CA-test"  # type: ignore[attr-defined]


async def test_tool_with_bad_arguments_is_an_error_result() -> None:
    registry = ToolRegistry()
    registry.register(WEATHER, weather)
    assert await registry.run(call("weather"), Control()) == "error: KeyError: 'city'"


def test_duplicate_registration_is_refused() -> None:
    registry = ToolRegistry()
    registry.register(WEATHER, weather)
    with pytest.raises(ValueError) as info:
        registry.register(Tool("weather", "Another"), broken)
    assert str(info.value) == "tool 'weather' is already registered"
    assert registry.tools == [WEATHER]


def test_tools_are_listed_in_registration_order() -> None:
    registry = ToolRegistry()
    other = Tool("book", "Book a table")
    registry.register(WEATHER, weather)
    registry.register(other, weather, ends_reply=True)
    assert registry.tools == [WEATHER, other]
    assert (registry.ends_reply("weather"), registry.ends_reply("book"), registry.ends_reply("nope")) == (
        False,
        True,
        False,
    )


def test_default_registry_has_end_call_that_ends_the_reply() -> None:
    registry = default_registry()
    assert registry.tools == [END_CALL]
    assert registry.ends_reply("end_call")
    assert default_registry() is not registry  # a fresh registry per call


async def test_end_call_requests_a_hangup_with_the_reason() -> None:
    control = Control()
    result = await default_registry().run(call("end_call", reason="caller said goodbye"), control)
    assert result == "ok: the call ends after this reply"
    assert control.hangups == ["caller said goodbye"]


@pytest.mark.parametrize("arguments", [{}, {"reason": ""}, {"reason": None}])
async def test_end_call_without_a_reason(arguments: dict[str, Any]) -> None:
    control = Control()
    await default_registry().run(ToolCall("call_x", "end_call", arguments), control)
    assert control.hangups == ["agent_ended"]


# -- context ---------------------------------------------------------------------------------------


def test_context_starts_with_the_system_prompt() -> None:
    assert [(m.role, m.content) for m in Context("Be brief.").messages] == [("system", "Be brief.")]
    assert Context("").messages == []


def test_last_user_text() -> None:
    ctx = Context("sys")
    assert ctx.last_user_text() == ""
    ctx.add(Message("user", "first"))
    ctx.add(Message("assistant", "reply"))
    ctx.add(Message("user", "second"))
    ctx.add(Message("assistant", "another"))
    assert ctx.last_user_text() == "second"


def test_call_ids_are_unique() -> None:
    ids = {Context.new_call_id() for _ in range(100)}
    assert len(ids) == 100


def roles(ctx: Context) -> list[tuple[str, str]]:
    return [(m.role, m.tool_call_id or m.content) for m in ctx.messages]


def test_tool_result_follows_its_call() -> None:
    ctx = Context("sys")
    ctx.add(Message("user", "weather?"))
    c = call("weather", city="Oslo")
    ctx.add(Message("assistant", "Let me check.", tool_calls=(c,)))
    ctx.add_tool_result(c, "sunny")
    assert roles(ctx) == [("system", "sys"), ("user", "weather?"), ("assistant", "Let me check."), ("tool", c.id)]
    assert ctx.messages[-1].content == "sunny"


def test_late_tool_result_is_inserted_right_after_its_call() -> None:
    ctx = Context("sys")
    c = call("weather", city="Oslo")
    ctx.add(Message("assistant", "Let me check.", tool_calls=(c,)))
    ctx.add(Message("user", "hello? are you there"))  # the caller moved on before the result came
    ctx.add(Message("assistant", "Still checking."))
    ctx.add_tool_result(c, "sunny")
    assert roles(ctx) == [
        ("system", "sys"),
        ("assistant", "Let me check."),
        ("tool", c.id),
        ("user", "hello? are you there"),
        ("assistant", "Still checking."),
    ]


def test_results_of_one_message_keep_their_arrival_order_after_the_call() -> None:
    ctx = Context("sys")
    a, b, d = call("weather", city="Oslo"), call("weather", city="Rome"), call("book")
    ctx.add(Message("assistant", "", tool_calls=(a, b, d)))
    ctx.add(Message("user", "and?"))
    ctx.add_tool_result(b, "Rome: rain")
    ctx.add_tool_result(d, "booked")
    ctx.add_tool_result(a, "Oslo: sun")
    assert roles(ctx) == [
        ("system", "sys"),
        ("assistant", ""),
        ("tool", b.id),
        ("tool", d.id),
        ("tool", a.id),
        ("user", "and?"),
    ]
    assert [m.content for m in ctx.messages[2:5]] == ["Rome: rain", "booked", "Oslo: sun"]


def test_results_land_after_their_own_assistant_message() -> None:
    ctx = Context()
    first, second = call("weather", city="Oslo"), call("book")
    ctx.add(Message("assistant", "one", tool_calls=(first,)))
    ctx.add(Message("assistant", "two", tool_calls=(second,)))
    ctx.add(Message("user", "ok"))
    ctx.add_tool_result(second, "booked")
    ctx.add_tool_result(first, "sunny")
    assert roles(ctx) == [
        ("assistant", "one"),
        ("tool", first.id),
        ("assistant", "two"),
        ("tool", second.id),
        ("user", "ok"),
    ]


def test_result_for_an_unknown_call_is_appended() -> None:
    ctx = Context("sys")
    ctx.add(Message("user", "hi"))
    orphan = call("weather")
    ctx.add_tool_result(orphan, "sunny")
    assert roles(ctx)[-1] == ("tool", orphan.id)
    assert len(ctx.messages) == 3
