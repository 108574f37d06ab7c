"""Plivo Audio Streaming as Plivo writes it (the caller's side), for one stream.

Reference: Plivo "Stream Event Protocol": Plivo sends ``start`` (``start.callId``,
``start.streamId``, ``start.accountId``, ``tracks``, ``mediaFormat`` audio/x-mulaw 8000 Hz, and
the ``<Stream extraHeaders>`` as the top-level string ``extra_headers``), ``media``
(``media.track/timestamp/chunk/payload``, numeric ``sequenceNumber``), ``dtmf``, ``playedStream``
{name} (a ``checkpoint`` the application placed has played) and ``clearedAudio`` (the answer to
``clearAudio``). The application sends ``playAudio`` {media: contentType, sampleRate, payload},
``checkpoint`` {name} and ``clearAudio``.

Plivo has no ``connected`` or ``stop`` message: the stream starts with ``start`` and ends with
the socket closing (stream status goes to an HTTP callback). ``playedStream`` is "only emitted if
the preceding events were played successfully": checkpoints pending at a ``clearAudio`` are never
acknowledged; ``clearedAudio`` is.

Parameters: every one (``agent``, ``from``, ``to``, ``var_*``) in ``extra_headers`` as
``key=value`` pairs joined by ``;`` (the documented example: ``userId=12345;sessionId=abc-xyz``).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping

import orjson

from ringline.benchmarks.wire import (
    _CLEAR,
    SILENCE_B64,
    Frame,
    Message,
    ServerEvent,
    ServerMark,
    ServerMedia,
    WireError,
    b64_payload,
    check_stream,
    encode_frames,
    json_object,
)
from ringline.engine.audio import ulaw_encode


def extra_headers(parameters: Mapping[str, str]) -> str:
    return ";".join(f"{k}={v}" for k, v in parameters.items())


class PlivoWire:
    name = "plivo"
    silence: Frame = SILENCE_B64
    marks_echoed_on_clear = False
    frames = staticmethod(encode_frames)

    def __init__(self, stream_id: str, call_id: str, *, epoch_ms: int = 0) -> None:
        """``epoch_ms``: the Unix time in ms of frame 0 (media timestamps are Unix ms)."""
        self.stream_id = stream_id
        self.call_id = call_id
        self.account_id = "MA" + uuid.uuid4().hex[:18].upper()
        self.epoch_ms = epoch_ms
        self.seq = 0
        self._media = (
            '{"event":"media","sequenceNumber":%d,"streamId":"' + stream_id + '",'
            '"media":{"track":"inbound","timestamp":"%d","chunk":%d,"payload":"%s"}}'
        )

    @classmethod
    def new(cls, call_id: str | None = None, *, epoch_ms: int = 0) -> PlivoWire:
        return cls(str(uuid.uuid4()), call_id or str(uuid.uuid4()), epoch_ms=epoch_ms)

    def _dumps(self, event: str, **fields: object) -> str:
        self.seq += 1
        return orjson.dumps({"event": event, "sequenceNumber": self.seq, "streamId": self.stream_id, **fields}).decode()

    def open(self, parameters: Mapping[str, str]) -> tuple[str]:
        self.seq += 1
        start = {
            "event": "start",
            "sequenceNumber": self.seq,
            "start": {
                "callId": self.call_id,
                "streamId": self.stream_id,
                "accountId": self.account_id,
                "tracks": ["inbound"],
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000},
            },
            "extra_headers": extra_headers(parameters),
        }
        return (orjson.dumps(start).decode(),)

    def media(self, index: int, frame: Frame) -> tuple[str]:
        self.seq += 1
        return (self._media % (self.seq, self.epoch_ms + index * 20, index + 1, frame),)

    def dtmf(self, digit: str) -> tuple[str]:
        return (self._dumps("dtmf", dtmf={"track": "inbound", "digit": digit, "timestamp": str(self.epoch_ms)}),)

    def mark_played(self, name: str) -> tuple[str]:
        return (self._dumps("playedStream", name=name),)

    def cleared(self) -> tuple[str]:
        return (self._dumps("clearedAudio"),)

    def stop(self) -> tuple[()]:
        return ()  # Plivo just closes the socket

    def parse(self, message: Message) -> ServerEvent:
        if not isinstance(message, str):
            raise WireError("binary message (Plivo takes JSON text only)")
        msg = json_object(message)
        check_stream(msg, "streamId", self.stream_id, required=False)
        event = msg.get("event")
        if event == "playAudio":
            return ServerMedia(_play_audio(msg.get("media")))
        if event == "checkpoint":
            name = msg.get("name")
            if not isinstance(name, str):
                raise WireError("checkpoint message without name string")
            return ServerMark(name)
        if event == "clearAudio":
            return _CLEAR
        raise WireError(f"unknown event {event!r}")


def _play_audio(media: object) -> bytes:
    """A playAudio's media as mu-law 8 kHz (audio/x-mulaw 8000 or audio/x-l16 8000)."""
    if not isinstance(media, dict):
        raise WireError("playAudio message without media object")
    kind, rate = media.get("contentType"), media.get("sampleRate")
    audio = b64_payload(media.get("payload"), "media.payload")
    if kind == "audio/x-mulaw" and rate == 8000:
        return audio
    if kind == "audio/x-l16" and rate == 8000:
        if len(audio) & 1:
            raise WireError(f"audio/x-l16 payload of odd length {len(audio)}")
        return ulaw_encode(audio)
    raise WireError(f"playAudio with unsupported contentType {kind!r} sampleRate {rate!r}")
