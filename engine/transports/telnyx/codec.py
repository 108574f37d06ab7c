"""Telnyx Media Streaming, sans-IO.

``TelnyxStream.feed(text)`` turns one WebSocket text message into at most one ``InboundEvent``
(or ``None``) and raises ``TelnyxProtocolError`` with an exact message for anything malformed.
``media``/``mark``/``clear`` build the outbound messages of a bidirectional (``rtp`` mode) stream.

Reference: Telnyx "Stream call media over WebSocket" (AsyncAPI): ``connected``, ``start``,
``media``, ``dtmf``, ``mark``, ``error``, ``stop`` in; ``media``, ``mark``, ``clear`` out. Fields
are snake_case and the stream id (``stream_id``) sits at the top of every message.

- **Audio format** comes from ``start.media_format``: PCMU or PCMA at 8 kHz, or L16 at 8 or
  16 kHz, mono. L16 travels in network byte order (RFC 3551); the codec swaps it to and from our
  little-endian PCM16. G722, OPUS and AMR-WB are refused at ``start``. Outbound audio uses the
  same format: configure ``stream_bidirectional_codec`` (and its sampling rate) to match.
- **Order.** Telnyx does not guarantee media order. ``ChunkReorder`` holds a chunk that arrives
  early (by ``media.chunk``) until the ones before it come, for at most ``REORDER_WINDOW`` later
  chunks; then the missing ones count as lost. One message may release several chunks: they come
  out as one ``AudioReceived``. The first numbered chunk starts the count (one numbered before it
  that comes later is dropped as late); chunks still held at ``stop`` are dropped with the call.
- **Parameters** (``CallStarted.parameters``) use Twilio's keys (``agent``, ``from``, ``to``,
  ``direction``, ``var_*``): ``start.from``/``start.to``, then the keys of ``client_state`` if it
  is base64 of a JSON object (anything else is the application's own state, ignored), then
  ``start.custom_parameters`` (an object, or the ``[{"name", "value"}]`` list of the call-control
  command); later sources win.
"""

from __future__ import annotations

import binascii
import enum
import logging
import re
from array import array
from base64 import b64decode, b64encode
from typing import Any

import orjson

from ringline.engine.audio.formats import ALAW_8K, MULAW_8K, AudioFormat, Encoding
from ringline.engine.errors import RemoteProtocolError
from ringline.engine.transports.events import (
    AudioReceived,
    CallStarted,
    CallStopped,
    DtmfReceived,
    InboundEvent,
    MarkPlayed,
)
from ringline.engine.transports.jsonstream import dtmf_digit, inbound_audio, json_object
from ringline.engine.transports.telnyx.reorder import REORDER_WINDOW, ChunkReorder

log = logging.getLogger(__name__)

MAX_PAYLOAD_BYTES = 32000
"""Largest inbound media payload accepted (1 s of L16 at 16 kHz); Telnyx sends 20 ms chunks."""

_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_CALL_CONTROL_ID = re.compile(r"[A-Za-z0-9_:.=-]{1,128}")
_MARK_NAME = re.compile(r"[ !#-\[\]-~]{1,256}")  # printable ASCII but quote and backslash
_FORMATS = {("PCMU", 8000): MULAW_8K, ("PCMA", 8000): ALAW_8K}
_L16_RATES = (8000, 16000)
_UNSUPPORTED_CODECS = ("G722", "OPUS", "AMR-WB")


class TelnyxProtocolError(RemoteProtocolError):
    pass


class StreamState(enum.Enum):
    AWAITING_START = "awaiting_start"
    STREAMING = "streaming"
    STOPPED = "stopped"


def swap16(data: bytes) -> bytes:
    """16-bit samples with their bytes swapped (big- <-> little-endian); an odd last byte is dropped."""
    samples = array("h", data[: len(data) & ~1])
    samples.byteswap()
    return samples.tobytes()


