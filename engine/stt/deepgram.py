"""Deepgram live transcription (``/v1/listen`` over WebSocket) through the official ``deepgram-sdk``.

The call's native audio goes out as is (``mulaw``/``alaw`` 8 kHz, ``linear16`` at any rate).

One task per session, started in ``open``: the supervisor holds the connection (the SDK's
``connect`` context), reads its results, and reconnects. Beside it, a timer on the clock (the
*watch*: KeepAlive when no audio went out for ``keepalive_s``; abort when a Finalize goes
unanswered; due at the next of those deadlines) and, only while the socket's send buffer is over
its high-water mark, a drain task. ``aclose`` sends CloseStream, waits a bounded time for the
server to finish, then aborts and cancels. (So a call holds one task of ours beside the
``websockets`` connection's three: each task, with its coroutine and futures, is work for every
full garbage collection.)

``send`` is on the call's 20 ms frame path and never waits: it appends the frame to two deques and,
once a chunk (``chunk_ms``) has gathered, writes it to the socket's transport as one frame
(``wsframe``) if the socket is open and its send buffer under its high-water mark; else it stays
queued: a reconnect writes it, a full buffer starts the drain task. The *outbox* is what is
still to be written to the current socket (audio frames and control markers, in order). The *replay
buffer* is the audio no final result has covered yet (at most ``_REPLAY_LIMIT_S``): each final's
``start + duration`` acknowledges the audio before it. When the socket drops, the supervisor
reconnects, replays the buffer (re-sending a Finalize still unanswered at its place), and shifts
the new connection's word times by where the replay starts, so times keep increasing and no word is
lost. When reconnecting fails for ``give_up_after_s``, or the server refuses the key, the
transcript iterator raises ``ProviderError(retryable=False)``.

The parts without I/O (query parameters, outbox packing, the replay buffer, reading results) are
in ``deepgram_protocol``. The SDK client comes from the process's shared ``HttpClients`` (one per
base URL and key; ``sdk_client``): it holds no connection, each session's socket is its own.

The API key goes only into the SDK's ``Authorization`` header: the SDK masks it in the
``websockets`` debug log and in its errors, and the errors raised here are built from status
codes, never from the SDK's exception text.

SDK notes (deepgram-sdk 7.17): ``AsyncDeepgramClient`` builds an ``httpx.AsyncClient`` unless
given one (see ``_NoHttp``); every connect spends ~2.5 ms of CPU in the SDK's ``get_headers``
(``importlib.metadata.version``); the socket is the deprecated ``websockets.legacy`` client, whose
import warns, which offers permessage-deflate and, for ``wss://``, makes a fresh TLS context per
connection (~40-60 ms of CPU here), with no way through the SDK to pass one; and the SDK has no
abort, so a server that stops answering is cut off at the transport of the socket it wraps.
Messages go through that wrapped ``websockets`` connection too (``_connection``): the SDK's
iterator builds a model per result by trying each type of a union, and its control ``send_*``
build and dump a pydantic model each; reading the JSON here cut the adapter's CPU per call by
about a quarter at 100 calls (measured), for the same bytes on the wire. Writing frames to its
transport directly, and the watch sleeping until its deadlines instead of ticking every 250 ms,
cut the CPU of streaming 100 calls' audio from 11-12 % of a core to 7 % (measured).
Frames written so are never compressed: valid whether or not permessage-deflate was negotiated
(a message with RSV1 clear is uncompressed, RFC 7692).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import warnings
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from ringline.config.providers import DeepgramSttConfig
from ringline.engine.audio.clock import Clock, Timer
from ringline.engine.audio.formats import AudioFormat, Encoding
from ringline.engine.clients import HttpClients
from ringline.engine.errors import ProviderError, parse_retry_after
from ringline.engine.stt.base import Transcript
from ringline.engine.stt.deepgram_protocol import (
    ReplayBuffer,
    Send,
    next_message,
    parse_message,
    query_params,
    read_results,
)
from ringline.engine.wsframe import OP_BINARY, OP_TEXT, client_frame

with warnings.catch_warnings():
    # The SDK imports ``websockets.legacy`` and the legacy ``InvalidStatusCode``: both warn.
    warnings.simplefilter("ignore", DeprecationWarning)
    import httpx
    from deepgram import AsyncDeepgramClient
    from deepgram.core.api_error import ApiError
    from deepgram.environment import DeepgramClientEnvironment
    from deepgram.listen.client import AsyncListenClient  # noqa: F401  (the SDK imports it lazily: warn here)
    from deepgram.listen.v1.client import AsyncV1Client  # noqa: F401
    from deepgram.listen.v1.socket_client import AsyncV1SocketClient
    from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
    from websockets.legacy.protocol import WebSocketCommonProtocol
    from websockets.protocol import State

log = logging.getLogger(__name__)

_OPEN_TIMEOUT_S = 5.0
"""The first connection (in ``open``): longer than a reconnect, a call can wait for it."""
_CLOSE_TIMEOUT_S = 2.0
"""After CloseStream: how long the server may take to send its last results and close."""
_REPLAY_LIMIT_S = 30.0
"""Audio kept for replay when no final covers it; older audio is dropped (and so are its words)."""
_MAX_MESSAGE_S = 0.5
"""Queued audio (a replay, a slow socket) goes out in messages of at most this much."""
_RETRY_DELAYS_S = (0.0, 0.1, 0.25, 0.5)
"""Pauses before successive reconnect attempts (the last repeats)."""
_STABLE_S = 2.0
"""A connection that lasted this long worked: its drop starts a new count toward giving up."""
_RETRYABLE = (OSError, TimeoutError, ConnectionClosed, InvalidHandshake)


class SessionState(enum.Enum):
    CONNECTING = "connecting"
    OPEN = "open"
    RECONNECTING = "reconnecting"
    CLOSING = "closing"
    CLOSED = "closed"
    FAILED = "failed"


class _NoHttp(httpx.AsyncBaseTransport):
    """The SDK insists on an HTTP client, which listening never uses. The default one costs ~150 ms
    (httpcore import, a TLS context) on the event loop; one on this transport, ~50 us."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        raise ProviderError("the Deepgram STT adapter makes no HTTP requests")


