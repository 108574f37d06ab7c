"""SIP transactions over UDP (RFC 3261 section 17, RFC 6026) on a fake clock: retransmission
schedules of timers A, E, G and the 2xx, the timeouts B, F, H, L with their outputs, the absorbing
timers D, I, J, K, M, and the transaction layer's matching (branch + method, ACK, CANCEL)."""

from __future__ import annotations

import pytest

from ringline.engine.transports.sip.dialog import make_request
from ringline.engine.transports.sip.layer import TransactionLayer, server_key
from ringline.engine.transports.sip.message import NameAddr, Request, Response, make_response, new_branch, parse
from ringline.engine.transports.sip.transaction import (
    Action,
    Cancelled,
    Deliver,
    Terminated,
    TimedOut,
    Timers,
    Transmit,
    TxState,
)
from tests.sip_messages import INVITE, OPTIONS

PEER = ("192.0.2.50", 5060)
ME = ("192.0.2.1", 5070)


def request(method: str = "INVITE") -> Request:
    return make_request(
        method,
        "sip:bob@192.0.2.50",
        from_=NameAddr("sip:agent@192.0.2.1"),
        to=NameAddr("sip:bob@192.0.2.50"),
        sent_by=ME,
        contact="sip:agent@192.0.2.1:5070",
    )


def run(layer: TransactionLayer, until: float) -> list[tuple[float, Action]]:
    """Fire the layer's timers in order up to ``until``, as the UA's timer loop would."""
    out: list[tuple[float, Action]] = []
    while (deadline := layer.next_deadline()) is not None and deadline <= until:
        out += [(deadline, action) for action in layer.timeout(deadline)]
    return out


def transmit_times(events: list[tuple[float, Action]]) -> list[float]:
    return [t for t, a in events if isinstance(a, Transmit)]


# -- client INVITE ---------------------------------------------------------------------------------


def test_invite_client_timer_a_doubles_and_timer_b_gives_408():
    layer = TransactionLayer()
    invite = request()
    assert layer.send_request(invite, 0.0, PEER) == [Transmit(invite, PEER)]
    events = run(layer, 100.0)
    # Timer A doubles without the T2 cap (RFC 3261 17.1.1.2: only Timer E is capped).
    assert transmit_times(events) == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert all(a.message is invite for _, a in events if isinstance(a, Transmit))
    t, timeout = events[-2]
    assert t == 32.0 and isinstance(timeout, Deliver) and timeout.local
    assert isinstance(timeout.message, Response) and timeout.message.status == 408
    assert timeout.request is invite
    assert events[-1] == (32.0, Terminated(invite, "timer B"))
    assert len(layer) == 0 and layer.next_deadline() is None


def test_invite_client_provisional_stops_retransmission_and_2xx_is_acked_by_the_tu():
    layer = TransactionLayer()
    invite = request()
    layer.send_request(invite, 0.0, PEER)
    ringing = make_response(invite, 180, to_tag="b1")
    assert layer.receive(ringing, 0.3, PEER) == [Deliver(ringing, PEER, invite)]
    assert run(layer, 200.0) == []  # Proceeding: no retransmission, no timer B
    ok = make_response(invite, 200, to_tag="b1", headers=[("Contact", "<sip:bob@192.0.2.50>")])
    assert layer.receive(ok, 201.0, PEER) == [Deliver(ok, PEER, invite)]
    assert layer.receive(ok, 201.5, PEER) == [Deliver(ok, PEER, invite)]  # no ACK known yet: the TU sees it
    ack = Request("ACK", "sip:bob@192.0.2.50", ok.headers.set("CSeq", "1 ACK"))
    assert layer.send_request(ack, 201.6, PEER) == [Transmit(ack, PEER)]
    assert layer.receive(ok, 202.0, PEER) == [Transmit(ack, PEER)]  # retransmitted 2xx: ACK resent
    assert run(layer, 201.0 + 32.0) == [(233.0, Terminated(invite, "timer M"))]


