"""Provider media WebSockets (Twilio, Telnyx, Plivo, Vonage, Exotel) over aiohttp: one thin I/O
adapter around any sans-IO ``MediaCodec``.

``serve_media_socket`` is the task boundary of a media socket: nothing a provider sends can raise
out of it, and whatever way the socket ends, the call ends with a recorded reason.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from aiohttp import WSCloseCode, WSMsgType, web

from ringline.engine.audio.formats import AudioFormat, Encoding
from ringline.engine.audio.g711 import encode
from ringline.engine.call import Call
from ringline.engine.dtmf import tones
from ringline.engine.errors import RemoteProtocolError, RinglineError
from ringline.engine.record import EndReason
from ringline.engine.transports.base import WARM_ON_SIP_ONLY, Briefing, SendDtmfFailed, TransferFailed
from ringline.engine.transports.events import (
    AudioReceived,
    CallStarted,
    CallStopped,
    DtmfReceived,
    InboundEvent,
    MarkPlayed,
)

log = logging.getLogger(__name__)

Message = str | bytes
"""A WebSocket message: text frames as ``str``, binary frames as ``bytes``."""


class MediaCodec(Protocol):
    """One provider media stream's protocol state, sans-IO.

    Inbound, each WebSocket message becomes at most one event (``None``: nothing to act on); a
    malformed one raises a ``RemoteProtocolError`` with an exact message. Outbound, the builders
    return the messages to write. ``format`` is the wire audio format, known once the stream has
    started (some providers negotiate it in their ``start`` message).
    """

    name: str
    """The provider, for logs: ``twilio``, ``telnyx``, ..."""
    hangup_on_close: bool
    """The provider closes the socket, with no stop message, when the caller hangs up."""

    @property
    def format(self) -> AudioFormat: ...

    def feed(self, text: str) -> InboundEvent | None:
        """A text message."""
        ...

    def feed_binary(self, data: bytes) -> InboundEvent | None:
        """A binary message (raise if the provider never sends them)."""
        ...

    def media(self, payload: bytes) -> Message | None:
        """Audio in ``format`` to play; ``None`` while a codec holds it back (minimum chunk sizes)."""
        ...

    def flush(self) -> Sequence[Message]:
        """Write out audio a codec was holding back (padded to whole frames)."""
        ...

    def mark(self, name: str) -> Sequence[Message]:
        """Ask to hear back (a ``MarkPlayed(name)``) once everything sent so far has played;
        writes out audio a codec was holding back first."""
        ...

    def clear(self) -> Sequence[Message]:
        """Drop audio buffered at the provider (and any the codec holds) that has not played."""
        ...


CallFactory = Callable[[CallStarted, "SocketTransport"], Awaitable[Call]]
Transferrer = Callable[[str], Awaitable[None]]
"""Hands this call over to a destination through the provider's REST call control."""


class SocketTransport:
    """``MediaTransport`` writing a codec's messages to the socket. Sends after close are dropped."""

    def __init__(self, ws: web.WebSocketResponse, codec: MediaCodec, transferrer: Transferrer | None = None) -> None:
        self._ws = ws
        self.codec = codec
        self.transferrer = transferrer
        """Set once the call is known (``start``) if the provider's REST API is configured."""

    @property
    def format(self) -> AudioFormat:
        return self.codec.format

    async def _send(self, message: Message) -> None:
        if self._ws.closed:
            return
        try:
            if isinstance(message, str):
                await self._ws.send_str(message)
            else:
                await self._ws.send_bytes(message)
        except ConnectionError:
            pass  # the read loop sees the close and ends the call

    async def send_audio(self, payload: bytes) -> None:
        if (message := self.codec.media(payload)) is not None:
            await self._send(message)

    async def mark(self, name: str) -> None:
        for message in self.codec.mark(name):
            await self._send(message)

    async def clear(self) -> None:
        for message in self.codec.clear():
            await self._send(message)

    async def hangup(self) -> None:
        if not self._ws.closed:
            await self._ws.close()

    @property
    def transfer_unavailable(self) -> str | None:
        if self.transferrer is None:
            return f"transfer on {self.codec.name} needs its REST API: configure [telephony.{self.codec.name}]"
        return None

    async def transfer(self, destination: str, briefing: Briefing | None = None) -> None:
        if briefing is not None:
            raise TransferFailed(WARM_ON_SIP_ONLY)
        if self.transferrer is None:
            raise TransferFailed(self.transfer_unavailable or "transfer unavailable")
        await self.transferrer(destination)
        await self.hangup()

    async def send_dtmf(self, keys: str) -> None:
        """In-band tones queued after the audio already sent. Media WebSockets have no outbound
        DTMF message, and redirecting the call through the REST API would end this stream. Tones
        reach an IVR that listens for them (most do; one that only takes RFC 4733 signalling from a
        carrier may not)."""
        fmt = self.format
        try:
            pcm = tones(keys, fmt.sample_rate)
        except ValueError as exc:
            raise SendDtmfFailed(str(exc)) from None
        audio = pcm if fmt.encoding is Encoding.PCM16 else encode(pcm, fmt.encoding)
        await self.send_audio(audio)
        for message in self.codec.flush():  # what a chunking codec held back of the tones
            await self._send(message)


