"""Plivo Audio Streaming, sans-IO.

``PlivoStream.feed(text)`` turns one WebSocket text message into at most one ``InboundEvent``
(or ``None``) and raises ``PlivoProtocolError`` with an exact message for anything malformed.
``media``/``mark``/``clear`` build the outbound messages of a bidirectional stream.

Reference: Plivo "Stream Event Protocol" (``<Stream bidirectional="true">``): ``start``,
``media``, ``dtmf``, ``playedStream``, ``clearedAudio`` in; ``playAudio``, ``checkpoint``,
``clearAudio`` out. Fields are camelCase.

- **Audio format** comes from ``start.mediaFormat``: ``audio/x-mulaw`` at 8 kHz or
  ``audio/x-l16`` at 8 or 16 kHz (little-endian PCM16, as our engine uses). ``playAudio`` sends
  the same format back.
- **Marks** are checkpoints: ``checkpoint`` asks, ``playedStream`` (``played`` in older
  documents) answers once the audio before it has played; ``clearedAudio`` acknowledges a
  ``clearAudio`` and needs no action.
- **End of call.** The documented protocol has no ``stop``: Plivo closes the socket (and tells
  ``statusCallbackUrl``). Plivo's own examples do send ``stop``, so it is honoured.
- **Stream id.** Plivo's documents show ``streamId`` on media and acknowledgements, but not
  always; a message without one is taken for this stream, one with another id is refused.
- **Parameters** (``CallStarted.parameters``) come from ``extra_headers`` (the ``extraHeaders``
  attribute of ``<Stream>``), with Twilio's keys (``agent``, ``from``, ``to``, ``direction``,
  ``var_*``). Plivo sends it as ``"k=v,k=v"`` (documents show ``;`` separators too), and some
  deployments as a JSON object or its text; all are read. Plivo puts no caller or called number
  in ``start``: pass ``from``/``to`` in ``extraHeaders``.
"""

from __future__ import annotations

import enum
import logging
import re
from base64 import b64encode

import orjson

from ringline.engine.audio.formats import MULAW_8K, AudioFormat, Encoding
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

MAX_PAYLOAD_BYTES = 32000
"""Largest inbound media payload accepted (1 s of L16 at 16 kHz); Plivo sends 20 ms chunks."""
MAX_EXTRA_HEADERS = 4096
"""Longest ``extra_headers`` read (Plivo allows 512 bytes)."""

_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_MARK_NAME = re.compile(r"[ !#-\[\]-~]{1,256}")  # printable ASCII but quote and backslash
_HEADER_SEPARATORS = re.compile(r"[,;]")
_CONTENT_TYPES = {Encoding.MULAW: "audio/x-mulaw", Encoding.PCM16: "audio/x-l16"}
_FORMATS = {
    ("audio/x-mulaw", 8000): MULAW_8K,
    ("audio/x-l16", 8000): AudioFormat(Encoding.PCM16, 8000),
    ("audio/x-l16", 16000): AudioFormat(Encoding.PCM16, 16000),
}


class PlivoProtocolError(RemoteProtocolError):
    pass


class StreamState(enum.Enum):
    AWAITING_START = "awaiting_start"
    STREAMING = "streaming"
    STOPPED = "stopped"


