"""Exotel AgentStream (Voicebot applet, bidirectional) as Exotel writes it, for one stream.

Reference: Exotel "WebSocket protocol" (AgentStream) and "Working with the Stream and Voicebot
Applet". Exotel sends ``connected``, ``start`` (``stream_sid``; ``start.call_sid``, ``from``,
``to``, ``custom_parameters``, ``media_format`` audio/x-raw 8000 Hz 16 bits), ``media``
(``media.chunk/timestamp/payload``: base64 16-bit little-endian PCM at 8 kHz, "every ~100 ms"),
``dtmf``, ``mark`` (a mark the application placed has played; pending ones come back on a
``clear``, as with Twilio, whose protocol Exotel's follows) and ``stop``, with string
``sequence_number``s. The application sends ``media`` {payload}: chunks in multiples of 320 bytes
(20 ms), at least 3.2 kB (100 ms) advised, ``mark`` {name} and ``clear``.

``frames_per_message`` (default 5: 100 ms, as Exotel sends) frames go out in one ``media``
message; the caller's speech end is therefore up to 80 ms later on the wire than on its clock,
as with a real Exotel. Server chunks that are not a multiple of 320 bytes are protocol errors;
chunks under 100 ms are counted in ``short_chunks`` (the docs warn of audio issues, not refusal).

Parameters: ``from`` and ``to`` in their own ``start`` fields, the rest in
``start.custom_parameters`` (the applet's URL query parameters).
"""

from __future__ import annotations

import base64
import functools
import secrets
from collections.abc import Mapping

import orjson

from ringline.benchmarks.wire import (
    _CLEAR,
    Frame,
    Message,
    ServerEvent,
    ServerMark,
    ServerMedia,
    WireError,
    b64_payload,
    check_stream,
    json_object,
    mark_name,
    split_frames,
)
from ringline.engine.audio import PCM16_8K, frame_bytes, ulaw_decode, ulaw_encode

FRAME_BYTES = frame_bytes(PCM16_8K)  # 20 ms of PCM16 8 kHz: 320
MIN_CHUNK_BYTES = 5 * FRAME_BYTES  # 100 ms
SILENCE_PCM = bytes(FRAME_BYTES)
NATIVE = ("from", "to")


@functools.lru_cache(maxsize=256)
def pcm_frames(audio: bytes) -> tuple[bytes, ...]:
    """Mu-law 8 kHz ``audio`` as 320-byte frames of PCM16 8 kHz (last one padded with silence)."""
    return tuple(ulaw_decode(frame) for frame in split_frames(audio))


class ExotelWire:
    name = "exotel"
    silence: Frame = SILENCE_PCM
    marks_echoed_on_clear = True
    frames = staticmethod(pcm_frames)

    def __init__(self, stream_sid: str, call_sid: str, *, frames_per_message: int = 5) -> None:
        if frames_per_message < 1:
            raise ValueError(f"frames_per_message must be at least 1, got {frames_per_message}")
        self.stream_id = self.stream_sid = stream_sid
        self.call_id = self.call_sid = call_sid
        self.account_sid = secrets.token_hex(8)
        self.frames_per_message = frames_per_message
        self.seq = 0
        self.chunk = 0
        self.short_chunks = 0  # server media chunks under 100 ms
        self._pending: list[bytes] = []
        self._first = 0  # frame index of the first pending frame
        self._media = (
            '{"event":"media","sequence_number":"%d","stream_sid":"' + stream_sid + '",'
            '"media":{"chunk":"%d","timestamp":"%d","payload":"%s"}}'
        )

    @classmethod
    def new(cls, call_id: str | None = None, *, frames_per_message: int = 5) -> ExotelWire:
        return cls(secrets.token_hex(16), call_id or secrets.token_hex(16), frames_per_message=frames_per_message)

    def _dumps(self, event: str, **fields: object) -> str:
        self.seq += 1
        msg = {"event": event, "sequence_number": str(self.seq), "stream_sid": self.stream_sid, **fields}
        return orjson.dumps(msg).decode()

    def open(self, parameters: Mapping[str, str]) -> tuple[str, str]:
        start = {
            "stream_sid": self.stream_sid,
            "call_sid": self.call_sid,
            "account_sid": self.account_sid,
            "from": parameters.get("from", ""),
            "to": parameters.get("to", ""),
            "custom_parameters": {k: v for k, v in parameters.items() if k not in NATIVE},
            "media_format": {"encoding": "audio/x-raw", "sample_rate": "8000", "bit_rate": "16"},
        }
        return '{"event":"connected"}', self._dumps("start", start=start)

    def media(self, index: int, frame: Frame) -> tuple[str, ...]:
        pending = self._pending
        if not pending:
            self._first = index
        pending.append(frame)  # type: ignore[arg-type]  # Exotel frames are bytes
        return self._flush() if len(pending) >= self.frames_per_message else ()

    def _flush(self) -> tuple[str, ...]:
        if not self._pending:
            return ()
        payload = base64.b64encode(b"".join(self._pending)).decode("ascii")
        self._pending = []
        self.seq += 1
        self.chunk += 1
        return (self._media % (self.seq, self.chunk, self._first * 20, payload),)

    def dtmf(self, digit: str) -> tuple[str, ...]:
        return (*self._flush(), self._dumps("dtmf", dtmf={"digit": digit, "duration": "100"}))

    def mark_played(self, name: str) -> tuple[str]:
        return (self._dumps("mark", mark={"name": name}),)

    def cleared(self) -> tuple[()]:
        return ()

    def stop(self) -> tuple[str, ...]:
        stop = {"call_sid": self.call_sid, "account_sid": self.account_sid, "reason": "callended"}
        return (*self._flush(), self._dumps("stop", stop=stop))

    def parse(self, message: Message) -> ServerEvent:
        if not isinstance(message, str):
            raise WireError("binary message (Exotel takes JSON text only)")
        msg = json_object(message)
        check_stream(msg, "stream_sid", self.stream_sid, required=True)
        event = msg.get("event")
        if event == "media":
            media = msg.get("media")
            pcm = b64_payload(media.get("payload") if isinstance(media, dict) else None, "media.payload")
            if not pcm or len(pcm) % FRAME_BYTES:
                raise WireError(f"media chunk of {len(pcm)} bytes, not a multiple of {FRAME_BYTES}")
            if len(pcm) < MIN_CHUNK_BYTES:
                self.short_chunks += 1
            return ServerMedia(ulaw_encode(pcm))
        if event == "mark":
            return ServerMark(mark_name(msg.get("mark"), "mark message's mark"))
        if event == "clear":
            return _CLEAR
        raise WireError(f"unknown event {event!r}")
