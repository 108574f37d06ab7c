"""Scripted LLM for tests and benchmarks.

Each call to ``stream`` plays the next scripted reply, word by word, after ``ttft_ms`` and at
``tokens_per_s``. ``[tool:NAME {json}]`` inside a reply becomes a tool call.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Sequence

from ringline.config.settings import FakeLlmConfig
from ringline.engine.audio.clock import Clock
from ringline.engine.llm.base import Context, LlmEvent, TextDelta, Tool, ToolCall

_TOOL = re.compile(r"\[tool:(\w+)\s*(\{.*?\})?\]")


def parse_reply(reply: str) -> list[TextDelta | ToolCall]:
    """Split a scripted reply into word deltas and tool calls."""
    events: list[TextDelta | ToolCall] = []
    pos = 0
    for match in _TOOL.finditer(reply):
        events.extend(_words(reply[pos : match.start()]))
        args = json.loads(match.group(2)) if match.group(2) else {}
        events.append(ToolCall(Context.new_call_id(), match.group(1), args))
        pos = match.end()
    events.extend(_words(reply[pos:]))
    return events


def _words(text: str) -> list[TextDelta]:
    tokens = re.findall(r"\s*\S+", text)
    if tokens:
        tokens[0] = tokens[0].lstrip()
    return [TextDelta(t) for t in tokens]


class FakeLlm:
    def __init__(self, config: FakeLlmConfig, clock: Clock) -> None:
        self._config = config
        self._clock = clock
        self._calls = 0

    def _next_reply(self, context: Context) -> str:
        replies = self._config.replies
        reply = replies[self._calls] if self._calls < len(replies) else self._config.fallback
        self._calls += 1
        return reply.replace("{user}", context.last_user_text())

    async def stream(self, context: Context, tools: Sequence[Tool]) -> AsyncIterator[LlmEvent]:
        events = parse_reply(self._next_reply(context))
        known = {t.name for t in tools}
        at = self._clock.now() + self._config.ttft_ms / 1000
        step = 1 / self._config.tokens_per_s if self._config.tokens_per_s else 0.0
        for event in events:
            if isinstance(event, ToolCall) and event.name not in known:
                raise ValueError(f"scripted tool {event.name!r} is not registered")
            await self._clock.sleep_until(at)
            yield event
            at += step
