"""The SIP user agent over UDP: the thin asyncio adapter around the sans-IO ``TransactionLayer``.

One ``SipUserAgent`` per process owns the signalling socket, drives the transaction layer (one
timer, re-armed at ``next_deadline()``), limits the request rate per source, answers what needs no
call (OPTIONS, stray requests) and hands INVITEs to ``inbound.answer_invite`` and in-dialog
requests to their ``SipLeg``. Requests we send (BYE, REFER, INVITE) are awaited with ``request()``.

Nothing a peer sends can raise out of ``datagram_received``: malformed messages are answered 400
(when enough of them parsed) or dropped by the layer, and anything unexpected is logged.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from ringline.config.sip import SipConfig
from ringline.engine.audio.clock import Clock, LoopClock
from ringline.engine.record import EndReason
from ringline.engine.transports.base import Briefing, TransferFailed
from ringline.engine.transports.rtp.clock import RtpTicker
from ringline.engine.transports.rtp.endpoint import PortRange
from ringline.engine.transports.sip.bridge import Bridge
from ringline.engine.transports.sip.dialog import DialogError
from ringline.engine.transports.sip.digest import DigestVerifier
from ringline.engine.transports.sip.inbound import answer_invite
from ringline.engine.transports.sip.layer import TransactionLayer
from ringline.engine.transports.sip.message import Request, Response, make_response
from ringline.engine.transports.sip.outbound import DialFailed, Route, dial
from ringline.engine.transports.sip.ratelimit import SourceLimiter
from ringline.engine.transports.sip.transaction import Action, Cancelled, Deliver, TimedOut, Transmit

if TYPE_CHECKING:
    from ringline.engine.call import Call
    from ringline.engine.transports.sip.leg import SipLeg

log = logging.getLogger(__name__)

Addr = tuple[str, int]
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, REFER, NOTIFY, INFO"


class SipCalls(Protocol):
    """What the UA needs from the application: who may call, and the call a leg carries."""

    async def trusted(self, address: str) -> bool:
        """Whether a request from ``address`` needs no digest authentication (a trunk's address)."""
        ...

    async def route(self, destination: str, leg: SipLeg) -> Route:
        """How to call ``destination`` (a number or ``sip:`` URI) for ``leg``'s caller; raises
        ``TransferFailed`` when there is no way."""
        ...

    async def open(self, leg: SipLeg) -> Call:
        """The call for a new leg (not started). Raises ``RinglineError`` to refuse it (404)."""
        ...

    def closed(self, leg: SipLeg, call: Call) -> None:
        """The leg's call has ended."""
        ...


class SipUserAgent(asyncio.DatagramProtocol):
    def __init__(self, config: SipConfig, calls: SipCalls, *, ticker: RtpTicker, clock: Clock | None = None) -> None:
        self.config = config
        self.calls = calls
        self.ticker = ticker
        self.clock = clock or LoopClock()
        self.layer = TransactionLayer()
        self.legs: dict[str, SipLeg] = {}
        """Live legs by SIP Call-ID."""
        self.ports = PortRange(config.rtp_port_min, config.rtp_port_max)
        self.verifier = DigestVerifier(config.realm) if config.username else None
        self.limiter = SourceLimiter(config.requests_per_second, burst=2 * config.requests_per_second)
        self._socket: asyncio.DatagramTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._waiters: dict[tuple[str, str], Callable[[Response], None]] = {}
        """Requests we sent, by branch and method (a CANCEL shares its INVITE's branch): who hears
        their responses."""
        self._tasks: set[asyncio.Task[None]] = set()
        self.host = ""
        self.port = 0

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        config = self.config
        self._socket, _ = await loop.create_datagram_endpoint(
            lambda: self, local_addr=(config.listen_host, config.listen_port), family=socket.AF_INET
        )
        self.port = self._socket.get_extra_info("sockname")[1]
        self.host = config.public_host or (config.listen_host if config.listen_host != "0.0.0.0" else _local_ip())
        log.info("sip: listening on %s:%d (contact %s)", config.listen_host, self.port, self.host)

    async def aclose(self) -> None:
        for leg in list(self.legs.values()):
            await leg.end_from_server()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._timer is not None:
            self._timer.cancel()
        if self._socket is not None:
            self._socket.close()

    @property
    def sent_by(self) -> tuple[str, int]:
        return self.host, self.port

    @property
    def contact(self) -> str:
        return f"sip:ringline@{self.host}:{self.port}"

    def spawn(self, coro, name: str) -> None:  # type: ignore[no-untyped-def]
        """Run ``coro`` as a task the UA owns (cancelled at ``aclose``)."""
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("sip task %s failed", task.get_name(), exc_info=exc)

    # -- the socket's side ------------------------------------------------------------------

    def datagram_received(self, data: bytes, addr: Addr) -> None:
        now = self.clock.now()
        if not self.limiter.allow(addr[0], now):
            return
        try:
            self._run(self.layer.receive_datagram(data, now, addr))
        except Exception:
            log.exception("sip: failed on a datagram from %s:%d", *addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("sip socket error: %s", exc)

    # -- driving the transaction layer ------------------------------------------------------

    def send_request(self, request: Request, addr: Addr, on_response: Callable[[Response], None] | None) -> None:
        """Send ``request`` to ``addr`` in a new client transaction (or an ACK for a 2xx)."""
        if on_response is not None and request.branch:
            self._waiters[request.branch, request.method] = on_response
        self._run(self.layer.send_request(request, self.clock.now(), addr))

    async def request(self, request: Request, addr: Addr) -> Response:
        """Send ``request`` and wait for its final response (the layer makes up a 408 when timer
        B or F fires, so this always ends)."""
        final: asyncio.Future[Response] = asyncio.get_running_loop().create_future()

        def heard(response: Response) -> None:
            if response.status >= 200 and not final.done():
                final.set_result(response)

        self.send_request(request, addr, heard)
        try:
            return await final
        finally:
            self.forget(request)

    def respond(self, response: Response) -> None:
        self._run(self.layer.send_response(response, self.clock.now()))

    def forget(self, request: Request) -> None:
        """Stop telling anyone about responses to ``request``."""
        self._waiters.pop((request.branch or "", request.method), None)

    def release(self, leg: SipLeg) -> None:
        """The leg has ended: forget it."""
        if self.legs.get(leg.sip_call_id) is leg:
            del self.legs[leg.sip_call_id]

    # -- transfers through us ---------------------------------------------------------------------

    async def transfer_leg(self, leg: SipLeg, destination: str, briefing: Briefing | None) -> SipLeg:
        """Call ``destination`` for ``leg``'s caller (and brief whoever answers): the new leg,
        to be bridged with ``leg`` once its call has ended. Raises ``TransferFailed``."""
        route = await self.calls.route(destination, leg)
        try:
            other = await dial(self, route, {"direction": "outbound", "to": destination, "transfer_of": leg.id})
        except DialFailed as exc:
            raise TransferFailed(f"{destination}: {exc.outcome.value} ({exc.detail})") from None
        if briefing is None:
            return other
        try:
            await other.brief(await briefing(other.format))
        except Exception as exc:
            await other.abandon(EndReason.TRANSFERRED, f"briefing failed: {exc}")
            raise exc if isinstance(exc, TransferFailed) else TransferFailed(f"the briefing failed: {exc}") from exc
        except BaseException:  # cancelled: the caller hung up, or the server is stopping
            await other.abandon(EndReason.TRANSFERRED, "the transfer was cancelled during the briefing")
            raise
        return other

    def bridge(self, a: SipLeg, b: SipLeg) -> None:
        """Join two legs' media until either hangs up."""
        self.spawn(Bridge(a, b).run(), f"sip-bridge-{a.id}")

    def _run(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Transmit):
                if self._socket is not None:
                    self._socket.sendto(bytes(action.message), action.addr)
            elif isinstance(action, Deliver):
                self._deliver(action)
            elif isinstance(action, Cancelled):
                if (leg := self.legs.get(action.invite.call_id)) is not None:
                    leg.cancelled()
            elif (
                isinstance(action, TimedOut)
                and action.timer == "L"
                and (leg := self.legs.get(action.request.call_id)) is not None
            ):
                leg.never_acked()
        self._arm()

    def _arm(self) -> None:
        deadline = self.layer.next_deadline()
        if self._timer is not None:
            if deadline is not None and self._timer.when() == deadline:
                return
            self._timer.cancel()
            self._timer = None
        if deadline is not None:
            self._timer = asyncio.get_running_loop().call_at(deadline, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._run(self.layer.timeout(self.clock.now()))

    def _deliver(self, action: Deliver) -> None:
        message = action.message
        if isinstance(message, Response):
            sent = action.request
            key = (sent.branch or "", sent.method) if sent is not None else (message.branch or "", message.cseq.method)
            if (waiter := self._waiters.get(key)) is not None:
                waiter(message)
            return
        self._on_request(message, action.addr)

    # -- requests -----------------------------------------------------------------------------

    def _on_request(self, request: Request, addr: Addr) -> None:
        method = request.method
        leg = self.legs.get(request.call_id)
        if leg is not None and (method == "ACK" or request.to_tag):
            try:
                leg.on_request(request, addr)
            except DialogError as exc:
                if method != "ACK":
                    self.respond(make_response(request, exc.status, str(exc)))
            return
        if method == "INVITE" and not request.to_tag:
            self.spawn(answer_invite(self, request, addr), f"sip-invite-{request.call_id[:16]}")
        elif method == "OPTIONS":
            headers = [("Allow", ALLOW), ("Accept", "application/sdp"), ("Supported", "")]
            self.respond(make_response(request, 200, headers=headers))
        elif method == "ACK":
            return  # for a dialog that is gone: nothing to answer
        elif request.to_tag or method in ("BYE", "REFER", "NOTIFY", "INFO"):
            self.respond(make_response(request, 481, "Call/Transaction Does Not Exist"))
        elif method in ("REGISTER", "SUBSCRIBE", "MESSAGE", "PUBLISH", "UPDATE", "PRACK"):
            self.respond(make_response(request, 405, headers=[("Allow", ALLOW)]))
        else:
            self.respond(make_response(request, 501, "Not Implemented", headers=[("Allow", ALLOW)]))


def _local_ip() -> str:
    """The address this host would use to reach the outside (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: routing only
            return probe.getsockname()[0]
        except OSError:
            return "127.0.0.1"
