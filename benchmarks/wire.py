"""The provider's side of a media stream (``CallerWire``), and Twilio Media Streams as one.

A ``CallerWire`` is what the simulated caller needs of a provider protocol, sans-IO: the messages
the provider writes (``open``: connected/start; ``media``; ``dtmf``; ``mark_played``: the
acknowledgement of a mark the server placed; ``cleared``; ``stop``) and ``parse`` of what the
server sends into ``ServerMedia`` / ``ServerMark`` / ``ServerClear``. Messages are ``str`` (text
frames) or ``bytes`` (binary frames: Vonage audio). Audio crosses the seam as mu-law 8 kHz both
ways: ``frames(clip)`` turns a clip into wire-ready frames once (cached per clip), and parsed
server audio is converted to mu-law 8 kHz, which the caller's playback buffer counts in.
The other providers live in ``wire_telnyx``, ``wire_plivo``, ``wire_vonage`` and ``wire_exotel``;
``protocols`` names them all.

Twilio: outbound media is the hot path (50 messages a second per call): the JSON is a ``%``
template per stream with the base64 payloads of each clip encoded once (``encode_frames`` caches
them, framed by the engine's ``Framer``), so only sequenceNumber, chunk and timestamp are
formatted per frame. The rare messages (start, dtmf, mark, stop) go through orjson.

Inbound messages are parsed into small frozen events; malformed input raises ``WireError``
with an exact message.
"""

from __future__ import annotations

import base64
import binascii
import functools
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import orjson

from ringline.engine.audio import MULAW_8K, Framer, frame_bytes, silence

FRAME_BYTES = frame_bytes(MULAW_8K)  # 20 ms of 8 kHz mu-law: 160
SILENCE = silence(MULAW_8K)  # mu-law zero
SILENCE_B64 = base64.b64encode(SILENCE).decode("ascii")


Message = str | bytes
"""A WebSocket message: text frames as ``str``, binary frames as ``bytes``."""
Frame = str | bytes
"""One 20 ms frame of caller audio, ready for ``CallerWire.media`` (base64 text or raw bytes)."""


class WireError(ValueError):
    """The server sent something that is not a valid message of the provider's protocol."""


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


@dataclass(frozen=True, slots=True)
class ServerMedia:
    payload: bytes  # mu-law 8 kHz (converted from the wire format if need be)


@dataclass(frozen=True, slots=True)
class ServerMark:
    name: str  # what ``mark_played`` needs to acknowledge it (Vonage: the notify payload as JSON)


@dataclass(frozen=True, slots=True)
class ServerClear:
    pass


ServerEvent = ServerMedia | ServerMark | ServerClear
_CLEAR = ServerClear()


class CallerWire(Protocol):
    """The provider side of one media stream, sans-IO. Every method returns the messages to write."""

    name: str
    """The protocol: ``twilio``, ``telnyx``, ``plivo``, ``vonage``, ``exotel`` (``/media/<name>``)."""
    stream_id: str
    call_id: str
    """The call's id as the server will know it (``CallStarted.call_id``, ``GET /calls/{id}``)."""
    silence: Frame
    """A silent frame."""
    marks_echoed_on_clear: bool
    """Whether the provider acknowledges the marks pending at a clear (Twilio, Telnyx) or drops
    them (Plivo, Vonage: the clear has its own acknowledgement, ``cleared``)."""

    def frames(self, audio: bytes) -> Sequence[Frame]:
        """The 20 ms frames of mu-law 8 kHz ``audio`` (last one padded), cached per clip."""
        ...

    def open(self, parameters: Mapping[str, str]) -> Sequence[Message]:
        """The first messages (connected, start) carrying ``parameters`` (agent, from, to, var_*)
        the way the provider passes them."""
        ...

    def media(self, index: int, frame: Frame) -> Sequence[Message]:
        """Frame ``index`` (0-based; at index * 20 ms) of the stream. Usually one message; a
        wire that reorders may hold one back and write two at the next frame."""
        ...

    def dtmf(self, digit: str) -> Sequence[Message]: ...

    def mark_played(self, name: str) -> Sequence[Message]:
        """Acknowledge ``ServerMark(name)``: playback reached it."""
        ...

    def cleared(self) -> Sequence[Message]:
        """Acknowledge ``ServerClear`` (empty for providers that do not)."""
        ...

    def stop(self) -> Sequence[Message]:
        """Hang up (empty for providers that just close the socket)."""
        ...

    def parse(self, message: Message) -> ServerEvent:
        """One server message; raises ``WireError`` with an exact message if it is malformed."""
        ...


