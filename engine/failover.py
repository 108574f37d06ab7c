"""Provider failover: what a reply does when a language or speech provider fails.

``FailoverLlm`` and ``FailoverTts`` implement the same seams as the providers they wrap, so the
responder does not change. Every fault is reported to a ``FaultSink`` (the call records it).

- LLM: a failure before the first token is retried once (unless the error says retrying is
  pointless), then the fallback provider is tried; all of it within ``budget_s`` of the request,
  so the caller never waits in silence for long. An error that says when to retry
  (``retry_after``, from a 429's ``Retry-After``) is retried that much later if that is within
  the budget; if not, the retry is skipped and the fallback tried at once. Nothing answering
  raises ``LlmUnavailable``: the responder then speaks the agent's apology line. A failure after
  the first token ends the reply where it is (what was said stands).
- TTS: when a provider fails, the next one takes over from the phrase being spoken.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Protocol

from ringline.engine.audio.formats import AudioFormat
from ringline.engine.errors import ProviderError
from ringline.engine.llm.base import Context, Llm, LlmEvent, Tool
from ringline.engine.tts.base import PhraseReplay, SpeechAudio, Tts

log = logging.getLogger(__name__)


class FaultSink(Protocol):
    def fault(self, stage: str, detail: str) -> None:
        """Record that ``stage`` ("llm", "tts", "stt") failed, and why."""
        ...


class LlmUnavailable(ProviderError):
    """No language model produced a first token."""


class TtsUnavailable(ProviderError):
    """Every speech provider failed."""


class FailoverLlm:
    def __init__(self, primary: Llm, fallback: Llm | None, faults: FaultSink, *, budget_s: float = 2.0) -> None:
        self._attempts: list[tuple[str, Llm]] = [("llm", primary), ("llm retry", primary)]
        if fallback is not None:
            self._attempts.append(("llm fallback", fallback))
        self._faults = faults
        self._budget = budget_s

    async def stream(self, context: Context, tools: Sequence[Tool]) -> AsyncIterator[LlmEvent]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._budget
        skip_retry = False
        for name, llm in self._attempts:
            if name == "llm retry" and skip_retry:
                continue
            events = aiter(llm.stream(context, tools))
            try:
                async with asyncio.timeout_at(deadline):
                    first = await anext(events)
            except StopAsyncIteration:
                return
            except ProviderError as exc:
                self._faults.fault("llm", f"{name}: {exc}")
                skip_retry = not exc.retryable
                await _close(events)
                if name == "llm" and not skip_retry and exc.retry_after is not None:
                    if loop.time() + exc.retry_after < deadline:
                        await asyncio.sleep(exc.retry_after)
                    else:
                        log.info(
                            "llm: retry after %.1f s is past the failover budget: skipping the retry", exc.retry_after
                        )
                        skip_retry = True
                continue
            except TimeoutError:
                self._faults.fault("llm", f"{name}: no first token within the {self._budget:g} s budget")
                await _close(events)
                break
            yield first
            async for event in events:
                yield event
            return
        raise LlmUnavailable("no language model answered", retryable=True)


class FailoverTts:
    def __init__(self, providers: Sequence[Tts], faults: FaultSink) -> None:
        if not providers:
            raise ValueError("FailoverTts needs at least one provider")
        self._providers = list(providers)
        self._faults = faults

    async def stream(self, phrases: AsyncIterator[str], preferred: AudioFormat) -> AsyncIterator[SpeechAudio]:
        replay = PhraseReplay(phrases)
        resume_at = 0  # first phrase the next provider must speak
        try:
            for number, tts in enumerate(self._providers):
                start = resume_at
                voiced = start - 1  # last phrase that produced audio
                try:
                    async for audio in tts.stream(replay.read(start), preferred):
                        voiced = start + audio.phrase
                        yield SpeechAudio(voiced, audio.chunk)
                    return
                except ProviderError as exc:
                    # A provider that already took a later phrase is done with the voiced one;
                    # otherwise the voiced phrase was cut and is spoken again from its start.
                    resume_at = voiced + 1 if replay.taken > voiced else max(voiced, start)
                    self._faults.fault("tts", f"tts {number}: {exc}")
                    log.warning("tts %d failed; phrase %d onward goes to the next provider", number, resume_at)
            raise TtsUnavailable("every speech provider failed", retryable=True)
        finally:
            replay.close()


async def _close(events: AsyncIterator[LlmEvent]) -> None:
    aclose = getattr(events, "aclose", None)
    if aclose is not None:
        await aclose()
