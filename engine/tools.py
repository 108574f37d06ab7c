"""Tools the LLM can call, and the built-in ones every agent has.

A tool's handler returns the text the LLM reads as the tool's result. A failure is a result too
(``ToolError``, text starting ``error:``), never an exception, so the LLM can recover and tell
the caller. A tool may have ``ToolPhrases``: what the agent says while it runs (when it starts,
when it is slow, when it fails); the responder speaks them.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ringline.engine.errors import RinglineError
from ringline.engine.llm.base import Tool, ToolCall

log = logging.getLogger(__name__)


class CallControl(Protocol):
    """What a tool may do to the call it runs in."""

    call_id: str

    def request_hangup(self, reason: str) -> None:
        """End the call once the caller has heard the current reply."""
        ...

    def fault(self, stage: str, detail: str) -> None:
        """Record that something failed on the call (a ``fault`` event), and why."""
        ...

    async def transfer(self, destination: str, message: str | None = None, briefing: str | None = None) -> None:
        """Hand the call over to ``destination`` (after saying ``message``; a warm transfer briefs
        whoever answers with ``briefing`` first); raises ``TransferFailed`` when this call's
        transport cannot, ``CallNotActive`` when the call is not in progress."""
        ...


class ToolError(str):
    """A tool's result that reports a failure: the text the LLM reads (``error: ...``)."""

    __slots__ = ()


Handler = Callable[[dict[str, Any], CallControl], Awaitable[str]]
"""A tool given the LLM's arguments."""
CallHandler = Callable[[ToolCall, CallControl], Awaitable[str]]
"""A tool given the whole call of it, id included (e.g. to make a request idempotent)."""


@dataclass(frozen=True, slots=True)
class ToolPhrases:
    """What the agent says while a tool runs. Each is optional; said at most once per tool call."""

    start: str | None = None
    """Said when the tool starts (after whatever the LLM said before calling it)."""
    slow: str | None = None
    """Said if the tool has not finished ``slow_after_s`` after it started."""
    slow_after_s: float = 3.0
    failed: str | None = None
    """Said when the tool fails (its result is a ``ToolError``), before the LLM speaks about it."""


@dataclass(frozen=True, slots=True)
class RegisteredTool:
    tool: Tool
    handler: CallHandler
    ends_reply: bool = False
    """No further LLM round after this tool (``end_call``, ``transfer_call``) unless it failed: its
    result is not spoken about."""
    phrases: ToolPhrases | None = None


class ToolRegistry:
    def __init__(self) -> None:
        self._tools: dict[str, RegisteredTool] = {}

    def register(
        self, tool: Tool, handler: Handler, *, ends_reply: bool = False, phrases: ToolPhrases | None = None
    ) -> None:
        """Add ``tool``; ``handler`` gets the LLM's arguments and the call."""

        async def run(call: ToolCall, control: CallControl) -> str:
            return await handler(call.arguments, control)

        self.register_call(tool, run, ends_reply=ends_reply, phrases=phrases)

    def register_call(
        self, tool: Tool, handler: CallHandler, *, ends_reply: bool = False, phrases: ToolPhrases | None = None
    ) -> None:
        """Add ``tool``; ``handler`` gets the whole ``ToolCall`` (its id too) and the call."""
        if tool.name in self._tools:
            raise ValueError(f"tool {tool.name!r} is already registered")
        self._tools[tool.name] = RegisteredTool(tool, handler, ends_reply, phrases)

    def remove(self, name: str) -> None:
        """Take ``name`` out (to replace a built-in); no error if it is not there."""
        self._tools.pop(name, None)

    @property
    def tools(self) -> list[Tool]:
        return [r.tool for r in self._tools.values()]

    def ends_reply(self, name: str) -> bool:
        registered = self._tools.get(name)
        return registered is not None and registered.ends_reply

    def phrases(self, name: str) -> ToolPhrases | None:
        registered = self._tools.get(name)
        return registered.phrases if registered is not None else None

    async def run(self, call: ToolCall, control: CallControl) -> str:
        """Run one tool call. Failures become the result text (a ``ToolError``), so the LLM can recover."""
        registered = self._tools.get(call.name)
        if registered is None:
            return ToolError(f"error: unknown tool {call.name!r}")
        try:
            return await registered.handler(call, control)
        except Exception as exc:
            log.warning("tool %s failed", call.name, exc_info=True, extra={"call_id": control.call_id})
            return ToolError(f"error: {type(exc).__name__}: {exc}")


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


