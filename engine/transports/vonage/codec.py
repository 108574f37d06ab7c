"""Vonage Voice API WebSockets, sans-IO.

Vonage opens the socket for an NCCO ``connect`` action whose endpoint is ``{"type": "websocket",
"uri": ..., "content-type": "audio/l16;rate=16000", "headers": {...}}``. Text messages are JSON
events; binary messages are audio:

- first ``{"event": "websocket:connected", "content-type": "audio/l16;rate=16000", ...}`` with
  the endpoint's ``headers`` at the top level;
- binary frames of 20 ms of 16-bit little-endian linear PCM at that rate (8000, 16000 or
  24000 Hz: 320, 640 or 960 bytes);
- ``{"event": "websocket:dtmf", "digit": "5", "duration": 260}``;
- ``{"event": "websocket:notify", "payload": {...}}``: the payload of a ``notify`` we sent,
  once the audio sent before it has played; ``{"event": "websocket:cleared"}`` acknowledges a
  ``clear``. Vonage says more ``websocket:*`` events may come: those are ignored.

Out: binary frames of exactly 20 ms, ``{"action": "notify", "payload": {"name": ...}}`` as the
mark and ``{"action": "clear"}``. There is no stop message: the caller hanging up closes the
socket (``hangup_on_close``).

``CallStarted.parameters`` are the headers (non-string values as JSON text), so an NCCO passes
``agent``, ``from``, ``to``, ``direction`` and ``var_*`` as headers. The call id is the
``call_uuid`` (or ``uuid``) header when the NCCO passes the call's uuid, which it should: Vonage
sends no call id of its own. Without one the codec makes one up (``new_id``), so the call can
still run but cannot be matched to Vonage's records.

Reference: Vonage "WebSockets" guide (developer.vonage.com/en/voice/voice-api/concepts/websockets).
"""

from __future__ import annotations

import enum
import logging
import re
import uuid
from collections.abc import Callable

import orjson

from ringline.engine.audio.formats import PCM16_16K, AudioFormat, Encoding
from ringline.engine.errors import RemoteProtocolError
from ringline.engine.transports.events import AudioReceived, CallStarted, DtmfReceived, InboundEvent, MarkPlayed

log = logging.getLogger(__name__)

CONTENT_TYPES = {f"audio/l16;rate={rate}": rate for rate in (8000, 16000, 24000)}
"""The audio formats Vonage streams, by the ``content-type`` of ``websocket:connected``."""

_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_MARK_NAME = re.compile(r"[ !#-\[\]-~]{1,256}")  # printable ASCII but quote and backslash
_DIGITS = "0123456789*#ABCD"
_RESERVED = ("event", "content-type")
_CLEAR = '{"action":"clear"}'


class VonageProtocolError(RemoteProtocolError):
    pass


class StreamState(enum.Enum):
    AWAITING_CONNECTED = "awaiting_connected"
    STREAMING = "streaming"


def _new_id() -> str:
    return f"vonage-{uuid.uuid4()}"


