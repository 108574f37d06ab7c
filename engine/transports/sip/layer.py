"""The SIP transaction layer, sans-IO: matches messages to transactions (RFC 3261 17.1.3, 17.2.3).

A UA over UDP drives one ``TransactionLayer`` like this::

    actions = layer.receive_datagram(data, now, addr)      # a datagram arrived
    actions = layer.send_request(request, now, addr)       # the TU starts a request (or sends an ACK)
    actions = layer.send_response(response, now)           # the TU answers a delivered request
    actions = layer.timeout(now)                           # when now >= layer.next_deadline()

and carries out each action in order: ``Transmit`` -> ``sock.sendto(bytes(a.message), a.addr)``;
``Deliver`` -> the TU handles the request or response; ``Cancelled`` -> the TU drops the INVITE
(already answered 487); ``TimedOut`` -> the TU ends the dialog (timer L: the 2xx was never ACKed);
``Terminated`` -> nothing (logging). After each call, re-arm the single timer at
``next_deadline()`` (None: no timer).
"""

from __future__ import annotations

import logging
from dataclasses import replace

from ringline.engine.transports.sip.message import (
    MAGIC_COOKIE,
    Request,
    Response,
    SipError,
    error_response,
    make_response,
    new_tag,
    parse,
)
from ringline.engine.transports.sip.transaction import (
    DEFAULT_TIMERS,
    Action,
    Addr,
    Cancelled,
    ClientInviteTransaction,
    ClientNonInviteTransaction,
    ClientTransaction,
    Deliver,
    ServerInviteTransaction,
    ServerNonInviteTransaction,
    ServerTransaction,
    Terminated,
    Timers,
    Transmit,
    TxState,
)

log = logging.getLogger(__name__)

ClientKey = tuple[str, str]
ServerKey = tuple[str, str, int, str]


def client_key(message: Request | Response) -> ClientKey:
    """Top Via branch and CSeq method (RFC 3261 17.1.3)."""
    return message.branch or "", message.cseq.method


def server_key(request: Request, method: str | None = None) -> ServerKey:
    """Top Via branch, sent-by and method, ACK counted as INVITE (RFC 3261 17.2.3). A pre-3261
    branch (no magic cookie) is widened with Call-ID, From tag and CSeq number."""
    via = request.top_via
    branch = via.branch or ""
    if not branch.startswith(MAGIC_COOKIE):
        branch = f"{branch}|{request.call_id}|{request.from_tag}|{request.cseq.number}"
    host, port = via.sent_by
    method = method or request.method
    return branch, host, port, "INVITE" if method == "ACK" else method


def response_addr(message: Request | Response, source: Addr = None) -> Addr:
    """Where responses to a request go (RFC 3261 18.2.2, RFC 3581), from its (or its response's)
    top Via: the ``received`` host (else the source host, else sent-by) and the ``rport`` (else the
    source port when rport was asked for, else the sent-by port)."""
    via = message.top_via
    host, port = via.sent_by
    if source is not None:
        src_host, src_port = source
        return (via.received or src_host, via.rport or (src_port if via.wants_rport else port))
    return (via.received or host, via.rport or port)


