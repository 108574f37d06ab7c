"""One simulated call over a real WebSocket: the asyncio adapter around ``CallerSession``.

One clock task per call sends what the session says is due on an absolute 20 ms grid (deadlines
from the stream origin, never accumulated sleeps); one reader task, owned by it, feeds the
session the server's messages and wakes the clock task when a mark echo is due at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import aiohttp
from ringline.benchmarks.script import CallerScript, CallResult
from ringline.benchmarks.session import CallerSession

log = logging.getLogger(__name__)

_SOCKET_ERRORS = (aiohttp.ClientError, ConnectionError, OSError)


async def run_call(
    url: str,
    script: CallerScript,
    *,
    session: aiohttp.ClientSession | None = None,
    clock: Callable[[], float] | None = None,
    record: bool = False,
    connect_timeout_s: float = 10.0,
) -> CallResult:
    """Place one simulated call; never raises for network trouble (see ``CallResult.error``).

    ``clock`` defaults to the loop's ``time``; it must tick at the same rate. A shared
    ``session`` needs a connector without a connection limit (``TCPConnector(limit=0)``):
    every call holds its connection for its whole length.
    """
    loop = asyncio.get_running_loop()
    now = clock or loop.time
    call = CallerSession(script, url=url, record=record)
    http = session or aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    try:
        try:
            async with asyncio.timeout(connect_timeout_s):
                ws = await http.ws_connect(
                    url, autoping=True, max_msg_size=1 << 20, timeout=aiohttp.ClientWSTimeout(ws_close=2.0)
                )
        except (*_SOCKET_ERRORS, TimeoutError) as exc:
            call.failed(now(), f"connect failed: {exc!r}")
            return call.finish()
        await _Line(ws, call, now).run()
    finally:
        if session is None:
            await http.close()
    return call.finish()


class _Line:
    """One call's socket: a clock task (this one) and a reader task it owns."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, call: CallerSession, now: Callable[[], float]) -> None:
        self._ws = ws
        self._call = call
        self._now = now
        self._wake: asyncio.Future[None] | None = None

    async def run(self) -> None:
        ws, call = self._ws, self._call
        reader = asyncio.create_task(self._read(), name=f"caller-read-{call.result.call_sid}")
        try:
            try:
                for text in call.open(self._now()):
                    await ws.send_str(text)
                await self._tick()
            except _SOCKET_ERRORS as exc:
                # The server may have closed first: let the reader see the close frame.
                await asyncio.wait({reader}, timeout=1.0)
                if not call.done:
                    call.failed(self._now(), f"send failed: {exc!r}")
            if not ws.closed:
                await ws.close()
            await asyncio.wait({reader}, timeout=2.0)
        finally:
            if not reader.done():
                reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            if not call.done:
                call.failed(self._now(), "socket did not close")
            if ws.close_code is not None:
                call.result.close_code = ws.close_code

    async def _tick(self) -> None:
        ws, call, now = self._ws, self._call, self._now
        while True:
            for text in call.poll(now()):
                await ws.send_str(text)
            if call.done:
                return
            await self._sleep_until(call.next_deadline())

    async def _sleep_until(self, deadline: float) -> None:
        delay = deadline - self._now()
        if delay <= 0:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._wake = fut
        handle = asyncio.get_running_loop().call_later(delay, _resolve, fut)
        try:
            await fut
        finally:
            handle.cancel()
            self._wake = None

    def _wake_up(self) -> None:
        if self._wake is not None:
            _resolve(self._wake)

    async def _read(self) -> None:
        ws, call, now = self._ws, self._call, self._now
        try:
            while True:
                msg = await ws.receive()
                if msg.type is aiohttp.WSMsgType.TEXT:
                    if call.receive(msg.data, now()):
                        self._wake_up()
                elif msg.type is aiohttp.WSMsgType.BINARY:
                    call.protocol_error("binary message (Twilio sends JSON text only)")
                else:  # CLOSE, CLOSING, CLOSED, ERROR
                    if not call.done:
                        if msg.type is aiohttp.WSMsgType.ERROR:
                            call.failed(now(), f"socket error: {msg.data!r}")
                        else:
                            call.closed(now(), ws.close_code)
                    return
        except Exception as exc:  # task boundary: end the call with the reason
            log.warning("caller %s: reader failed", call.result.call_sid, exc_info=True)
            if not call.done:
                call.failed(now(), f"reader failed: {exc!r}")
        finally:
            self._wake_up()


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
