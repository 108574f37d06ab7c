"""What the JSON media-stream protocols (Twilio, Telnyx, Plivo, Exotel) read the same way: the
message object, a media payload, a DTMF digit. Each codec passes its own error type, so a
malformed message raises that provider's ``RemoteProtocolError`` with the same exact words.
"""

from __future__ import annotations

import binascii
from base64 import b64decode
from typing import Any

import orjson

from ringline.engine.errors import RemoteProtocolError
from ringline.engine.transports.events import DtmfReceived

ProtocolError = type[RemoteProtocolError]
DIGITS = "0123456789*#ABCD"


def json_object(text: str | bytes, error: ProtocolError) -> dict[str, Any]:
    """One WebSocket text message as a JSON object."""
    try:
        msg = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise error("invalid JSON") from None
    if not isinstance(msg, dict):
        raise error("message is not a JSON object")
    return msg


def inbound_audio(media: object, max_bytes: int, error: ProtocolError) -> bytes | None:
    """The audio of a ``media`` object's base64 ``payload`` (at most ``max_bytes``); None for the
    echo of our own audio on a both-tracks stream (``track`` ``outbound``)."""
    payload = media.get("payload") if isinstance(media, dict) else None
    if not isinstance(payload, str):
        raise error("media without payload")
    track = media.get("track", "inbound")  # type: ignore[union-attr]
    if track == "outbound":
        return None
    if track != "inbound":
        raise error(f"media on track {track!r}")
    if len(payload) > (max_bytes + 2) // 3 * 4:  # refuse before decoding
        raise error(f"media payload over {max_bytes} bytes")
    try:
        audio = b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise error("media payload is not valid base64") from None
    if len(audio) > max_bytes:
        raise error(f"media payload over {max_bytes} bytes")
    return audio


def dtmf_digit(dtmf: object, error: ProtocolError) -> DtmfReceived:
    """A ``dtmf`` object's one ``digit`` (0-9, *, #, A-D)."""
    digit = dtmf.get("digit") if isinstance(dtmf, dict) else None
    if not isinstance(digit, str) or len(digit) != 1 or digit not in DIGITS:
        raise error(f"dtmf with invalid digit {digit!r}")
    return DtmfReceived(digit)
