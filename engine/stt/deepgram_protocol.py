"""Deepgram live transcription, the parts without I/O: the ``/v1/listen`` query parameters, the
outbox items and how they are packed into messages, the replay buffer, and reading a ``Results``
message into a ``Transcript``. ``ringline.engine.stt.deepgram`` runs them over the SDK's socket.

Offsets are bytes of the call's audio from the start of the session (all connections together);
times in a connection's results are seconds from that connection's first byte (its *origin*).
"""

from __future__ import annotations

import enum
from collections import deque
from typing import Any

import orjson

from ringline.config.providers import DeepgramSttConfig
from ringline.engine.audio.formats import AudioFormat, Encoding
from ringline.engine.stt.base import Transcript, Word

ENCODINGS = {Encoding.MULAW: "mulaw", Encoding.ALAW: "alaw", Encoding.PCM16: "linear16"}


class Send(enum.Enum):
    """Control messages queued in the outbox between audio frames."""

    FINALIZE = "Finalize"
    KEEPALIVE = "KeepAlive"
    CLOSE_STREAM = "CloseStream"

    @property
    def text(self) -> str:
        """The message as sent: what the SDK's ``send_finalize`` (etc.) would send, without building
        and dumping a pydantic model each time."""
        return _CONTROL_TEXTS[self]


_CONTROL_TEXTS = {item: orjson.dumps({"type": item.value}).decode() for item in Send}


def _flag(value: bool) -> str:
    return "true" if value else "false"


def query_params(config: DeepgramSttConfig, fmt: AudioFormat) -> dict[str, str]:
    """The ``/v1/listen`` query parameters for ``config`` and the audio format sent."""
    params = {
        "model": config.model,
        "language": config.language,
        "encoding": ENCODINGS[fmt.encoding],
        "sample_rate": str(fmt.sample_rate),
        "channels": str(fmt.channels),
        "interim_results": _flag(config.interim_results),
        "punctuate": _flag(config.punctuate),
        "smart_format": _flag(config.smart_format),
        "endpointing": "false" if config.endpointing_ms is None else str(config.endpointing_ms),
    }
    if config.utterance_end_ms is not None and config.interim_results:  # Deepgram requires both
        params["utterance_end_ms"] = str(config.utterance_end_ms)
    return params


def next_message(outbox: deque[bytes | Send], max_bytes: int) -> bytes | Send:
    """Take the next message from a non-empty ``outbox``: a control message, or the audio at its
    head joined into one message of at most ``max_bytes`` (a backlog goes out in few messages)."""
    item = outbox.popleft()
    if isinstance(item, bytes) and outbox and isinstance(outbox[0], bytes):
        parts, size = [item], len(item)
        while outbox and isinstance(nxt := outbox[0], bytes) and size + len(nxt) <= max_bytes:
            parts.append(outbox.popleft())
            size += len(nxt)
        item = b"".join(parts)
    return item


class ReplayBuffer:
    """The audio no final result has covered yet, in byte offsets from the session start.

    ``append`` each frame, ``ack`` the end of each final; after a reconnect, ``replay`` is what the
    new socket must get first. Beyond ``limit`` bytes the oldest audio is dropped (its words lost)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.total = 0
        """Bytes appended so far."""
        self.acked = 0
        """Audio before this offset is covered by final results."""
        self._chunks: deque[bytes] = deque()
        self._start = 0
        """Offset of ``_chunks[0]``."""
        self._size = 0
        self.overflowing = False
        """Unacknowledged audio was dropped and no final has come since."""

    def append(self, audio: bytes) -> bool:
        """Keep ``audio``. True when this starts an overflow (audio no final covered is dropped)."""
        self._chunks.append(audio)
        self.total += len(audio)
        self._size += len(audio)
        if self._size <= self.limit:
            return False
        while self._size > self.limit and len(self._chunks) > 1:
            self._pop()
        if self.acked >= self._start:
            return False
        self.acked = self._start
        started, self.overflowing = not self.overflowing, True
        return started

    def ack(self, offset: int) -> None:
        """Audio before ``offset`` has its final: it never needs replaying."""
        if offset <= self.acked:
            return
        self.acked = offset
        self.overflowing = False
        while self._chunks and self._start + len(self._chunks[0]) <= offset:
            self._pop()

    def _pop(self) -> None:
        chunk = self._chunks.popleft()
        self._start += len(chunk)
        self._size -= len(chunk)

    def replay(self, finalize_at: int | None) -> deque[bytes | Send]:
        """The audio from ``acked`` on, with a Finalize at ``finalize_at`` (at the start if that
        audio is already covered)."""
        start = self.acked
        out: deque[bytes | Send] = deque()
        if finalize_at is not None:
            finalize_at = max(finalize_at, start)
        offset = self._start
        for chunk in self._chunks:  # invariant: finalize_at is None or >= offset
            end = offset + len(chunk)
            if end > start:
                if offset < start:
                    chunk, offset = chunk[start - offset :], start
                if finalize_at is not None and finalize_at < end:
                    cut = finalize_at - offset
                    if cut:
                        out.append(chunk[:cut])
                    out.append(Send.FINALIZE)
                    chunk, finalize_at = chunk[cut:], None
                if chunk:
                    out.append(chunk)
            offset = end
        if finalize_at is not None:
            out.append(Send.FINALIZE)
        return out


def parse_message(text: str | bytes) -> dict[str, Any] | None:
    """A server message as JSON; None for one that is not a JSON object (the SDK skips those too)."""
    try:
        message = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    return message if isinstance(message, dict) else None


def read_results(result: dict[str, Any], origin: int, bytes_per_s: float) -> tuple[Transcript | None, int | None]:
    """A ``Results`` message (parsed JSON) of the connection whose audio starts at offset
    ``origin``: its transcript, word times shifted onto the session's time line (None for an
    interim of silence, which says nothing), and for a final the offset its audio covers up to
    (None for an interim). A message without the fields Deepgram always sends raises
    ``KeyError``/``TypeError``."""
    origin_s = origin / bytes_per_s
    alternatives = result["channel"]["alternatives"]
    best: dict[str, Any] | None = alternatives[0] if alternatives else None
    text = best["transcript"] if best is not None else ""
    is_final = bool(result.get("is_final"))
    covered = None
    if is_final:
        covered = origin + int(round((result["start"] + result["duration"]) * bytes_per_s))
    elif not text:
        return None, None
    words = tuple(
        Word(w.get("punctuated_word") or w["word"], origin_s + w["start"], origin_s + w["end"])
        for w in ((best.get("words") or ()) if best is not None else ())
    )
    return Transcript(text, is_final, words), covered
