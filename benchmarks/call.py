"""Simulated calls over real WebSockets: the asyncio adapter around ``CallerSession``.

A ``Metronome`` is one task that wakes every call's session at its deadlines (the next 20 ms
frame slot, or a mark's playback point) on an absolute clock and writes what is due. All the
calls of a load share one metronome: one timer for the whole process instead of one wake-up and
task switch per call per frame, which is what lets one core carry hundreds of calls. Each call
also owns a reader task that feeds the session the server's messages and asks the metronome
for an immediate turn when a mark echo is due at once.

Writes are awaited in the metronome's task: they complete at once unless the server stops
reading for long enough to fill the socket buffers, which would then delay every call (and show
up as ``late_frames``).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from collections.abc import Callable
from types import TracebackType

import aiohttp

from ringline.benchmarks.protocols import WireFactory
from ringline.benchmarks.script import CallerScript, CallResult
from ringline.benchmarks.session import EARLY_S, CallerSession

log = logging.getLogger(__name__)

_SOCKET_ERRORS = (aiohttp.ClientError, ConnectionError, OSError)
_WS_TIMEOUT = aiohttp.ClientWSTimeout(ws_close=2.0)
# Lines due within this much are served in the same wake-up: with hundreds of calls their 20 ms
# grids cover every millisecond, and one wake-up per line would cost more than the frames. It
# must stay below the session's EARLY_S, or a line served early would find nothing due and spin.
BATCH_S = EARLY_S / 2


class Metronome:
    """Drives the sessions of many calls from one task. Use as ``async with Metronome():``."""

    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        self._clock = clock
        self._heap: list[tuple[float, int, _Line]] = []
        self._seq = itertools.count()
        self._wake: asyncio.Future[None] | None = None
        self._wake_at = float("inf")
        self._task: asyncio.Task[None] | None = None

    @property
    def now(self) -> Callable[[], float]:
        if self._clock is None:
            self._clock = asyncio.get_running_loop().time
        return self._clock

    async def __aenter__(self) -> Metronome:
        self._task = asyncio.create_task(self._run(), name="caller-metronome")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def schedule(self, line: _Line, when: float) -> None:
        line.when = when
        heapq.heappush(self._heap, (when, next(self._seq), line))
        if when < self._wake_at and self._wake is not None:
            _resolve(self._wake)

    async def _run(self) -> None:
        heap, now = self._heap, self.now
        loop = asyncio.get_running_loop()
        while True:
            if heap:
                delay = heap[0][0] - now()
                if delay <= BATCH_S:
                    when, _, line = heapq.heappop(heap)
                    if when == line.when and not line.finished.done():  # else a stale entry
                        await line.step(now())
                    continue
            self._wake = fut = loop.create_future()
            self._wake_at = heap[0][0] if heap else float("inf")
            handle = loop.call_later(delay, _resolve, fut) if heap else None
            try:
                await fut
            finally:
                if handle is not None:
                    handle.cancel()
                self._wake, self._wake_at = None, float("inf")


async def run_call(
    url: str,
    script: CallerScript,
    *,
    session: aiohttp.ClientSession | None = None,
    clock: Callable[[], float] | None = None,
    record: bool = False,
    connect_timeout_s: float = 10.0,
    metronome: Metronome | None = None,
    wire_factory: WireFactory | None = None,
) -> CallResult:
    """Place one simulated call; never raises for network trouble (see ``CallResult.error``).

    ``clock`` defaults to the loop's ``time`` and must tick at its rate; with a shared
    ``metronome`` (entered), its clock is used instead. A shared ``session`` needs a connector
    without a connection limit (``TCPConnector(limit=0)``): a call holds its connection throughout.
    ``wire_factory`` (``protocols.wire_factory``) picks the provider protocol; default Twilio.
    """
    if metronome is None:
        async with Metronome(clock) as own:
            return await run_call(
                url,
                script,
                session=session,
                record=record,
                connect_timeout_s=connect_timeout_s,
                metronome=own,
                wire_factory=wire_factory,
            )
    now = metronome.now
    wire = wire_factory(script.call_sid) if wire_factory is not None else None
    call = CallerSession(script, url=url, record=record, wire=wire)
    http = session or aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    try:
        try:
            async with asyncio.timeout(connect_timeout_s):
                ws = await http.ws_connect(url, autoping=True, max_msg_size=1 << 20, timeout=_WS_TIMEOUT)
        except (*_SOCKET_ERRORS, TimeoutError) as exc:
            call.failed(now(), f"connect failed: {exc!r}")
            return call.finish()
        await _Line(ws, call, metronome).run()
    finally:
        if session is None:
            await http.close()
    return call.finish()


class _Line:
    """One call's socket: stepped by the metronome, fed by a reader task it owns."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, call: CallerSession, metronome: Metronome) -> None:
        self._ws = ws
        self._call = call
        self._metronome = metronome
        self._now = metronome.now
        self.when = float("inf")  # the deadline this line is scheduled at
        self.finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def run(self) -> None:
        ws, call = self._ws, self._call
        reader = asyncio.create_task(self._read(), name=f"caller-read-{call.result.call_sid}")
        try:
            try:
                for message in call.open(self._now()):
                    await (ws.send_str(message) if isinstance(message, str) else ws.send_bytes(message))
            except _SOCKET_ERRORS as exc:
                self._send_failed(exc)
            if not call.done:
                self._metronome.schedule(self, call.next_deadline())
                await self.finished
            if call.result.ended_by is not None and call.result.error is None and not ws.closed:
                await ws.close()  # we hung up: close and wait for the server's close frame
            await asyncio.wait({reader}, timeout=2.0)
        finally:
            if not reader.done():
                reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            if not call.done:
                call.failed(self._now(), "socket did not close")
            if not ws.closed:
                await ws.close()
            if ws.close_code is not None:
                call.result.close_code = ws.close_code
            _resolve(self.finished)

    async def step(self, now: float) -> None:
        """The metronome's turn: send what is due, then book the next turn (or finish)."""
        call, ws = self._call, self._ws
        try:
            for message in call.poll(now):
                await (ws.send_str(message) if isinstance(message, str) else ws.send_bytes(message))
        except _SOCKET_ERRORS as exc:
            self._send_failed(exc)
        except Exception as exc:  # a bug in one call must not stop the others
            log.warning("caller %s: step failed", call.result.call_sid, exc_info=True)
            call.failed(now, f"step failed: {exc!r}")
        if call.done:
            _resolve(self.finished)
        else:
            self._metronome.schedule(self, call.next_deadline())

    def _send_failed(self, exc: BaseException) -> None:
        if self._ws.closed or self._ws.close_code is not None:
            self._call.closed(self._now(), self._ws.close_code)  # the server closed first
        elif not self._call.done:
            self._call.failed(self._now(), f"send failed: {exc!r}")

    async def _read(self) -> None:
        ws, call, now = self._ws, self._call, self._now
        try:
            while True:
                msg = await ws.receive()
                if msg.type is aiohttp.WSMsgType.TEXT or msg.type is aiohttp.WSMsgType.BINARY:
                    if call.receive(msg.data, now()):
                        self._metronome.schedule(self, now())  # a mark echo is due at once
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
            _resolve(self.finished)


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