class TransactionLayer:
    """Every live client and server transaction of one UA, keyed as RFC 3261 17.1.3 / 17.2.3 say."""

    def __init__(self, timers: Timers = DEFAULT_TIMERS) -> None:
        self.timers = timers
        self._clients: dict[ClientKey, ClientTransaction] = {}
        self._servers: dict[ServerKey, ServerTransaction] = {}

    def __len__(self) -> int:
        return len(self._clients) + len(self._servers)

    # -- inbound ---------------------------------------------------------------------------------

    def receive_datagram(self, data: bytes, now: float, addr: Addr = None) -> list[Action]:
        """Parse and handle one datagram. A malformed request is answered (400, 505, 513...) when
        ``error_response`` can build an answer, else dropped; both are logged, neither raises."""
        if not data.strip(b"\r\n"):
            return []  # a CRLF keep-alive (RFC 5626 3.5.1)
        try:
            message = parse(data)
        except SipError as exc:
            answer = error_response(data, exc)
            log.info("bad SIP from %s (%s): %s", addr, "answered" if answer else "dropped", exc)
            return [Transmit(answer, response_addr(answer, addr))] if answer else []
        return self.receive(message, now, addr)

    def receive(self, message: Request | Response, now: float, addr: Addr = None) -> list[Action]:
        """Handle one parsed message from ``addr``."""
        if isinstance(message, Response):
            return self._receive_response(message, now, addr)
        if addr is not None:
            message = _stamp_via(message, addr)
        key = server_key(message)
        if message.method == "ACK":
            return self._receive_ack(message, key, now, addr)
        txn = self._servers.get(key)
        if txn is not None:
            return txn.receive_request(message, now)
        reply_to = response_addr(message, addr)
        if message.method == "CANCEL":
            return self._receive_cancel(message, key, now, reply_to)
        new: ServerTransaction
        if message.method == "INVITE":
            new = ServerInviteTransaction(message, reply_to, self.timers)
        else:
            new = ServerNonInviteTransaction(message, reply_to, self.timers)
        self._servers[key] = new
        return new.start(now)

    def _receive_response(self, response: Response, now: float, addr: Addr) -> list[Action]:
        txn = self._clients.get(client_key(response))
        if txn is not None:
            return txn.receive_response(response, now) + self._reap_client(client_key(response))
        if response.cseq.method == "INVITE" and 200 <= response.status < 300:
            return [Deliver(response, addr)]  # a 2xx after the transaction ended: the TU must ACK it
        log.debug("stray %d response to %s dropped", response.status, response.cseq.method)
        return []

    def _receive_ack(self, ack: Request, key: ServerKey, now: float, addr: Addr) -> list[Action]:
        txn = self._servers.get(key)
        if isinstance(txn, ServerInviteTransaction) and txn.state is not TxState.ACCEPTED:
            return txn.receive_request(ack, now)  # the ACK of a non-2xx final: absorbed
        number = ack.cseq.number
        for txn in self._servers.values():
            if (
                isinstance(txn, ServerInviteTransaction)
                and txn.state is TxState.ACCEPTED
                and txn.request.call_id == ack.call_id
                and txn.request.cseq.number == number
            ):
                txn.ack_received()
        return [Deliver(ack, addr)]

    def _receive_cancel(self, cancel: Request, key: ServerKey, now: float, reply_to: Addr) -> list[Action]:
        txn = ServerNonInviteTransaction(cancel, reply_to, self.timers)
        self._servers[key] = txn
        invite = self._servers.get(key[:3] + ("INVITE",))
        if not isinstance(invite, ServerInviteTransaction):
            return txn.send_response(make_response(cancel, 481, to_tag=new_tag()), now)
        tag = invite.to_tag or new_tag()
        out = txn.send_response(make_response(cancel, 200, to_tag=tag), now)
        if invite.state is TxState.PROCEEDING:
            out += invite.send_response(make_response(invite.request, 487, to_tag=tag), now)
            out.append(Cancelled(invite.request, cancel))
        return out

    # -- outbound --------------------------------------------------------------------------------

    def send_request(self, request: Request, now: float, addr: Addr = None) -> list[Action]:
        """Start a client transaction for ``request`` (sent to ``addr``). An ACK is not a
        transaction: it is transmitted once and remembered to answer retransmitted 2xx."""
        if request.method == "ACK":
            for txn in self._clients.values():
                if (
                    isinstance(txn, ClientInviteTransaction)
                    and txn.state is TxState.ACCEPTED
                    and txn.request.call_id == request.call_id
                    and txn.request.cseq.number == request.cseq.number
                ):
                    txn.acks[request.to_tag or ""] = request
            return [Transmit(request, addr)]
        key = client_key(request)
        if key in self._clients:
            raise ValueError(f"a client transaction for {key} already exists")
        txn: ClientTransaction
        if request.method == "INVITE":
            txn = ClientInviteTransaction(request, addr, self.timers)
        else:
            txn = ClientNonInviteTransaction(request, addr, self.timers)
        self._clients[key] = txn
        return txn.start(now)

    def send_response(self, response: Response, now: float) -> list[Action]:
        """Send the TU's response through the server transaction it answers (found by its Via
        and CSeq, which ``make_response`` copied from the request)."""
        via, method = response.top_via, response.cseq.method
        key: ServerKey = (via.branch or "", *via.sent_by, method)
        if key not in self._servers:  # a pre-3261 branch: the key was widened
            wide = f"{key[0]}|{response.call_id}|{response.from_tag}|{response.cseq.number}"
            key = (wide, *via.sent_by, method)
        txn = self._servers.get(key)
        if txn is None:
            log.warning("no server transaction for %d %s, dropped", response.status, method)
            return []
        return txn.send_response(response, now) + self._reap_servers()

    # -- time ------------------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """The earliest timer of any transaction, or None when none is running."""
        txns = (*self._clients.values(), *self._servers.values())
        deadlines = [d for t in txns if (d := t.next_deadline()) is not None]
        return min(deadlines, default=None)

    def timeout(self, now: float) -> list[Action]:
        """Fire every timer due at ``now`` and drop the transactions that ended."""
        out: list[Action] = []
        for key, ctxn in list(self._clients.items()):
            if (d := ctxn.next_deadline()) is not None and d <= now:
                out += ctxn.timeout(now) + self._reap_client(key)
        for stxn in list(self._servers.values()):
            if (d := stxn.next_deadline()) is not None and d <= now:
                out += stxn.timeout(now)
        return out + self._reap_servers()

    def _reap_client(self, key: ClientKey) -> list[Action]:
        txn = self._clients.get(key)
        if txn is None or not txn.terminated:
            return []
        del self._clients[key]
        return [Terminated(txn.request, txn.reason)]

    def _reap_servers(self) -> list[Action]:
        done = [key for key, txn in self._servers.items() if txn.terminated]
        return [Terminated(txn.request, txn.reason) for key in done if (txn := self._servers.pop(key))]


def _stamp_via(request: Request, addr: Addr) -> Request:
    """Add ``received`` and fill ``rport`` in the top Via (RFC 3261 18.2.1, RFC 3581)."""
    try:
        host, port = addr
        via = request.top_via
    except (TypeError, ValueError):
        return request
    stamped = via
    if via.host != host:
        stamped = stamped.with_param("received", str(host))
    if via.wants_rport:
        stamped = stamped.with_param("rport", str(port))
    if stamped is via:
        return request
    return replace(request, headers=request.headers.replace_first("Via", str(stamped)))
