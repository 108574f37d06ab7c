"""Telnyx Media Streaming as Telnyx writes it (the caller's side), for one stream.

Reference: Telnyx "Stream call media over WebSocket" (AsyncAPI): ``connected``, ``start``
(``stream_id``, ``start.call_control_id``, ``from``, ``to``, ``custom_parameters``,
``media_format`` PCMU 8000 Hz mono), ``media`` (``media.track/chunk/timestamp/payload``), ``dtmf``,
``mark`` (a mark the application placed, sent back once the audio before it played; a ``clear``
returns the queued marks too) and ``stop``, all snake_case with string sequence numbers. The
application sends ``media`` {payload}, ``mark`` {name} and ``clear``.

"Media frame order is not guaranteed": with ``reorder_rate`` the wire swaps adjacent media
frames (holds one back, writes it after the next) at that rate, to exercise the server's
reordering by ``sequence_number`` / ``chunk``. The first frame is never held: a receiver has to
take some chunk as the first, and nothing can tell it an earlier one is still on its way.

Parameters: ``from`` and ``to`` travel in their own ``start`` fields, everything else (``agent``,
``var_*``, ...) in ``start.custom_parameters`` (TeXML ``<Parameter>`` / Call Control
``custom_parameters``).
"""

from __future__ import annotations

import random
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
    mark_name,
)

NATIVE = ("from", "to")  # parameters with their own start field


def new_call_control_id() -> str:
    """A Telnyx-shaped call control id (``v2:`` and url-safe base64)."""
    return "v2:" + uuid.uuid4().hex + uuid.uuid4().hex[:16]


class TelnyxWire:
    name = "telnyx"
    silence: Frame = SILENCE_B64
    marks_echoed_on_clear = True
    frames = staticmethod(encode_frames)

    def __init__(self, stream_id: str, call_control_id: str, *, reorder_rate: float = 0.0, seed: int = 0) -> None:
        if not 0.0 <= reorder_rate <= 1.0:
            raise ValueError(f"reorder_rate must be within [0, 1], got {reorder_rate}")
        self.stream_id = stream_id
        self.call_id = self.call_control_id = call_control_id
        self.user_id = str(uuid.uuid4())
        self.seq = 0
        self.reordered = 0  # media frames written after the one following them
        self._reorder_rate = reorder_rate
        self._rng = random.Random(seed)
        self._held: str | None = None
        self._media = (
            '{"event":"media","sequence_number":"%d","stream_id":"' + stream_id + '",'
            '"media":{"track":"inbound","chunk":"%d","timestamp":"%d","payload":"%s"}}'
        )

    @classmethod
    def new(cls, call_id: str | None = None, *, reorder_rate: float = 0.0, seed: int = 0) -> TelnyxWire:
        return cls(str(uuid.uuid4()), call_id or new_call_control_id(), reorder_rate=reorder_rate, seed=seed)

    def _next(self) -> str:
        self.seq += 1
        return str(self.seq)

    def _dumps(self, event: str, **fields: object) -> str:
        msg = {"event": event, "sequence_number": self._next(), "stream_id": self.stream_id, **fields}
        return orjson.dumps(msg).decode()

    def open(self, parameters: Mapping[str, str]) -> tuple[str, str]:
        custom = {k: v for k, v in parameters.items() if k not in NATIVE}
        start = {
            "user_id": self.user_id,
            "call_control_id": self.call_control_id,
            "call_session_id": str(uuid.uuid4()),
            "from": parameters.get("from", ""),
            "to": parameters.get("to", ""),
            "tags": [],
            "custom_parameters": custom,
            "media_format": {"encoding": "PCMU", "sample_rate": 8000, "channels": 1},
        }
        return '{"event":"connected","version":"1.0.0"}', self._dumps("start", start=start)

    def media(self, index: int, frame: Frame) -> tuple[str, ...]:
        """Chunk k+1 at timestamp k*20 ms; maybe held back one frame (``reorder_rate``)."""
        self.seq += 1
        msg = self._media % (self.seq, index + 1, index * 20, frame)
        held = self._held
        if held is not None:
            self._held = None
            self.reordered += 1
            return msg, held
        if self._reorder_rate and index and self._rng.random() < self._reorder_rate:
            self._held = msg
            return ()
        return (msg,)

    def dtmf(self, digit: str) -> tuple[str]:
        return (self._dumps("dtmf", dtmf={"digit": digit}),)

    def mark_played(self, name: str) -> tuple[str]:
        return (self._dumps("mark", mark={"name": name}),)

    def cleared(self) -> tuple[()]:
        return ()

    def stop(self) -> tuple[str, ...]:
        held, self._held = self._held, None
        stop = self._dumps("stop", stop={"user_id": self.user_id, "call_control_id": self.call_control_id})
        return (held, stop) if held is not None else (stop,)

    def parse(self, message: Message) -> ServerEvent:
        if not isinstance(message, str):
            raise WireError("binary message (RTP mode sends JSON text)")
        msg = json_object(message)
        check_stream(msg, "stream_id", self.stream_id, required=False)
        event = msg.get("event")
        if event == "media":
            media = msg.get("media")
            return ServerMedia(b64_payload(media.get("payload") if isinstance(media, dict) else None, "media.payload"))
        if event == "mark":
            return ServerMark(mark_name(msg.get("mark"), "mark message's mark"))
        if event == "clear":
            return _CLEAR
        raise WireError(f"unknown event {event!r}")
