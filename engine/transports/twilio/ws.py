"""Twilio Media Streams over an aiohttp WebSocket: the thin I/O adapter around ``TwilioStream``.

``serve_twilio`` is the task boundary of a media socket: nothing a provider sends can raise out
of it, and whatever way the socket ends, the call ends with a recorded reason.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import WSCloseCode, WSMsgType, web

from ringline.engine.audio.formats import MULAW_8K, AudioFormat
from ringline.engine.audio.g711 import ulaw_encode
from ringline.engine.call import Call
from ringline.engine.dtmf import tones
from ringline.engine.errors import RinglineError
from ringline.engine.record import EndReason
from ringline.engine.transports.base import SendDtmfFailed, TransferFailed
from ringline.engine.transports.events import (
    AudioReceived,
    CallStarted,
    CallStopped,
    DtmfReceived,
    InboundEvent,
    MarkPlayed,
)
from ringline.engine.transports.twilio.codec import TwilioProtocolError, TwilioStream

log = logging.getLogger(__name__)

CallFactory = Callable[[CallStarted, "TwilioTransport"], Awaitable[Call]]
Transferrer = Callable[[str], Awaitable[None]]
"""Redirects this call to a destination through the provider's REST API."""


class TwilioTransport:
    """``MediaTransport`` writing Twilio messages to the socket. Sends after close are dropped."""

    format: AudioFormat = MULAW_8K

    def __init__(self, ws: web.WebSocketResponse, codec: TwilioStream, transferrer: Transferrer | None = None) -> None:
        self._ws = ws
        self._codec = codec
        self.transferrer = transferrer
        """Set once the call is known (``start``) if Twilio's REST API is configured."""

    async def _send(self, text: str) -> None:
        if self._ws.closed:
            return
        try:
            await self._ws.send_str(text)
        except ConnectionError:
            pass  # the read loop sees the close and ends the call

    async def send_audio(self, payload: bytes) -> None:
        await self._send(self._codec.media(payload))

    async def mark(self, name: str) -> None:
        await self._send(self._codec.mark(name))

    async def clear(self) -> None:
        await self._send(self._codec.clear())

    async def hangup(self) -> None:
        if not self._ws.closed:
            await self._ws.close()

    @property
    def transfer_unavailable(self) -> str | None:
        if self.transferrer is None:
            return "transfer on Twilio needs its REST API: set [telephony.twilio] account_sid and auth_token"
        return None

    async def transfer(self, destination: str) -> None:
        if self.transferrer is None:
            raise TransferFailed(self.transfer_unavailable or "transfer unavailable")
        await self.transferrer(destination)
        await self.hangup()

    async def send_dtmf(self, keys: str) -> None:
        """In-band tones, one media message queued after the audio already sent. Media Streams
        have no outbound ``dtmf`` message, and redirecting the call to ``<Play digits>`` through
        the REST API would end this stream. Tones in G.711 reach an IVR that listens for them
        (most do; one that only takes RFC 4733 signalling from a carrier may not)."""
        try:
            audio = ulaw_encode(tones(keys, self.format.sample_rate))
        except ValueError as exc:
            raise SendDtmfFailed(str(exc)) from None
        await self._send(self._codec.media(audio))


class _Ended(Exception):
    """The socket's call is over: carries why."""

    def __init__(self, reason: EndReason, detail: str = "") -> None:
        self.reason, self.detail = reason, detail


_CLOSING = (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED)


async def serve_twilio(
    ws: web.WebSocketResponse, make_call: CallFactory, *, max_errors: int, start_timeout: float
) -> None:
    """Run one media socket to its end.

    Before ``start`` the socket must speak within ``start_timeout`` seconds; after it, idleness is
    the call registry's watchdog's business (a timeout per message would cost ~10% of the CPU).
    """
    socket = _TwilioSocket(ws, make_call, max_errors)
    try:
        await socket.run(start_timeout)
    except _Ended as end:
        socket.reason, socket.detail = end.reason, end.detail
    except TimeoutError:
        socket.reason, socket.detail = EndReason.TRANSPORT_CLOSED, "no start message within the timeout"
        log.warning("twilio: %s", socket.detail, extra=socket.extra)
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


class _TwilioSocket:
    def __init__(self, ws: web.WebSocketResponse, make_call: CallFactory, max_errors: int) -> None:
        self._ws = ws
        self._codec = TwilioStream()
        self._transport = TwilioTransport(ws, self._codec)
        self._make_call = make_call
        self._max_errors = max_errors
        self._errors = 0
        self.call: Call | None = None
        self.reason, self.detail = EndReason.TRANSPORT_CLOSED, ""
        self.extra: dict[str, str] = {"call_id": "-"}

    async def run(self, start_timeout: float) -> None:
        ws = self._ws
        while True:
            msg = await ws.receive(timeout=start_timeout if self.call is None else None)
            if msg.type is WSMsgType.TEXT:
                try:
                    event = self._codec.feed(msg.data)
                except TwilioProtocolError as exc:
                    self._protocol_error(str(exc))
                    continue
                if event is not None:
                    await self._dispatch(event)
            elif msg.type in _CLOSING:
                if ws.close_code is not None and ws.close_code not in (1000, 1001, 1005):
                    self.detail = f"socket closed with code {ws.close_code}"
                return
            elif msg.type is WSMsgType.ERROR:
                raise _Ended(EndReason.TRANSPORT_CLOSED, f"socket error: {ws.exception()}")
            else:
                self._protocol_error(f"unexpected {msg.type.name.lower()} message")

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
        except RinglineError as exc:  # e.g. an unknown agent in customParameters
            log.warning("twilio: call refused: %s", exc, extra=self.extra)
            await self._ws.close(code=WSCloseCode.POLICY_VIOLATION, message=str(exc)[:120].encode())
            raise _Ended(EndReason.ERROR, f"refused: {exc}") from None
        await self.call.start()

    def _protocol_error(self, error: str) -> None:
        self._errors += 1
        if self.call is not None:
            self.call.record.protocol_errors = self._errors
        log.warning("twilio: %s (%d so far)", error, self._errors, extra=self.extra)
        if self._errors >= self._max_errors:
            raise _Ended(EndReason.PROTOCOL_ERROR, f"{self._errors} malformed messages, last: {error}")
