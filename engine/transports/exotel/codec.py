"""Exotel Voicebot (bidirectional AgentStream) WebSockets, sans-IO.

JSON text messages much like Twilio's, with snake_case keys: ``connected``, ``start`` (its
``media_format`` gives the rate: ``{"encoding": "audio/x-raw", "sample_rate": "8000",
"bit_rate": "16"}``, 8000 when absent), ``media`` (base64 16-bit little-endian PCM), ``dtmf``,
``mark`` and ``stop`` in; ``media``, ``mark`` and ``clear`` out, each with ``stream_sid``.

Exotel wants outbound media in chunks of at least 3.2 kB, at most 100 kB, and in multiples of
320 bytes: a smaller chunk risks gaps from network jitter, a chunk that is not a multiple of 320
bytes ends in a short packet after which Exotel waits a whole 20 ms. Exotel glosses 3.2 kB as
"100 ms of data", which it is at 16 kHz; at 8 kHz it is 200 ms. The codec keeps both readings:
a chunk is at least 3.2 kB and at least 100 ms (``min_chunk``: 3200 bytes at 8 and 16 kHz, 4800
at 24 kHz), of whole 20 ms frames (320, 640 or 960 bytes, all multiples of 320). So ``media``
holds the playout's frames back until that much is held and returns ``None`` meanwhile;
``mark`` writes out what is held (the last frame padded with silence to a whole frame; a tail
under the minimum goes out as it is rather than be padded with up to 180 ms of silence) before
the mark; ``clear`` drops it.

What holding costs: the playout sends each frame ``playout.lead_ms`` (200 ms) before it plays,
and a chunk leaves only when its last frame is in, so Exotel gets each chunk ``lead`` less
``min_chunk`` less a frame before its first sample is due: 120 ms at 16 kHz, but only 20 ms at
8 kHz, which leaves little room for network jitter. Agents answering Exotel at 8 kHz should
raise ``playout.lead_ms`` to 300 or more (or stream at 16 kHz). Barge-in is not slowed: ``clear``
drops the held audio along with Exotel's queue, and the caller was never going to hear it;
a longer lead does not slow it either, since ``clear`` empties Exotel's queue at once. Between
marks the playout's estimate of what the caller heard runs ahead of the truth by what is held;
the marks correct it.

``CallStarted.parameters``: ``from`` and ``to`` of the start message, overridden by the
``custom_parameters`` (the query string of the applet's URL: ``agent``, ``direction``, ``var_*``).

Reference: Exotel "Working with the Stream and Voicebot Applet" and "WebSocket protocol"
(developer.exotel.com/docs/agentstream).
"""

from __future__ import annotations

import enum
import logging
import re
from base64 import b64encode

import orjson

from ringline.engine.audio.formats import PCM16_8K, AudioFormat, Encoding
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

MAX_PAYLOAD_BYTES = 48000
"""Largest inbound media payload accepted (1 s of 24 kHz PCM16); Exotel sends ~100 ms chunks."""

MIN_CHUNK_BYTES = 3200
MIN_CHUNK_MS = 100
"""Shortest outbound media chunk Exotel plays smoothly: 3.2 kB, "100 ms" (both are kept)."""

MAX_CHUNK_BYTES = 96000
"""Largest outbound media chunk written (Exotel: at most 100 kB); a multiple of 320, 640 and 960."""

RATES = (8000, 16000, 24000)
ENCODINGS = ("audio/x-raw", "raw/slin", "audio/l16")
"""``media_format.encoding`` values meaning 16-bit linear PCM (compared case-insensitively)."""

_SID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_MARK_NAME = re.compile(r"[ !#-\[\]-~]{1,256}")  # printable ASCII but quote and backslash


class ExotelProtocolError(RemoteProtocolError):
    pass


class StreamState(enum.Enum):
    AWAITING_START = "awaiting_start"
    STREAMING = "streaming"
    STOPPED = "stopped"


def _rate(media_format: dict) -> int | None:
    """The sample rate of a 16-bit PCM ``media_format`` (numbers may come as strings), or None."""
    encoding = media_format.get("encoding", "audio/x-raw")
    rate = media_format.get("sample_rate", 8000)
    bits = media_format.get("bit_rate", 16)
    if not isinstance(encoding, str) or encoding.lower() not in ENCODINGS or bits not in (16, "16"):
        return None
    if isinstance(rate, str) and rate.isdigit():
        rate = int(rate)
    return rate if type(rate) is int and rate in RATES else None


