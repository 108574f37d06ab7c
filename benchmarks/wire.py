"""Twilio Media Streams messages as the caller (Twilio's side) writes and reads them.

Outbound media is the hot path (50 messages a second per call): the JSON is a ``%`` template
per stream with the base64 payloads of each clip encoded once (``encode_frames`` caches them,
framed by the engine's ``Framer``),
so only sequenceNumber, chunk and timestamp are formatted per frame. The rare messages
(start, dtmf, mark, stop) go through orjson.

Inbound messages are parsed into small frozen events; malformed input raises ``WireError``
with an exact message.
"""

from __future__ import annotations

import base64
import binascii
import functools
import secrets
from dataclasses import dataclass

import orjson

from ringline.engine.audio import MULAW_8K, Framer, frame_bytes, silence

FRAME_BYTES = frame_bytes(MULAW_8K)  # 20 ms of 8 kHz mu-law: 160
SILENCE = silence(MULAW_8K)  # mu-law zero
SILENCE_B64 = base64.b64encode(SILENCE).decode("ascii")


class WireError(ValueError):
    """The server sent something that is not a valid Twilio Media Streams message."""


def new_sid(prefix: str) -> str:
    """A Twilio-shaped id: two-letter prefix and 32 hex digits."""
    return prefix + secrets.token_hex(16)


@functools.lru_cache(maxsize=256)
def split_frames(audio: bytes) -> tuple[bytes, ...]:
    """The 20 ms frames of mu-law ``audio``; the last one padded with silence."""
    framer = Framer.for_format(MULAW_8K)
    frames = framer.feed(audio)
    tail = framer.flush()
    return (*frames, tail) if tail else tuple(frames)


@functools.lru_cache(maxsize=256)
def encode_frames(audio: bytes) -> tuple[str, ...]:
    """Base64 of each frame of ``split_frames(audio)``."""
    return tuple(base64.b64encode(frame).decode("ascii") for frame in split_frames(audio))


class StreamWriter:
    """Formats the caller's messages for one stream; owns the sequence numbers."""

    def __init__(self, stream_sid: str, call_sid: str, account_sid: str) -> None:
        self.stream_sid = stream_sid
        self.call_sid = call_sid
        self.account_sid = account_sid
        self.seq = 0
        self._media = (
            '{"event":"media","sequenceNumber":"%d","streamSid":"' + stream_sid + '",'
            '"media":{"track":"inbound","chunk":"%d","timestamp":"%d","payload":"%s"}}'
        )

    def _next(self) -> str:
        self.seq += 1
        return str(self.seq)

    @staticmethod
    def connected() -> str:
        return '{"event":"connected","protocol":"Call","version":"1.0.0"}'

    def start(self, custom_parameters: dict[str, str]) -> str:
        return orjson.dumps(
            {
                "event": "start",
                "sequenceNumber": self._next(),
                "streamSid": self.stream_sid,
                "start": {
                    "accountSid": self.account_sid,
                    "streamSid": self.stream_sid,
                    "callSid": self.call_sid,
                    "tracks": ["inbound"],
                    "customParameters": custom_parameters,
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                },
            }
        ).decode()

    def media(self, frame_index: int, payload_b64: str) -> str:
        """Frame ``frame_index`` (0-based) of the stream: chunk k+1, timestamp k*20 ms."""
        self.seq += 1
        return self._media % (self.seq, frame_index + 1, frame_index * 20, payload_b64)

    def dtmf(self, digit: str) -> str:
        return orjson.dumps(
            {
                "event": "dtmf",
                "streamSid": self.stream_sid,
                "sequenceNumber": self._next(),
                "dtmf": {"track": "inbound_track", "digit": digit},
            }
        ).decode()

    def mark(self, name: str) -> str:
        return orjson.dumps(
            {
                "event": "mark",
                "sequenceNumber": self._next(),
                "streamSid": self.stream_sid,
                "mark": {"name": name},
            }
        ).decode()

    def stop(self) -> str:
        return orjson.dumps(
            {
                "event": "stop",
                "sequenceNumber": self._next(),
                "streamSid": self.stream_sid,
                "stop": {"accountSid": self.account_sid, "callSid": self.call_sid},
            }
        ).decode()


@dataclass(frozen=True, slots=True)
class ServerMedia:
    payload: bytes  # mu-law 8 kHz


@dataclass(frozen=True, slots=True)
class ServerMark:
    name: str


@dataclass(frozen=True, slots=True)
class ServerClear:
    pass


ServerEvent = ServerMedia | ServerMark | ServerClear
_CLEAR = ServerClear()


def parse_server_message(text: str | bytes, stream_sid: str) -> ServerEvent:
    """One server -> Twilio message of stream ``stream_sid``."""
    try:
        msg = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise WireError("message is not JSON") from None
    if not isinstance(msg, dict):
        raise WireError("message is not a JSON object")
    event = msg.get("event")
    sid = msg.get("streamSid")
    if sid != stream_sid:
        raise WireError(f"{event!r} message for streamSid {sid!r}, not {stream_sid!r}")
    if event == "media":
        media = msg.get("media")
        payload = media.get("payload") if isinstance(media, dict) else None
        if not isinstance(payload, str):
            raise WireError("media message without media.payload string")
        try:
            return ServerMedia(binascii.a2b_base64(payload, strict_mode=True))
        except binascii.Error:
            raise WireError("media.payload is not valid base64") from None
    if event == "mark":
        mark = msg.get("mark")
        name = mark.get("name") if isinstance(mark, dict) else None
        if not isinstance(name, str):
            raise WireError("mark message without mark.name string")
        return ServerMark(name)
    if event == "clear":
        return _CLEAR
    raise WireError(f"unknown event {event!r}")