def json_object(text: str | bytes) -> dict:
    """``text`` as a JSON object, or ``WireError``."""
    try:
        msg = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise WireError("message is not JSON") from None
    if not isinstance(msg, dict):
        raise WireError("message is not a JSON object")
    return msg


def b64_payload(payload: object, what: str) -> bytes:
    """Decode a base64 ``payload`` field (``what`` names it in errors)."""
    if not isinstance(payload, str):
        raise WireError(f"{what} is not a string")
    try:
        return binascii.a2b_base64(payload, strict_mode=True)
    except binascii.Error:
        raise WireError(f"{what} is not valid base64") from None


class TwilioWire:
    """Twilio Media Streams as Twilio writes them, for one stream; owns the sequence numbers."""

    name = "twilio"
    silence: Frame = SILENCE_B64
    marks_echoed_on_clear = True  # "Twilio sends back mark messages for every pending mark"
    frames = staticmethod(encode_frames)

    def __init__(self, stream_sid: str, call_sid: str, account_sid: str) -> None:
        self.stream_sid = self.stream_id = stream_sid
        self.call_sid = self.call_id = call_sid
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

    @classmethod
    def new(cls, call_id: str | None = None) -> TwilioWire:
        return cls(new_sid("MZ"), call_id or new_sid("CA"), new_sid("AC"))

    def open(self, parameters: Mapping[str, str]) -> tuple[str, str]:
        return self.connected(), self.start(dict(parameters))

    def media(self, index: int, frame: Frame) -> tuple[str]:
        """Frame ``index`` (0-based) of the stream: chunk k+1, timestamp k*20 ms."""
        self.seq += 1
        return (self._media % (self.seq, index + 1, index * 20, frame),)

    def mark_played(self, name: str) -> tuple[str]:
        return (self.mark(name),)

    def cleared(self) -> tuple[()]:
        return ()

    def parse(self, message: Message) -> ServerEvent:
        return parse_server_message(message, self.stream_sid)

    def dtmf(self, digit: str) -> tuple[str]:
        return (
            orjson.dumps(
                {
                    "event": "dtmf",
                    "streamSid": self.stream_sid,
                    "sequenceNumber": self._next(),
                    "dtmf": {"track": "inbound_track", "digit": digit},
                }
            ).decode(),
        )

    def mark(self, name: str) -> str:
        return orjson.dumps(
            {
                "event": "mark",
                "sequenceNumber": self._next(),
                "streamSid": self.stream_sid,
                "mark": {"name": name},
            }
        ).decode()

    def stop(self) -> tuple[str]:
        return (
            orjson.dumps(
                {
                    "event": "stop",
                    "sequenceNumber": self._next(),
                    "streamSid": self.stream_sid,
                    "stop": {"accountSid": self.account_sid, "callSid": self.call_sid},
                }
            ).decode(),
        )


def parse_server_message(text: str | bytes, stream_sid: str) -> ServerEvent:
    """One server -> Twilio message of stream ``stream_sid``."""
    if not isinstance(text, str):
        raise WireError("binary message (Twilio sends JSON text only)")
    msg = json_object(text)
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


def check_stream(msg: dict, key: str, expected: str, *, required: bool) -> None:
    """Check the message's stream id field ``key`` is ``expected`` (or absent, unless ``required``)."""
    sid = msg.get(key)
    if (sid is not None or required) and sid != expected:
        raise WireError(f"{msg.get('event')!r} message for {key} {sid!r}, not {expected!r}")


def mark_name(holder: object, what: str) -> str:
    """The mark name string at ``holder['name']`` (``what`` names the holder in errors)."""
    name = holder.get("name") if isinstance(holder, dict) else None
    if not isinstance(name, str):
        raise WireError(f"{what} without name string")
    return name