class VonageStream:
    """One Vonage WebSocket's protocol state (a ``MediaCodec``)."""

    name = "vonage"
    hangup_on_close = True
    """The socket closing cleanly is the caller hanging up: Vonage sends no stop message."""

    def __init__(self, new_id: Callable[[], str] = _new_id) -> None:
        self.state = StreamState.AWAITING_CONNECTED
        self.call_id: str | None = None
        self.format: AudioFormat = PCM16_16K
        self._frame = PCM16_16K.bytes_for(20)
        self._held = bytearray()  # outbound audio short of a whole frame, or beyond one
        self._new_id = new_id

    def _set_state(self, new: StreamState) -> None:
        log.debug("vonage stream %s: %s -> %s", self.call_id, self.state.value, new.value)
        self.state = new

    # -- inbound ---------------------------------------------------------------------------

    def feed(self, text: str | bytes) -> InboundEvent | None:
        try:
            msg = orjson.loads(text)
        except orjson.JSONDecodeError:
            raise VonageProtocolError("invalid JSON") from None
        if not isinstance(msg, dict):
            raise VonageProtocolError("message is not a JSON object")
        event = msg.get("event")
        if event == "websocket:notify":
            return self._notify(msg)
        if event == "websocket:dtmf":
            return self._dtmf(msg)
        if event == "websocket:cleared":
            self._require_streaming(event)
            return None
        if event == "websocket:connected":
            return self._connected(msg)
        if isinstance(event, str) and event.startswith("websocket:"):
            log.debug("vonage stream %s: ignoring %s", self.call_id, event)
            return None
        raise VonageProtocolError(f"unknown event {event!r}" if isinstance(event, str) else "missing event")

    def feed_binary(self, data: bytes) -> AudioReceived:
        """Caller audio: exactly one 20 ms frame at the negotiated rate."""
        if self.state is not StreamState.STREAMING:
            raise VonageProtocolError(f"binary frame in state {self.state.value}")
        if len(data) != self._frame:
            raise VonageProtocolError(f"binary frame of {len(data)} bytes, expected {self._frame}")
        return AudioReceived(bytes(data))

    def _require_streaming(self, event: str) -> None:
        if self.state is not StreamState.STREAMING:
            raise VonageProtocolError(f"{event} in state {self.state.value}")

    def _connected(self, msg: dict) -> CallStarted:
        if self.state is not StreamState.AWAITING_CONNECTED:
            raise VonageProtocolError(f"websocket:connected in state {self.state.value}")
        content_type = msg.get("content-type")
        rate = CONTENT_TYPES.get(content_type) if isinstance(content_type, str) else None
        if rate is None:
            raise VonageProtocolError(f"websocket:connected with unsupported content-type {content_type!r}")
        key = "call_uuid" if "call_uuid" in msg else "uuid" if "uuid" in msg else None
        call_id = self._new_id() if key is None else msg[key]
        if not isinstance(call_id, str) or not _ID.fullmatch(call_id):
            raise VonageProtocolError(f"websocket:connected with invalid call uuid {call_id!r}")
        params = {
            header: value if isinstance(value, str) else orjson.dumps(value).decode()
            for header, value in msg.items()
            if header not in _RESERVED
        }
        self.call_id = call_id
        self.format = AudioFormat(Encoding.PCM16, rate)
        self._frame = self.format.bytes_for(20)
        self._set_state(StreamState.STREAMING)
        return CallStarted(call_id, call_id, params)

    def _notify(self, msg: dict) -> MarkPlayed:
        self._require_streaming("websocket:notify")
        payload = msg.get("payload")
        name = payload.get("name") if isinstance(payload, dict) else None
        if not isinstance(name, str):
            raise VonageProtocolError("websocket:notify without name")
        return MarkPlayed(name)

    def _dtmf(self, msg: dict) -> DtmfReceived:
        self._require_streaming("websocket:dtmf")
        digit = msg.get("digit")
        if not isinstance(digit, str) or len(digit) != 1 or digit not in _DIGITS:
            raise VonageProtocolError(f"websocket:dtmf with invalid digit {digit!r}")
        return DtmfReceived(digit)

    # -- outbound --------------------------------------------------------------------------

    def media(self, payload: bytes) -> bytes | None:
        """One 20 ms frame to write. The playout sends whole frames, which pass straight through;
        anything else is re-cut: a short payload is held until a frame is complete, a long one
        (DTMF tones) goes out a frame a call, and whatever is held goes out at the next ``mark``."""
        frame = self._frame
        held = self._held
        if not held and len(payload) == frame:
            return payload
        held += payload
        if len(held) < frame:
            return None
        out = bytes(held[:frame])
        del held[:frame]
        return out

    def flush(self) -> list[bytes | str]:
        """The audio held back, in frames (the last padded with silence)."""
        frame, held = self._frame, self._held
        if len(held) % frame:
            held += bytes(frame - len(held) % frame)  # PCM silence
        out: list[bytes | str] = [bytes(held[i : i + frame]) for i in range(0, len(held), frame)]
        held.clear()
        return out

    def mark(self, name: str) -> list[bytes | str]:
        """The audio held back (``flush``), then a ``notify``."""
        if not _MARK_NAME.fullmatch(name):
            raise ValueError(f"invalid mark name {name!r}")
        return [*self.flush(), f'{{"action":"notify","payload":{{"name":"{name}"}}}}']

    def clear(self) -> list[str]:
        self._held.clear()
        return [_CLEAR]
