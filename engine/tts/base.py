"""Text-to-speech seam."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from ringline.engine.audio.formats import AudioChunk, AudioFormat


@dataclass(frozen=True, slots=True)
class SpeechAudio:
    """Synthesized audio of phrase number ``phrase`` (0-based, in the order phrases came in)."""

    phrase: int
    chunk: AudioChunk


class Tts(Protocol):
    def stream(self, phrases: AsyncIterator[str], preferred: AudioFormat) -> AsyncIterator[SpeechAudio]:
        """Speak each phrase in order as it arrives. Audio comes in ``preferred`` format when the
        provider can produce it (no resampling downstream), else in the provider's own."""
        ...


class PhraseReplay:
    """A reply's phrases, kept so that they can be read again from any one: a speech provider (or
    connection) that failed hands over to the next without losing a phrase. A read of the source
    survives its reader being cancelled while it waits (a WebSocket reply's sender task that
    stopped with its socket): the next reader gets that phrase. ``close`` drops a pending read."""

    def __init__(self, phrases: AsyncIterator[str]) -> None:
        self._source = aiter(phrases)
        self._received: list[str] = []
        self._pulling: asyncio.Future[str] | None = None
        self.taken = -1
        """The latest phrase the current reader was handed (one before its start if none yet)."""

    def read(self, start: int) -> AsyncIterator[str]:
        """The phrases from number ``start`` on: those already received, then the source's."""
        self.taken = start - 1
        return self._read(start)

    async def _read(self, index: int) -> AsyncIterator[str]:
        while True:
            if index >= len(self._received):
                try:
                    self._received.append(await self._pull())
                except StopAsyncIteration:
                    return
            self.taken = index
            yield self._received[index]
            index += 1

    async def _pull(self) -> str:
        if self._pulling is None:
            self._pulling = asyncio.ensure_future(anext(self._source))
        # A reader cancelled here, even just as the phrase came in, leaves the pull to the next;
        # the source's end (or failure) stays for every later reader.
        phrase = await asyncio.shield(self._pulling)
        self._pulling = None
        return phrase

    def close(self) -> None:
        if self._pulling is not None and not self._pulling.done():
            self._pulling.cancel()
