"""Language-model seam and the conversation context it reads."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})


@dataclass(slots=True)
class Message:
    role: Role
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    interrupted: bool = False
    """An assistant message cut short by the caller: ``content`` is what they heard."""


class Context:
    """The conversation so far, in the order the LLM sees it."""

    _ids = itertools.count(1)

    def __init__(self, system_prompt: str = "") -> None:
        self.messages: list[Message] = [Message("system", system_prompt)] if system_prompt else []

    def add(self, message: Message) -> Message:
        self.messages.append(message)
        return message

    def add_tool_result(self, call: ToolCall, result: str) -> Message:
        """Insert the result right after the assistant message that made the call (and any
        earlier results for it), even if the conversation has moved on since: providers
        require tool results to follow their call."""
        for i, msg in enumerate(self.messages):
            if any(c.id == call.id for c in msg.tool_calls):
                j = i + 1
                while j < len(self.messages) and self.messages[j].role == "tool":
                    j += 1
                message = Message("tool", result, tool_call_id=call.id)
                self.messages.insert(j, message)
                return message
        return self.add(Message("tool", result, tool_call_id=call.id))

    def last_user_text(self) -> str:
        return next((m.content for m in reversed(self.messages) if m.role == "user"), "")

    @classmethod
    def new_call_id(cls) -> str:
        return f"call_{next(cls._ids)}"


LlmEvent = TextDelta | ToolCall


class Llm(Protocol):
    def stream(self, context: Context, tools: Sequence[Tool]) -> AsyncIterator[LlmEvent]: ...
