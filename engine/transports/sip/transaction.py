"""SIP transactions over UDP, sans-IO (RFC 3261 section 17, with the RFC 6026 "Accepted" state).

Four state machines: ``ClientInviteTransaction`` (timers A, B, D, M), ``ClientNonInviteTransaction``
(E, F, K), ``ServerInviteTransaction`` (G, H, I, L and the 2xx retransmission RFC 3261 13.3.1.4
gives the UAS core) and ``ServerNonInviteTransaction`` (J). None does I/O or reads a clock: every
input carries ``now`` (seconds on any monotonic clock), every call returns a list of actions, and
``next_deadline()`` says when ``timeout(now)`` must next be called.

Most code drives them through ``TransactionLayer`` (``layer.py``), which matches messages to
transactions; the actions are the same.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from typing import Any

from ringline.engine.transports.sip.headers import Headers
from ringline.engine.transports.sip.message import Request, Response, make_response

log = logging.getLogger(__name__)

Addr = Any
"""Whatever the UA uses as a datagram address (usually ``(host, port)``); passed through as is."""


@dataclass(frozen=True, slots=True)
class Timers:
    """RFC 3261 timer base values in seconds (T1 round-trip estimate, T2 cap, T4 network lifetime)."""

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0


DEFAULT_TIMERS = Timers()


@dataclass(frozen=True, slots=True)
class Transmit:
    """Send ``message`` as one datagram to ``addr``."""

    message: Request | Response
    addr: Addr


@dataclass(frozen=True, slots=True)
class Deliver:
    """Hand ``message`` to the TU (the UA core). For a response, ``request`` is the request of the
    client transaction; ``local`` is True for the 408 a client transaction makes up on timeout."""

    message: Request | Response
    addr: Addr
    request: Request | None = None
    local: bool = False


@dataclass(frozen=True, slots=True)
class Cancelled:
    """A CANCEL matched a pending INVITE server transaction; the layer already answered 200 to the
    CANCEL and 487 to the INVITE. The TU drops the call attempt."""

    invite: Request
    cancel: Request


@dataclass(frozen=True, slots=True)
class TimedOut:
    """A server transaction gave up waiting for the ACK of its final response: ``timer`` "H" (non-2xx)
    or "L" (2xx: RFC 3261 13.3.1.4 says the UAS should then end the dialog with a BYE)."""

    request: Request
    timer: str


@dataclass(frozen=True, slots=True)
class Terminated:
    """A transaction ended (informational; nothing to do)."""

    request: Request
    reason: str


Action = Transmit | Deliver | Cancelled | TimedOut | Terminated


class TxState(enum.Enum):
    CALLING = "calling"
    TRYING = "trying"
    PROCEEDING = "proceeding"
    ACCEPTED = "accepted"
    COMPLETED = "completed"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


class Transaction:
    """Common machinery: the state, named timer deadlines, and ``timeout`` firing them in order."""

    kind = "transaction"

    def __init__(self, request: Request, addr: Addr, timers: Timers, state: TxState) -> None:
        self.request = request
        self.addr = addr
        self.timers = timers
        self.state = state
        self.reason = ""
        self._deadlines: dict[str, float] = {}

    def _set_state(self, new: TxState, reason: str = "") -> None:
        log.debug("%s %s: %s -> %s", self.kind, self.request.branch, self.state.value, new.value)
        self.state = new
        if new is TxState.TERMINATED:
            self._deadlines.clear()
            self.reason = reason

    @property
    def terminated(self) -> bool:
        return self.state is TxState.TERMINATED

    def next_deadline(self) -> float | None:
        return min(self._deadlines.values(), default=None)

    def timeout(self, now: float) -> list[Action]:
        """Fire every timer due at ``now`` (in deadline order, catching up if called late)."""
        out: list[Action] = []
        while self._deadlines:
            name, deadline = min(self._deadlines.items(), key=lambda item: item[1])
            if deadline > now:
                break
            del self._deadlines[name]
            out += self._fire(name, deadline)
        return out

    def _fire(self, name: str, deadline: float) -> list[Action]:
        raise NotImplementedError


class ClientInviteTransaction(Transaction):
    """RFC 3261 17.1.1 (figure 5) with RFC 6026's Accepted state."""

    kind = "INVITE client"

    def __init__(self, request: Request, addr: Addr, timers: Timers = DEFAULT_TIMERS) -> None:
        super().__init__(request, addr, timers, TxState.CALLING)
        self._interval = timers.t1
        self._final: Response | None = None
        self.acks: dict[str, Request] = {}
        """ACKs the TU sent for 2xx responses, by To tag; retransmitted 2xx are answered with them."""

    def start(self, now: float) -> list[Action]:
        self._deadlines = {"A": now + self.timers.t1, "B": now + 64 * self.timers.t1}
        return [Transmit(self.request, self.addr)]

    def receive_response(self, response: Response, now: float) -> list[Action]:
        status = response.status
        if self.state in (TxState.CALLING, TxState.PROCEEDING):
            if status < 200:
                self._deadlines.pop("A", None)
                self._deadlines.pop("B", None)
                self._set_state(TxState.PROCEEDING)
                return [Deliver(response, self.addr, self.request)]
            self._deadlines.clear()
            if status < 300:
                self._set_state(TxState.ACCEPTED)
                self._deadlines["M"] = now + 64 * self.timers.t1
                return [Deliver(response, self.addr, self.request)]
            self._final = response
            self._set_state(TxState.COMPLETED)
            self._deadlines["D"] = now + 32.0
            return [Transmit(self.make_ack(response), self.addr), Deliver(response, self.addr, self.request)]
        if self.state is TxState.ACCEPTED and 200 <= status < 300:
            ack = self.acks.get(response.to_tag or "")
            return [Transmit(ack, self.addr)] if ack else [Deliver(response, self.addr, self.request)]
        if self.state is TxState.COMPLETED and status >= 300:
            return [Transmit(self.make_ack(response), self.addr)]
        return []

    def make_ack(self, response: Response) -> Request:
        """The ACK for a non-2xx final response (RFC 3261 17.1.1.3)."""
        req = self.request
        headers = [("Via", req.headers.get("Via") or ""), ("Max-Forwards", "70")]
        headers += [(n, v) for n, v in req.headers if n == "Route"]
        headers += [("From", req.headers.get("From") or ""), ("To", response.headers.get("To") or "")]
        headers += [("Call-ID", req.call_id), ("CSeq", f"{req.cseq.number} ACK")]
        return Request("ACK", req.uri, Headers(headers))

    def _fire(self, name: str, deadline: float) -> list[Action]:
        if name == "A":
            self._interval *= 2
            self._deadlines["A"] = deadline + self._interval
            return [Transmit(self.request, self.addr)]
        if name == "B":
            self._set_state(TxState.TERMINATED, "timer B")
            return [Deliver(make_response(self.request, 408), self.addr, self.request, local=True)]
        self._set_state(TxState.TERMINATED, f"timer {name}")  # D or M
        return []


