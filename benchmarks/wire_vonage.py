"""The Vonage Voice API WebSocket as Vonage writes it (the caller's side), for one call leg.

Reference: Vonage "WebSockets in the Voice API" and the NCCO ``connect`` action with a
``websocket`` endpoint. Vonage's first message is text: ``{"event": "websocket:connected",
"content-type": "audio/l16;rate=16000", ...}`` with the endpoint's custom ``headers`` as top-level
fields; then binary frames of 20 ms of 16-bit little-endian PCM at 16 kHz (640 bytes), and
``websocket:dtmf`` text events. The application sends binary frames of the same shape (640 bytes
each), ``{"action": "notify", "payload": {...}}`` (Vonage answers ``{"event": "websocket:notify",
"payload": {...}}`` once the audio queued before it has played) and ``{"action": "clear"}``
(Vonage answers ``{"event": "websocket:cleared"}``; notifies pending at a clear are not sent).
There is no stop message: the call leg ends with the socket closing.

Parameters (``agent``, ``from``, ``to``, ``var_*``) are custom headers, as is ``uuid``: the call
leg's id (Vonage puts it in the NCCO's headers only if the application does; the server needs
one for the call).

Audio: the caller's mu-law 8 kHz clips are converted once per clip to 16 kHz with soxr; the
server's 16 kHz frames are brought to mu-law 8 kHz (mean of each sample pair) for the playback
buffer.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Mapping

import numpy as np
import orjson
import soxr

from ringline.benchmarks.wire import _CLEAR, Frame, Message, ServerEvent, ServerMark, ServerMedia, WireError
from ringline.benchmarks.wire import json_object as _json_object
from ringline.engine.audio import PCM16_16K, frame_bytes, ulaw_decode, ulaw_encode

FRAME_BYTES = frame_bytes(PCM16_16K)  # 20 ms of 16 kHz L16: 640
SILENCE_16K = bytes(FRAME_BYTES)
CONTENT_TYPE = "audio/l16;rate=16000"


@functools.lru_cache(maxsize=256)
def l16_frames(audio: bytes) -> tuple[bytes, ...]:
    """Mu-law 8 kHz ``audio`` as 640-byte frames of L16 16 kHz, the last one padded with silence."""
    pcm8 = np.frombuffer(ulaw_decode(audio), dtype="<i2")
    pcm16 = soxr.resample(pcm8, 8000, 16000, quality="HQ").astype("<i2").tobytes()
    if tail := len(pcm16) % FRAME_BYTES:
        pcm16 += bytes(FRAME_BYTES - tail)
    return tuple(pcm16[i : i + FRAME_BYTES] for i in range(0, len(pcm16), FRAME_BYTES))


def l16_16k_to_ulaw_8k(pcm: bytes) -> bytes:
    """L16 16 kHz -> mu-law 8 kHz, each output sample the mean of a pair (a cheap low-pass)."""
    pairs = np.frombuffer(pcm, dtype="<i2").reshape(-1, 2).astype(np.int32)
    return ulaw_encode(((pairs[:, 0] + pairs[:, 1]) >> 1).astype("<i2").tobytes())


class VonageWire:
    name = "vonage"
    silence: Frame = SILENCE_16K
    marks_echoed_on_clear = False
    frames = staticmethod(l16_frames)

    def __init__(self, call_uuid: str) -> None:
        self.stream_id = self.call_id = call_uuid

    @classmethod
    def new(cls, call_id: str | None = None) -> VonageWire:
        return cls(call_id or str(uuid.uuid4()))

    def open(self, parameters: Mapping[str, str]) -> tuple[str]:
        headers = {"uuid": self.call_id, **parameters}
        return (orjson.dumps({"event": "websocket:connected", "content-type": CONTENT_TYPE, **headers}).decode(),)

    def media(self, index: int, frame: Frame) -> tuple[Frame]:
        return (frame,)

    def dtmf(self, digit: str) -> tuple[str]:
        return (orjson.dumps({"event": "websocket:dtmf", "digit": digit, "duration": 260}).decode(),)

    def mark_played(self, name: str) -> tuple[str]:
        return ('{"event":"websocket:notify","payload":' + name + "}",)  # name: the payload's JSON

    def cleared(self) -> tuple[str]:
        return ('{"event":"websocket:cleared"}',)

    def stop(self) -> tuple[()]:
        return ()  # Vonage just closes the socket

    def parse(self, message: Message) -> ServerEvent:
        if isinstance(message, bytes):
            if len(message) != FRAME_BYTES:
                raise WireError(f"binary frame of {len(message)} bytes, not {FRAME_BYTES} (20 ms of L16 16 kHz)")
            return ServerMedia(l16_16k_to_ulaw_8k(message))
        msg = _json_object(message)
        action = msg.get("action")
        if action == "notify":
            payload = msg.get("payload")
            if not isinstance(payload, dict):
                raise WireError("notify message without payload object")
            return ServerMark(orjson.dumps(payload).decode())
        if action == "clear":
            return _CLEAR
        raise WireError(f"unknown action {action!r}")
