"""Tools the LLM can call, and the built-in ones every agent has."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ringline.engine.llm.base import Tool, ToolCall

log = logging.getLogger(__name__)


class CallControl(Protocol):
    """What a tool may do to the call it runs in."""

    call_id: str

    def request_hangup(self, reason: str) -> None:
        """End the call once the caller has heard the current reply."""
        ...


Handler = Callable[[dict[str, Any], CallControl], Awaitable[str]]


@dataclass(frozen=True, slots=True)
class RegisteredTool:
    tool: Tool
    handler: Handler
    ends_reply: bool = False
    """No further LLM round after this tool (``end_call``): its result is not spoken about."""


class ToolRegistry:
    def __init__(self) -> None:
        self._tools: dict[str, RegisteredTool] = {}

    def register(self, tool: Tool, handler: Handler, *, ends_reply: bool = False) -> None:
        if tool.name in self._tools:
            raise ValueError(f"tool {tool.name!r} is already registered")
        self._tools[tool.name] = RegisteredTool(tool, handler, ends_reply)

    @property
    def tools(self) -> list[Tool]:
        return [r.tool for r in self._tools.values()]

    def ends_reply(self, name: str) -> bool:
        registered = self._tools.get(name)
        return registered is not None and registered.ends_reply

    async def run(self, call: ToolCall, control: CallControl) -> str:
        """Run one tool call. Failures become the result text, so the LLM can recover."""
        registered = self._tools.get(call.name)
        if registered is None:
            return f"error: unknown tool {call.name!r}"
        try:
            return await registered.handler(call.arguments, control)
        except Exception as exc:
            log.warning("tool %s failed", call.name, exc_info=True, extra={"call_id": control.call_id})
            return f"error: {type(exc).__name__}: {exc}"


async def _end_call(arguments: dict[str, Any], control: CallControl) -> str:
    control.request_hangup(str(arguments.get("reason") or "agent_ended"))
    return "ok: the call ends after this reply"


END_CALL = Tool(
    "end_call",
    "End the phone call. Say goodbye first, in the same reply.",
    {"type": "object", "properties": {"reason": {"type": "string"}}},
)


def default_registry() -> ToolRegistry:
    registry = ToolRegistry()
    registry.register(END_CALL, _end_call, ends_reply=True)
    return registry
