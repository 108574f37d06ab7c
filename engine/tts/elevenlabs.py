"""ElevenLabs text to speech behind the ``Tts`` seam. The only module that imports ``elevenlabs``.

Two transports (``ElevenLabsTtsConfig.transport``):

- ``http``: one streaming request per phrase (``POST /v1/text-to-speech/{voice}/stream``) through
  the SDK's ``AsyncElevenLabs``; phrases are synthesized one after the other, in order, each with
  the reply so far as ``previous_text`` so the voice carries on.
- ``websocket``: one stream-input socket per reply (``/v1/text-to-speech/{voice}/stream-input``),
  opened as soon as the reply starts (while the LLM is still thinking) and fed phrase by phrase,
  each with ``flush: true``; ``text: ""`` ends it. The SDK's helper for it is sync-only, so this
  is a small asyncio client (aiohttp). One socket is one generation: the voice carries on from
  phrase to phrase. Audio is attributed to phrases by its ``alignment`` (``PhraseAligner``).

Audio comes in the call's own format where ElevenLabs has it (``output_format_for``): mu-law and
A-law 8 kHz pass through untouched, PCM16 at an offered rate too; anything else gets the nearest
PCM rate at or above the call's, and the call converts.

Failures are ``ProviderError``: HTTP 400/401/403/404/422 (and other 4xx) and WebSocket closes for
policy or bad data are final (``retryable=False``); 408/409/429 (with ``Retry-After`` in the
message), 5xx, connection errors, a stream cut short and a server that stops answering (no audio
for ``timeout_s`` while some is owed) are ``retryable=True``. The SDK does not retry: the caller
decides. Messages never contain the API key, and errors are raised ``from None`` so the SDK's
exception (with request details) is not chained into logged tracebacks.

Clients: by default each reply opens its own connection (the ``Tts`` seam has no close hook, so
nothing outlives the reply). Pass a shared ``httpx.AsyncClient`` as ``http_client`` (its owner
closes it) to keep HTTP connections warm across replies and calls.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import logging
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from typing import Any
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

import aiohttp
import httpx
import orjson
from elevenlabs import AsyncElevenLabs, VoiceSettings
from elevenlabs.core.api_error import ApiError

from ringline.config.providers import ElevenLabsTtsConfig
from ringline.engine.audio.clock import Clock
from ringline.engine.audio.formats import AudioChunk, AudioFormat, Encoding
from ringline.engine.errors import ProviderError
from ringline.engine.tts.base import SpeechAudio

log = logging.getLogger(__name__)

PCM_RATES = (8000, 16000, 22050, 24000, 32000, 44100, 48000)
"""The ``pcm_<rate>`` output formats ElevenLabs offers (16-bit little-endian mono)."""
PREVIOUS_TEXT_CHARS = 300
"""HTTP: the end of the reply so far goes with each phrase as ``previous_text`` (continuity)."""
CHUNK_MS = 40
"""HTTP audio is handed on in pieces of this much (the SDK reads the body in fixed-size pieces)."""
KEEPALIVE_S = 15.0
"""An idle socket (waiting for the LLM, e.g. during a tool call) gets ``text: " "`` this often:
ElevenLabs closes stream-input sockets after 20 s without input."""
_FINAL_CLOSE_CODES = frozenset({1003, 1007, 1008})
"""WebSocket closes that trying again will not cure: unsupported or invalid data, policy (bad
key, bad parameters, quota)."""


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One verifying TLS context for every client: building one loads the CA bundle (~50 ms)."""
    return httpx.create_ssl_context()


def output_format_for(preferred: AudioFormat) -> tuple[str, AudioFormat]:
    """The ``output_format`` to ask for when the call plays ``preferred``, and what it delivers."""
    if preferred.channels == 1 and preferred.sample_rate == 8000:
        if preferred.encoding is Encoding.MULAW:
            return "ulaw_8000", preferred
        if preferred.encoding is Encoding.ALAW:
            return "alaw_8000", preferred
    rate = next((r for r in PCM_RATES if r >= preferred.sample_rate), PCM_RATES[-1])
    return f"pcm_{rate}", AudioFormat(Encoding.PCM16, rate)


