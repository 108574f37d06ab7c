"""ElevenLabs streaming TTS, the parts without I/O: which ``output_format`` to ask for, the
multi-context socket's URL and messages (``SocketMessage`` reads what comes back), and the
``PhraseAligner`` that attributes the socket's audio to phrases. ``ringline.engine.tts.elevenlabs``
runs them over the network.

The multi-context protocol (``/v1/text-to-speech/{voice}/multi-stream-input``): one socket carries
several generations, each a *context* named by the client. ``{"text": " ", "voice_settings": ...,
"context_id": c}`` opens context ``c``; each phrase goes as ``{"text": "<phrase> ", "flush": true,
"context_id": c}``; ``{"text": "", "context_id": c}`` keeps an idle context alive; ``{"context_id":
c, "close_context": true}`` ends it (what was flushed is still voiced); ``{"close_socket": true}``
ends them all. The server answers ``{"audio": base64, "alignment": {chars, charStartTimesMs,
charDurationsMs}, "isFinal": null, "contextId": c}`` messages, then ``{"isFinal": true, "contextId":
c}`` once a closed context is voiced; an error is ``{"error", "message", "code"}``. At most five
contexts may be open on a socket at once.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

import orjson

from ringline.config.providers import ElevenLabsTtsConfig
from ringline.engine.audio.formats import AudioFormat, Encoding
from ringline.engine.errors import ProviderError

PCM_RATES = (8000, 16000, 22050, 24000, 32000, 44100, 48000)
"""The ``pcm_<rate>`` output formats ElevenLabs offers (16-bit little-endian mono)."""
FINAL_CLOSE_CODES = frozenset({1003, 1007, 1008})
"""WebSocket closes (and error codes) that trying again will not cure: unsupported or invalid
data, policy (bad key, bad parameters, quota)."""
INACTIVITY_TIMEOUT_S = 180
"""Asked for in the URL (the most ElevenLabs allows; its default is 20 s): the call's socket waits
this long between replies (the caller's turn) before the server closes it."""
MAX_CONTEXTS = 5
"""Contexts ElevenLabs lets a socket have at once; one counts until its ``isFinal``."""
CLOSE_SOCKET_MESSAGE = '{"close_socket":true}'


def output_format_for(preferred: AudioFormat) -> tuple[str, AudioFormat]:
    """The ``output_format`` to ask for when the call plays ``preferred``, and what it delivers."""
    if preferred.channels == 1 and preferred.sample_rate == 8000:
        if preferred.encoding is Encoding.MULAW:
            return "ulaw_8000", preferred
        if preferred.encoding is Encoding.ALAW:
            return "alaw_8000", preferred
    rate = next((r for r in PCM_RATES if r >= preferred.sample_rate), PCM_RATES[-1])
    return f"pcm_{rate}", AudioFormat(Encoding.PCM16, rate)


def socket_url(config: ElevenLabsTtsConfig, output_format: str) -> str:
    """The multi-context socket's URL (``wss://`` for an ``https://`` base URL)."""
    scheme, netloc, path, _, _ = urlsplit(config.base_url)
    ws_scheme = {"https": "wss", "http": "ws"}.get(scheme, scheme)
    path = f"{path.rstrip('/')}/v1/text-to-speech/{quote(config.voice_id, safe='')}/multi-stream-input"
    query = urlencode(
        {
            "model_id": config.model_id,
            "output_format": output_format,
            "auto_mode": "true",  # whole phrases come in: no buffering schedule on the server
            "sync_alignment": "true",  # alignment with every audio message
            "inactivity_timeout": str(INACTIVITY_TIMEOUT_S),
        }
    )
    return urlunsplit((ws_scheme, netloc, path, query, ""))


def open_message(context: str, voice_settings: dict[str, Any]) -> str:
    return orjson.dumps({"text": " ", "voice_settings": voice_settings, "context_id": context}).decode()


def phrase_message(context: str, text: str) -> str:
    """One phrase, voiced at once (``flush``); the trailing blank keeps words apart."""
    return orjson.dumps({"text": text.strip() + " ", "flush": True, "context_id": context}).decode()


def keepalive_message(context: str) -> str:
    return orjson.dumps({"text": "", "context_id": context}).decode()


def close_message(context: str) -> str:
    return orjson.dumps({"context_id": context, "close_context": True}).decode()


@dataclass(frozen=True, slots=True)
class SocketMessage:
    """One message from the server: audio (with its alignment), the end of a context, or an error."""

    context: str | None = None
    """The context it belongs to (``contextId``); None for one about the whole socket."""
    audio: bytes = b""
    alignment: dict[str, Any] | None = None
    is_final: bool = False
    error: str | None = None
    """An error message from the server, as one line (``elevenlabs: <error>: <message>``)."""
    code: int | None = None

    @property
    def retryable(self) -> bool:
        return self.code not in FINAL_CLOSE_CODES

    @classmethod
    def parse(cls, text: str) -> SocketMessage:
        """Raises ``ProviderError`` (retryable) for a message that is not a JSON object or whose
        audio is not base64."""
        try:
            data = orjson.loads(text)
        except orjson.JSONDecodeError:
            raise ProviderError("elevenlabs: a socket message is not JSON", retryable=True) from None
        if not isinstance(data, dict):
            raise ProviderError("elevenlabs: a socket message is not a JSON object", retryable=True)
        audio = b""
        error = None
        if encoded := data.get("audio"):
            try:
                audio = base64.b64decode(encoded, validate=True)
            except (TypeError, ValueError):
                raise ProviderError("elevenlabs: audio that is not base64", retryable=True) from None
        elif "error" in data or "message" in data:
            error = f"elevenlabs: {data.get('error') or 'error'}: {data.get('message') or ''}".rstrip(": ")
        alignment = data.get("alignment")
        code = data.get("code")
        context = data.get("contextId")
        return cls(
            context if isinstance(context, str) else None,
            audio,
            alignment if isinstance(alignment, dict) else None,
            bool(data.get("isFinal")),
            error,
            code if isinstance(code, int) else None,
        )


class PhraseAligner:
    """Attributes a context's audio to phrases.

    Every phrase sent is recorded with its count of non-blank characters. Each audio message's
    ``alignment`` lists the characters it voices and when each starts (ms from the start of the
    message's audio); counting them along the phrases tells whose audio it is, and when a
    message runs from one phrase into the next it is cut where the next phrase's first character
    starts. Blanks are not counted: the server's spacing need not match ours. A message without
    alignment belongs to the phrase being voiced.
    """

    def __init__(self, fmt: AudioFormat) -> None:
        self.format = fmt
        self._bytes_per_sample = fmt.encoding.sample_width * fmt.channels
        self._ends: list[tuple[int, int]] = []  # (phrase index, characters up to its end)
        self._sent = 0  # characters sent
        self._voiced = 0  # characters voiced
        self._current = 0  # position in _ends of the phrase being voiced
        self._samples = WholeSamples(self._bytes_per_sample)

    @property
    def owed(self) -> bool:
        """Characters were sent that no audio has voiced yet."""
        return self._voiced < self._sent

    def add(self, index: int, text: str) -> bool:
        """Record phrase ``index``; False when it has nothing to speak (it is not sent)."""
        count = sum(1 for ch in text if not ch.isspace())
        if not count:
            return False
        self._sent += count
        self._ends.append((index, self._sent))
        return True

    def feed(self, audio: bytes, alignment: dict[str, Any] | None) -> list[tuple[int, bytes]]:
        """The message's audio, cut by phrase: ``[(phrase index, bytes), ...]``."""
        audio = self._samples.take(audio)
        if not self._ends:
            return [(0, audio)] if audio else []
        pieces: list[tuple[int, bytes]] = []
        start = 0
        chars = (alignment or {}).get("chars") or ()
        times = (alignment or {}).get("charStartTimesMs") or ()
        for char, ms in zip(chars, times, strict=False):
            if char.isspace():
                continue
            while self._current < len(self._ends) - 1 and self._voiced >= self._ends[self._current][1]:
                cut = max(start, min(len(audio), self._byte_at(ms)))
                if cut > start:
                    pieces.append((self._ends[self._current][0], audio[start:cut]))
                start = cut
                self._current += 1
            self._voiced += 1
        if start < len(audio):
            pieces.append((self._ends[self._current][0], audio[start:]))
        return pieces

    def _byte_at(self, ms: float) -> int:
        return round(ms * self.format.sample_rate / 1000) * self._bytes_per_sample


class WholeSamples:
    """Hands on whole samples only (a byte stream may split one); the rest waits for the next piece."""

    def __init__(self, width: int) -> None:
        self._width = width
        self._carry = b""

    def take(self, data: bytes) -> bytes:
        if self._carry:
            data, self._carry = self._carry + data, b""
        if extra := len(data) % self._width:
            data, self._carry = data[:-extra], data[-extra:]
        return data
