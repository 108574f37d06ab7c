"""ElevenLabs text to speech behind the ``Tts`` seam. The only module that imports ``elevenlabs``.

Two transports (``ElevenLabsTtsConfig.transport``):

- ``http``: one streaming request per phrase (``POST /v1/text-to-speech/{voice}/stream``) through
  the SDK's ``AsyncElevenLabs``; phrases are synthesized one after the other, in order, each with
  the reply so far as ``previous_text`` so the voice carries on.
- ``websocket``: one multi-context socket per call (``/v1/text-to-speech/{voice}/multi-stream-input``),
  opened when the call's first reply starts (while the LLM is still thinking) and kept for the
  next ones: each reply is a context of its own, fed phrase by phrase, each with ``flush: true``,
  and closed (``close_context``) when the reply has no more; no TCP, TLS and WebSocket handshake
  before any later reply. The SDK's helper for it is sync-only, so this is a small asyncio client
  (aiohttp). A context is one generation: the voice carries on from phrase to phrase. Audio is
  attributed to phrases by its ``alignment`` (``PhraseAligner``). Between replies an idle reader
  drops what is still coming for a reply the caller cut off, and notices the server closing the
  socket (``inactivity_timeout``, a restart): the next reply then opens a new one. A kept socket
  lost in the moment a reply begins (before any of its audio) gives way to a new one: the reply
  starts over there, once, its phrases read again (``PhraseReplay``). ``aclose()`` (the call
  ended) closes it. The socket's URL, messages and aligner, without I/O, are in
  ``elevenlabs_ws``.

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
every call; without, an HTTP reply makes its own client and closes it when it ends, and the
socket gets a session of its own, closed with it.
"""

from __future__ import annotations