def _error_for(exc: BaseException, key: str) -> ProviderError:
    """A ProviderError for a failed connect, its message free of the key."""
    if isinstance(exc, ApiError):
        status = exc.status_code or 0
        response = getattr(exc.__context__, "headers", None)  # the refused handshake's response headers
        detail = response.get("dg-error", "") if response is not None else ""
        retry_after = parse_retry_after(response.get("retry-after")) if response is not None else None
        suffix = f": {detail.replace(key, '[REDACTED]') if key else detail}" if detail else ""
        if status == 401:
            message = f"Deepgram rejected the API key (HTTP 401){suffix}"
        elif status == 403:
            message = f"Deepgram refused access to this model or feature (HTTP 403){suffix}"
        elif status == 400:
            message = f"Deepgram rejected the request parameters (HTTP 400){suffix}"
        elif status == 429:
            message = f"Deepgram is rate limiting (HTTP 429){suffix}"
        else:
            message = f"Deepgram answered HTTP {status} to the connect{suffix}"
        retryable = status in (408, 429) or status >= 500
        return ProviderError(message, retryable=retryable, retry_after=retry_after if retryable else None)
    if isinstance(exc, TimeoutError):
        return ProviderError("Deepgram did not accept the connection in time", retryable=True)
    if isinstance(exc, InvalidURI):
        return ProviderError("Deepgram base_url is not a WebSocket URL", retryable=False)
    return ProviderError(f"Deepgram connection failed ({type(exc).__name__})", retryable=True)


def _writable(ws: WebSocketCommonProtocol) -> bool:
    """Open, and its transport too (an aborted transport is closed before websockets notices)."""
    return ws.state is State.OPEN and not ws.transport.is_closing()