class ClientNonInviteTransaction(Transaction):
    """RFC 3261 17.1.2 (figure 6)."""

    kind = "non-INVITE client"

    def __init__(self, request: Request, addr: Addr, timers: Timers = DEFAULT_TIMERS) -> None:
        super().__init__(request, addr, timers, TxState.TRYING)
        self._interval = timers.t1

    def start(self, now: float) -> list[Action]:
        self._deadlines = {"E": now + self.timers.t1, "F": now + 64 * self.timers.t1}
        return [Transmit(self.request, self.addr)]

    def receive_response(self, response: Response, now: float) -> list[Action]:
        if self.state not in (TxState.TRYING, TxState.PROCEEDING):
            return []  # Completed absorbs retransmitted finals
        if response.status < 200:
            self._set_state(TxState.PROCEEDING)
        else:
            self._deadlines = {"K": now + self.timers.t4}
            self._set_state(TxState.COMPLETED)
        return [Deliver(response, self.addr, self.request)]

    def _fire(self, name: str, deadline: float) -> list[Action]:
        if name == "E":
            if self.state is TxState.PROCEEDING:
                self._interval = self.timers.t2
            else:
                self._interval = min(2 * self._interval, self.timers.t2)
            self._deadlines["E"] = deadline + self._interval
            return [Transmit(self.request, self.addr)]
        if name == "F":
            self._set_state(TxState.TERMINATED, "timer F")
            return [Deliver(make_response(self.request, 408), self.addr, self.request, local=True)]
        self._set_state(TxState.TERMINATED, "timer K")
        return []