class ElevenLabsTts:
    def __init__(
        self,
        config: ElevenLabsTtsConfig,
        clock: Clock,
        *,
        http_client: httpx.AsyncClient | None = None,
        timeout_s: float = 5.0,
    ) -> None:
        self._config = config
        self._clock = clock
        self._secret = config.api_key.get_secret_value()
        self._http_client = http_client
        self._timeout_s = timeout_s
        self._voice = {
            "stability": config.stability,
            "similarity_boost": config.similarity_boost,
            "speed": config.speed,
        }

    def stream(self, phrases: AsyncIterator[str], preferred: AudioFormat) -> AsyncIterator[SpeechAudio]:
        if self._config.transport == "http":
            return self._stream_http(phrases, preferred)
        return self._stream_socket(phrases, preferred)

    # -- http: one SDK request per phrase ---------------------------------------------------------

    async def _stream_http(self, phrases: AsyncIterator[str], preferred: AudioFormat) -> AsyncIterator[SpeechAudio]:
        output_format, fmt = output_format_for(preferred)
        log.debug("elevenlabs http reply: output_format %s", output_format)
        options: Any = {"max_retries": 0, "chunk_size": fmt.bytes_for(CHUNK_MS)}
        voice = VoiceSettings(**self._voice)
        async with AsyncExitStack() as stack:
            http = self._http_client
            if http is None:
                http = await stack.enter_async_context(
                    httpx.AsyncClient(verify=_tls_context(), timeout=self._timeout_s)
                )
            client = AsyncElevenLabs(
                api_key=self._secret, base_url=self._config.base_url, httpx_client=http, timeout=self._timeout_s
            )
            samples = _WholeSamples(fmt.encoding.sample_width)
            said = ""  # the reply so far, for continuity of the voice from phrase to phrase
            index = 0
            async for text in phrases:
                if text := text.strip():
                    try:
                        async for data in client.text_to_speech.stream(
                            self._config.voice_id,
                            text=text,
                            model_id=self._config.model_id,
                            output_format=output_format,  # type: ignore[arg-type]
                            voice_settings=voice,
                            previous_text=said[-PREVIOUS_TEXT_CHARS:] or None,
                            request_options=options,
                        ):
                            if piece := samples.take(data):
                                yield SpeechAudio(index, AudioChunk(piece, fmt))
                    except ApiError as exc:
                        raise self._status_error(exc.status_code or 0, exc.headers, _detail(exc.body)) from None
                    except httpx.TimeoutException:
                        raise ProviderError(self._timed_out(), retryable=True) from None
                    except httpx.HTTPError as exc:
                        raise ProviderError(self._redact(_connection_error(exc)), retryable=True) from None
                    said = f"{said} {text}".lstrip()
                index += 1

    # -- websocket: one stream-input socket per reply -------------------------------------------------

    async def _stream_socket(self, phrases: AsyncIterator[str], preferred: AudioFormat) -> AsyncIterator[SpeechAudio]:
        output_format, fmt = output_format_for(preferred)
        log.debug("elevenlabs websocket reply: output_format %s", output_format)
        timeout = aiohttp.ClientTimeout(total=None, connect=self._timeout_s, sock_read=self._timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            # Closing sends a close frame and drops the connection unless the server's is already
            # in: a barge-in or a dropped prepared reply never waits on the network.
            ws = await self._connect(session, self._socket_url(output_format))
            async with ws:
                if not await _send(ws, {"text": " ", "voice_settings": self._voice}):
                    raise ProviderError("elevenlabs: the socket closed as it opened", retryable=True)
                reply = _SocketReply(ws, PhraseAligner(fmt), self._clock, self._timeout_s, self._redact)
                async for audio in reply.run(phrases):
                    yield audio

    def _socket_url(self, output_format: str) -> str:
        cfg = self._config
        scheme, netloc, path, _, _ = urlsplit(cfg.base_url)
        ws_scheme = {"https": "wss", "http": "ws"}.get(scheme, scheme)
        path = f"{path.rstrip('/')}/v1/text-to-speech/{quote(cfg.voice_id, safe='')}/stream-input"
        query = urlencode(
            {
                "model_id": cfg.model_id,
                "output_format": output_format,
                "auto_mode": "true",  # whole phrases come in: no buffering schedule on the server
                "sync_alignment": "true",  # alignment with every audio message
            }
        )
        return urlunsplit((ws_scheme, netloc, path, query, ""))

    async def _connect(self, session: aiohttp.ClientSession, url: str) -> aiohttp.ClientWebSocketResponse:
        try:
            return await session.ws_connect(
                url,
                headers={"xi-api-key": self._secret},
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=0.0),
            )
        except aiohttp.WSServerHandshakeError as exc:
            raise self._status_error(exc.status, exc.headers, exc.message) from None
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise ProviderError(self._timed_out(), retryable=True) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise ProviderError(self._redact(_connection_error(exc)), retryable=True) from None

    # -- errors -------------------------------------------------------------------------------------

    def _status_error(self, status: int, headers: Any, detail: str) -> ProviderError:
        text = f"elevenlabs: HTTP {status}" + (f": {detail}" if detail else "")
        retry_after = headers.get("retry-after") if headers is not None else None
        if retry_after:
            text += f" (retry after {retry_after} s)"
        retryable = status in (408, 409, 429) or status >= 500
        return ProviderError(self._redact(text), retryable=retryable)

    def _timed_out(self) -> str:
        return f"elevenlabs: no answer within {self._timeout_s:g} s"

    def _redact(self, text: str) -> str:
        return text.replace(self._secret, "[redacted]") if len(self._secret) >= 4 else text