class TelnyxStream:
    """One Telnyx media stream's protocol state (a ``MediaCodec``)."""

    name = "telnyx"
    hangup_on_close = False
    """Telnyx says ``stop`` when the call ends."""

    def __init__(self, reorder_window: int = REORDER_WINDOW) -> None:
        self.state = StreamState.AWAITING_START
        self.stream_id: str | None = None
        self.call_control_id: str | None = None
        self.format: AudioFormat = MULAW_8K
        """The wire format, as ``start.media_format`` says (PCMU 8 kHz until then)."""
        self.reorder = ChunkReorder(reorder_window)
        self.errors: list[dict[str, Any]] = []
        """``error`` messages Telnyx sent about what we sent (``payload``: code, title, detail)."""
        self._l16 = False

    def _set_state(self, new: StreamState) -> None:
        log.debug("telnyx stream %s: %s -> %s", self.stream_id, self.state.value, new.value)
        self.state = new

    # -- inbound ---------------------------------------------------------------------------

    def feed(self, text: str | bytes) -> InboundEvent | None:
        msg = json_object(text, TelnyxProtocolError)
        event = msg.get("event")
        if event == "media":
            return self._media(msg)
        if event == "mark":
            return self._mark(msg)
        if event == "dtmf":
            return self._dtmf(msg)
        if event == "start":
            return self._start(msg)
        if event == "stop":
            return self._stop(msg)
        if event == "error":
            return self._error(msg)
        if event == "connected":
            return None
        raise TelnyxProtocolError(f"unknown event {event!r}" if isinstance(event, str) else "missing event")

    def feed_binary(self, data: bytes) -> InboundEvent | None:
        raise TelnyxProtocolError("unexpected binary message")

    def _require_streaming(self, msg: dict, event: str) -> None:
        if self.state is not StreamState.STREAMING:
            raise TelnyxProtocolError(f"{event} in state {self.state.value}")
        stream_id = msg.get("stream_id")
        if stream_id != self.stream_id:
            raise TelnyxProtocolError(f"{event} for stream_id {stream_id!r}, expected {self.stream_id!r}")

    def _media(self, msg: dict) -> AudioReceived | None:
        self._require_streaming(msg, "media")
        media = msg.get("media")
        audio = inbound_audio(media, MAX_PAYLOAD_BYTES, TelnyxProtocolError)
        if audio is None:
            return None  # a both-tracks stream echoes what we sent: nothing to act on
        chunk = media.get("chunk")
        if self._l16:
            if len(audio) % 2:
                raise TelnyxProtocolError(f"L16 media payload of odd length {len(audio)}")
            audio = swap16(audio)
        if chunk is None:
            return AudioReceived(audio)  # unnumbered: nothing to order by
        if isinstance(chunk, str) and chunk.isascii() and chunk.isdigit() and len(chunk) <= 18:
            number = int(chunk)
        elif type(chunk) is int and 0 <= chunk < 10**18:
            number = chunk
        else:
            raise TelnyxProtocolError(f"media with invalid chunk {chunk!r}")
        released = self.reorder.push(number, audio)
        if not released:
            return None
        return AudioReceived(released[0] if len(released) == 1 else b"".join(released))

    def _mark(self, msg: dict) -> MarkPlayed:
        self._require_streaming(msg, "mark")
        mark = msg.get("mark")
        name = mark.get("name") if isinstance(mark, dict) else None
        if not isinstance(name, str):
            raise TelnyxProtocolError("mark without name")
        return MarkPlayed(name)

    def _dtmf(self, msg: dict) -> DtmfReceived:
        self._require_streaming(msg, "dtmf")
        return dtmf_digit(msg.get("dtmf"), TelnyxProtocolError)

    def _error(self, msg: dict) -> None:
        payload = msg.get("payload")
        if not isinstance(payload, dict):
            raise TelnyxProtocolError("error without payload object")
        self.errors.append(payload)
        log.warning(
            "telnyx stream %s reports error %r %r: %r",
            self.stream_id,
            payload.get("code"),
            payload.get("title"),
            payload.get("detail"),
        )
        return None

    def _start(self, msg: dict) -> CallStarted:
        if self.state is not StreamState.AWAITING_START:
            raise TelnyxProtocolError(f"start in state {self.state.value}")
        start = msg.get("start")
        if not isinstance(start, dict):
            raise TelnyxProtocolError("start without start object")
        stream_id = msg.get("stream_id", start.get("stream_id"))
        call_control_id = start.get("call_control_id")
        if not isinstance(stream_id, str) or not _ID.fullmatch(stream_id):
            raise TelnyxProtocolError(f"start with invalid stream_id {stream_id!r}")
        if not isinstance(call_control_id, str) or not _CALL_CONTROL_ID.fullmatch(call_control_id):
            raise TelnyxProtocolError(f"start with invalid call_control_id {call_control_id!r}")
        fmt = _media_format(start.get("media_format"))
        params = _parameters(start)
        self.stream_id, self.call_control_id = stream_id, call_control_id
        self.format, self._l16 = fmt, fmt.encoding is Encoding.PCM16
        self._set_state(StreamState.STREAMING)
        return CallStarted(call_control_id, stream_id, params)

    def _stop(self, msg: dict) -> CallStopped:
        self._require_streaming(msg, "stop")
        self._set_state(StreamState.STOPPED)
        return CallStopped()

    # -- outbound --------------------------------------------------------------------------

    def media(self, payload: bytes) -> str:
        """A media message carrying ``payload`` in ``format`` (PCM16 is sent big-endian)."""
        # A template, not a JSON encoder: base64 needs no escaping.
        if self._l16:
            payload = swap16(payload)
        return '{"event":"media","media":{"payload":"' + b64encode(payload).decode("ascii") + '"}}'

    def flush(self) -> list[str]:
        return []  # nothing held back

    def mark(self, name: str) -> list[str]:
        if not _MARK_NAME.fullmatch(name):
            raise ValueError(f"invalid mark name {name!r}")
        return [f'{{"event":"mark","mark":{{"name":"{name}"}}}}']

    def clear(self) -> list[str]:
        return ['{"event":"clear"}']


