"""Cut a byte stream of audio into fixed-size frames (20 ms by default).

Providers and TTS engines hand over audio in chunks of any size; VAD, the jitter buffer and
playout want exact frames. ``Framer`` keeps the bytes of the unfinished frame between calls.
"""

from __future__ import annotations

from .formats import FRAME_MS, AudioFormat, Encoding
from .g711 import ALAW_SILENCE, MULAW_SILENCE

__all__ = ["Framer", "frame_bytes", "silence", "silence_byte"]

_SILENCE_BYTE = {
    Encoding.PCM16: 0x00,
    Encoding.MULAW: MULAW_SILENCE,
    Encoding.ALAW: ALAW_SILENCE,
}


def silence_byte(encoding: Encoding) -> int:
    """The byte that, repeated, is digital silence in ``encoding``."""
    return _SILENCE_BYTE[encoding]


def frame_bytes(fmt: AudioFormat, ms: int = FRAME_MS) -> int:
    """Bytes in one ``ms``-millisecond frame of ``fmt``."""
    size = fmt.bytes_for(ms)
    if size <= 0:
        raise ValueError(f"a {ms} ms frame of {fmt} holds no whole sample")
    return size


def silence(fmt: AudioFormat, ms: int = FRAME_MS) -> bytes:
    """One ``ms``-millisecond frame of digital silence in ``fmt``."""
    return bytes((_SILENCE_BYTE[fmt.encoding],)) * frame_bytes(fmt, ms)


class Framer:
    """Feed bytes of any length, get back whole frames of ``frame_bytes`` bytes.

    The bytes of an unfinished frame are kept for the next ``feed``; ``flush`` hands them over at
    the end of a stream, padded with ``silence`` (the encoding's silence byte) if asked.
    """

    __slots__ = ("_pending", "_silence", "_size")

    def __init__(self, frame_bytes: int, *, silence: int = 0x00) -> None:
        if frame_bytes <= 0:
            raise ValueError(f"frame size must be positive, got {frame_bytes}")
        if not 0 <= silence <= 0xFF:
            raise ValueError(f"silence must be a byte value, got {silence}")
        self._size = frame_bytes
        self._silence = silence
        self._pending = bytearray()

    @classmethod
    def for_format(cls, fmt: AudioFormat, ms: int = FRAME_MS) -> Framer:
        """A framer of ``ms``-millisecond frames of ``fmt``, padding with its silence."""
        return cls(frame_bytes(fmt, ms), silence=silence_byte(fmt.encoding))

    @property
    def frame_size(self) -> int:
        return self._size

    @property
    def pending(self) -> int:
        """Bytes held towards the next frame (always fewer than ``frame_size``)."""
        return len(self._pending)

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Add ``data`` to the stream; return the frames it completes, in order (maybe none)."""
        size = self._size
        pending = self._pending
        if not pending and len(data) == size and type(data) is bytes:
            return [data]  # the common case: the sender already frames as we do
        frames: list[bytes] = []
        with memoryview(data) as view:
            if view.itemsize != 1 or view.ndim != 1:
                view = view.cast("B")
            total = len(view)
            start = 0
            if pending:
                start = min(size - len(pending), total)
                pending += view[:start]
                if len(pending) < size:
                    return frames
                frames.append(bytes(pending))
                pending.clear()
            end = start + (total - start) // size * size
            for offset in range(start, end, size):
                frames.append(view[offset : offset + size].tobytes())
            if end < total:
                pending += view[end:]
        return frames

    def flush(self, pad: bool = True) -> bytes:
        """Return and forget the unfinished frame: padded to a whole frame with silence if ``pad``,
        else as is. Empty when nothing is pending."""
        pending = self._pending
        if not pending:
            return b""
        if pad:
            pending.extend(bytes((self._silence,)) * (self._size - len(pending)))
        frame = bytes(pending)
        pending.clear()
        return frame

    def clear(self) -> None:
        """Drop the unfinished frame (e.g. when playout is interrupted)."""
        self._pending.clear()