# -- built-ins configured by tool templates ---------------------------------------------------------


def end_call_tool(name: str, description: str) -> tuple[Tool, Handler]:
    """The built-in ``end_call`` under another name or description (register it ``ends_reply``)."""
    return Tool(name, description, END_CALL.parameters), _end_call


@dataclass(frozen=True, slots=True)
class TransferTarget:
    destination: str
    """E.164 number or ``sip:`` URI."""
    description: str = ""
    """When to transfer here; the LLM reads it."""
    message: str | None = None
    """Said to the caller before the transfer."""
    warm: bool = False
    """Brief whoever answers with the LLM's ``summary`` before connecting the caller."""


def transfer_tool(name: str, description: str, targets: Sequence[TransferTarget]) -> tuple[Tool, Handler]:
    """A tool that transfers the caller to one of ``targets`` (``Call.transfer``: the target's
    message is said first; a provider that refuses the hand-over is the call's business, which says
    ``transfer_failed_message``); any other destination the LLM names is refused. Register it
    ``ends_reply``: a transfer that cannot start is an error result the LLM can tell the caller about."""
    allowed = {t.destination: t for t in targets}
    choices = "; ".join(f"{t.destination}: {t.description}" if t.description else t.destination for t in targets)
    properties: dict[str, Any] = {"destination": {"type": "string", "enum": list(allowed)}}
    if any(t.warm for t in targets):
        properties["summary"] = {
            "type": "string",
            "description": "For a warm transfer: what the person answering should know before the caller joins "
            "(who is calling and what they need), in one or two sentences.",
        }
    parameters = {"type": "object", "properties": properties, "required": ["destination"]}
    tool = Tool(name, f"{description} Destinations: {choices}.", parameters)

    async def transfer(arguments: dict[str, Any], control: CallControl) -> str:
        destination = str(arguments.get("destination") or "")
        target = allowed.get(destination)
        if target is None:
            return ToolError(f"error: {destination!r} is not a destination of {name}; allowed: {', '.join(allowed)}")
        try:
            briefing = None
            if target.warm:
                summary = str(arguments.get("summary") or "").strip()
                briefing = f"Hello, this is an automated assistant with a caller for you. {summary}".strip()
            await control.transfer(target.destination, target.message, briefing)
        except RinglineError as exc:  # TransferFailed, CallNotActive
            control.fault("transfer", f"{name}: {exc}")
            return ToolError(f"error: cannot transfer the call: {exc}")
        return f"ok: transferring the call to {target.destination}"

    return tool, transfer


DTMF_DIGITS = re.compile(r"^[0-9*#A-Da-dwW]{1,64}$")
"""Keypad keys (and ``w``, a half-second pause) a ``send_dtmf`` tool presses."""


def send_dtmf_tool(name: str, description: str) -> tuple[Tool, Handler]:
    """A tool that presses keypad keys on the call (``Call.send_dtmf``); keys the transport cannot
    send are an error result the LLM can tell the caller about."""
    tool = Tool(
        name,
        description,
        {
            "type": "object",
            "properties": {"digits": {"type": "string", "pattern": DTMF_DIGITS.pattern}},
            "required": ["digits"],
        },
    )

    async def send_dtmf(arguments: dict[str, Any], control: CallControl) -> str:
        digits = str(arguments.get("digits") or "")
        if not DTMF_DIGITS.match(digits):
            return ToolError(f"error: {digits!r} are not keypad keys (digits, *, #, A-D, w to pause)")
        send = getattr(control, "send_dtmf", None)
        if send is None:
            return ToolError("error: this call cannot send keypad tones (DTMF)")
        try:
            await send(digits)
        except RinglineError as exc:  # SendDtmfFailed, CallNotActive
            control.fault("send_dtmf", f"{name}: {exc}")
            return ToolError(f"error: cannot press {digits}: {exc}")
        return f"ok: pressed {digits}"

    return tool, send_dtmf