class PlivoStream:
    """One Plivo audio stream's protocol state (a ``MediaCodec``)."""

    name = "plivo"
    hangup_on_close = True
    """Plivo documents no ``stop``: the socket closes when the call ends (a ``stop`` is honoured too)."""

    def __init__(self) -> None:
        self.state = StreamState.AWAITING_START
        self.stream_id: str | None = None
        self.call_id: str | None = None
        self.format: AudioFormat = MULAW_8K
        """The wire format, as ``start.mediaFormat`` says (mu-law 8 kHz until then)."""
        self._media_prefix = ""

    def _set_state(self, new: StreamState) -> None:
        log.debug("plivo stream %s: %s -> %s", self.stream_id, self.state.value, new.value)
        self.state = new

    # -- inbound ---------------------------------------------------------------------------

    def feed(self, text: str | bytes) -> InboundEvent | None:
        msg = json_object(text, PlivoProtocolError)
        event = msg.get("event")
        if event == "media":
            return self._media(msg)
        if event == "playedStream" or event == "played":
            return self._played(msg, event)
        if event == "clearedAudio":
            self._require_streaming(msg, event)
            return None
        if event == "dtmf":
            return self._dtmf(msg)
        if event == "start":
            return self._start(msg)
        if event == "stop":
            return self._stop(msg)
        raise PlivoProtocolError(f"unknown event {event!r}" if isinstance(event, str) else "missing event")

    def feed_binary(self, data: bytes) -> InboundEvent | None:
        raise PlivoProtocolError("unexpected binary message")

    def _require_streaming(self, msg: dict, event: str) -> None:
        if self.state is not StreamState.STREAMING:
            raise PlivoProtocolError(f"{event} in state {self.state.value}")
        stream_id = msg.get("streamId", self.stream_id)
        if stream_id != self.stream_id:
            raise PlivoProtocolError(f"{event} for streamId {stream_id!r}, expected {self.stream_id!r}")

    def _media(self, msg: dict) -> AudioReceived | None:
        self._require_streaming(msg, "media")
        media = msg.get("media")
        audio = inbound_audio(media, MAX_PAYLOAD_BYTES, PlivoProtocolError)
        if audio is None:
            return None  # a both-tracks stream echoes what we sent: nothing to act on
        if len(audio) % self.format.encoding.sample_width:
            raise PlivoProtocolError(f"L16 media payload of odd length {len(audio)}")
        return AudioReceived(audio)

    def _played(self, msg: dict, event: str) -> MarkPlayed:
        self._require_streaming(msg, event)
        name = msg.get("name")
        if not isinstance(name, str):
            raise PlivoProtocolError(f"{event} without name")
        return MarkPlayed(name)

    def _dtmf(self, msg: dict) -> DtmfReceived:
        self._require_streaming(msg, "dtmf")
        return dtmf_digit(msg.get("dtmf"), PlivoProtocolError)

    def _start(self, msg: dict) -> CallStarted:
        if self.state is not StreamState.AWAITING_START:
            raise PlivoProtocolError(f"start in state {self.state.value}")
        start = msg.get("start")
        if not isinstance(start, dict):
            raise PlivoProtocolError("start without start object")
        stream_id = start.get("streamId", msg.get("streamId"))
        call_id = start.get("callId")
        if not isinstance(stream_id, str) or not _ID.fullmatch(stream_id):
            raise PlivoProtocolError(f"start with invalid streamId {stream_id!r}")
        if not isinstance(call_id, str) or not _ID.fullmatch(call_id):
            raise PlivoProtocolError(f"start with invalid callId {call_id!r}")
        fmt = start.get("mediaFormat")
        if not isinstance(fmt, dict):
            raise PlivoProtocolError("start without mediaFormat object")
        encoding, rate = fmt.get("encoding"), fmt.get("sampleRate")
        wire = _FORMATS.get((encoding, rate)) if isinstance(encoding, str) and type(rate) is int else None
        if wire is None:
            raise PlivoProtocolError(f"unsupported media format {encoding!r} {rate!r} Hz")
        params = extra_headers(msg.get("extra_headers", start.get("extra_headers")))
        self.stream_id, self.call_id, self.format = stream_id, call_id, wire
        self._media_prefix = (
            f'{{"event":"playAudio","streamId":"{stream_id}","media":{{"contentType":'
            f'"{_CONTENT_TYPES[wire.encoding]}","sampleRate":{wire.sample_rate},"payload":"'
        )
        self._set_state(StreamState.STREAMING)
        return CallStarted(call_id, stream_id, params)

    def _stop(self, msg: dict) -> CallStopped:
        self._require_streaming(msg, "stop")
        self._set_state(StreamState.STOPPED)
        return CallStopped()

    # -- outbound --------------------------------------------------------------------------

    def media(self, payload: bytes) -> str:
        """A ``playAudio`` message carrying ``payload`` in ``format``. Only valid once started."""
        # A template, not a JSON encoder: streamId was validated and base64 needs no escaping.
        return self._media_prefix + b64encode(payload).decode("ascii") + '"}}'

    def flush(self) -> list[str]:
        return []  # nothing held back

    def mark(self, name: str) -> list[str]:
        if not _MARK_NAME.fullmatch(name):
            raise ValueError(f"invalid mark name {name!r}")
        return [f'{{"event":"checkpoint","streamId":"{self.stream_id}","name":"{name}"}}']

    def clear(self) -> list[str]:
        return [f'{{"event":"clearAudio","streamId":"{self.stream_id}"}}']


def extra_headers(value: object) -> dict[str, str]:
    """Stream parameters from ``extra_headers``: ``"k=v,k=v"`` (or ``;``-separated), a JSON object,
    or the text of one. Raises ``PlivoProtocolError`` for anything else."""
    if value is None:
        return {}
    if isinstance(value, str):
        text = value.strip()
        if len(text) > MAX_EXTRA_HEADERS:
            raise PlivoProtocolError(f"extra_headers over {MAX_EXTRA_HEADERS} characters")
        if text.startswith("{"):
            try:
                value = orjson.loads(text)
            except orjson.JSONDecodeError:
                raise PlivoProtocolError("extra_headers is not valid JSON") from None
        else:
            params: dict[str, str] = {}
            for pair in _HEADER_SEPARATORS.split(text):
                if not (pair := pair.strip()):
                    continue
                key, sep, item = pair.partition("=")
                if not sep or not key.strip():
                    raise PlivoProtocolError(f"extra_headers item {pair!r} is not key=value")
                params[key.strip()] = item.strip()
            return params
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    raise PlivoProtocolError("extra_headers is not an object or key=value text")
