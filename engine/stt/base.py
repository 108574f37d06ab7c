"""Speech-to-text seam."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from ringline.engine.audio.formats import AudioFormat


@dataclass(frozen=True, slots=True)
class Word:
    text: str
    start: float
    end: float


@dataclass(frozen=True, slots=True)
class Transcript:
    text: str
    is_final: bool
    words: tuple[Word, ...] = ()


class SttSession(Protocol):
    """One call's streaming recognition."""

    @property
    def format(self) -> AudioFormat:
        """The audio format ``send`` expects (chosen at open from what the call offered)."""
        ...

    async def send(self, audio: bytes) -> None: ...

    async def finalize(self) -> None:
        """Produce a final transcript for the audio sent so far (the caller paused)."""
        ...

    def speech(self, active: bool) -> None:
        """The call's voice activity detector heard speech start (``True``) or stop, after the
        frame that tipped it was sent. A hint: a session may pace what it sends by it."""
        ...

    def __aiter__(self) -> AsyncIterator[Transcript]: ...

    async def aclose(self) -> None: ...


class Stt(Protocol):
    async def open(self, offered: AudioFormat) -> SttSession:
        """Start a session. ``offered`` is the call's native format; a provider that accepts
        it should take it as is (no resampling), else it asks for PCM16 at its own rate."""
        ...
