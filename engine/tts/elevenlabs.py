"""ElevenLabs text to speech behind the ``Tts`` seam. The only module that imports ``elevenlabs``.

Two transports (``ElevenLabsTtsConfig.transport``):

- ``http``: one streaming request per phrase (``POST /v1/text-to-speech/{voice}/stream``) through
  the SDK's ``AsyncElevenLabs``; phrases are synthesized one after the other, in order, each with
  the reply so far as ``previous_text`` so the voice carries on.
- ``websocket``: one stream-input socket per reply (``/v1/text-to-speech/{voice}/stream-input``),
  opened as soon as the reply starts (while the LLM is still thinking) and fed phrase by phrase,
  each with ``flush: true``; ``text: ""`` ends it. The SDK's helper for it is sync-only, so this
  is a small asyncio client (aiohttp). One socket is one generation: the voice carries on from
  phrase to phrase. Audio is attributed to phrases by its ``alignment`` (``PhraseAligner``). The
  socket's URL, messages and aligner, without I/O, are in ``elevenlabs_ws``.

Audio comes in the call's own format where ElevenLabs has it (``output_format_for``): mu-law and
A-law 8 kHz pass through untouched, PCM16 at an offered rate too; anything else gets the nearest
PCM rate at or above the call's, and the call converts.

Failures are ``ProviderError``: HTTP 400/401/403/404/422 (and other 4xx) and WebSocket closes for
policy or bad data are final (``retryable=False``); 408/409/429 (with ``Retry-After`` in the
message and as ``retry_after``), 5xx, connection errors, a stream cut short and a server that
stops answering (no audio for ``timeout_s`` while some is owed) are ``retryable=True``. The SDK
does not retry: the caller decides. Messages never contain the API key, and errors are raised
``from None`` so the SDK's exception (with request details) is not chained into logged tracebacks.

Clients: given the process's ``HttpClients``, the adapter shares one SDK client (and its warm
HTTP connections) per base URL, key and timeout, and one aiohttp session for the sockets, with
every call; without, each reply makes its own and closes them when it ends.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import httpx
from elevenlabs import AsyncElevenLabs, VoiceSettings
from elevenlabs.core.api_error import ApiError

from ringline.config.providers import ElevenLabsTtsConfig
from ringline.engine.audio.clock import Clock, LoopClock
from ringline.engine.audio.formats import AudioChunk, AudioFormat
from ringline.engine.clients import POOL_KEEPALIVE, POOL_KEEPALIVE_EXPIRY_S, HttpClients, borrow
from ringline.engine.errors import ProviderError, parse_retry_after
from ringline.engine.tts.base import SpeechAudio
from ringline.engine.tts.elevenlabs_ws import (
    END_MESSAGE,
    FINAL_CLOSE_CODES,
    KEEPALIVE_MESSAGE,
    PhraseAligner,
    SocketMessage,
    WholeSamples,
    open_message,
    output_format_for,
    phrase_message,
    socket_url,
)

log = logging.getLogger(__name__)

PREVIOUS_TEXT_CHARS = 300
"""HTTP: the end of the reply so far goes with each phrase as ``previous_text`` (continuity)."""
CHUNK_MS = 40
"""HTTP audio is handed on in pieces of this much (the SDK reads the body in fixed-size pieces)."""
KEEPALIVE_S = 15.0
"""An idle socket (waiting for the LLM, e.g. during a tool call) gets ``text: " "`` this often:
ElevenLabs closes stream-input sockets after 20 s without input."""


class ElevenLabsTts:
    def __init__(
        self,
        config: ElevenLabsTtsConfig,
        clock: Clock,
        *,
        clients: HttpClients | None = None,
        timeout_s: float = 5.0,
    ) -> None:
        self._config = config
        self._clock = clock
        self._secret = config.api_key.get_secret_value()
        self._clients = clients
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

    # -- shared clients -----------------------------------------------------------------------------

    def sdk_client(self, clients: HttpClients) -> AsyncElevenLabs:
        """The SDK client (and its HTTP pool) for this base URL, key and timeout."""
        base_url, timeout = self._config.base_url, self._timeout_s

        def make() -> tuple[AsyncElevenLabs, Callable[[], Awaitable[None]]]:
            limits = httpx.Limits(
                max_connections=None, max_keepalive_connections=POOL_KEEPALIVE, keepalive_expiry=POOL_KEEPALIVE_EXPIRY_S
            )
            http = httpx.AsyncClient(verify=clients.tls_context(), timeout=timeout, limits=limits)
            client = AsyncElevenLabs(api_key=self._secret, base_url=base_url, httpx_client=http, timeout=timeout)
            return client, http.aclose

        return clients.get(("elevenlabs", base_url, self._secret, timeout), make)

    def socket_session(self, clients: HttpClients) -> aiohttp.ClientSession:
        """The aiohttp session the stream-input sockets are opened with (the key goes per socket)."""
        timeout = self._timeout_s

        def make() -> tuple[aiohttp.ClientSession, Callable[[], Awaitable[None]]]:
            session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None, connect=timeout, sock_read=timeout),
                # no limit: every call holds a socket for its reply; no cookies carried between calls
                connector=aiohttp.TCPConnector(limit=0, ssl=clients.tls_context()),
                cookie_jar=aiohttp.DummyCookieJar(),
            )
            return session, session.close

        return clients.get(("elevenlabs-ws", timeout), make)

    # -- http: one SDK request per phrase ---------------------------------------------------------

    async def _stream_http(self, phrases: AsyncIterator[str], preferred: AudioFormat) -> AsyncIterator[SpeechAudio]:
        output_format, fmt = output_format_for(preferred)
        log.debug("elevenlabs http reply: output_format %s", output_format)
        options: Any = {"max_retries": 0, "chunk_size": fmt.bytes_for(CHUNK_MS)}
        voice = VoiceSettings(**self._voice)
        async with borrow(self._clients) as clients:
            client = self.sdk_client(clients)
            samples = WholeSamples(fmt.encoding.sample_width)
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
        async with borrow(self._clients) as clients:
            # Closing sends a close frame and drops the connection unless the server's is already
            # in: a barge-in or a dropped prepared reply never waits on the network.
            ws = await self._connect(self.socket_session(clients), socket_url(self._config, output_format))
            async with ws:
                if not await _send(ws, open_message(self._voice)):
                    raise ProviderError("elevenlabs: the socket closed as it opened", retryable=True)
                reply = _SocketReply(ws, PhraseAligner(fmt), self._clock, self._timeout_s, self._redact)
                async for audio in reply.run(phrases):
                    yield audio

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
        header = headers.get("retry-after") if headers is not None else None
        if header:
            text += f" (retry after {header} s)"
        retryable = status in (408, 409, 429) or status >= 500
        retry_after = parse_retry_after(header) if retryable else None
        return ProviderError(self._redact(text), retryable=retryable, retry_after=retry_after)

    def _timed_out(self) -> str:
        return f"elevenlabs: no answer within {self._timeout_s:g} s"

    def _redact(self, text: str) -> str:
        return text.replace(self._secret, "[redacted]") if len(self._secret) >= 4 else text


async def warm_up(config: ElevenLabsTtsConfig, clients: HttpClients) -> None:
    """Make the shared client this config uses (and the TLS context) at start-up. Sends nothing."""
    tts = ElevenLabsTts(config, LoopClock(), clients=clients)
    if config.transport == "http":
        tts.sdk_client(clients)
    else:
        tts.socket_session(clients)


class _SocketReply:
    """One reply on an open stream-input socket: sends phrases as they arrive while it yields the
    audio that comes back.

    Three strands, so that neither direction waits on the other: the reply itself awaits the
    socket directly (a message is handed on one loop turn after it arrives); a sender task feeds
    it phrases as the LLM makes them (one loop turn after each is queued); a watchdog task keeps
    the deadline on the injected clock: no message for ``stall_s`` while audio is owed fails the
    reply, and an idle socket (the LLM is slow, a tool is running) gets a keep-alive every
    ``KEEPALIVE_S``. A failure of the sender or the watchdog is recorded and the socket closed,
    which wakes the reply to raise it."""

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
        self._failure: BaseException | None = None
        self._closing: asyncio.Future[bool] | None = None

    def _limit(self) -> float:
        owed = self._ended or self._aligner.owed
        return self._active + (self._stall_s if owed else KEEPALIVE_S)

    async def run(self, phrases: AsyncIterator[str]) -> AsyncIterator[SpeechAudio]:
        ws, aligner = self._ws, self._aligner
        helpers = [
            asyncio.create_task(self._send_phrases(phrases), name="elevenlabs-phrases"),
            asyncio.create_task(self._watch(), name="elevenlabs-watchdog"),
        ]
        for task in helpers:
            task.add_done_callback(self._helper_done)
        try:
            while True:
                message = await ws.receive()
                if self._failure is not None:
                    raise self._failure
                if message.type is not aiohttp.WSMsgType.TEXT:
                    if self._ended and not aligner.owed and ws.close_code == 1000:
                        return  # closed cleanly without isFinal: nothing was missing
                    raise self._closed(message)
                self._active = self._clock.now()
                received = SocketMessage.parse(message.data)
                if received.audio:
                    for phrase, piece in aligner.feed(received.audio, received.alignment):
                        yield SpeechAudio(phrase, AudioChunk(piece, aligner.format))
                elif received.error is not None:
                    raise ProviderError(self._redact(received.error), retryable=received.retryable)
                if received.is_final:
                    if not self._ended:
                        raise ProviderError("elevenlabs: the socket ended before the reply did", retryable=True)
                    return
        finally:
            for task in helpers:
                task.remove_done_callback(self._helper_done)
                task.cancel()
            await asyncio.gather(*helpers, *filter(None, [self._closing]), return_exceptions=True)

    async def _send_phrases(self, phrases: AsyncIterator[str]) -> None:
        ws, aligner, clock = self._ws, self._aligner, self._clock
        index = 0
        async for text in phrases:
            if aligner.add(index, text) and not await _send(ws, phrase_message(text)):
                return  # a socket that broke takes no more phrases; the reply reads why
            index += 1
            self._active = clock.now()
        self._ended = True
        await _send(ws, END_MESSAGE)
        self._active = clock.now()

    async def _watch(self) -> None:
        clock = self._clock
        while True:
            await clock.sleep_until(self._limit())
            if clock.now() < self._limit():
                continue  # something moved meanwhile
            if self._ended or self._aligner.owed:
                raise ProviderError(f"elevenlabs: no audio for {self._stall_s:g} s", retryable=True)
            await _send(self._ws, KEEPALIVE_MESSAGE)
            self._active = clock.now()

    def _helper_done(self, task: asyncio.Task[None]) -> None:
        """The phrase source raised, or the watchdog gave up: close the socket so the reply
        (waiting on it) wakes and raises that."""
        if task.cancelled() or (error := task.exception()) is None:
            return
        if self._failure is None:
            self._failure = error
            self._closing = asyncio.ensure_future(self._ws.close())

    def _closed(self, message: aiohttp.WSMessage) -> ProviderError:
        code = self._ws.close_code
        reason = message.extra if isinstance(message.extra, str) else ""
        if message.type is aiohttp.WSMsgType.ERROR:
            reason = f"{type(message.data).__name__}: {message.data}"
        text = f"elevenlabs: the socket closed mid-reply (code {code})" + (f": {reason}" if reason else "")
        return ProviderError(self._redact(text), retryable=code not in FINAL_CLOSE_CODES)


async def _send(ws: aiohttp.ClientWebSocketResponse, message: str) -> bool:
    """Send one message; False when the socket is closing (the reading side reports why)."""
    try:
        await ws.send_str(message)
    except (aiohttp.ClientError, ConnectionError):
        return False
    return True


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
