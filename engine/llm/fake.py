"""Scripted LLM for tests and benchmarks.

Each call to ``stream`` plays the next scripted reply, word by word, after ``ttft_ms`` and at
``tokens_per_s``. ``[tool:NAME {json}]`` inside a reply becomes a tool call.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Sequence

from ringline.config.providers import FakeLlmConfig
from ringline.engine.audio.clock import Clock
from ringline.engine.errors import ProviderError
from ringline.engine.llm.base import Context, LlmEvent, TextDelta, Tool, ToolCall

_TOOL = re.compile(r"\[tool:(\w+)\s*(\{.*?\})?\]")
_TOKEN = re.compile(r"\s*\S+")


def parse_reply(reply: str) -> list[TextDelta | ToolCall]:
    """Split a scripted reply into word deltas (each with its leading space, but the reply's
    first) and tool calls."""
    events: list[TextDelta | ToolCall] = []
    pos = 0
    for match in _TOOL.finditer(reply):
        events.extend(TextDelta(t) for t in _TOKEN.findall(reply[pos : match.start()]))
        args = json.loads(match.group(2)) if match.group(2) else {}
        events.append(ToolCall(Context.new_call_id(), match.group(1), args))
        pos = match.end()
    events.extend(TextDelta(t) for t in _TOKEN.findall(reply[pos:]))
    first_text = next((i for i, e in enumerate(events) if isinstance(e, TextDelta)), None)
    if first_text is not None:
        events[first_text] = TextDelta(events[first_text].text.lstrip())
    return events


class FakeLlm:
    def __init__(self, config: FakeLlmConfig, clock: Clock) -> None:
        self._config = config
        self._clock = clock
        self._calls = 0
        self._failures = 0

    def _next_reply(self, context: Context) -> str:
        replies = self._config.replies
        reply = replies[self._calls] if self._calls < len(replies) else self._config.fallback
        self._calls += 1
        return reply.replace("{user}", context.last_user_text())

    async def stream(self, context: Context, tools: Sequence[Tool]) -> AsyncIterator[LlmEvent]:
        if self._failures < self._config.fail_first:
            self._failures += 1
            await self._clock.sleep_until(self._clock.now() + self._config.ttft_ms / 1000)
            raise ProviderError(f"scripted failure {self._failures} of {self._config.fail_first}", retryable=True)
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