class _SocketReply:
    """One reply on an open stream-input socket: sends phrases as they arrive while it yields the
    audio that comes back. One loop waits at once on the next phrase, the next message and the
    deadline, so every change of state happens in one place. The deadline is on the injected
    clock: no message for ``stall_s`` while audio is owed fails the reply; an idle socket (the LLM
    is slow, a tool is running) gets a keep-alive every ``KEEPALIVE_S``."""

    def __init__(
        self,
        ws: aiohttp.ClientWebSocketResponse,
        aligner: PhraseAligner,
        clock: Clock,
        stall_s: float,
        redact: Callable[[str], str],
    ) -> None:
        self._ws = ws
        self._aligner = aligner
        self._clock = clock
        self._stall_s = stall_s
        self._redact = redact
        self._ended = False  # text "" sent
        self._active = clock.now()  # last message either way

    def _limit(self) -> float:
        owed = self._ended or self._aligner.owed
        return self._active + (self._stall_s if owed else KEEPALIVE_S)

    async def run(self, phrases: AsyncIterator[str]) -> AsyncIterator[SpeechAudio]:
        ws, aligner, clock = self._ws, self._aligner, self._clock
        source = aiter(phrases)
        next_phrase: asyncio.Task[str] | None = asyncio.create_task(_anext(source), name="elevenlabs-phrase")
        incoming = asyncio.create_task(ws.receive(), name="elevenlabs-receive")
        timer: asyncio.Task[None] | None = None
        timer_at = -1.0
        index = 0
        try:
            while True:
                if (limit := self._limit()) != timer_at:
                    if timer is not None:
                        timer.cancel()
                    timer, timer_at = asyncio.create_task(clock.sleep_until(limit), name="elevenlabs-timer"), limit
                waiting: set[asyncio.Task[Any]] = {incoming, timer}
                if next_phrase is not None:
                    waiting.add(next_phrase)
                done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if next_phrase in done:
                    try:
                        text = next_phrase.result()
                    except StopAsyncIteration:
                        next_phrase = None
                        self._ended = True
                        await _send(ws, {"text": ""})
                    else:
                        payload = {"text": text.strip() + " ", "flush": True}
                        sent = not aligner.add(index, text) or await _send(ws, payload)
                        index += 1
                        # A socket that broke takes no more phrases; what it already sent is still read.
                        next_phrase = asyncio.create_task(_anext(source), name="elevenlabs-phrase") if sent else None
                    self._active = clock.now()
                if incoming in done:
                    message = incoming.result()
                    if message.type is not aiohttp.WSMsgType.TEXT:
                        if self._ended and not aligner.owed and self._ws.close_code == 1000:
                            return  # closed cleanly without isFinal: nothing was missing
                        raise self._closed(message)
                    incoming = asyncio.create_task(ws.receive(), name="elevenlabs-receive")
                    self._active = clock.now()
                    data = _parse(message.data)
                    if audio := data.get("audio"):
                        for phrase, piece in aligner.feed(_decode(audio), data.get("alignment")):
                            yield SpeechAudio(phrase, AudioChunk(piece, aligner.format))
                    elif "error" in data or "message" in data:
                        raise self._error_message(data)
                    if data.get("isFinal"):
                        if not self._ended:
                            raise ProviderError("elevenlabs: the socket ended before the reply did", retryable=True)
                        return
                if timer in done:
                    timer_at = -1.0
                    if clock.now() >= self._limit():
                        if self._ended or aligner.owed:
                            raise ProviderError(f"elevenlabs: no audio for {self._stall_s:g} s", retryable=True)
                        await _send(ws, {"text": " "})
                        self._active = clock.now()
        finally:
            pending = [t for t in (next_phrase, incoming, timer) if t is not None and not t.done()]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    def _closed(self, message: aiohttp.WSMessage) -> ProviderError:
        code = self._ws.close_code
        reason = message.extra if isinstance(message.extra, str) else ""
        if message.type is aiohttp.WSMsgType.ERROR:
            reason = f"{type(message.data).__name__}: {message.data}"
        text = f"elevenlabs: the socket closed mid-reply (code {code})" + (f": {reason}" if reason else "")
        return ProviderError(self._redact(text), retryable=code not in _FINAL_CLOSE_CODES)

    def _error_message(self, data: dict[str, Any]) -> ProviderError:
        code = data.get("code")
        text = f"elevenlabs: {data.get('error') or 'error'}: {data.get('message') or ''}".rstrip(": ")
        return ProviderError(self._redact(text), retryable=code not in _FINAL_CLOSE_CODES)


