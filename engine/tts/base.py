"""Text-to-speech seam."""

from __future__ import annotations

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