def _connection(socket: AsyncV1SocketClient) -> WebSocketCommonProtocol:
    """The ``websockets`` connection the SDK's socket wraps (the SDK made it: URL, key header,
    handshake). Audio, control messages and results go through it directly: the SDK's own
    ``send_*`` build and dump a pydantic model per control message, and its iterator builds a
    model per result by trying each type of a union (~60 % of the CPU of reading results); the
    bytes on the wire are the same."""
    return socket._websocket


class DeepgramStt:
    """Opens one streaming session per call. ``give_up_after_s``: how long reconnecting may keep
    failing before the transcripts end in an error; ``answer_timeout_s``: a Finalize with no
    message back for this long means the socket is dead (it is dropped and reconnected).
    ``clients``: the process's shared clients (one SDK client per base URL and key); without,
    each session makes its own and closes it."""

    def __init__(
        self,
        config: DeepgramSttConfig,
        clock: Clock,
        *,
        clients: HttpClients | None = None,
        give_up_after_s: float = 5.0,
        answer_timeout_s: float = 3.0,
    ) -> None:
        self._config = config
        self._clock = clock
        self._clients = clients
        self._give_up_after_s = give_up_after_s
        self._answer_timeout_s = answer_timeout_s

    async def open(self, offered: AudioFormat) -> DeepgramSttSession:
        """Connect (raising ``ProviderError`` if Deepgram refuses) and start streaming."""
        fmt = offered if offered.channels == 1 else AudioFormat(Encoding.PCM16, offered.sample_rate)
        own = HttpClients() if self._clients is None else None
        client = sdk_client(self._config, self._clients if own is None else own)
        session = DeepgramSttSession(
            self._config, self._clock, fmt, client, self._give_up_after_s, self._answer_timeout_s, own
        )
        try:
            await session.start()
        except BaseException:
            if own is not None:
                await own.aclose()
            raise
        return session


def sdk_client(config: DeepgramSttConfig, clients: HttpClients) -> AsyncDeepgramClient:
    """The SDK client for this base URL and key, shared through ``clients``. It holds no
    connection of its own (each session's socket is its own), so one serves every call."""
    key = config.api_key.get_secret_value()

    def make() -> tuple[AsyncDeepgramClient, Callable[[], Awaitable[None]]]:
        base = config.base_url.rstrip("/")
        http = base.replace("ws", "http", 1)
        environment = DeepgramClientEnvironment(base=http, production=base, agent=base, agent_rest=http)
        httpx_client = httpx.AsyncClient(transport=_NoHttp(), trust_env=False)
        client = AsyncDeepgramClient(api_key=key, environment=environment, httpx_client=httpx_client)
        return client, httpx_client.aclose

    return clients.get(("deepgram", config.base_url, key), make)


async def warm_up(config: DeepgramSttConfig, clients: HttpClients) -> None:
    """Make the shared SDK client at start-up. Sends nothing."""
    sdk_client(config, clients)


