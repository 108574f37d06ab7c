"""Audio formats and chunks shared by every stage of the pipeline."""

from __future__ import annotations

import enum
from dataclasses import dataclass

FRAME_MS = 20


class Encoding(enum.Enum):
    PCM16 = "pcm16"  # signed 16-bit little-endian
    MULAW = "mulaw"  # G.711 mu-law, one byte a sample
    ALAW = "alaw"  # G.711 A-law, one byte a sample

    @property
    def sample_width(self) -> int:
        return 2 if self is Encoding.PCM16 else 1


@dataclass(frozen=True, slots=True)
class AudioFormat:
    encoding: Encoding
    sample_rate: int
    channels: int = 1

    @property
    def bytes_per_second(self) -> int:
        return self.sample_rate * self.encoding.sample_width * self.channels

    def bytes_for(self, ms: int) -> int:
        """Bytes in ``ms`` milliseconds of audio (whole samples)."""
        return self.sample_rate * ms // 1000 * self.encoding.sample_width * self.channels

    def duration(self, nbytes: int) -> float:
        return nbytes / self.bytes_per_second


MULAW_8K = AudioFormat(Encoding.MULAW, 8000)
ALAW_8K = AudioFormat(Encoding.ALAW, 8000)
PCM16_8K = AudioFormat(Encoding.PCM16, 8000)
PCM16_16K = AudioFormat(Encoding.PCM16, 16000)


@dataclass(frozen=True, slots=True)
class AudioChunk:
    """A piece of audio in a known format (any length)."""

    data: bytes
    format: AudioFormat

    @property
    def duration(self) -> float:
        return self.format.duration(len(self.data))