import asyncio
import contextlib
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
from ringline.engine.tts.base import PhraseReplay, SpeechAudio
from ringline.engine.tts.elevenlabs_ws import (
    CLOSE_SOCKET_MESSAGE,
    FINAL_CLOSE_CODES,
    MAX_CONTEXTS,
    PhraseAligner,
    SocketMessage,
    WholeSamples,
    close_message,
    keepalive_message,
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
HEARTBEAT_S = 20.0
"""The call's socket is pinged when nothing came in for this long; no pong within half of it and
it is dropped, so the next reply opens another: a connection a NAT or the network lost between
replies is noticed before a reply needs it (and middleboxes see traffic on an idle one)."""
KEEPALIVE_S = 15.0
"""A reply's idle context (waiting for the LLM, e.g. during a tool call) gets ``text: ""`` this
often: ElevenLabs closes a context after its inactivity timeout (20 s unless the URL asks more)."""


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
        self._socket: _CallSocket | None = None
        self._socket_lock = asyncio.Lock()
        self._own_clients: HttpClients | None = None  # the socket's session when none are shared

    def stream(self, phrases: AsyncIterator[str], preferred: AudioFormat) -> AsyncIterator[SpeechAudio]:
        if self._config.transport == "http":
            return self._stream_http(phrases, preferred)
        return self._stream_socket(phrases, preferred)

    async def aclose(self) -> None:
        """The call ended: close its socket (and the session made for it, if none was shared)."""
        socket, self._socket = self._socket, None
        if socket is not None:
            await socket.aclose()
        own, self._own_clients = self._own_clients, None
        if own is not None:
            await own.aclose()

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
        """The aiohttp session the calls' sockets are opened with (the key goes per socket)."""
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

    # -- websocket: the call's multi-context socket, a context per reply ------------------------------

    async def _stream_socket(self, phrases: AsyncIterator[str], preferred: AudioFormat) -> AsyncIterator[SpeechAudio]:
        """The reply as a context on the call's socket. A socket kept from an earlier reply may
        have been lost since (the idle reader and the heartbeat notice most such losses, not one
        in the moment the reply begins): when it fails before any audio, the reply starts over,
        once, on a new socket, its phrases read again."""
        output_format, fmt = output_format_for(preferred)
        replay = PhraseReplay(phrases)
        try:
            for attempt in (1, 2):
                socket, own = await self._take_socket(output_format)
                context = socket.new_context()
                log.debug("elevenlabs websocket reply: context %s, output_format %s", context, output_format)
                reply = _SocketReply(socket, context, PhraseAligner(fmt), self._clock, self._timeout_s, self._redact)
                opening = open_message(context, self._voice)
                heard = False
                try:
                    async with contextlib.aclosing(reply.run(replay.read(0), opening)) as audio:
                        async for item in audio:
                            heard = True
                            yield item
                    return
                except ProviderError as exc:
                    if heard or attempt > 1 or socket.usable or socket.replies < 2 or not exc.retryable:
                        raise
                    log.info("elevenlabs: the call's socket was lost as a reply began (%s); on a new one", exc)
                finally:
                    socket.release()
                    if own:
                        await socket.aclose()
        finally:
            replay.close()

    async def _take_socket(self, output_format: str) -> tuple[_CallSocket, bool]:
        """A socket for one reply, and whether it is the reply's own: the call's, opened on first
        use and again when the last one broke, closed or was asked for another output format; or,
        while another reply of the call holds that one (a transfer's briefing), one of its own."""
        async with self._socket_lock:
            socket = self._socket
            if socket is not None and socket.busy:
                socket = _CallSocket(await self._open_socket(output_format), output_format)
                await socket.take()
                return socket, True
            if socket is None or not socket.usable or socket.full or socket.output_format != output_format:
                self._socket = None
                if socket is not None:
                    await socket.aclose()
                socket = self._socket = _CallSocket(await self._open_socket(output_format), output_format)
            await socket.take()
            return socket, False

    async def _open_socket(self, output_format: str) -> aiohttp.ClientWebSocketResponse:
        if self._clients is None and self._own_clients is None:
            self._own_clients = HttpClients()
        clients = self._clients or self._own_clients
        assert clients is not None
        return await self._connect(self.socket_session(clients), socket_url(self._config, output_format))

    async def _connect(self, session: aiohttp.ClientSession, url: str) -> aiohttp.ClientWebSocketResponse:
        try:
            return await session.ws_connect(
                url,
                headers={"xi-api-key": self._secret},
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=0.0),
                heartbeat=HEARTBEAT_S,
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


class _CallSocket:
    """One call's multi-context socket. Replies take turns on it, one context each, and read it
    themselves while they run (a message is handed on one loop turn after it arrives). Between
    replies an idle reader drops what still comes for a context the caller cut off and notices a
    close: a socket that closed is not ``usable`` and the next reply opens another."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, output_format: str) -> None:
        self.ws = ws
        self.output_format = output_format
        self._unfinished: set[str] = set()  # contexts opened that the server has not said isFinal for
        self._idle: asyncio.Task[None] | None = None
        self._broken = False
        self.busy = False
        """A reply holds it."""
        self.replies = 0
        """Replies that took it so far, a context each (the current one included)."""

    @property
    def usable(self) -> bool:
        return not (self._broken or self.ws.closed)

    @property
    def full(self) -> bool:
        """As many contexts as ElevenLabs allows are still running (replies cut off in quick
        succession, still being voiced): another would be refused."""
        return len(self._unfinished) >= MAX_CONTEXTS

    def new_context(self) -> str:
        self.replies += 1
        context = f"reply-{self.replies}"
        self._unfinished.add(context)
        return context

    def finished(self, message: SocketMessage) -> None:
        """Note a context's ``isFinal``."""
        if message.is_final and message.context is not None:
            self._unfinished.discard(message.context)

    async def take(self) -> None:
        """A reply takes it: the idle reader stops (nothing it had not read yet is lost)."""
        self.busy = True
        await self._stop_idle()

    def release(self) -> None:
        """The reply is done with it: the idle reader takes over."""
        self.busy = False
        if self.usable and self._idle is None:
            self._idle = asyncio.create_task(self._read_idle(), name="elevenlabs-idle")

    def broke(self) -> None:
        """Something went wrong on the socket itself: the next reply opens another."""
        self._broken = True

    async def _stop_idle(self) -> None:
        if (idle := self._idle) is not None:
            self._idle = None
            idle.cancel()
            await asyncio.gather(idle, return_exceptions=True)

    async def _read_idle(self) -> None:
        while True:
            message = await self.ws.receive()
            if message.type is not aiohttp.WSMsgType.TEXT:
                log.debug("elevenlabs socket closed between replies (code %s)", self.ws.close_code)
                self._broken = True
                await self.ws.close()
                return
            # the rest of a reply the caller cut off: nobody waits for it but its end counts
            with contextlib.suppress(ProviderError):
                self.finished(SocketMessage.parse(message.data))

    async def aclose(self) -> None:
        await self._stop_idle()
        if not self.ws.closed:
            await _send(self.ws, CLOSE_SOCKET_MESSAGE)
            await self.ws.close()


class _SocketReply:
    """One reply, one context on the call's socket: sends phrases as they arrive while it yields
    the audio that comes back.

    Three strands, so that neither direction waits on the other: the reply itself awaits the
    socket directly (a message is handed on one loop turn after it arrives) and skips messages of
    other contexts; a sender task feeds it phrases as the LLM makes them (one loop turn after each
    is queued) and closes the context after the last; a watchdog task keeps the deadline on the
    injected clock: no message for ``stall_s`` while audio is owed fails the reply, and an idle
    context (the LLM is slow, a tool is running) gets a keep-alive every ``KEEPALIVE_S``. A
    failure of the sender or the watchdog is recorded and wakes the reply to raise it. A reply
    that ends early (barge-in, a failure) closes its context; one that failed on the socket itself
    (a close, a stall, a message that makes no sense) leaves the socket to be replaced."""

    def __init__(
        self,
        socket: _CallSocket,
        context: str,
        aligner: PhraseAligner,
        clock: Clock,
        stall_s: float,
        redact: Callable[[str], str],
    ) -> None:
        self._socket = socket
        self._ws = socket.ws
        self._context = context
        self._aligner = aligner
        self._clock = clock
        self._stall_s = stall_s
        self._redact = redact
        self._ended = False  # the phrases ran out: close_context sent
        self._context_closed = False
        self._active = clock.now()  # last message either way
        self._failure: BaseException | None = None
        self._closing: asyncio.Future[bool | None] | None = None

    def _limit(self) -> float:
        owed = self._ended or self._aligner.owed
        return self._active + (self._stall_s if owed else KEEPALIVE_S)

    async def run(self, phrases: AsyncIterator[str], opening: str) -> AsyncIterator[SpeechAudio]:
        socket, ws, aligner, context = self._socket, self._ws, self._aligner, self._context
        if not await _send(ws, opening):
            socket.broke()
            raise ProviderError("elevenlabs: the socket closed as the reply began", retryable=True)
        helpers = [
            asyncio.create_task(self._send_phrases(phrases), name="elevenlabs-phrases"),
            asyncio.create_task(self._watch(), name="elevenlabs-watchdog"),
        ]
        for task in helpers:
            task.add_done_callback(self._helper_done)
        try:
            while True:
                message = await ws.receive()
                if message.type is not aiohttp.WSMsgType.TEXT:
                    socket.broke()
                    if self._failure is not None:
                        raise self._failure
                    if self._ended and not aligner.owed and ws.close_code == 1000:
                        return  # closed cleanly without isFinal: nothing was missing
                    raise self._closed(message)
                self._active = self._clock.now()
                try:
                    received = SocketMessage.parse(message.data)
                except ProviderError:
                    socket.broke()
                    raise
                socket.finished(received)
                if self._failure is not None:
                    raise self._failure
                if received.context not in (context, None):
                    continue  # the rest of an earlier reply, cut off
                if received.audio:
                    for phrase, piece in aligner.feed(received.audio, received.alignment):
                        yield SpeechAudio(phrase, AudioChunk(piece, aligner.format))
                elif received.error is not None:
                    if received.context is None:
                        socket.broke()
                    raise ProviderError(self._redact(received.error), retryable=received.retryable)
                if received.is_final and received.context == context:
                    self._context_closed = True  # the server is done with it
                    if not self._ended:
                        raise ProviderError("elevenlabs: the context ended before the reply did", retryable=True)
                    return
        finally:
            for task in helpers:
                task.remove_done_callback(self._helper_done)
                task.cancel()
            await asyncio.gather(*helpers, *filter(None, [self._closing]), return_exceptions=True)
            if socket.usable:
                await self._close_context()  # no more audio for a reply that is gone

    async def _close_context(self) -> bool:
        if self._context_closed:
            return True
        self._context_closed = True
        return await _send(self._ws, close_message(self._context))

    async def _send_phrases(self, phrases: AsyncIterator[str]) -> None:
        ws, aligner, clock, context = self._ws, self._aligner, self._clock, self._context
        index = 0
        async for text in phrases:
            if aligner.add(index, text) and not await _send(ws, phrase_message(context, text)):
                return  # a socket that broke takes no more phrases; the reply reads why
            index += 1
            self._active = clock.now()
        self._ended = True
        await self._close_context()
        self._active = clock.now()

    async def _watch(self) -> None:
        clock = self._clock
        while True:
            # Never longer than ``stall_s``: a limit that moved closer meanwhile (a phrase went out
            # while nothing was owed) is ``stall_s`` after that, so no later than this wake.
            await clock.sleep_until(min(self._limit(), clock.now() + self._stall_s))
            if clock.now() < self._limit():
                continue  # something moved meanwhile
            if self._ended or self._aligner.owed:
                self._socket.broke()
                raise ProviderError(f"elevenlabs: no audio for {self._stall_s:g} s", retryable=True)
            await _send(self._ws, keepalive_message(self._context))
            self._active = clock.now()

    def _helper_done(self, task: asyncio.Task[None]) -> None:
        """The phrase source raised, or the watchdog gave up: wake the reply (waiting on the
        socket) to raise that. A stalled socket is closed; a broken phrase source closes the
        context, which the server answers once what was flushed is voiced (and if it does not,
        the watchdog gives up on it)."""
        if task.cancelled() or (error := task.exception()) is None:
            return
        if self._failure is None:
            self._failure = error
            if self._socket.usable:
                self._ended = True
                self._closing = asyncio.ensure_future(self._close_context())
            else:
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
