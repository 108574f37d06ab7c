"""One reply: LLM text -> phrases -> TTS -> playout, with tool calls in between.

``Responder.reply()`` runs as a task the call owns; cancelling it abandons the reply. With
fillers on, a reply that has no phrase ``after_ms`` after it may speak says a filler phrase first
(its own assistant message, so the context holds what was said). Whatever
happens, the context ends up holding what the caller actually heard of the reply
(``truncate_to_heard``) and every tool result, even of tools that finish after an interruption.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol

from ringline.config.behaviours import FillerConfig
from ringline.engine.audio.clock import Clock
from ringline.engine.audio.resample import AudioConverter
from ringline.engine.chunker import PhraseChunker
from ringline.engine.errors import ProviderError
from ringline.engine.failover import FaultSink, LlmUnavailable
from ringline.engine.llm.base import Context, Llm, Message, TextDelta, ToolCall
from ringline.engine.metrics import TurnMetrics
from ringline.engine.playout import Playout
from ringline.engine.tools import CallControl, ToolError, ToolPhrases, ToolRegistry
from ringline.engine.tts.base import Tts

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Phrase:
    message: Message
    text: str


class ToolObserver(Protocol):
    def tool_started(self, call: ToolCall) -> None: ...

    def tool_finished(self, call: ToolCall, result: Message) -> None:
        """``result`` is the tool message now in the context."""
        ...


class ToolRunner:
    """Runs tool calls as tasks owned by the call, not by the reply: an interrupted reply does not
    cancel its tools, and their results still reach the context."""

    def __init__(
        self, registry: ToolRegistry, context: Context, control: CallControl, observer: ToolObserver | None = None
    ) -> None:
        self._registry = registry
        self._context = context
        self._control = control
        self._observer = observer
        self._tasks: set[asyncio.Task[str]] = set()

    def start(self, call: ToolCall) -> asyncio.Task[str]:
        if self._observer is not None:
            self._observer.tool_started(call)
        task = asyncio.create_task(self._registry.run(call, self._control), name=f"tool-{call.name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def commit_when_done(self, call: ToolCall, task: asyncio.Task[str]) -> None:
        """Add the tool's result to the context as soon as it is known."""

        def commit(done: asyncio.Task[str]) -> None:
            if done.cancelled():
                return
            message = self._context.add_tool_result(call, done.result())
            if self._observer is not None:
                self._observer.tool_finished(call, message)

        if task.done():
            commit(task)
        else:
            task.add_done_callback(commit)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class Responder:
    def __init__(
        self,
        *,
        llm: Llm,
        tts: Tts,
        registry: ToolRegistry,
        tools: ToolRunner,
        context: Context,
        playout: Playout,
        clock: Clock,
        max_tool_rounds: int,
        apology: str,
        faults: FaultSink,
        call_id: str,
        fillers: FillerConfig | None = None,
        caller_silent: Callable[[], bool] = lambda: True,
    ) -> None:
        """``fillers``: say a filler when a reply is slow (if ``enabled``), and only while
        ``caller_silent()`` holds."""
        self._llm = llm
        self._tts = tts
        self._registry = registry
        self._tools = tools
        self._context = context
        self._playout = playout
        self._clock = clock
        self._max_rounds = max_tool_rounds
        self._apology = apology
        self._faults = faults
        self._call_id = call_id
        self._phrases: list[_Phrase] = []
        self._messages: list[Message] = []
        self._go = asyncio.Event()
        """Set when the reply may act (send audio, run tools): at once unless held."""
        self._fillers = fillers if fillers is not None and fillers.enabled else None
        self._caller_silent = caller_silent
        self.fillers_said = 0
        """Filler phrases said so far (they take ``phrases`` in turn)."""

    async def reply(self, metrics: TurnMetrics, script: str | None = None, *, held: bool = False) -> None:
        """Speak a reply: from the LLM, or ``script`` verbatim (first message, ``say``).

        A ``held`` reply (preemptive generation) thinks and synthesizes but sends no audio and
        runs no tool until ``release``: its caller may still throw it away."""
        self._phrases = []
        self._messages = []
        self._go = asyncio.Event()
        if not held:
            self._go.set()
        self._playout.begin(held=held)
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        speaker = asyncio.create_task(self._speak(queue, metrics), name=f"tts-{self._call_id}")
        filler = None
        if script is None and self._fillers is not None:
            filler = asyncio.create_task(self._filler(queue, self._fillers), name=f"filler-{self._call_id}")
        try:
            if script is None:
                try:
                    await self._think(queue, metrics)
                except LlmUnavailable:
                    self._say(queue, self._apology)
                except ProviderError as exc:  # the stream broke mid-reply: what was said stands
                    self._faults.fault("llm", f"stream broke: {exc}")
            else:
                self._say(queue, script)
            if filler is not None:  # too late for one now: the reply has said all it will
                filler.cancel()
                await asyncio.gather(filler, return_exceptions=True)
            queue.put_nowait(None)
            await speaker
        finally:
            for task in (filler, speaker):
                if task is not None and not task.done():
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)

    async def _filler(self, queue: asyncio.Queue[str | None], config: FillerConfig) -> None:
        """Say a filler if the reply has no phrase ``after_ms`` after it may speak (a held reply:
        after its release) and the caller is silent then."""
        await self._go.wait()
        await self._clock.sleep_until(self._clock.now() + config.after_ms / 1000)
        if self._phrases or not self._caller_silent():
            return
        self._say(queue, config.phrases[self.fillers_said % len(config.phrases)])
        self.fillers_said += 1

    async def _think(self, queue: asyncio.Queue[str | None], metrics: TurnMetrics) -> None:
        tools = self._registry.tools
        for _ in range(self._max_rounds):
            message = Message("assistant", "")
            chunker = PhraseChunker()
            calls: list[tuple[ToolCall, asyncio.Task[str]]] = []
            try:
                async for event in self._llm.stream(self._context, tools):
                    metrics.mark("llm_first_token", self._clock.now())
                    if isinstance(event, TextDelta):
                        message.content += event.text
                        self._enqueue(queue, message, chunker, event.text, final=False)
                    else:
                        await self._go.wait()  # no side effects before the turn is really over
                        calls.append((event, self._tools.start(event)))
                        message.tool_calls += (event,)
                self._enqueue(queue, message, chunker, "", final=True)
            finally:
                # Also when interrupted: the context keeps the call, results land when ready.
                if message.content or message.tool_calls:
                    self._commit(message)
                for call, task in calls:
                    self._tools.commit_when_done(call, task)
            if not calls:
                return
            await self._await_tools(queue, calls)
            if any(self._ends_reply(call, task) for call, task in calls):
                return
        log.warning("tool rounds exhausted (%d)", self._max_rounds, extra={"call_id": self._call_id})

    def _ends_reply(self, call: ToolCall, task: asyncio.Task[str]) -> bool:
        """A tool that ends the reply did: unless it failed, when the LLM may say so."""
        return self._registry.ends_reply(call.name) and not isinstance(task.result(), ToolError)

    async def _await_tools(
        self, queue: asyncio.Queue[str | None], calls: list[tuple[ToolCall, asyncio.Task[str]]]
    ) -> None:
        """Wait for this round's tools (cancelling the wait leaves them running), saying what their
        ``ToolPhrases`` give: when each starts, when it is slow, when it failed."""
        phrases = [(task, self._registry.phrases(call.name)) for call, task in calls]
        narrations = [self._narrate(queue, task, said) for task, said in phrases if said is not None]
        await asyncio.gather(*narrations, asyncio.shield(asyncio.gather(*(task for _, task in calls))))

    async def _narrate(self, queue: asyncio.Queue[str | None], task: asyncio.Task[str], phrases: ToolPhrases) -> None:
        if phrases.start:
            self._say(queue, phrases.start)
        if phrases.slow and not task.done():
            timer = asyncio.create_task(self._clock.sleep_until(self._clock.now() + phrases.slow_after_s))
            try:
                await asyncio.wait((task, timer), return_when=asyncio.FIRST_COMPLETED)
            finally:
                timer.cancel()
                await asyncio.gather(timer, return_exceptions=True)
            if not task.done():
                self._say(queue, phrases.slow)
        if phrases.failed and isinstance(await asyncio.shield(task), ToolError):
            self._say(queue, phrases.failed)

    def _say(self, queue: asyncio.Queue[str | None], text: str) -> None:
        message = self._commit(Message("assistant", text))
        self._enqueue(queue, message, PhraseChunker(), text, final=True)

    def _commit(self, message: Message) -> Message:
        self._messages.append(message)
        return self._context.add(message)

    def _enqueue(
        self, queue: asyncio.Queue[str | None], message: Message, chunker: PhraseChunker, text: str, *, final: bool
    ) -> None:
        phrases = chunker.feed(text)
        if final and (tail := chunker.flush()):
            phrases.append(tail)
        for phrase in phrases:
            self._phrases.append(_Phrase(message, phrase))
            queue.put_nowait(phrase)

    async def _speak(self, queue: asyncio.Queue[str | None], metrics: TurnMetrics) -> None:
        async def phrases() -> AsyncIterator[str]:
            while (phrase := await queue.get()) is not None:
                yield phrase

        playout = self._playout
        converter: AudioConverter | None = None
        phrase = 0
        async for audio in self._tts.stream(phrases(), playout.format):
            metrics.mark("tts_first_audio", self._clock.now())
            if converter is None or converter.src != audio.chunk.format:
                if converter is not None:
                    playout.push(converter.flush(), phrase)
                converter = AudioConverter(audio.chunk.format, playout.format)
            phrase = audio.phrase
            playout.push(converter.convert(audio.chunk.data), phrase)
        if converter is not None:
            playout.push(converter.flush(), phrase)
        playout.end()

    @property
    def messages(self) -> list[Message]:
        """The assistant messages of the current (or last) reply, as the context holds them."""
        return self._messages

    def release(self) -> None:
        """The held reply is the answer after all: speak it, run its tools."""
        self._go.set()
        self._playout.release()

    def forget(self) -> None:
        """Take the (discarded, held) reply's messages back out of the context."""
        mine = {id(m) for m in self._messages}
        self._context.messages[:] = [m for m in self._context.messages if id(m) not in mine]
        self._messages = []
        self._phrases = []

    def truncate_to_heard(self) -> None:
        """Rewrite this reply's assistant messages to what the caller heard of them."""
        fractions = self._playout.heard_fractions()
        heard: dict[int, list[str]] = {id(m): [] for m in self._messages}
        for i, phrase in enumerate(self._phrases):
            fraction = fractions[i] if i < len(fractions) else 0.0
            words = phrase.text.split()
            if keep := len(words) if fraction >= 1.0 else round(len(words) * fraction):
                heard[id(phrase.message)].append(" ".join(words[:keep]))
        for message in self._messages:
            spoken = _join(heard[id(message)])
            message.interrupted = spoken != _join([message.content])
            message.content = spoken
            if not spoken and not message.tool_calls:
                self._context.messages[:] = [m for m in self._context.messages if m is not message]


def _join(parts: list[str]) -> str:
    return re.sub(r"\s+", " ", " ".join(parts)).strip()