class DeepgramSttSession:
    """One call's stream. Create with ``DeepgramStt.open``."""

    def __init__(
        self,
        config: DeepgramSttConfig,
        clock: Clock,
        fmt: AudioFormat,
        client: AsyncDeepgramClient,
        give_up_after_s: float,
        answer_timeout_s: float,
        own_clients: HttpClients | None = None,
    ) -> None:
        self.format = fmt
        self._own_clients = own_clients
        """A private ``HttpClients`` (no shared one was given): closed with the session."""
        self._config = config
        self._clock = clock
        self._client = client
        self._params = query_params(config, fmt)
        self._key = config.api_key.get_secret_value()
        self._give_up_after_s = give_up_after_s
        self._answer_timeout_s = answer_timeout_s
        self._bytes_per_s = fmt.bytes_per_second
        self._align = fmt.encoding.sample_width * fmt.channels
        self._max_message = fmt.bytes_for(int(_MAX_MESSAGE_S * 1000))
        self.state = SessionState.CONNECTING
        self._replay = ReplayBuffer(fmt.bytes_for(int(_REPLAY_LIMIT_S * 1000)))
        self._finalize_at: int | None = None
        """Session byte offset of the latest ``finalize`` whose final has not come back."""
        self._origin = 0
        """Session byte offset where the current connection's audio (its time 0) starts."""
        self._outbox: deque[bytes | Send] = deque()
        self._speech_chunk = fmt.bytes_for(config.chunk_ms)
        self._quiet_chunk = fmt.bytes_for(config.quiet_chunk_ms)
        self._chunk = self._quiet_chunk
        """Audio gathers to this much before it is written: ``chunk_ms`` in speech, ``quiet_chunk_ms`` between."""
        self._held = 0
        """Audio bytes queued since the outbox was last written: it is written once a chunk has gathered."""
        self._drainer: asyncio.Task[None] | None = None
        """Writes the outbox while the socket's send buffer drains (``_drain``); None when not needed."""
        self._watch_timer: Timer | None = None
        """The watch's next run (``_watch``), while a connection is served."""
        self._last_sent_at = clock.now()
        """Clock time audio (or a KeepAlive) last went out."""
        self._finalize_sent_at: float | None = None
        self._last_heard_at = clock.now()
        self._socket: AsyncV1SocketClient | None = None
        self._ws: WebSocketCommonProtocol | None = None
        """The current connection's ``websockets`` connection (``_connection``), while it is served."""
        self._transcripts: asyncio.Queue[Transcript | ProviderError | None] = asyncio.Queue()
        self._opened: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self.connections = 0
        """Connections made so far (1 + reconnects)."""

    def _set_state(self, new: SessionState) -> None:
        log.info("deepgram session %s -> %s", self.state.value, new.value)
        self.state = new

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the supervisor and wait for the first connection (its failure is raised here)."""
        self._opened = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._supervise(), name="deepgram-stt")
        try:
            await self._opened
        except BaseException:
            await self._stop_task()
            raise

    async def aclose(self) -> None:
        """CloseStream, wait (bounded) for the server's last results and close, then stop."""
        if self.state in (SessionState.CLOSING, SessionState.CLOSED):
            return
        was_open = self.state is SessionState.OPEN
        if self.state is not SessionState.FAILED:
            self._set_state(SessionState.CLOSING)
        task = self._task
        if was_open and task is not None:
            self._outbox.append(Send.CLOSE_STREAM)
            self._flush()
            await asyncio.wait([task], timeout=_CLOSE_TIMEOUT_S)
            if not task.done():
                log.warning("deepgram did not close within %.1f s of CloseStream: aborting", _CLOSE_TIMEOUT_S)
        await self._stop_task()
        if self._own_clients is not None:
            await self._own_clients.aclose()
        self._set_state(SessionState.CLOSED)
        self._transcripts.put_nowait(None)

    async def _stop_task(self) -> None:
        task = self._task
        if task is None:
            return
        if not task.done():
            self._abort()
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    def _abort(self) -> None:
        """Drop the TCP connection at once. The SDK has no abort: reach for its socket's transport."""
        websocket = getattr(self._socket, "_websocket", None)
        transport = getattr(websocket, "transport", None)
        if transport is not None:
            transport.abort()

    # -- the frame path -----------------------------------------------------------------------

    async def send(self, audio: bytes) -> None:
        if self.state is SessionState.OPEN or self.state is SessionState.RECONNECTING:
            if self._replay.append(audio):
                log.warning("deepgram: no final for %.0f s of audio; replay keeps only the latest", _REPLAY_LIMIT_S)
            self._outbox.append(audio)
            self._held += len(audio)
            if self._held >= self._chunk:
                self._flush()

    def speech(self, active: bool) -> None:
        if active:
            self._chunk = self._speech_chunk
            if self._held:
                self._flush()  # the onset, held while it sounded like nothing yet
        else:
            self._chunk = self._quiet_chunk

    async def finalize(self) -> None:
        if self.state is SessionState.OPEN or self.state is SessionState.RECONNECTING:
            self._finalize_at = self._replay.total
            self._outbox.append(Send.FINALIZE)
            self._flush()

    def _flush(self) -> None:
        """Write the outbox now if the socket takes it without waiting. Else it waits: for the
        drain task if the send buffer is full; for the next connection (which writes it first) if
        there is no open socket."""
        ws = self._ws
        if ws is None or not _writable(ws) or self._write(ws):
            return
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain(ws), name="deepgram-drain")

    async def _drain(self, ws: WebSocketCommonProtocol) -> None:
        """Write the outbox as the socket's send buffer drains, until it is empty. A socket that
        closes meanwhile ends it: the supervisor reconnects and replays."""
        try:
            while _writable(ws) and not self._write(ws):
                await ws.drain()  # over the high-water mark, writing is paused: until it resumes
        except (ConnectionClosed, ConnectionError):
            pass
        except Exception:  # a bug: the task boundary; the socket is dropped and reconnected
            log.exception("deepgram: writing failed")
            self._abort()

    def _write(self, ws: WebSocketCommonProtocol) -> bool:
        """Write queued messages to an open socket until its send buffer is over its high-water mark
        (no waiting: called from the frame path too); True when the outbox is empty. Audio and
        control messages leave in outbox order, one frame each (``wsframe``: websockets' own send
        would add a task wake, four coroutines and a system call per message)."""
        outbox, transport = self._outbox, ws.transport
        _, high = transport.get_write_buffer_limits()
        self._held = 0
        while outbox:
            if transport.get_write_buffer_size() > high:
                return False
            item = next_message(outbox, self._max_message)
            if isinstance(item, bytes):
                transport.write(client_frame(OP_BINARY, item))
                self._last_sent_at = self._clock.now()
            else:
                transport.write(client_frame(OP_TEXT, item.text.encode()))
                if item is Send.FINALIZE and self._finalize_sent_at is None:
                    self._finalize_sent_at = now = self._clock.now()
                    self._arm_watch(now + self._answer_timeout_s)
        return True

    async def __aiter__(self) -> AsyncIterator[Transcript]:
        while (item := await self._transcripts.get()) is not None:
            if isinstance(item, ProviderError):
                raise item
            yield item

    # -- connection ---------------------------------------------------------------------------

    async def _supervise(self) -> None:
        """Connect, serve, and reconnect when the socket drops, until closed or given up."""
        opened, clock = self._opened, self._clock
        assert opened is not None
        failing_since: float | None = None
        """When the current run of failed or short-lived connections began."""
        attempt = 0
        while True:
            first = not opened.done()
            connected_at: float | None = None
            try:
                async with contextlib.AsyncExitStack() as stack:
                    async with asyncio.timeout(_OPEN_TIMEOUT_S if first else self._config.reconnect_within_s):
                        socket = await stack.enter_async_context(self._client.listen.v1.connect(**self._params))
                    connected_at = clock.now()
                    self._connected(socket)
                    if first:
                        opened.set_result(None)
                    try:
                        await self._serve(socket)
                    finally:
                        self._socket = self._ws = None
                if self.state is SessionState.CLOSING:
                    return
                error = ProviderError("Deepgram closed the socket", retryable=True)
            except (ApiError, InvalidURI, *_RETRYABLE) as exc:
                if self.state is SessionState.CLOSING:
                    return
                error = _error_for(exc, self._key)
                if not opened.done():
                    self._set_state(SessionState.FAILED)
                    opened.set_exception(error)
                    return
            except Exception:  # a bug, here or in the SDK: the task boundary
                log.exception("deepgram session failed")
                error = ProviderError("Deepgram session failed unexpectedly", retryable=False)
                if not opened.done():
                    self._set_state(SessionState.FAILED)
                    opened.set_exception(error)
                else:
                    self._fail(error, 0.0)
                return
            now = clock.now()
            if connected_at is not None and now - connected_at >= _STABLE_S:
                failing_since, attempt = None, 0  # it worked for a while: a fresh failure
            failing_since = now if failing_since is None else failing_since
            if not error.retryable or now - failing_since >= self._give_up_after_s:
                self._fail(error, now - failing_since)
                return
            log.warning("deepgram: %s; reconnecting", error)
            if self.state is SessionState.OPEN:
                self._set_state(SessionState.RECONNECTING)
            delay = _RETRY_DELAYS_S[min(attempt, len(_RETRY_DELAYS_S) - 1)]
            attempt += 1
            if delay:
                await clock.sleep_until(now + delay)

    def _fail(self, error: ProviderError, failing_for: float) -> None:
        if error.retryable:
            error = ProviderError(f"{error} (reconnecting failed for {failing_for:.1f} s)", retryable=False)
        log.error("deepgram: giving up: %s", error)
        self._set_state(SessionState.FAILED)
        self._transcripts.put_nowait(error)

    def _connected(self, socket: AsyncV1SocketClient) -> None:
        """A (re)connection: its time 0 is the first unacknowledged byte; queue the replay."""
        self._socket = socket
        self._ws = _connection(socket)
        self.connections += 1
        self._origin = start = self._replay.acked
        self._outbox = self._replay.replay(self._finalize_at)
        if self.connections > 1:
            replayed = (self._replay.total - start) / self._bytes_per_s
            log.info("deepgram reconnected: replaying %.2f s of audio", replayed)
        self._finalize_sent_at = None
        self._last_heard_at = self._last_sent_at = self._clock.now()
        if self.state is not SessionState.OPEN:
            self._set_state(SessionState.OPEN)

    async def _serve(self, socket: AsyncV1SocketClient) -> None:
        """Serve one connection until the socket ends: start the watch, write what is queued (the
        replay: a Finalize in it brings the watch forward), and read the results in this task."""
        ws = _connection(socket)
        self._watch()
        self._flush()
        try:
            await self._receive(ws)
        finally:
            if self._watch_timer is not None:
                self._watch_timer.cancel()
                self._watch_timer = None
            if self._drainer is not None:
                self._drainer.cancel()  # it ends at once; its socket is gone
                self._drainer = None

    def _arm_watch(self, deadline: float) -> None:
        """Run the watch at ``deadline`` unless it is due sooner already."""
        timer = self._watch_timer
        if timer is None or deadline < timer.when():
            if timer is not None:
                timer.cancel()
            self._watch_timer = self._clock.call_at(deadline, self._watch)

    def _watch(self) -> None:
        """KeepAlive when no audio went out for ``keepalive_s``; abort when a Finalize goes
        unanswered. Runs on the clock at the next of those deadlines (a Finalize sent meanwhile
        brings it forward): one run per ``keepalive_s`` while audio flows."""
        if self._watch_timer is not None:
            self._watch_timer.cancel()  # its own timer (done), or the one it replaces
            self._watch_timer = None
        now, keepalive = self._clock.now(), self._config.keepalive_s
        if now - self._last_sent_at >= keepalive:
            self._last_sent_at = now
            self._outbox.append(Send.KEEPALIVE)
            self._flush()
        deadline = self._last_sent_at + keepalive
        asked = self._finalize_sent_at
        if asked is not None and self._last_heard_at < asked:
            if now - asked >= self._answer_timeout_s:
                log.warning("deepgram sent nothing for %.1f s after Finalize: reconnecting", now - asked)
                self._abort()
                return
            deadline = min(deadline, asked + self._answer_timeout_s)
        self._arm_watch(deadline)

    async def _receive(self, ws: WebSocketCommonProtocol) -> None:
        async for raw in ws:
            self._last_heard_at = self._clock.now()
            if isinstance(raw, bytes):
                continue
            message = parse_message(raw)
            if message is None:
                log.warning("deepgram: skipping a message that is not a JSON object")
            elif (kind := message.get("type")) == "Results":
                self._on_results(message)
            elif kind == "Error":
                log.warning("deepgram error: %s: %s", message.get("variant"), message.get("description"))

    def _on_results(self, result: dict[str, Any]) -> None:
        transcript, covered = read_results(result, self._origin, self._bytes_per_s)
        if covered is not None:
            self._replay.ack(covered - covered % self._align)
            if (
                result.get("from_finalize")
                and self._finalize_at is not None
                and covered + self._align >= self._finalize_at
            ):
                self._finalize_at = None
                self._finalize_sent_at = None
        if transcript is not None:
            self._transcripts.put_nowait(transcript)
