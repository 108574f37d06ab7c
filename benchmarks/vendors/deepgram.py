"""A local Deepgram live-transcription server: ``GET /v1/listen`` over WebSocket on 127.0.0.1.

It speaks the wire protocol the official SDK speaks: ``Authorization: Token <key>`` on the
upgrade (a JSON error body, a ``dg-error`` header and 401/400/429/5xx otherwise), the query
parameters, binary audio frames, the ``KeepAlive`` / ``Finalize`` / ``CloseStream`` text
messages, and ``Results`` / ``UtteranceEnd`` / ``Metadata`` messages shaped like Deepgram's,
with times in seconds of the audio received on that socket.

What it "recognizes" is scripted: speech is told from silence by level, and each utterance
(speech up to a final) is transcribed as the next text of the server-wide script, its words
spread over the speech. With ``tone_words`` it recognizes for real, from the audio: every burst
of tone is one word named by its pitch (``"400"``, ``"650"``), so audio that never arrived is
missing from the transcript and audio sent twice is in it twice.

Finals come ``final_latency_ms`` after a ``Finalize`` (``from_finalize: true``), after the
server's own endpointing (``endpointing=<ms>``: ``speech_final: true``) or at ``CloseStream``.
Interims (``interim_results=true``) come every ``interim_every_ms`` of speech.

Faults: ``reject(status)`` refuses the next upgrades, ``drop_after(nbytes)`` aborts the next
socket's TCP connection once that much audio arrived, ``drop()`` aborts every socket now,
``stall_next()`` / ``stop_answering`` read on and send nothing. Sockets idle (no audio, no text) for
``idle_timeout_s`` are closed with 1011, as Deepgram does after 10 s.

    async with FakeDeepgram(transcripts=["Book a table."]) as fake:
        config = DeepgramSttConfig(provider="deepgram", api_key=fake.api_key, base_url=fake.url)
        ...
        await fake.wait_until(lambda: fake.connections and fake.connections[0].finals)
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from aiohttp import WSMsgType, web

from ringline.benchmarks.vendors.server import LoopbackServer
from ringline.engine.audio.formats import Encoding
from ringline.engine.audio.g711 import decode

FAKE_KEY = "dg-fake-key-0123456789abcdef"
_ENCODINGS = {"mulaw": Encoding.MULAW, "alaw": Encoding.ALAW, "linear16": Encoding.PCM16}
_ERRORS = {
    400: ("Bad Request", "Bad Request: failed to process the request's parameters."),
    401: ("INVALID_AUTH", "Invalid credentials."),
    402: ("ASR_PAYMENT_REQUIRED", "Project does not have enough credits."),
    403: ("INSUFFICIENT_PERMISSIONS", "Project does not have access to the requested model."),
    429: ("TOO_MANY_REQUESTS", "Too many requests. Please try again later."),
}
_MODEL_INFO = {"name": "general-nova-3", "version": "2025-01-01.0", "arch": "nova-3"}
_MODEL_UUID = "40bd3654-e622-47c4-a111-63a61b23bb2e"
_WAIT_LIMIT_S = 10.0


@dataclass(frozen=True, slots=True)
class Control:
    """A text message the client sent, and how much audio had arrived before it."""

    type: str
    after_bytes: int


@dataclass(frozen=True, slots=True)
class Rejection:
    status: int
    headers: dict[str, str]
    params: dict[str, str]


@dataclass(eq=False)
class ListenConnection:
    """What one socket received and sent."""

    params: dict[str, str]
    headers: dict[str, str]
    encoding: Encoding
    sample_rate: int
    audio_bytes: int = 0
    audio_messages: int = 0
    audio: bytearray = field(default_factory=bytearray)
    """The audio itself, when the server keeps it (``keep_audio``)."""
    control: list[Control] = field(default_factory=list)
    sent: list[dict[str, Any]] = field(default_factory=list)
    """Every message sent, in order."""
    stalled: bool = False
    """This socket reads on and sends nothing (``stall_next``)."""
    closed: str | None = None
    """None while open; else how it ended: ``"CloseStream"``, ``"client"``, ``"dropped"``,
    ``"idle"`` or ``"server"``."""

    @property
    def results(self) -> list[dict[str, Any]]:
        return [m for m in self.sent if m["type"] == "Results"]

    @property
    def finals(self) -> list[dict[str, Any]]:
        return [m for m in self.results if m["is_final"]]

    @property
    def interims(self) -> list[dict[str, Any]]:
        return [m for m in self.results if not m["is_final"]]

    def controls(self, kind: str) -> list[Control]:
        return [c for c in self.control if c.type == kind]


@dataclass(slots=True)
class _Run:
    """A stretch of loud audio (one word in tone mode), in seconds of connection audio."""

    start: float
    end: float
    crossings: int = 0
    samples: int = 0

    def pitch(self, rate: int) -> int:
        """Dominant frequency from the zero-crossing rate, rounded to 50 Hz."""
        hz = self.crossings * rate / (2 * max(1, self.samples))
        return int(round(hz / 50) * 50)


class _Script:
    """The server-wide queue of texts; an utterance takes the next one when it is finalized."""

    def __init__(self, texts: tuple[str, ...], fallback: str) -> None:
        self.texts = deque(texts)
        self.fallback = fallback

    def peek(self) -> str:
        return self.texts[0] if self.texts else self.fallback

    def pop(self) -> str:
        return self.texts.popleft() if self.texts else self.fallback


class Recognizer:
    """Sans-IO: one socket's audio and control messages in, Deepgram messages (dicts) out.

    Time is seconds of audio received on this socket, as in Deepgram's results."""

    def __init__(
        self,
        params: dict[str, str],
        encoding: Encoding,
        sample_rate: int,
        script: _Script,
        *,
        tone_words: bool = False,
        interim_every_ms: float = 300.0,
        speech_peak: int = 1000,
        word_gap_ms: float = 50.0,
    ) -> None:
        self._encoding = encoding
        self._rate = sample_rate
        self._script = script
        self._tone_words = tone_words
        self._interim_results = params.get("interim_results") == "true"
        self._punctuate = params.get("punctuate") == "true"
        endpointing = params.get("endpointing", "10")  # Deepgram's default: 10 ms
        self._endpointing = None if endpointing == "false" else int(endpointing) / 1000
        utterance_end = params.get("utterance_end_ms")
        self._utterance_end = int(utterance_end) / 1000 if utterance_end else None
        self._interim_every = interim_every_ms / 1000
        self._peak = speech_peak
        self._gap = word_gap_ms / 1000
        self._frame = sample_rate // 100  # 10 ms analysis frames
        self._pending = np.zeros(0, dtype=np.int16)
        self._last_sign = False
        self._odd = b""
        self.samples = 0
        self.request_id = str(uuid.uuid4())
        self._segment_start = 0.0
        """Start of the audio no final has covered yet."""
        self._runs: list[_Run] = []
        self._last_interim = 0.0
        self._last_word_end: float | None = None
        """End of the last final's last word, until its UtteranceEnd is sent."""

    @property
    def now(self) -> float:
        return self.samples / self._rate

    def feed(self, audio: bytes) -> list[dict[str, Any]]:
        if self._encoding is Encoding.PCM16:
            audio, self._odd = self._odd + audio, b""
            if len(audio) & 1:
                audio, self._odd = audio[:-1], audio[-1:]
        pcm = np.frombuffer(decode(audio, self._encoding), dtype=np.int16)
        if self._pending.size:
            pcm = np.concatenate((self._pending, pcm))
        whole = pcm.size // self._frame * self._frame
        self._pending = pcm[whole:].copy()
        out: list[dict[str, Any]] = []
        if not whole:
            return out
        frames = pcm[:whole].reshape(-1, self._frame).astype(np.int32)
        peaks = np.abs(frames).max(axis=1)
        signs = np.signbit(pcm[:whole])
        flips = np.empty(whole, dtype=bool)  # flips[i]: the sign changed from the sample before i
        flips[0] = signs[0] != self._last_sign
        np.not_equal(signs[1:], signs[:-1], out=flips[1:])
        self._last_sign = bool(signs[-1])
        crossings = flips.reshape(-1, self._frame).sum(axis=1)
        for peak, crossing in zip(peaks.tolist(), crossings.tolist(), strict=True):
            start = self.now
            self.samples += self._frame
            if peak > self._peak:
                self._loud(start, int(crossing))
            out += self._after_frame()
        return out

    def _loud(self, start: float, crossings: int) -> None:
        runs = self._runs
        if runs and start - runs[-1].end < self._gap:
            run = runs[-1]
        else:
            run = _Run(start, start)
            runs.append(run)
            self._last_word_end = None  # speech again: no UtteranceEnd for the last words
        run.end = self.now
        run.crossings += crossings
        run.samples += self._frame

    def _after_frame(self) -> list[dict[str, Any]]:
        now, runs = self.now, self._runs
        if not runs:
            last = self._last_word_end
            if self._utterance_end is not None and last is not None and now - last >= self._utterance_end:
                self._last_word_end = None
                return [{"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": round(last, 3)}]
            return []
        quiet = now - runs[-1].end
        if self._endpointing is not None and quiet >= max(self._endpointing, self._gap):
            return [self._final(speech_final=True, from_finalize=False)]
        every = self._interim_every
        if self._interim_results and quiet == 0 and min(now - self._last_interim, now - runs[0].start) >= every:
            self._last_interim = now
            return [self._result(self._words(final=False), is_final=False)]
        return []

    def finalize(self) -> dict[str, Any]:
        return self._final(speech_final=False, from_finalize=True)

    def close(self) -> list[dict[str, Any]]:
        """CloseStream: the last final (if any speech is pending), then Metadata."""
        out = [self._final(speech_final=True, from_finalize=False)] if self._runs else []
        created = datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z")
        out.append(
            {
                "type": "Metadata",
                "transaction_key": "deprecated",
                "request_id": self.request_id,
                "sha256": hashlib.sha256(self.request_id.encode()).hexdigest(),
                "created": created,
                "duration": round(self.now, 3),
                "channels": 1,
                "models": [_MODEL_UUID],
                "model_info": {_MODEL_UUID: _MODEL_INFO},
            }
        )
        return out

    def _words(self, *, final: bool) -> list[tuple[str, float, float]]:
        runs = self._runs
        if not runs:
            return []
        if self._tone_words:
            return [(str(r.pitch(self._rate)), r.start, r.end) for r in runs]
        text = self._script.pop() if final else self._script.peek()
        tokens = text.split()
        if not final:
            tokens = tokens[: max(1, len(tokens) // 2)]
        start, end = runs[0].start, (runs[-1].end if final else self.now)
        step = (end - start) / max(1, len(tokens))
        return [(t, start + i * step, start + (i + 1) * step) for i, t in enumerate(tokens)]

    def _final(self, *, speech_final: bool, from_finalize: bool) -> dict[str, Any]:
        words = self._words(final=True)
        message = self._result(words, is_final=True, speech_final=speech_final, from_finalize=from_finalize)
        self._segment_start = self.now
        self._runs = []
        self._last_interim = self.now
        if words:
            self._last_word_end = words[-1][2]
        return message

    def _result(
        self,
        words: list[tuple[str, float, float]],
        *,
        is_final: bool,
        speech_final: bool = False,
        from_finalize: bool = False,
    ) -> dict[str, Any]:
        items = []
        for token, start, end in words:
            plain = token.strip(".,?!;:").lower()
            items.append(
                {
                    "word": plain,
                    "start": round(start, 3),
                    "end": round(end, 3),
                    "confidence": 0.99,
                    "punctuated_word": token if self._punctuate else plain,
                }
            )
        transcript = " ".join(w["punctuated_word"] for w in items)
        return {
            "type": "Results",
            "channel_index": [0, 1],
            "duration": round(self.now - self._segment_start, 3),
            "start": round(self._segment_start, 3),
            "is_final": is_final,
            "speech_final": speech_final,
            "from_finalize": from_finalize,
            "channel": {
                "alternatives": [{"transcript": transcript, "confidence": 0.99 if items else 0.0, "words": items}]
            },
            "metadata": {"request_id": self.request_id, "model_info": _MODEL_INFO, "model_uuid": _MODEL_UUID},
        }


def _message_type(text: str) -> str:
    """The ``type`` of a client text message, or ``"?"`` when it has none (or is not JSON)."""
    try:
        message = orjson.loads(text)
    except orjson.JSONDecodeError:
        return "?"
    return str(message.get("type", "?")) if isinstance(message, dict) else "?"


class _IdleTimer:
    """``ws.receive(timeout=...)`` without a timer per message (that costs a fifth of the fake's
    CPU at 100 sockets): one task sleeps until the last message plus ``seconds`` and, if the
    handler is still waiting then, cancels its wait, which ``receive`` turns into ``TimeoutError``."""

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._loop = asyncio.get_running_loop()
        self._last = self._loop.time()
        self._handler = asyncio.current_task()
        self._waiting = False
        self._expired = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="fake-deepgram-idle")

    async def receive(self, ws: web.WebSocketResponse) -> Any:
        self._waiting = True
        try:
            return await ws.receive()
        except asyncio.CancelledError:
            assert self._handler is not None
            if self._expired and self._handler.uncancel() == 0:
                raise TimeoutError from None
            raise
        finally:
            self._waiting = False
            self._last = self._loop.time()

    async def _run(self) -> None:
        while True:
            left = self._last + self._seconds - self._loop.time()
            if left > 0:
                await asyncio.sleep(left)
            elif self._waiting and self._handler is not None:
                self._expired = True
                self._handler.cancel()
                return
            else:  # busy between messages (not an idle socket): look again later
                await asyncio.sleep(self._seconds)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


_CLOSE = object()
"""Writer queue sentinel: close the socket (after CloseStream's last messages)."""


class FakeDeepgram(LoopbackServer):
    """The server. ``async with`` it, or ``await start()`` / ``await close()``. ``url`` is the
    WebSocket origin to configure as ``base_url`` (the SDK appends ``/v1/listen``)."""

    URL_TEMPLATE = "ws://127.0.0.1:{port}"
    SHUTDOWN_TIMEOUT_S = 1.0

    def __init__(
        self,
        *,
        api_key: str = FAKE_KEY,
        transcripts: tuple[str, ...] | list[str] = (),
        fallback: str = "Tell me more.",
        final_latency_ms: float = 0.0,
        interim_every_ms: float = 300.0,
        tone_words: bool = False,
        idle_timeout_s: float = 10.0,
        keep_audio: bool = False,
    ) -> None:
        super().__init__()
        self.api_key = api_key
        self.script = _Script(tuple(transcripts), fallback)
        self.final_latency_ms = final_latency_ms
        self.interim_every_ms = interim_every_ms
        self.tone_words = tone_words
        self.idle_timeout_s = idle_timeout_s
        self.keep_audio = keep_audio
        self.stop_answering = False
        """Read on, send nothing, ignore CloseStream (a hung server)."""
        self.connections: list[ListenConnection] = []
        self.rejected: list[Rejection] = []
        self._reject: deque[int] = deque()
        self._drop_after: deque[int] = deque()
        self._stall = 0
        self._live: dict[ListenConnection, web.Request] = {}
        self._waiters: list[asyncio.Future[None]] = []

    # -- lifecycle --------------------------------------------------------------------------

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/v1/listen", self._listen)

    async def close(self) -> None:
        """Drop every open socket (no close frame: like a server going away), then stop."""
        for request in list(self._live.values()):
            if request.transport is not None:
                request.transport.abort()
        await super().close()

    # -- faults -----------------------------------------------------------------------------

    def reject(self, status: int, times: int = 1) -> None:
        """Refuse the next ``times`` upgrades with ``status`` (even with the right key)."""
        self._reject.extend([status] * times)

    def drop_after(self, nbytes: int) -> None:
        """Abort the next socket's TCP connection (no close frame) once ``nbytes`` of audio arrived."""
        self._drop_after.append(nbytes)

    def stall_next(self, times: int = 1) -> None:
        """The next ``times`` sockets read on and never send anything (nor honour CloseStream)."""
        self._stall += times

    def pause_reading(self, paused: bool = True) -> None:
        """Stop (or resume) reading every open socket: the client's writes back up in the TCP
        buffers, then in its own."""
        for request in self._live.values():
            if request.transport is not None:
                if paused:
                    request.transport.pause_reading()
                else:
                    request.transport.resume_reading()

    def drop(self) -> None:
        """Abort every open socket's TCP connection now."""
        for conn, request in list(self._live.items()):
            conn.closed = "dropped"
            if request.transport is not None:
                request.transport.abort()

    # -- observation ------------------------------------------------------------------------

    async def wait_until(self, predicate: Callable[[], object]) -> None:
        """Return once ``predicate()`` is true; it is checked whenever the server's state changes.
        Raises ``TimeoutError`` after ``_WAIT_LIMIT_S``."""
        async with asyncio.timeout(_WAIT_LIMIT_S):
            while not predicate():
                waiter = asyncio.get_running_loop().create_future()
                self._waiters.append(waiter)
                await waiter

    def _notify(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    # -- the endpoint -----------------------------------------------------------------------

    def _error(self, request: web.Request, status: int, message: str | None = None) -> web.Response:
        code, default = _ERRORS.get(status, ("INTERNAL_SERVER_ERROR", "Internal server error."))
        request_id = str(uuid.uuid4())
        body = {"err_code": code, "err_msg": message or default, "request_id": request_id}
        self.rejected.append(Rejection(status, dict(request.headers), dict(request.query)))
        headers = {"dg-error": body["err_msg"], "dg-request-id": request_id}
        return web.json_response(body, status=status, headers=headers)

    async def _listen(self, request: web.Request) -> web.StreamResponse:
        params = dict(request.query)
        if request.headers.get("Authorization") != f"Token {self.api_key}":
            response = self._error(request, 401)
        elif self._reject:
            response = self._error(request, self._reject.popleft())
        elif (encoding := params.get("encoding")) is not None and encoding not in _ENCODINGS:
            response = self._error(request, 400, f"Bad Request: unsupported encoding {encoding!r}.")
        elif encoding is not None and not params.get("sample_rate", "").isdigit():
            response = self._error(request, 400, "Bad Request: sample_rate is required with encoding.")
        else:
            return await self._serve(request, params)
        self._notify()
        return response

    async def _serve(self, request: web.Request, params: dict[str, str]) -> web.WebSocketResponse:
        encoding = _ENCODINGS[params.get("encoding", "linear16")]
        rate = int(params.get("sample_rate", "16000"))
        conn = ListenConnection(params, dict(request.headers), encoding, rate)
        if self._stall:
            self._stall -= 1
            conn.stalled = True
        hung = conn.stalled or self.stop_answering
        ws = web.WebSocketResponse(compress=False, max_msg_size=4 * 1024 * 1024, autoclose=not hung)
        await ws.prepare(request)
        recognizer = Recognizer(
            params,
            encoding,
            rate,
            self.script,
            tone_words=self.tone_words,
            interim_every_ms=self.interim_every_ms,
        )
        drop_after = self._drop_after.popleft() if self._drop_after else None
        self.connections.append(conn)
        self._live[conn] = request
        outbox: asyncio.Queue[tuple[float, Any]] = asyncio.Queue()
        writer = asyncio.create_task(self._write(ws, conn, outbox), name="fake-deepgram-writer")
        loop = asyncio.get_running_loop()

        def emit(messages: list[dict[str, Any]], latency_ms: float = 0.0) -> None:
            for message in messages:
                outbox.put_nowait((loop.time() + latency_ms / 1000, message))

        idle = _IdleTimer(self.idle_timeout_s)
        idle.start()
        self._notify()
        try:
            while True:
                try:
                    msg = await idle.receive(ws)
                except TimeoutError:
                    conn.closed = "idle"
                    reason = b"Deepgram did not receive audio data or a text message within the timeout window."
                    await ws.close(code=1011, message=reason)
                    break
                if msg.type is WSMsgType.BINARY:
                    conn.audio_bytes += len(msg.data)
                    conn.audio_messages += 1
                    if self.keep_audio:
                        conn.audio += msg.data
                    if drop_after is not None and conn.audio_bytes >= drop_after:
                        conn.closed = "dropped"
                        assert request.transport is not None
                        request.transport.abort()
                        break
                    if conn.stalled or self.stop_answering:
                        continue  # a hung server: it does not use up the script either
                    for message in recognizer.feed(msg.data):
                        final = message["type"] == "Results" and message["is_final"]
                        emit([message], self.final_latency_ms if final else 0.0)
                elif msg.type is WSMsgType.TEXT:
                    kind = _message_type(msg.data)
                    conn.control.append(Control(kind, conn.audio_bytes))
                    if conn.stalled or self.stop_answering:
                        pass
                    elif kind not in ("KeepAlive", "Finalize", "CloseStream"):
                        description = "Received a text message the server could not parse."
                        emit(
                            [
                                {
                                    "type": "Error",
                                    "variant": "SchemaError",
                                    "description": description,
                                    "message": msg.data,
                                }
                            ]
                        )
                    elif kind == "Finalize":
                        emit([recognizer.finalize()], self.final_latency_ms)
                    elif kind == "CloseStream":
                        conn.closed = "CloseStream"
                        emit(recognizer.close(), self.final_latency_ms)
                        outbox.put_nowait((loop.time(), _CLOSE))
                else:  # CLOSE, CLOSING, CLOSED, ERROR
                    if msg.type is WSMsgType.CLOSE and hung:
                        # A hung server does not answer the close frame: wait until the client
                        # aborts the connection (aiohttp then cancels this handler).
                        await asyncio.Event().wait()
                    conn.closed = conn.closed or "client"
                    break
                self._notify()
        finally:
            del self._live[conn]
            conn.closed = conn.closed or "client"
            writer.cancel()
            self._notify()
            await asyncio.gather(writer, idle.stop(), return_exceptions=True)
        return ws

    async def _write(self, ws: web.WebSocketResponse, conn: ListenConnection, outbox: asyncio.Queue) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due, message = await outbox.get()
            if self.stop_answering or conn.stalled:
                continue
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if message is _CLOSE:
                await ws.close()
                return
            await ws.send_str(orjson.dumps(message).decode())
            conn.sent.append(message)
            self._notify()
