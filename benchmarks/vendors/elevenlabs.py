"""A local ElevenLabs text-to-speech server: the streaming HTTP endpoint and the multi-context
WebSocket, speaking the wire protocol the way api.elevenlabs.io does, so the real ``elevenlabs``
SDK (and Ringline's socket client) runs unchanged against it::

    async with FakeElevenLabs(api_key="xi-test") as server:   # or: await server.start() ... close()
        server.latency = Latency(ttfa_s=0.15, realtime_factor=0.1, connect_s=0.1)
        tts = ElevenLabsTts(ElevenLabsTtsConfig(provider="elevenlabs", api_key="xi-test",
                                                base_url=server.url), clock)
        ...
        server.requests[0].query["output_format"]             # every request, recorded whole

Endpoints:

- ``POST /v1/text-to-speech/{voice_id}/stream?output_format=...``: JSON ``{text, model_id,
  voice_settings}``; answers the audio as one chunked body.
- ``GET /v1/text-to-speech/{voice_id}/multi-stream-input?model_id=...&output_format=...&
  inactivity_timeout=...``: a WebSocket carrying contexts. ``{"text": " ", "context_id": c, ...}``
  opens context ``c`` (at most five active at once: more is an error and close 1008); its text
  accumulates until a message with ``flush`` (or ``try_trigger_generation``), and each such batch
  is one generation, a context's voiced in order and contexts side by side: messages ``{"audio":
  base64, "isFinal": null, "alignment": {chars, charStartTimesMs, charDurationsMs},
  "normalizedAlignment": ..., "contextId": c}`` (times relative to each message's audio).
  ``{"text": "", "context_id": c}`` only keeps it alive; ``{"context_id": c, "close_context":
  true}`` closes it (text not flushed is dropped) and once its flushed text is voiced it gets
  ``{"isFinal": true, "contextId": c}``; ``{"close_socket": true}`` closes them all, then the
  socket (1000). No input for ``inactivity_timeout`` seconds (20 unless asked; at most 180): an
  error message and close 1008, as ElevenLabs does.

Both check the ``xi-api-key`` header (the socket also takes it as the first message's
``xi-api-key`` field) and answer 401 ``{"detail": {"status": "invalid_api_key", ...}}``.

Audio: a tone lasting ``seconds_per_char`` per character of the text, in the requested
``output_format`` (``pcm_<rate>``, ``ulaw_8000``, ``alaw_8000``; G.711 from
``ringline.engine.audio.g711``), in ``chunk_ms`` pieces. Latency model (``Latency``): time to first
audio of each request or generation, synthesis time per second of audio, and the cost of a new
connection (paid by the first request on each TCP connection: TCP and TLS handshakes). Faults
(``Faults``): an error status (429 with ``Retry-After``), cutting the connection after N audio
pieces, and stopping answering after N pieces.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from aiohttp import WSMsgType, web

from ringline.benchmarks.vendors.server import LoopbackServer
from ringline.engine.audio.formats import AudioFormat, Encoding
from ringline.engine.audio.g711 import encode

DEFAULT_INACTIVITY_S = 20
MAX_INACTIVITY_S = 180
MAX_CONTEXTS = 5
"""Contexts a multi-stream-input socket may have active at once."""
ERRORS: dict[int, tuple[str, str]] = {
    400: ("bad_request", "The request is malformed."),
    401: ("invalid_api_key", "Invalid API key"),
    403: ("forbidden", "You do not have access to this resource."),
    404: ("voice_not_found", "A voice with that id was not found."),
    422: ("unprocessable_entity", "Unprocessable entity."),
    429: ("too_many_concurrent_requests", "Too many concurrent requests."),
    500: ("internal_server_error", "We are sorry, something went wrong."),
    503: ("service_unavailable", "The service is overloaded, try again later."),
}


# -- shared by the vendor fakes: latency model, faults, audio -------------------------------------


@dataclass(slots=True)
class Latency:
    ttfa_s: float = 0.0
    """Time to first audio of each HTTP request / each WebSocket generation."""
    realtime_factor: float = 0.0
    """Synthesis time per second of audio after the first piece (0.1: ten times real time; 0:
    all at once)."""
    connect_s: float = 0.0
    """Cost of a new connection (TCP + TLS handshakes): the first request on each connection waits
    this long before it is looked at."""
    seconds_per_char: float = 0.05
    """Length of the audio per character of text."""
    chunk_ms: int = 100
    """Audio goes out in pieces of this length."""
    tone_hz: float = 440.0


@dataclass(slots=True)
class Faults:
    status: int | None = None
    """Answer every request (every handshake) with this error status."""
    retry_after: str | None = None
    """``Retry-After`` header of the error."""
    message: str | None = None
    """Overrides the error body's message (a server that echoes what it was sent, say)."""
    cut_after: int | None = None
    """Abort the TCP connection after this many audio pieces (no end of body, no close frame)."""
    hang_after: int | None = None
    """Stop answering after this many audio pieces (0: send nothing at all); the connection stays
    open until the client leaves or the server closes."""
    drop_at_context: int | None = None
    """Abort a socket's TCP connection when the client opens its context number N on it (1: the
    first), before answering: a connection lost just as a reply begins."""