def test_invite_client_non_2xx_is_acked_by_the_transaction():
    layer = TransactionLayer()
    invite = request()
    layer.send_request(invite, 0.0, PEER)
    busy = make_response(invite, 486, to_tag="b2")
    actions = layer.receive(busy, 0.7, PEER)
    assert [type(a) for a in actions] == [Transmit, Deliver]
    ack = actions[0].message
    assert isinstance(ack, Request) and ack.method == "ACK" and ack.uri == invite.uri
    assert ack.headers.get_all("Via") == [invite.headers.get("Via")]  # same branch
    assert ack.to_tag == "b2" and ack.from_tag == invite.from_tag and str(ack.cseq) == "1 ACK"
    assert actions[1] == Deliver(busy, PEER, invite)
    assert layer.receive(busy, 1.0, PEER) == [Transmit(ack, PEER)]  # retransmission: ACK again, not delivered
    assert run(layer, 100.0) == [(32.7, Terminated(invite, "timer D"))]


def test_late_timeout_call_catches_up():
    layer = TransactionLayer(Timers(t1=0.1))
    layer.send_request(request(), 0.0, PEER)
    actions = layer.timeout(1.0)  # the UA's timer fired late: A at 0.1, 0.3, 0.7 all due
    assert len([a for a in actions if isinstance(a, Transmit)]) == 3
    assert layer.next_deadline() == pytest.approx(1.5)
    events = run(layer, 10.0)
    assert events[-1][0] == pytest.approx(6.4)  # timer B = 64*T1
    assert isinstance(events[-1][1], Terminated) and events[-1][1].reason == "timer B"


# -- client non-INVITE -----------------------------------------------------------------------------