class PhraseAligner:
    """Attributes stream-input audio to phrases (sans I/O).

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
        self._samples = _WholeSamples(self._bytes_per_sample)

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


class _WholeSamples:
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


async def _send(ws: aiohttp.ClientWebSocketResponse, message: dict[str, Any]) -> bool:
    """Send one message; False when the socket is closing (the reading side reports why)."""
    try:
        await ws.send_str(orjson.dumps(message).decode())
    except (aiohttp.ClientError, ConnectionError):
        return False
    return True


async def _anext(source: AsyncIterator[str]) -> str:
    return await anext(source)


def _parse(text: str) -> dict[str, Any]:
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise ProviderError("elevenlabs: a socket message is not JSON", retryable=True) from None
    if not isinstance(data, dict):
        raise ProviderError("elevenlabs: a socket message is not a JSON object", retryable=True)
    return data


def _decode(audio: Any) -> bytes:
    try:
        return base64.b64decode(audio, validate=True)
    except (TypeError, ValueError):
        raise ProviderError("elevenlabs: audio that is not base64", retryable=True) from None


def _detail(body: Any) -> str:
    """The human part of an error body (``{"detail": {"status", "message"}}``, FastAPI's
    ``{"detail": "..."}`` or a validation list), at most 200 characters."""
    detail = body.get("detail", body) if isinstance(body, dict) else body
    if isinstance(detail, list) and detail:
        detail = detail[0]
    if isinstance(detail, dict):
        parts = [detail.get("status"), detail.get("message") or detail.get("msg")]
        detail = ": ".join(str(p) for p in parts if p)
    return str(detail or "")[:200]


def _connection_error(exc: BaseException) -> str:
    return f"elevenlabs: connection failed ({type(exc).__name__}: {exc})"
