"""What Ringline decides about a browser's offer, sans-IO: whether it can answer it, which codecs it
accepts, and the call's audio format once the answer names the codec.

Codecs: Opus (the call speaks PCM16 at 16 kHz; aiortc's encoder and decoder work at 48 kHz) and
G.711 (the call speaks mu-law or A-law at 8 kHz, byte for byte what goes on the wire), in the
configured order of preference.
"""

from __future__ import annotations

from collections.abc import Sequence

from aiortc import RTCRtpSender
from aiortc.rtcrtpparameters import RTCRtpCodecCapability
from aiortc.sdp import SessionDescription

from ringline.engine.audio.formats import ALAW_8K, MULAW_8K, PCM16_16K, AudioFormat
from ringline.engine.errors import RemoteProtocolError

CODEC_FORMATS: dict[str, AudioFormat] = {"opus": PCM16_16K, "pcmu": MULAW_8K, "pcma": ALAW_8K}
"""The call's wire format for each codec Ringline accepts (by lower-case name)."""

MAX_SDP_BYTES = 64 * 1024


class SdpError(RemoteProtocolError):
    """An offer Ringline cannot answer."""


def parse_offer(sdp: str) -> SessionDescription:
    """The offer, parsed; SdpError unless it is an SDP offer with an audio section."""
    if len(sdp) > MAX_SDP_BYTES:
        raise SdpError(f"offer larger than {MAX_SDP_BYTES} bytes")
    if not sdp.startswith("v=0"):
        raise SdpError("offer is not SDP: it must start with 'v=0'")
    try:
        description = SessionDescription.parse(sdp)
    except Exception as exc:  # aiortc's parser raises whatever a malformed line trips
        raise SdpError(f"malformed SDP: {type(exc).__name__}: {exc}") from None
    if not any(media.kind == "audio" for media in description.media):
        raise SdpError("offer has no audio section")
    return description


def codec_preferences(names: Sequence[str]) -> list[RTCRtpCodecCapability]:
    """aiortc's capabilities for ``names`` (``opus``, ``PCMU``, ``PCMA``), in that order."""
    capabilities = RTCRtpSender.getCapabilities("audio").codecs
    chosen = []
    for name in names:
        wanted = f"audio/{name}".lower()
        matches = [c for c in capabilities if c.mimeType.lower() == wanted]
        if not matches or name.lower() not in CODEC_FORMATS:
            raise ValueError(f"unsupported codec {name!r}; supported: opus, PCMU, PCMA")
        chosen += matches
    return chosen


def answer_format(answer_sdp: str) -> tuple[str, AudioFormat]:
    """The codec the answer sends with (its audio section's first) and the call's format for it."""
    for media in SessionDescription.parse(answer_sdp).media:
        if media.kind == "audio" and media.rtp.codecs:
            name = media.rtp.codecs[0].mimeType.split("/")[1]
            if (fmt := CODEC_FORMATS.get(name.lower())) is not None:
                return name, fmt
            raise SdpError(f"answer chose codec {name}, which Ringline does not speak")
    raise SdpError("no codec in common with the offer: Ringline speaks Opus, PCMU and PCMA")