def tone(seconds: float, fmt: AudioFormat, hz: float = 440.0) -> bytes:
    """``seconds`` of a sine tone in ``fmt`` (PCM16, mu-law or A-law, mono)."""
    n = round(seconds * fmt.sample_rate)
    t = np.arange(n) / fmt.sample_rate
    pcm = (np.sin(2 * np.pi * hz * t) * 8000).astype("<i2").tobytes()
    return pcm if fmt.encoding is Encoding.PCM16 else encode(pcm, fmt.encoding)


class ConnectionCosts:
    """Charges ``Latency.connect_s`` to the first request of every TCP connection (told apart by
    the client's address and port)."""

    def __init__(self) -> None:
        self._seen: set[Any] = set()

    @property
    def connections(self) -> int:
        """Connections seen so far."""
        return len(self._seen)

    async def charge(self, request: web.Request, latency: Latency) -> None:
        peer = request.transport.get_extra_info("peername") if request.transport is not None else None
        if peer in self._seen:
            return
        self._seen.add(peer)
        if latency.connect_s > 0:
            await asyncio.sleep(latency.connect_s)


class Pacer:
    """Release times of audio pieces: the first after ``ttfa_s`` from ``start``, the rest at
    ``realtime_factor`` times their duration."""

    def __init__(self, start: float, latency: Latency) -> None:
        self._at = start + latency.ttfa_s
        self._factor = latency.realtime_factor

    async def wait(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        if (delay := self._at - loop.time()) > 0:
            await asyncio.sleep(delay)
        self._at += seconds * self._factor


def pieces(audio: bytes, fmt: AudioFormat, chunk_ms: int) -> list[bytes]:
    step = max(fmt.bytes_for(chunk_ms), fmt.encoding.sample_width)
    return [audio[i : i + step] for i in range(0, len(audio), step)]


# -- the ElevenLabs fake --------------------------------------------------------------------------


def parse_output_format(value: str) -> AudioFormat | None:
    """``pcm_<rate>``, ``ulaw_8000``, ``alaw_8000``; None for anything else (mp3, opus, ...)."""
    codec, _, rate = value.partition("_")
    if not rate.isdigit():
        return None
    if codec == "pcm" and int(rate) in (8000, 16000, 22050, 24000, 32000, 44100, 48000):
        return AudioFormat(Encoding.PCM16, int(rate))
    if value == "ulaw_8000":
        return AudioFormat(Encoding.MULAW, 8000)
    if value == "alaw_8000":
        return AudioFormat(Encoding.ALAW, 8000)
    return None


@dataclass(slots=True)
class RecordedRequest:
    transport: str
    """``http`` or ``websocket``."""
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    received_at: float
    body: Any = None
    """HTTP: the parsed JSON body."""
    messages: list[Any] = field(default_factory=list)
    """WebSocket: every message the client sent, parsed, in order."""
    generations: list[str] = field(default_factory=list)
    """The texts voiced (one per HTTP request; one per flush on the socket)."""
    pieces_sent: int = 0
    first_audio_at: float | None = None
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def voice_settings(self) -> Any:
        if self.body is not None:
            return self.body.get("voice_settings")
        return self.messages[0].get("voice_settings") if self.messages else None


class _Cut(Exception):
    """The fault said to drop the connection here."""


class FakeElevenLabs(LoopbackServer):
    """The fake server on 127.0.0.1, port chosen by the OS. ``url`` is the SDK's ``base_url``."""

    def __init__(
        self,
        api_key: str = "xi-fake",
        *,
        latency: Latency | None = None,
        faults: Faults | None = None,
        inactivity_s: float | None = None,
    ) -> None:
        super().__init__()
        self.api_key = api_key
        self.latency = latency or Latency()
        self.faults = faults or Faults()
        self.inactivity_s = inactivity_s
        self.answer_pings = True
        """False: a socket's pings go unanswered (a connection lost somewhere on the way)."""
        """A socket without input this long is closed (1008); None: the URL's ``inactivity_timeout``."""
        self.requests: list[RecordedRequest] = []
        self.connections = ConnectionCosts()
        self._ids = itertools.count(1)
        self._heard = asyncio.Condition()  # notified at every socket message

    async def wait_for_messages(self, predicate: Callable[[list[Any]], bool]) -> None:
        """Until ``predicate`` holds for the messages of the newest socket."""
        async with self._heard:
            await self._heard.wait_for(lambda: bool(self.requests) and predicate(self.requests[-1].messages))

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/v1/text-to-speech/{voice_id}/stream", self._http)
        router.add_get("/v1/text-to-speech/{voice_id}/multi-stream-input", self._socket)

    # -- common -----------------------------------------------------------------------------------

    async def _record(self, request: web.Request, transport: str) -> RecordedRequest:
        await self.connections.charge(request, self.latency)
        recorded = RecordedRequest(
            transport, request.path, dict(request.query), dict(request.headers), time.monotonic()
        )
        if transport == "http":
            try:
                recorded.body = orjson.loads(await request.read())
            except orjson.JSONDecodeError:
                recorded.body = None
        self.requests.append(recorded)
        return recorded

    def _refusal(self, request: web.Request, fmt: AudioFormat | None, *, socket: bool) -> web.Response | None:
        """The error answer this request gets, if any: auth, fault, bad output format."""
        key = request.headers.get("xi-api-key")
        if key != self.api_key and not (key is None and socket):  # a socket may send it in its first message
            return _error(401)
        if self.faults.status is not None:
            return _error(self.faults.status, self.faults.message, retry_after=self.faults.retry_after)
        if fmt is None:
            return _error(400, "output_format: this fake speaks pcm_<rate>, ulaw_8000 and alaw_8000 only")
        return None

    async def voice(self, send: Any, text: str, fmt: AudioFormat, recorded: RecordedRequest, start: float) -> None:
        """Voice one generation: paced pieces through ``send(audio, alignment)``."""
        latency, faults = self.latency, self.faults
        recorded.generations.append(text)
        audio = tone(len(text.strip()) * latency.seconds_per_char, fmt, latency.tone_hz)
        timings = _char_timings(text, len(audio) / fmt.bytes_per_second)
        pacer = Pacer(start, latency)
        offset = 0.0
        for piece in pieces(audio, fmt, latency.chunk_ms):
            if faults.hang_after is not None and recorded.pieces_sent >= faults.hang_after:
                await self.closing.wait()
                raise _Cut
            if faults.cut_after is not None and recorded.pieces_sent >= faults.cut_after:
                raise _Cut
            duration = len(piece) / fmt.bytes_per_second
            await pacer.wait(duration)
            await send(piece, _alignment(timings, offset, offset + duration))
            offset += duration
            recorded.pieces_sent += 1
            if recorded.first_audio_at is None:
                recorded.first_audio_at = time.monotonic()

    # -- POST /v1/text-to-speech/{voice_id}/stream ------------------------------------------------

    async def _http(self, request: web.Request) -> web.StreamResponse:
        recorded = await self._record(request, "http")
        try:
            fmt = parse_output_format(request.query.get("output_format", "mp3_44100_128"))
            if (refusal := self._refusal(request, fmt, socket=False)) is not None:
                return refusal
            assert fmt is not None
            body = recorded.body
            if not isinstance(body, dict) or not isinstance(body.get("text"), str) or not body["text"].strip():
                return _error(422, "text: field required")
            start = asyncio.get_running_loop().time()
            response = web.StreamResponse(
                headers={"Content-Type": _content_type(fmt), "request-id": f"req{next(self._ids)}"}
            )
            response.enable_chunked_encoding()
            await response.prepare(request)

            async def send(piece: bytes, alignment: dict[str, Any]) -> None:
                await response.write(piece)

            try:
                await self.voice(send, body["text"], fmt, recorded, start)
            except _Cut:
                assert request.transport is not None
                request.transport.abort()
                return response
            await response.write_eof()
            return response
        finally:
            recorded.finished.set()

    # -- GET /v1/text-to-speech/{voice_id}/multi-stream-input (WebSocket) -------------------------

    async def _socket(self, request: web.Request) -> web.StreamResponse:
        recorded = await self._record(request, "websocket")
        try:
            fmt = parse_output_format(request.query.get("output_format", "mp3_44100_128"))
            if (refusal := self._refusal(request, fmt, socket=True)) is not None:
                return refusal
            assert fmt is not None
            asked = request.query.get("inactivity_timeout", str(DEFAULT_INACTIVITY_S))
            if not asked.isdigit() or not 1 <= int(asked) <= MAX_INACTIVITY_S:
                return _error(422, f"inactivity_timeout: an integer from 1 to {MAX_INACTIVITY_S}")
            ws = web.WebSocketResponse(autoping=False)  # pings answered below, or not
            await ws.prepare(request)
            contexts = _Contexts(self, request, ws, fmt, recorded)
            try:
                outcome = await self._read_contexts(ws, contexts, recorded, request, float(asked))
                if isinstance(outcome, tuple):
                    error, reason = outcome
                    await ws.send_str(orjson.dumps({"message": reason, "error": error, "code": 1008}).decode())
                    await ws.close(code=1008, message=reason.encode())
                elif outcome == "end":
                    await contexts.voiced()
                    await ws.close()
            finally:
                await contexts.cancel()
            return ws
        finally:
            recorded.finished.set()

    async def _read_contexts(
        self,
        ws: web.WebSocketResponse,
        contexts: _Contexts,
        recorded: RecordedRequest,
        request: web.Request,
        idle_s: float,
    ) -> str | tuple[str, str]:
        """Read the client's messages, opening, feeding and closing contexts. Returns ``"end"``
        after ``close_socket``, ``"left"`` when the client closed, ``(error, message)`` when it
        broke the protocol or went quiet for ``inactivity_s`` (else the URL's
        ``inactivity_timeout``; a change of the knob counts from the next message on)."""
        while True:
            timeout = self.inactivity_s if self.inactivity_s is not None else idle_s
            try:
                message = await ws.receive(timeout=timeout)
            except TimeoutError:
                return (
                    "input_timeout_exceeded",
                    f"Have not received a new text input within the timeout of {timeout:g} seconds.",
                )
            if message.type is WSMsgType.PING:
                if self.answer_pings:
                    await ws.pong(message.data)
                continue
            if message.type is not WSMsgType.TEXT:
                return "left"
            try:
                data = orjson.loads(message.data)
            except orjson.JSONDecodeError:
                return ("invalid_message", "Invalid message received: not JSON")
            recorded.messages.append(data)
            async with self._heard:
                self._heard.notify_all()
            if not isinstance(data, dict):
                return ("invalid_message", "Invalid message received: not a JSON object")
            first = len(recorded.messages) == 1
            if first and "xi-api-key" not in request.headers and data.get("xi-api-key") != self.api_key:
                return ("invalid_api_key", "Invalid API key")
            if data.get("close_socket"):
                contexts.close_all()
                return "end"
            context = data.get("context_id", data.get("contextId")) or "default"
            if not isinstance(context, str):
                return ("invalid_message", "Invalid message received: 'context_id' must be a string")
            if data.get("close_context"):
                contexts.close(context)
                continue
            text = data.get("text")
            if not isinstance(text, str):
                return ("invalid_message", "Invalid message received: 'text' is required")
            if not contexts.is_open(context):
                if text != " ":
                    return ("invalid_message", f"Context {context} is not open: its first message must have text ' '")
                if contexts.active >= MAX_CONTEXTS:
                    return (
                        "max_active_conversations",
                        f"Maximum simultaneous contexts per WebSocket connection exceeded ({MAX_CONTEXTS}). "
                        "Please close an existing context before opening a new one.",
                    )
                if contexts.open(context) == self.faults.drop_at_context:
                    assert request.transport is not None
                    request.transport.abort()
                    return "left"
            elif text:  # "" keeps the context alive
                contexts.add(context, text, flush=bool(data.get("flush") or data.get("try_trigger_generation")))


class _Contexts:
    """The contexts of one multi-stream-input socket. Each has its text buffer and a voicer task
    that voices its flushed batches in order, then, once the context is closed, says ``isFinal``
    for it; contexts are voiced side by side, as ElevenLabs does. A context counts as active until
    its ``isFinal`` went out."""

    def __init__(
        self,
        server: FakeElevenLabs,
        request: web.Request,
        ws: web.WebSocketResponse,
        fmt: AudioFormat,
        recorded: RecordedRequest,
    ) -> None:
        self._server = server
        self._request = request
        self._ws = ws
        self._fmt = fmt
        self._recorded = recorded
        self._open: dict[str, tuple[list[str], asyncio.Queue[str | None]]] = {}  # context -> buffer, batches
        self._voicers: set[asyncio.Task[None]] = set()
        self.opened = 0

    @property
    def active(self) -> int:
        return len(self._voicers)

    def is_open(self, context: str) -> bool:
        return context in self._open

    def open(self, context: str) -> int:
        """Open ``context``; returns how many contexts the socket has opened so far."""
        self.opened += 1
        batches: asyncio.Queue[str | None] = asyncio.Queue()
        self._open[context] = ([], batches)
        task = asyncio.create_task(self._voice(context, batches))
        self._voicers.add(task)
        task.add_done_callback(self._voicers.discard)
        return self.opened

    def add(self, context: str, text: str, *, flush: bool) -> None:
        buffer, batches = self._open[context]
        buffer.append(text)
        if flush and (batch := "".join(buffer)).strip():
            batches.put_nowait(batch)
            buffer.clear()

    def close(self, context: str) -> None:
        """No more text: what was flushed is still voiced, what was not is dropped."""
        if (entry := self._open.pop(context, None)) is not None:
            entry[1].put_nowait(None)

    def close_all(self) -> None:
        for context in list(self._open):
            self.close(context)

    async def voiced(self) -> None:
        await asyncio.gather(*self._voicers, return_exceptions=True)

    async def cancel(self) -> None:
        for task in list(self._voicers):
            task.cancel()
        await self.voiced()

    async def _voice(self, context: str, batches: asyncio.Queue[str | None]) -> None:
        ws = self._ws

        async def send(piece: bytes, alignment: dict[str, Any]) -> None:
            message = {
                "audio": base64.b64encode(piece).decode(),
                "isFinal": None,
                "normalizedAlignment": alignment,
                "alignment": alignment,
                "contextId": context,
            }
            await ws.send_str(orjson.dumps(message).decode())

        loop = asyncio.get_running_loop()
        try:
            # A generation starts when its text is in and the one before it is voiced.
            while (text := await batches.get()) is not None:
                await self._server.voice(send, text, self._fmt, self._recorded, loop.time())
            await ws.send_str(orjson.dumps({"isFinal": True, "contextId": context}).decode())
        except _Cut:
            assert self._request.transport is not None
            self._request.transport.abort()
        except ConnectionResetError:
            pass  # the client went away


def _char_timings(text: str, seconds: float) -> list[tuple[str, float, float]]:
    """Each character of ``text`` with its start and duration (s), spread evenly over ``seconds``."""
    chars = list(text)
    each = seconds / len(chars) if chars else 0.0
    return [(c, i * each, each) for i, c in enumerate(chars)]


def _alignment(timings: list[tuple[str, float, float]], start: float, end: float) -> dict[str, Any]:
    """The characters that start within ``[start, end)``, times in ms relative to ``start``."""
    chosen = [(c, s, d) for c, s, d in timings if start <= s < end]
    return {
        "chars": [c for c, _, _ in chosen],
        "charStartTimesMs": [round((s - start) * 1000) for _, s, _ in chosen],
        "charDurationsMs": [round(d * 1000) for _, _, d in chosen],
    }


def _content_type(fmt: AudioFormat) -> str:
    return {Encoding.PCM16: "audio/pcm", Encoding.MULAW: "audio/basic", Encoding.ALAW: "audio/alaw"}[fmt.encoding]


def _error(status: int, message: str | None = None, *, retry_after: str | None = None) -> web.Response:
    code, default = ERRORS.get(status, ("error", "Error."))
    headers = {"Retry-After": retry_after} if retry_after else None
    body = {"detail": {"status": code, "message": message or default}}
    return web.json_response(body, status=status, headers=headers, dumps=lambda v: orjson.dumps(v).decode())