def min_chunk_bytes(fmt: AudioFormat) -> int:
    """The shortest chunk written in ``fmt``: whole 20 ms frames, at least 3.2 kB and 100 ms."""
    frame = fmt.bytes_for(20)
    least = max(MIN_CHUNK_BYTES, fmt.bytes_for(MIN_CHUNK_MS))
    return -(-least // frame) * frame


class ExotelStream:
    """One Exotel Voicebot stream's protocol state (a ``MediaCodec``)."""

    name = "exotel"

    def __init__(self) -> None:
        self.state = StreamState.AWAITING_START
        self.stream_sid: str | None = None
        self.call_sid: str | None = None
        self.format: AudioFormat = PCM16_8K
        self._frame = PCM16_8K.bytes_for(20)
        self.min_chunk = min_chunk_bytes(PCM16_8K)
        self._held = bytearray()  # outbound audio not yet written
        self._media_prefix = ""

    def _set_state(self, new: StreamState) -> None:
        log.debug("exotel stream %s: %s -> %s", self.stream_sid, self.state.value, new.value)
        self.state = new

    # -- inbound ---------------------------------------------------------------------------

    def feed(self, text: str | bytes) -> InboundEvent | None:
        msg = json_object(text, ExotelProtocolError)
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
        raise ExotelProtocolError(f"unknown event {event!r}" if isinstance(event, str) else "missing event")

    def feed_binary(self, data: bytes) -> InboundEvent | None:
        raise ExotelProtocolError("unexpected binary message")

    def _require_streaming(self, msg: dict, event: str) -> None:
        if self.state is not StreamState.STREAMING:
            raise ExotelProtocolError(f"{event} in state {self.state.value}")
        sid = msg.get("stream_sid")
        if sid != self.stream_sid:
            raise ExotelProtocolError(f"{event} for stream_sid {sid!r}, expected {self.stream_sid!r}")

    def _media(self, msg: dict) -> AudioReceived | None:
        self._require_streaming(msg, "media")
        media = msg.get("media")
        audio = inbound_audio(media, MAX_PAYLOAD_BYTES, ExotelProtocolError)
        if audio is None:
            return None  # a both-tracks stream echoes what we sent: nothing to act on
        if len(audio) & 1:
            raise ExotelProtocolError(f"media payload of {len(audio)} bytes is not whole 16-bit samples")
        return AudioReceived(audio)

    def _mark(self, msg: dict) -> MarkPlayed:
        self._require_streaming(msg, "mark")
        mark = msg.get("mark")
        name = mark.get("name") if isinstance(mark, dict) else None
        if not isinstance(name, str):
            raise ExotelProtocolError("mark without name")
        return MarkPlayed(name)

    def _dtmf(self, msg: dict) -> DtmfReceived:
        self._require_streaming(msg, "dtmf")
        return dtmf_digit(msg.get("dtmf"), ExotelProtocolError)

    def _start(self, msg: dict) -> CallStarted:
        if self.state is not StreamState.AWAITING_START:
            raise ExotelProtocolError(f"start in state {self.state.value}")
        start = msg.get("start")
        if not isinstance(start, dict):
            raise ExotelProtocolError("start without start object")
        stream_sid = start.get("stream_sid", msg.get("stream_sid"))
        call_sid = start.get("call_sid")
        if not isinstance(stream_sid, str) or not _SID.fullmatch(stream_sid):
            raise ExotelProtocolError(f"start with invalid stream_sid {stream_sid!r}")
        if not isinstance(call_sid, str) or not _SID.fullmatch(call_sid):
            raise ExotelProtocolError(f"start with invalid call_sid {call_sid!r}")
        fmt = start.get("media_format") or {}
        if not isinstance(fmt, dict):
            raise ExotelProtocolError("media_format is not an object")
        if (rate := _rate(fmt)) is None:
            raise ExotelProtocolError(
                f"unsupported media format {fmt.get('encoding')!r} {fmt.get('sample_rate')!r} Hz "
                f"{fmt.get('bit_rate')!r} bits"
            )
        custom = start.get("custom_parameters") or {}
        if not isinstance(custom, dict):
            raise ExotelProtocolError("custom_parameters is not an object")
        params = {key: start[key] for key in ("from", "to") if isinstance(start.get(key), str)}
        params.update({str(k): v if isinstance(v, str) else orjson.dumps(v).decode() for k, v in custom.items()})
        self.stream_sid, self.call_sid = stream_sid, call_sid
        self.format = AudioFormat(Encoding.PCM16, rate)
        self._frame = self.format.bytes_for(20)
        self.min_chunk = min_chunk_bytes(self.format)
        self._media_prefix = f'{{"event":"media","stream_sid":"{stream_sid}","media":{{"payload":"'
        self._set_state(StreamState.STREAMING)
        return CallStarted(call_sid, stream_sid, params)

    def _stop(self, msg: dict) -> CallStopped:
        self._require_streaming(msg, "stop")
        self._set_state(StreamState.STOPPED)
        return CallStopped()

    # -- outbound --------------------------------------------------------------------------

    def _chunk(self, audio: bytes | bytearray) -> str:
        # A template, not a JSON encoder: stream_sid was validated and base64 needs no escaping.
        return self._media_prefix + b64encode(audio).decode("ascii") + '"}}'

    def media(self, payload: bytes) -> str | None:
        """A media message once ``min_chunk`` of whole 20 ms frames is held (at most ``MAX_CHUNK_BYTES``
        of them); ``None`` while fewer are. Only valid once started."""
        held = self._held
        held += payload
        whole = len(held) - len(held) % self._frame
        if whole < self.min_chunk:
            return None
        whole = min(whole, MAX_CHUNK_BYTES)
        message = self._chunk(held[:whole])
        del held[:whole]
        return message

    def flush(self) -> list[str]:
        """The audio held back, padded with silence to whole 20 ms frames (a tail may be short of
        ``min_chunk``: Exotel plays it)."""
        held, frame = self._held, self._frame
        if len(held) % frame:
            held += bytes(frame - len(held) % frame)  # PCM silence
        out = [self._chunk(held[i : i + MAX_CHUNK_BYTES]) for i in range(0, len(held), MAX_CHUNK_BYTES)]
        held.clear()
        return out

    def mark(self, name: str) -> list[str]:
        """The audio held back (``flush``), then the mark."""
        if not _MARK_NAME.fullmatch(name):
            raise ValueError(f"invalid mark name {name!r}")
        return [*self.flush(), f'{{"event":"mark","stream_sid":"{self.stream_sid}","mark":{{"name":"{name}"}}}}']

    def clear(self) -> list[str]:
        self._held.clear()
        return [f'{{"event":"clear","stream_sid":"{self.stream_sid}"}}']