class ServerInviteTransaction(Transaction):
    """RFC 3261 17.2.1 (figure 7) with RFC 6026's Accepted state. It also retransmits a 2xx until
    the TU reports its ACK (``ack_received``) or timer L (64*T1) fires, which RFC 3261 13.3.1.4
    leaves to the UAS core: one less timer for the UA to run."""

    kind = "INVITE server"

    def __init__(self, request: Request, addr: Addr, timers: Timers = DEFAULT_TIMERS) -> None:
        super().__init__(request, addr, timers, TxState.PROCEEDING)
        self.last_response: Response | None = None
        self.acked = False
        self._interval = timers.t1

    def start(self, now: float) -> list[Action]:
        """Answer 100 Trying at once (RFC 3261 17.2.1) and pass the INVITE up."""
        self.last_response = make_response(self.request, 100)
        return [Transmit(self.last_response, self.addr), Deliver(self.request, self.addr)]

    def receive_request(self, request: Request, now: float) -> list[Action]:
        if request.method == "ACK":
            if self.state is TxState.COMPLETED:
                self._deadlines = {"I": now + self.timers.t4}
                self._set_state(TxState.CONFIRMED)
            return []
        if self.state in (TxState.PROCEEDING, TxState.COMPLETED) and self.last_response:
            return [Transmit(self.last_response, self.addr)]
        return []  # Accepted and Confirmed absorb retransmissions

    def send_response(self, response: Response, now: float) -> list[Action]:
        status = response.status
        if self.state is TxState.ACCEPTED and 200 <= status < 300:
            return [Transmit(response, self.addr)]
        if self.state is not TxState.PROCEEDING:
            log.warning("%s %s: %d in state %s dropped", self.kind, self.request.branch, status, self.state.value)
            return []
        self.last_response = response
        if 200 <= status < 300:
            self._deadlines = {"L": now + 64 * self.timers.t1, "2xx": now + self.timers.t1}
            self._set_state(TxState.ACCEPTED)
        elif status >= 300:
            self._deadlines = {"G": now + self.timers.t1, "H": now + 64 * self.timers.t1}
            self._set_state(TxState.COMPLETED)
        return [Transmit(response, self.addr)]

    def ack_received(self) -> None:
        """The ACK for our 2xx arrived (it is its own transaction): stop retransmitting the 2xx."""
        self.acked = True
        self._deadlines.pop("2xx", None)

    @property
    def to_tag(self) -> str | None:
        return self.last_response.to_tag if self.last_response else None

    def _fire(self, name: str, deadline: float) -> list[Action]:
        if name in ("G", "2xx"):
            self._interval = min(2 * self._interval, self.timers.t2)
            self._deadlines[name] = deadline + self._interval
            assert self.last_response is not None
            return [Transmit(self.last_response, self.addr)]
        if name == "L" and self.acked:
            self._set_state(TxState.TERMINATED, "timer L")
            return []
        self._set_state(TxState.TERMINATED, f"timer {name}")
        return [] if name == "I" else [TimedOut(self.request, name)]  # H or L without ACK


class ServerNonInviteTransaction(Transaction):
    """RFC 3261 17.2.2 (figure 8)."""

    kind = "non-INVITE server"

    def __init__(self, request: Request, addr: Addr, timers: Timers = DEFAULT_TIMERS) -> None:
        super().__init__(request, addr, timers, TxState.TRYING)
        self.last_response: Response | None = None

    def start(self, now: float) -> list[Action]:
        return [Deliver(self.request, self.addr)]

    def receive_request(self, request: Request, now: float) -> list[Action]:
        if self.state in (TxState.PROCEEDING, TxState.COMPLETED) and self.last_response:
            return [Transmit(self.last_response, self.addr)]
        return []

    def send_response(self, response: Response, now: float) -> list[Action]:
        if self.state not in (TxState.TRYING, TxState.PROCEEDING):
            status, state = response.status, self.state.value
            log.warning("%s %s: %d in state %s dropped", self.kind, self.request.branch, status, state)
            return []
        self.last_response = response
        if response.status < 200:
            self._set_state(TxState.PROCEEDING)
        else:
            self._deadlines = {"J": now + 64 * self.timers.t1}
            self._set_state(TxState.COMPLETED)
        return [Transmit(response, self.addr)]

    def _fire(self, name: str, deadline: float) -> list[Action]:
        self._set_state(TxState.TERMINATED, "timer J")
        return []


ClientTransaction = ClientInviteTransaction | ClientNonInviteTransaction
ServerTransaction = ServerInviteTransaction | ServerNonInviteTransaction