def test_non_invite_client_timer_e_caps_at_t2_and_timer_f_gives_408():
    layer = TransactionLayer()
    options = request("OPTIONS")
    layer.send_request(options, 0.0, PEER)
    events = run(layer, 100.0)
    expected = [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert transmit_times(events) == expected
    deliver = next(a for _, a in events if isinstance(a, Deliver))
    assert deliver.local and isinstance(deliver.message, Response) and deliver.message.status == 408
    assert events[-1] == (32.0, Terminated(options, "timer F"))


def test_non_invite_client_proceeding_retransmits_every_t2_then_completes():
    layer = TransactionLayer()
    bye = request("BYE")
    layer.send_request(bye, 0.0, PEER)
    trying = make_response(bye, 100)
    assert layer.receive(trying, 0.2, PEER) == [Deliver(trying, PEER, bye)]
    assert transmit_times(run(layer, 10.0)) == [0.5, 4.5, 8.5]
    ok = make_response(bye, 200, to_tag="x")
    assert layer.receive(ok, 10.0, PEER) == [Deliver(ok, PEER, bye)]
    assert layer.receive(ok, 10.5, PEER) == []  # Completed absorbs retransmissions
    assert run(layer, 100.0) == [(15.0, Terminated(bye, "timer K"))]


def test_stray_responses():
    layer = TransactionLayer()
    invite = request()
    ok = make_response(invite, 200, to_tag="late")
    assert layer.receive(ok, 0.0, PEER) == [Deliver(ok, PEER)]  # a 2xx with no transaction: TU must ACK/BYE
    assert layer.receive(make_response(invite, 180, to_tag="x"), 0.0, PEER) == []
    assert layer.receive(make_response(request("OPTIONS"), 200, to_tag="y"), 0.0, PEER) == []


def test_duplicate_client_transaction_is_our_bug():
    layer = TransactionLayer()
    options = request("OPTIONS")
    layer.send_request(options, 0.0, PEER)
    with pytest.raises(ValueError, match="already exists"):
        layer.send_request(options, 0.1, PEER)


# -- server INVITE ---------------------------------------------------------------------------------


def incoming_invite(layer: TransactionLayer, now: float = 0.0) -> tuple[Request, list[Action]]:
    actions = layer.receive(parse(INVITE), now, PEER)
    delivered = next(a.message for a in actions if isinstance(a, Deliver))
    assert isinstance(delivered, Request)
    return delivered, actions


def test_invite_server_trying_then_retransmits_last_provisional():
    layer = TransactionLayer()
    invite, actions = incoming_invite(layer)
    trying = actions[0]
    assert isinstance(trying, Transmit) and isinstance(trying.message, Response)
    assert trying.message.status == 100 and trying.message.to_tag is None
    assert actions[1] == Deliver(invite, PEER)
    assert layer.receive(parse(INVITE), 0.1, PEER) == [Transmit(trying.message, trying.addr)]
    ringing = make_response(invite, 180, to_tag="bob1")
    assert layer.send_response(ringing, 0.2) == [Transmit(ringing, trying.addr)]
    assert layer.receive(parse(INVITE), 0.3, PEER) == [Transmit(ringing, trying.addr)]
    assert run(layer, 1000.0) == []  # the TU owns the time to answer


def test_invite_server_timer_g_retransmits_until_timer_h():
    layer = TransactionLayer()
    invite, _ = incoming_invite(layer)
    busy = make_response(invite, 486, to_tag="bob1")
    layer.send_response(busy, 0.0)
    events = run(layer, 100.0)
    assert transmit_times(events) == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert all(a.message is busy for _, a in events if isinstance(a, Transmit))
    assert events[-2:] == [(32.0, TimedOut(invite, "H")), (32.0, Terminated(invite, "timer H"))]


def test_invite_server_ack_confirms_and_timer_i_ends():
    layer = TransactionLayer()
    invite, _ = incoming_invite(layer)
    busy = make_response(invite, 486, to_tag="bob1")
    layer.send_response(busy, 0.0)
    assert transmit_times(run(layer, 2.0)) == [0.5, 1.5]
    ack = Request("ACK", invite.uri, busy.headers.set("CSeq", "1 ACK").remove("Content-Length"))
    assert layer.receive(ack, 2.0, PEER) == []  # absorbed, not delivered
    assert layer.receive(ack, 2.5, PEER) == []
    assert layer.receive(parse(INVITE), 2.6, PEER) == []  # Confirmed absorbs INVITE retransmissions too
    assert run(layer, 100.0) == [(7.0, Terminated(invite, "timer I"))]


def test_invite_server_retransmits_2xx_until_its_ack():
    layer = TransactionLayer()
    invite, _ = incoming_invite(layer)
    ok = make_response(invite, 200, to_tag="bob1", headers=[("Contact", "<sip:bob@192.0.2.1>")])
    assert [type(a) for a in layer.send_response(ok, 0.0)] == [Transmit]
    assert transmit_times(run(layer, 4.0)) == [0.5, 1.5, 3.5]
    assert layer.receive(parse(INVITE), 4.0, PEER) == []  # Accepted absorbs retransmitted INVITEs
    ack_headers = ok.headers.replace_first("Via", f"SIP/2.0/UDP 192.0.2.50;branch={new_branch()}")
    ack = Request("ACK", "sip:bob@192.0.2.1", ack_headers.set("CSeq", "1 ACK"))
    actions = layer.receive(ack, 5.0, PEER)
    assert len(actions) == 1 and isinstance(actions[0], Deliver) and actions[0].message.method == "ACK"  # type: ignore[union-attr]
    assert run(layer, 100.0) == [(32.0, Terminated(invite, "timer L"))]  # no more 2xx, no TimedOut


def test_invite_server_2xx_never_acked_times_out_with_l():
    layer = TransactionLayer()
    invite, _ = incoming_invite(layer)
    layer.send_response(make_response(invite, 200, to_tag="bob1"), 0.0)
    events = run(layer, 100.0)
    assert transmit_times(events) == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert events[-2:] == [(32.0, TimedOut(invite, "L")), (32.0, Terminated(invite, "timer L"))]


def test_cancel_of_pending_invite():
    layer = TransactionLayer()
    invite, _ = incoming_invite(layer)
    layer.send_response(make_response(invite, 180, to_tag="bob1"), 0.1)
    cancel_headers = parse(INVITE).headers.set("CSeq", "1 CANCEL").remove("Content-Type").remove("Content-Length")
    cancel = Request("CANCEL", invite.uri, cancel_headers)
    actions = layer.receive(cancel, 0.5, PEER)
    assert [type(a) for a in actions] == [Transmit, Transmit, Cancelled]
    ok, terminated = actions[0].message, actions[1].message  # type: ignore[union-attr]
    assert isinstance(ok, Response) and (ok.status, ok.cseq.method, ok.to_tag) == (200, "CANCEL", "bob1")
    assert isinstance(terminated, Response) and (terminated.status, terminated.cseq.method) == (487, "INVITE")
    assert terminated.to_tag == "bob1"
    cancelled = actions[2]
    assert isinstance(cancelled, Cancelled) and cancelled.invite == invite and cancelled.cancel.method == "CANCEL"
    assert layer.receive(cancel, 0.6, PEER) == [Transmit(ok, actions[0].addr)]  # type: ignore[union-attr]
    ack = Request("ACK", invite.uri, terminated.headers.set("CSeq", "1 ACK"))
    assert layer.receive(ack, 0.7, PEER) == []
    # a CANCEL after the final response: 200, nothing else
    layer2 = TransactionLayer()
    invite2, _ = incoming_invite(layer2)
    layer2.send_response(make_response(invite2, 200, to_tag="bob2"), 0.1)
    actions = layer2.receive(cancel, 0.2, PEER)
    assert [(a.message.status, a.message.cseq.method) for a in actions if isinstance(a, Transmit)] == [(200, "CANCEL")]
    assert not any(isinstance(a, Cancelled) for a in actions)


def test_cancel_without_invite_is_481():
    layer = TransactionLayer()
    cancel = Request("CANCEL", "sip:x@y", parse(OPTIONS).headers.set("CSeq", "63104 CANCEL"))
    actions = layer.receive(cancel, 0.0, PEER)
    assert len(actions) == 1 and isinstance(actions[0], Transmit)
    assert actions[0].message.status == 481  # type: ignore[union-attr]


# -- server non-INVITE ---------------------------------------------------------------------------


def test_non_invite_server_and_timer_j():
    layer = TransactionLayer()
    options = parse(OPTIONS)
    actions = layer.receive(options, 0.0, PEER)
    assert len(actions) == 1 and isinstance(actions[0], Deliver)
    delivered = actions[0].message
    assert isinstance(delivered, Request)
    # RFC 3581: rport filled in and received added, and the response goes back there
    assert delivered.top_via.rport == 5060 and delivered.top_via.received == "192.0.2.50"
    assert layer.receive(options, 0.1, PEER) == []  # Trying: retransmission absorbed
    ok = make_response(delivered, 200, to_tag="c1")
    assert layer.send_response(ok, 0.2) == [Transmit(ok, PEER)]
    assert layer.receive(options, 1.0, PEER) == [Transmit(ok, PEER)]
    assert run(layer, 100.0) == [(32.2, Terminated(delivered, "timer J"))]
    assert layer.send_response(ok, 40.0) == []  # nothing to send it through any more


def test_server_keys_follow_17_2_3():
    invite = parse(INVITE)
    assert isinstance(invite, Request)
    assert server_key(invite) == ("z9hG4bK2d4790.1", "ss1.atlanta.example.com", 5060, "INVITE")
    assert server_key(invite, "ACK")[3] == "INVITE"
    old = Request("OPTIONS", "sip:a@b", invite.headers.replace_first("Via", "SIP/2.0/UDP h;branch=1234"))
    assert server_key(old)[0] == "1234|3848276298220188511@atlanta.example.com|9fxced76sl|1"


def test_datagrams_good_bad_and_hostile():
    layer = TransactionLayer()
    assert layer.receive_datagram(b"\x00\xff garbage", 0.0, PEER) == []
    assert layer.receive_datagram(b"\r\n\r\n", 0.0, PEER) == []  # keep-alive
    bad = OPTIONS.replace(b"Content-Length: 0", b"Content-Length: 99")
    actions = layer.receive_datagram(bad, 0.0, PEER)
    assert len(actions) == 1 and isinstance(actions[0], Transmit) and actions[0].addr == PEER
    assert actions[0].message.status == 400  # type: ignore[union-attr]
    assert len(layer) == 0
    good = layer.receive_datagram(OPTIONS, 0.0, PEER)
    assert len(good) == 1 and isinstance(good[0], Deliver) and len(layer) == 1
    assert layer.receive_datagram(b"SIP/2.0 200 OK\r\n\r\n", 0.0, PEER) == []


def test_state_names():
    assert {s.value for s in TxState} >= {"calling", "proceeding", "completed", "confirmed", "terminated"}