def _media_format(fmt: object) -> AudioFormat:
    if not isinstance(fmt, dict):
        raise TelnyxProtocolError("start without media_format object")
    encoding, rate, channels = fmt.get("encoding"), fmt.get("sample_rate"), fmt.get("channels", 1)
    if encoding in _UNSUPPORTED_CODECS:
        raise TelnyxProtocolError(f"media encoding {encoding!r} is not supported: stream PCMU, PCMA or L16")
    if isinstance(encoding, str) and type(rate) is int and type(channels) is int and channels == 1:
        if (known := _FORMATS.get((encoding, rate))) is not None:
            return known
        if encoding == "L16" and rate in _L16_RATES:
            return AudioFormat(Encoding.PCM16, rate)
    raise TelnyxProtocolError(f"unsupported media format {encoding!r} {rate!r} Hz {channels!r} channels")


def _parameters(start: dict) -> dict[str, str]:
    params: dict[str, str] = {}
    for key in ("from", "to"):
        value = start.get(key)
        if isinstance(value, str):
            params[key] = value
        elif value is not None:
            raise TelnyxProtocolError(f"start with invalid {key} {value!r}")
    client_state = start.get("client_state")
    if client_state is not None and not isinstance(client_state, str):
        raise TelnyxProtocolError(f"start with invalid client_state {client_state!r}")
    params.update(_client_state(client_state))
    custom = start.get("custom_parameters")
    if isinstance(custom, dict):
        params.update({str(k): str(v) for k, v in custom.items()})
    elif isinstance(custom, list):
        for item in custom:
            if not isinstance(item, dict) or not isinstance(item.get("name"), str) or "value" not in item:
                raise TelnyxProtocolError(f"custom_parameters item {item!r} is not a name and value")
            params[item["name"]] = str(item["value"])
    elif custom is not None:
        raise TelnyxProtocolError("custom_parameters is not an object")
    return params


def _client_state(client_state: str | None) -> dict[str, str]:
    """The keys of ``client_state`` when it is base64 of a JSON object; else nothing (opaque state)."""
    if not client_state:
        return {}
    try:
        state = orjson.loads(b64decode(client_state, validate=True))
    except (binascii.Error, ValueError):  # orjson.JSONDecodeError is a ValueError
        return {}
    if not isinstance(state, dict):
        return {}
    return {str(k): str(v) for k, v in state.items()}
