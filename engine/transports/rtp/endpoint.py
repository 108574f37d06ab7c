"""One call's RTP over UDP: a thin asyncio adapter around ``RtpSession``, driven by ``RtpTicker``.

``await RtpEndpoint.open(session, ticker, host=..., ports=PortRange(...))`` binds the call's
sockets and registers with the ticker; ``aclose()`` undoes both (sending an RTCP BYE). Ports:
RTP on an even port of the range and RTCP on the odd port above it (RFC 3550 11), both bound
even when the far end multiplexes RTCP (``rtcp_mux=True``: RTCP then goes out on the RTP port, and
RTCP arriving on the RTP port is understood either way). A port in use by anything else is
skipped. Without a range the OS picks the ports (tests).

Outbound: ``send_audio`` / ``mark`` / ``clear`` / ``send_dtmf`` queue on the session; each tick
sends at most one packet to ``session.remote`` (the latched source, see ``RtpSession``), in the
ticker's ``SEND`` phase (handed to the ticker's pacer, if it has one, to leave at its slot); the
inbound frame and RTCP come in its ``RECEIVE`` phase.
Inbound: the call reads ``async for event in endpoint`` (one ``AudioReceived`` a tick, then
``DtmfReceived`` and ``MarkPlayed`` as they come); iteration ends once the endpoint is closed.

Garbage (anything that is not RTP/RTCP, or hostile) is dropped and counted in ``malformed``,
with one log line per ``LOG_EVERY`` seconds at most; it never reaches the call.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from ringline.engine.errors import RemoteProtocolError
from ringline.engine.transports.events import InboundEvent

from .clock import RECEIVE, SEND, RtpTicker
from .pacer import PacedLane
from .session import Address, RtpSession

log = logging.getLogger(__name__)

__all__ = ["PortRange", "PortsExhausted", "RtpEndpoint"]

LOG_EVERY = 10.0
MAX_EVENTS = 100
"""Inbound events held for a call that does not read them (2 s of audio); older ones are dropped."""


class PortsExhausted(OSError):
    """No free even/odd port pair left in the range."""


@dataclass
class PortRange:
    """Even RTP ports (and the odd RTCP port above each) in ``start``..``end`` inclusive, handed
    out round robin so a port just released is not reused at once (stray packets of the last call)."""

    start: int
    end: int
    _cursor: int = field(default=0, init=False, repr=False)
    _used: set[int] = field(default_factory=set, init=False, repr=False)

    def __post_init__(self) -> None:
        if not 1024 <= self.start < self.end <= 65535:
            raise ValueError(f"RTP port range {self.start}-{self.end} must be within 1024-65535, start below end")
        self.start += self.start & 1  # RTP on even ports
        if self.start + 1 > self.end:
            raise ValueError(f"RTP port range {self.start}-{self.end} holds no even/odd pair")
        self._cursor = self.start

    @property
    def pairs(self) -> int:
        return (self.end - self.start + 1) // 2

    def candidates(self) -> list[int]:
        """Free even ports, in the order to try them."""
        count = self.pairs
        first = (self._cursor - self.start) // 2
        ports = (self.start + 2 * ((first + i) % count) for i in range(count))
        return [port for port in ports if port not in self._used]

    def take(self, port: int) -> None:
        self._used.add(port)
        self._cursor = port + 2 if port + 3 <= self.end else self.start

    def release(self, port: int) -> None:
        self._used.discard(port)


class _Socket(asyncio.DatagramProtocol):
    def __init__(self, endpoint: RtpEndpoint, rtcp: bool) -> None:
        self._endpoint = endpoint
        self._rtcp = rtcp

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        self._endpoint._received(data, (addr[0], addr[1]), self._rtcp)

    def error_received(self, exc: Exception) -> None:
        log.debug("rtp socket error: %s", exc, extra=self._endpoint._extra)


class RtpEndpoint:
    def __init__(self, session: RtpSession, ticker: RtpTicker, *, rtcp_mux: bool = False) -> None:
        """Use ``open``; this only wires the parts together."""
        self.session = session
        self.ticker = ticker
        self.rtcp_mux = rtcp_mux
        self.remote_rtcp: Address | None = None
        """Where RTCP goes when not muxed: the SDP ``a=rtcp`` address if set, else the source of
        the far end's RTCP once heard, else the RTP destination's port + 1."""
        self._extra = {"call_id": session.call_id}
        self._rtp: asyncio.DatagramTransport | None = None
        self._rtcp: asyncio.DatagramTransport | None = None
        self._lane: PacedLane | None = None
        self._ports: PortRange | None = None
        self.local_port = 0
        self.rtcp_port = 0
        self._events: asyncio.Queue[InboundEvent | None] = asyncio.Queue()
        self._closed = False
        self.malformed = 0
        self.dropped_events = 0
        self._logged_at = float("-inf")
        self._unlogged = 0

    @classmethod
    async def open(
        cls,
        session: RtpSession,
        ticker: RtpTicker,
        *,
        host: str = "0.0.0.0",
        ports: PortRange | None = None,
        rtcp_mux: bool = False,
    ) -> RtpEndpoint:
        """Bind RTP and RTCP sockets on ``host`` in ``ports`` and start sending on ``ticker``."""
        self = cls(session, ticker, rtcp_mux=rtcp_mux)
        loop = asyncio.get_running_loop()
        if ports is None:
            self._rtp, _ = await loop.create_datagram_endpoint(lambda: _Socket(self, False), local_addr=(host, 0))
            self._rtcp, _ = await loop.create_datagram_endpoint(lambda: _Socket(self, True), local_addr=(host, 0))
        else:
            for port in ports.candidates():
                try:
                    self._rtp, _ = await loop.create_datagram_endpoint(
                        lambda: _Socket(self, False), local_addr=(host, port)
                    )
                except OSError:
                    continue
                try:
                    self._rtcp, _ = await loop.create_datagram_endpoint(
                        lambda: _Socket(self, True), local_addr=(host, port + 1)
                    )
                except OSError:
                    self._rtp.close()
                    self._rtp = None
                    continue
                ports.take(port)
                self._ports = ports
                break
            else:
                raise PortsExhausted(f"no free RTP port pair in {ports.start}-{ports.end}")
        self.local_port = self._rtp.get_extra_info("sockname")[1]
        self.rtcp_port = self._rtcp.get_extra_info("sockname")[1]
        if ticker.pacer is not None:
            self._lane = ticker.pacer.lane(self._rtp.get_extra_info("socket"))
        ticker.register(self._send_tick, SEND)
        ticker.register(self._receive_tick, RECEIVE)
        log.debug("rtp endpoint on %s:%d/%d", host, self.local_port, self.rtcp_port, extra=self._extra)
        return self

    # -- the call's side -------------------------------------------------------------------

    def send_audio(self, payload: bytes) -> None:
        self.session.send_audio(payload)

    def mark(self, name: str) -> None:
        self.session.mark(name)

    def clear(self) -> None:
        self.session.clear()

    def send_dtmf(self, keys: str) -> None:
        """Queue RFC 4733 key presses after the audio queued; ValueError for an invalid key."""
        self.session.send_dtmf(keys)

    async def __aiter__(self) -> AsyncIterator[InboundEvent]:
        while (event := await self._events.get()) is not None:
            yield event

    @property
    def closed(self) -> bool:
        return self._closed

    def discard_pending(self) -> int:
        """Drop the inbound events nobody has read yet (e.g. early media, heard before the call was
        answered); how many. The end of iteration (``stop``, ``aclose``) stays queued."""
        dropped, ended = 0, False
        while not self._events.empty():
            if self._events.get_nowait() is None:
                ended = True
            else:
                dropped += 1
        if ended:
            self._events.put_nowait(None)
        return dropped

    def stop(self) -> None:
        """End the call's iteration now (the sockets stay bound until ``aclose``)."""
        self._events.put_nowait(None)

    async def aclose(self, reason: str = "") -> None:
        if self._closed:
            return
        self._closed = True
        self.ticker.unregister(self._send_tick)
        self.ticker.unregister(self._receive_tick)
        if self._lane is not None:
            self._lane.close()
        self._send_rtcp(self.session.rtcp_bye(reason))
        for transport in (self._rtp, self._rtcp):
            if transport is not None:
                transport.close()
        if self._ports is not None:
            self._ports.release(self.local_port)
        self._events.put_nowait(None)

    # -- the ticker's and the sockets' side ------------------------------------------------

    def _deliver(self, event: InboundEvent) -> None:
        events = self._events
        if events.qsize() >= MAX_EVENTS:
            events.get_nowait()
            self.dropped_events += 1
        events.put_nowait(event)

    def _send_tick(self, tick: int, now: float) -> None:
        session = self.session
        packet = session.outgoing(tick)
        remote = session.remote
        if packet is None or remote is None or self._rtp is None:
            return
        lane = self._lane
        if lane is None or not lane.push(tick, packet, remote):
            self._rtp.sendto(packet, remote)

    def _receive_tick(self, tick: int, now: float) -> None:
        for event in self.session.incoming(now):
            self._deliver(event)
        if (report := self.session.rtcp_report(tick, now)) is not None:
            self._send_rtcp(report)

    def _send_rtcp(self, report: bytes) -> None:
        remote = self.session.remote
        if self.rtcp_mux:
            if remote is not None and self._rtp is not None:
                self._rtp.sendto(report, remote)
            return
        target = self.remote_rtcp or (None if remote is None else (remote[0], remote[1] + 1))
        if target is not None and self._rtcp is not None:
            self._rtcp.sendto(report, target)

    def _received(self, data: bytes, source: Address, rtcp: bool) -> None:
        if self._closed:
            return
        now = self.ticker.clock.now()
        try:
            if rtcp:
                self.session.receive_rtcp(data, source, now)
                remote = self.session.remote
                if self.remote_rtcp is None and remote is not None and source[0] == remote[0]:
                    self.remote_rtcp = source
                return
            events = self.session.receive(data, source, now)
        except RemoteProtocolError as exc:
            self._malformed(exc, source, now)
            return
        for event in events:
            self._deliver(event)

    def _malformed(self, exc: RemoteProtocolError, source: Address, now: float) -> None:
        self.malformed += 1
        if now - self._logged_at < LOG_EVERY:
            self._unlogged += 1
            return
        log.warning(
            "dropped malformed datagram from %s:%d: %s (%d more dropped since the last report)",
            source[0], source[1], exc, self._unlogged, extra=self._extra,
        )  # fmt: skip
        self._logged_at, self._unlogged = now, 0
