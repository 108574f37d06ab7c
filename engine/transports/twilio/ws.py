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
from ringline.engine.call import Call
from ringline.engine.errors import RinglineError
from ringline.engine.record import EndReason
from ringline.engine.transports.events import (
    AudioReceived,
    CallStarted,
    CallStopped,
    DtmfReceived,
    MarkPlayed,
)
from ringline.engine.transports.twilio.codec import TwilioProtocolError, TwilioStream

log = logging.getLogger(__name__)

CallFactory = Callable[[CallStarted, "TwilioTransport"], Awaitable[Call]]


class TwilioTransport:
    """``MediaTransport`` writing Twilio messages to the socket. Sends after close are dropped."""

    format: AudioFormat = MULAW_8K

    def __init__(self, ws: web.WebSocketResponse, codec: TwilioStream) -> None:
        self._ws = ws
        self._codec = codec

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


async def serve_twilio(ws: web.WebSocketResponse, make_call: CallFactory, *, max_errors: int) -> None:
    """Run one media socket to its end."""
    codec = TwilioStream()
    transport = TwilioTransport(ws, codec)
    call: Call | None = None
    errors = 0
    reason, detail = EndReason.TRANSPORT_CLOSED, ""
    extra: dict[str, str] = {"call_id": "-"}
    try:
        async for msg in ws:
            if msg.type is not WSMsgType.TEXT:
                if msg.type is WSMsgType.ERROR:
                    reason, detail = EndReason.TRANSPORT_CLOSED, f"socket error: {ws.exception()}"
                    break
                error: str = f"unexpected {msg.type.name.lower()} message"
            else:
                try:
                    event = codec.feed(msg.data)
                except TwilioProtocolError as exc:
                    error = str(exc)
                else:
                    if isinstance(event, AudioReceived):
                        if call is not None:
                            await call.on_audio(event.payload)
                    elif isinstance(event, MarkPlayed):
                        if call is not None:
                            call.on_mark(event.name)
                    elif isinstance(event, CallStarted):
                        extra = {"call_id": event.call_id}
                        try:
                            call = await make_call(event, transport)
                        except RinglineError as exc:  # e.g. an unknown agent in customParameters
                            log.warning("twilio: call refused: %s", exc, extra=extra)
                            await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=str(exc)[:120].encode())
                            break
                        await call.start()
                    elif isinstance(event, DtmfReceived):
                        if call is not None:
                            call.on_dtmf(event.digit)
                    elif isinstance(event, CallStopped):
                        reason = EndReason.CALLER_HANGUP
                        break
                    if call is not None and call.record.end_reason is not None:
                        break  # the call ended itself (agent hung up)
                    continue
            errors += 1
            if call is not None:
                call.record.protocol_errors = errors
            log.warning("twilio: %s (%d so far)", error, errors, extra=extra)
            if errors >= max_errors:
                reason, detail = EndReason.PROTOCOL_ERROR, f"{errors} malformed messages, last: {error}"
                break
        else:
            if ws.close_code is not None and ws.close_code >= 1002 and ws.close_code != 1005:
                detail = f"socket closed with code {ws.close_code}"
    except TimeoutError:
        reason, detail = EndReason.TRANSPORT_CLOSED, "no message from the provider within the idle timeout"
        log.warning("twilio: %s", detail, extra=extra)
    except asyncio.CancelledError:
        reason, detail = EndReason.SERVER_SHUTDOWN, "handler cancelled"
        raise
    except Exception as exc:
        log.exception("media socket failed", extra=extra)
        reason, detail = EndReason.ERROR, f"{type(exc).__name__}: {exc}"
    finally:
        if call is not None:
            await call.end(reason, detail)
        if not ws.closed:
            await ws.close()
