"""Twilio Media Streams, sans-IO.

``TwilioStream.feed(text)`` turns one WebSocket text message into at most one ``InboundEvent``
(or ``None`` for messages with nothing to act on) and raises ``TwilioProtocolError`` with an
exact message for anything malformed. ``media``/``mark``/``clear`` build outbound messages.

Reference: Twilio "Media Streams - WebSocket Messages" (connected, start, media, dtmf, mark,
stop in; media, mark, clear out).
"""

from __future__ import annotations

import enum
import logging
import re
from base64 import b64encode

from ringline.engine.audio.formats import MULAW_8K, AudioFormat
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

log = logging.getLogger(__name__)

MAX_PAYLOAD_BYTES = 8000
"""Largest inbound media payload accepted (1 s of mu-law 8 kHz); Twilio sends 160."""

_SID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_MARK_NAME = re.compile(r"[ !#-\[\]-~]{1,256}")  # printable ASCII but quote and backslash


class TwilioProtocolError(RemoteProtocolError):
    pass


class StreamState(enum.Enum):
    AWAITING_START = "awaiting_start"
    STREAMING = "streaming"
    STOPPED = "stopped"


class TwilioStream:
    """One Twilio media stream's protocol state (a ``MediaCodec``)."""

    name = "twilio"
    format: AudioFormat = MULAW_8K
    hangup_on_close = False
    """Twilio says ``stop`` when the caller hangs up."""

    def __init__(self) -> None:
        self.state = StreamState.AWAITING_START
        self.stream_sid: str | None = None
        self.call_sid: str | None = None
        self._media_prefix = ""

    def _set_state(self, new: StreamState) -> None:
        log.debug("twilio stream %s: %s -> %s", self.stream_sid, self.state.value, new.value)
        self.state = new

    # -- inbound ---------------------------------------------------------------------------

    def feed(self, text: str | bytes) -> InboundEvent | None:
        msg = json_object(text, TwilioProtocolError)
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
        if event == "connected":
            return None
        raise TwilioProtocolError(f"unknown event {event!r}" if isinstance(event, str) else "missing event")

    def feed_binary(self, data: bytes) -> InboundEvent | None:
        raise TwilioProtocolError("unexpected binary message")

    def _require_streaming(self, msg: dict, event: str) -> None:
        if self.state is not StreamState.STREAMING:
            raise TwilioProtocolError(f"{event} in state {self.state.value}")
        sid = msg.get("streamSid")
        if sid != self.stream_sid:
            raise TwilioProtocolError(f"{event} for streamSid {sid!r}, expected {self.stream_sid!r}")

    def _media(self, msg: dict) -> AudioReceived | None:
        self._require_streaming(msg, "media")
        media = msg.get("media")
        audio = inbound_audio(media, MAX_PAYLOAD_BYTES, TwilioProtocolError)
        if audio is None:
            return None  # a both-tracks stream echoes what we sent: nothing to act on
        return AudioReceived(audio)

    def _mark(self, msg: dict) -> MarkPlayed:
        self._require_streaming(msg, "mark")
        mark = msg.get("mark")
        name = mark.get("name") if isinstance(mark, dict) else None
        if not isinstance(name, str):
            raise TwilioProtocolError("mark without name")
        return MarkPlayed(name)

    def _dtmf(self, msg: dict) -> DtmfReceived:
        self._require_streaming(msg, "dtmf")
        return dtmf_digit(msg.get("dtmf"), TwilioProtocolError)

    def _start(self, msg: dict) -> CallStarted:
        if self.state is not StreamState.AWAITING_START:
            raise TwilioProtocolError(f"start in state {self.state.value}")
        start = msg.get("start")
        if not isinstance(start, dict):
            raise TwilioProtocolError("start without start object")
        stream_sid = start.get("streamSid", msg.get("streamSid"))
        call_sid = start.get("callSid")
        if not isinstance(stream_sid, str) or not _SID.fullmatch(stream_sid):
            raise TwilioProtocolError(f"start with invalid streamSid {stream_sid!r}")
        if not isinstance(call_sid, str) or not _SID.fullmatch(call_sid):
            raise TwilioProtocolError(f"start with invalid callSid {call_sid!r}")
        fmt = start.get("mediaFormat") or {}
        if not isinstance(fmt, dict):
            raise TwilioProtocolError("mediaFormat is not an object")
        encoding, rate, channels = (
            fmt.get("encoding", "audio/x-mulaw"),
            fmt.get("sampleRate", 8000),
            fmt.get("channels", 1),
        )
        if encoding != "audio/x-mulaw" or rate != 8000 or channels != 1:
            raise TwilioProtocolError(f"unsupported media format {encoding!r} {rate!r} Hz {channels!r} channels")
        params = start.get("customParameters") or {}
        if not isinstance(params, dict):
            raise TwilioProtocolError("customParameters is not an object")
        self.stream_sid, self.call_sid = stream_sid, call_sid
        self._media_prefix = f'{{"event":"media","streamSid":"{stream_sid}","media":{{"payload":"'
        self._set_state(StreamState.STREAMING)
        return CallStarted(call_sid, stream_sid, {str(k): str(v) for k, v in params.items()})

    def _stop(self, msg: dict) -> CallStopped:
        self._require_streaming(msg, "stop")
        self._set_state(StreamState.STOPPED)
        return CallStopped()

    # -- outbound --------------------------------------------------------------------------

    def media(self, payload: bytes) -> str:
        """A media message carrying mu-law 8 kHz ``payload``. Only valid once started."""
        # A template, not a JSON encoder: streamSid was validated and base64 needs no escaping.
        return self._media_prefix + b64encode(payload).decode("ascii") + '"}}'

    def flush(self) -> list[str]:
        return []  # nothing held back

    def mark(self, name: str) -> list[str]:
        if not _MARK_NAME.fullmatch(name):
            raise ValueError(f"invalid mark name {name!r}")
        return [f'{{"event":"mark","streamSid":"{self.stream_sid}","mark":{{"name":"{name}"}}}}']

    def clear(self) -> list[str]:
        return [f'{{"event":"clear","streamSid":"{self.stream_sid}"}}']