class _Ended(Exception):
    """The socket's call is over: carries why."""

    def __init__(self, reason: EndReason, detail: str = "") -> None:
        self.reason, self.detail = reason, detail


_CLOSING = (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED)


async def serve_media_socket(
    ws: web.WebSocketResponse,
    codec: MediaCodec,
    make_call: CallFactory,
    *,
    max_errors: int,
    start_timeout: float,
) -> None:
    """Run one media socket to its end.

    Before the call starts the socket must speak within ``start_timeout`` seconds; after it,
    idleness is the call registry's watchdog's business (a timeout per message would cost ~10% of
    the CPU).
    """
    socket = _MediaSocket(ws, codec, make_call, max_errors)
    try:
        await socket.run(start_timeout)
    except _Ended as end:
        socket.reason, socket.detail = end.reason, end.detail
    except TimeoutError:
        socket.reason, socket.detail = EndReason.TRANSPORT_CLOSED, "no start message within the timeout"
        log.warning("%s: %s", codec.name, socket.detail, extra=socket.extra)
    except asyncio.CancelledError:
        socket.reason, socket.detail = EndReason.SERVER_SHUTDOWN, "handler cancelled"
        raise
    except Exception as exc:
        log.exception("media socket failed", extra=socket.extra)
        socket.reason, socket.detail = EndReason.ERROR, f"{type(exc).__name__}: {exc}"
    finally:
        if socket.call is not None:
            await socket.call.end(socket.reason, socket.detail)
        if not ws.closed:
            await ws.close()


class _MediaSocket:
    def __init__(self, ws: web.WebSocketResponse, codec: MediaCodec, make_call: CallFactory, max_errors: int) -> None:
        self._ws = ws
        self._codec = codec
        self._transport = SocketTransport(ws, codec)
        self._make_call = make_call
        self._max_errors = max_errors
        self._errors = 0
        self.call: Call | None = None
        self.reason, self.detail = EndReason.TRANSPORT_CLOSED, ""
        self.extra: dict[str, str] = {"call_id": "-"}

    async def run(self, start_timeout: float) -> None:
        ws, codec = self._ws, self._codec
        while True:
            msg = await ws.receive(timeout=start_timeout if self.call is None else None)
            kind = msg.type
            if kind is WSMsgType.TEXT or kind is WSMsgType.BINARY:
                try:
                    event = codec.feed(msg.data) if kind is WSMsgType.TEXT else codec.feed_binary(msg.data)
                except RemoteProtocolError as exc:
                    self._protocol_error(str(exc))
                    continue
                if event is not None:
                    await self._dispatch(event)
            elif kind in _CLOSING:
                if ws.close_code is not None and ws.close_code not in (1000, 1001, 1005):
                    self.detail = f"socket closed with code {ws.close_code}"
                elif codec.hangup_on_close:  # a provider with no stop message
                    raise _Ended(EndReason.CALLER_HANGUP)
                return
            elif kind is WSMsgType.ERROR:
                raise _Ended(EndReason.TRANSPORT_CLOSED, f"socket error: {ws.exception()}")
            else:
                self._protocol_error(f"unexpected {kind.name.lower()} message")

    async def _dispatch(self, event: InboundEvent) -> None:
        call = self.call
        if isinstance(event, AudioReceived):
            if call is not None:
                await call.on_audio(event.payload)
        elif isinstance(event, MarkPlayed):
            if call is not None:
                call.on_mark(event.name)
        elif isinstance(event, DtmfReceived):
            if call is not None:
                await call.on_dtmf(event.digit)
        elif isinstance(event, CallStarted):
            await self._start(event)
        elif isinstance(event, CallStopped):
            raise _Ended(EndReason.CALLER_HANGUP)
        if self.call is not None and self.call.record.end_reason is not None:
            raise _Ended(self.call.record.end_reason, self.call.record.end_detail)  # it ended itself

    async def _start(self, event: CallStarted) -> None:
        self.extra = {"call_id": event.call_id}
        try:
            self.call = await self._make_call(event, self._transport)
        except RinglineError as exc:  # e.g. an unknown agent in the stream's parameters
            log.warning("%s: call refused: %s", self._codec.name, exc, extra=self.extra)
            await self._ws.close(code=WSCloseCode.POLICY_VIOLATION, message=str(exc)[:120].encode())
            raise _Ended(EndReason.ERROR, f"refused: {exc}") from None
        await self.call.start()

    def _protocol_error(self, error: str) -> None:
        self._errors += 1
        if self.call is not None:
            self.call.record.protocol_errors = self._errors
        log.warning("%s: %s (%d so far)", self._codec.name, error, self._errors, extra=self.extra)
        if self._errors >= self._max_errors:
            raise _Ended(EndReason.PROTOCOL_ERROR, f"{self._errors} malformed messages, last: {error}")
