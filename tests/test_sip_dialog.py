"""SIP dialogs (RFC 3261 section 12): creation on both sides from RFC 3665-style messages, in-dialog
requests with route sets (loose and strict), CSeq checks, dialog lookup, and a whole call between
two transaction layers talking through bytes."""

from __future__ import annotations

import pytest

from ringline.engine.transports.sip.dialog import (
    Dialog,
    DialogError,
    DialogState,
    DialogTable,
    make_cancel,
    make_request,
)
from ringline.engine.transports.sip.layer import TransactionLayer
from ringline.engine.transports.sip.message import NameAddr, Request, Response, make_response, parse
from ringline.engine.transports.sip.transaction import Action, Deliver, Terminated, Transmit
from tests.sip_messages import INVITE, OK, RINGING

BOB = ("192.0.2.4", 5060)


def uas_dialog() -> tuple[Request, Dialog]:
    invite = parse(INVITE)
    assert isinstance(invite, Request)
    ok = make_response(invite, 200, to_tag="314159", headers=[("Contact", "<sip:bob@192.0.2.4>")])
    return invite, Dialog.from_incoming(invite, ok, local_contact="sip:bob@192.0.2.4", sent_by=BOB)


def test_uas_dialog_and_bye():
    invite, dialog = uas_dialog()
    assert dialog.state is DialogState.CONFIRMED and not dialog.is_uac
    assert (dialog.call_id, dialog.local_tag, dialog.remote_tag) == (invite.call_id, "314159", "9fxced76sl")
    assert dialog.route_set == ("<sip:ss1.atlanta.example.com;lr>",)
    assert dialog.remote_target == "sip:alice@client.atlanta.example.com"
    bye = dialog.create_request("BYE")
    assert bye.uri == "sip:alice@client.atlanta.example.com"
    assert bye.headers.get_all("Route") == ["<sip:ss1.atlanta.example.com;lr>"]
    assert bye.from_addr == NameAddr("sip:bob@biloxi.example.com", "Bob", (("tag", "314159"),))
    assert bye.to_addr == NameAddr("sip:alice@atlanta.example.com", "Alice", (("tag", "9fxced76sl"),))
    assert str(bye.cseq) == "1 BYE" and bye.call_id == invite.call_id
    assert bye.branch and bye.branch.startswith("z9hG4bK") and bye.top_via.sent_by == BOB
    assert "Contact" not in bye.headers
    assert parse(bytes(bye)) == parse(bytes(bye))  # serializes to a valid message
    refer = dialog.create_request("REFER", headers=[("Refer-To", "<sip:carol@example.com>")])
    assert str(refer.cseq) == "2 REFER" and refer.headers.get("Contact") == "<sip:bob@192.0.2.4>"
    info = dialog.create_request("INFO", body=b"Signal=5\r\n", content_type="application/dtmf-relay")
    assert info.headers.get("Content-Type") == "application/dtmf-relay" and b"Content-Length: 10" in bytes(info)


def test_uac_dialog_early_then_confirmed_with_route_set_from_2xx():
    invite = parse(INVITE)
    ringing, ok = parse(RINGING), parse(OK)
    assert isinstance(invite, Request) and isinstance(ringing, Response) and isinstance(ok, Response)
    dialog = Dialog.from_outgoing(invite, ringing, sent_by=("192.0.2.101", 5060))
    assert dialog.state is DialogState.EARLY and dialog.is_uac
    assert dialog.route_set == ("<sip:ss1.atlanta.example.com;lr>",)
    dialog.receive_response(ok)
    assert dialog.state is DialogState.CONFIRMED
    assert dialog.route_set == ("<sip:ss1.atlanta.example.com;lr>", "<sip:ss2.biloxi.example.com;lr>")
    ack = dialog.create_ack(invite)
    assert (ack.method, str(ack.cseq), ack.uri) == ("ACK", "1 ACK", "sip:bob@client.biloxi.example.com")
    assert ack.branch != invite.branch and ack.to_tag == "314159" and ack.from_tag == "9fxced76sl"
    assert ack.headers.get_all("Route") == list(dialog.route_set)
    bye = dialog.create_request("BYE")
    assert str(bye.cseq) == "2 BYE"
    dialog.receive_response(make_response(bye, 481))
    assert dialog.state is DialogState.TERMINATED


def test_early_dialog_ends_on_failure_and_reinvite_refreshes_target():
    invite, ringing = parse(INVITE), parse(RINGING)
    assert isinstance(invite, Request) and isinstance(ringing, Response)
    early = Dialog.from_outgoing(invite, ringing, sent_by=("192.0.2.101", 5060))
    early.receive_response(make_response(invite, 486, to_tag="314159"))
    assert early.state is DialogState.TERMINATED

    _, dialog = uas_dialog()
    reinvite = Request("INVITE", "sip:bob@192.0.2.4", dialog.create_request("INVITE").headers)
    theirs = Dialog.from_incoming(
        reinvite, make_response(reinvite, 200, to_tag="t"), local_contact="sip:x@y", sent_by=BOB
    )
    assert theirs.remote_target == "sip:bob@192.0.2.4"
    moved = parse(INVITE).headers.set("Contact", "<sip:alice@192.0.2.200>").set("CSeq", "2 INVITE")
    dialog.receive_request(Request("INVITE", dialog.local_contact, moved))
    assert dialog.remote_target == "sip:alice@192.0.2.200" and dialog.remote_seq == 2


def test_strict_route_rewrites_request_uri():
    _, dialog = uas_dialog()
    dialog.route_set = ("<sip:proxy1.example.com>", "<sip:proxy2.example.com;lr>")
    bye = dialog.create_request("BYE")
    assert bye.uri == "sip:proxy1.example.com"
    assert bye.headers.get_all("Route") == ["<sip:proxy2.example.com;lr>", "<sip:alice@client.atlanta.example.com>"]


def test_in_dialog_request_checks():
    invite, dialog = uas_dialog()
    old = Request("INFO", "sip:bob@192.0.2.4", invite.headers.set("CSeq", "0 INFO"))
    with pytest.raises(DialogError) as info:
        dialog.receive_request(old)
    assert (str(info.value), info.value.status) == ("CSeq 0 lower than 1", 500)
    ack = Request("ACK", "sip:bob@192.0.2.4", invite.headers.set("CSeq", "1 ACK"))
    dialog.receive_request(ack)  # ACK reuses the INVITE's number
    bye = Request("BYE", "sip:bob@192.0.2.4", invite.headers.set("CSeq", "5 BYE"))
    dialog.receive_request(bye)
    assert dialog.remote_seq == 5 and dialog.state is DialogState.TERMINATED


def test_dialog_table_lookup():
    invite, dialog = uas_dialog()
    table = DialogTable()
    table.add(dialog)
    assert table.for_request(invite) is None  # no To tag: not in a dialog
    to = "Bob <sip:bob@biloxi.example.com>;tag=314159"
    bye = Request("BYE", "sip:bob@192.0.2.4", invite.headers.set("To", to).set("CSeq", "2 BYE"))
    assert table.for_request(bye) is dialog
    wrong = Request("BYE", "sip:bob@192.0.2.4", bye.headers.set("Call-ID", "wrong@example.com"))
    with pytest.raises(DialogError) as info:
        table.for_request(wrong)
    assert (str(info.value), info.value.status) == ("no dialog for Call-ID 'wrong@example.com'", 481)
    ours = dialog.create_request("BYE")
    reply = make_response(ours, 200)
    assert table.for_response(reply) is dialog and len(table) == 1
    table.remove(dialog)
    assert table.get(dialog.id) is None and table.for_response(reply) is None


def test_dialog_needs_contact():
    invite = parse(INVITE)
    assert isinstance(invite, Request)
    no_contact = Request("INVITE", invite.uri, invite.headers.remove("Contact"))
    with pytest.raises(DialogError, match="^missing Contact header$"):
        Dialog.from_incoming(
            no_contact, make_response(no_contact, 200, to_tag="a"), local_contact="sip:b@c", sent_by=BOB
        )


def test_make_request_and_cancel():
    invite = make_request(
        "INVITE",
        "sip:bob@192.0.2.4",
        from_=NameAddr("sip:agent@192.0.2.1", "Agent"),
        to=NameAddr("sip:bob@192.0.2.4"),
        sent_by=("192.0.2.1", 5070),
        contact="sip:agent@192.0.2.1:5070",
        headers=[("Route", "<sip:edge.example.com;lr>")],
        body=b"v=0\r\n",
        content_type="application/sdp",
    )
    assert invite.from_tag and invite.call_id.endswith("@192.0.2.1") and str(invite.cseq) == "1 INVITE"
    assert invite.top_via.wants_rport and invite.top_via.sent_by == ("192.0.2.1", 5070)
    assert parse(bytes(invite)) == invite.with_headers(invite.headers.add("Content-Length", "5"))
    cancel = make_cancel(invite)
    assert (cancel.method, cancel.uri, str(cancel.cseq)) == ("CANCEL", invite.uri, "1 CANCEL")
    assert cancel.branch == invite.branch and cancel.headers.get_all("Route") == ["<sip:edge.example.com;lr>"]
    assert (cancel.from_tag, cancel.call_id, cancel.body) == (invite.from_tag, invite.call_id, b"")


def exchange(actions: list[Action], peer: TransactionLayer, now: float, src: tuple[str, int]) -> list[Action]:
    """Carry every Transmit to ``peer`` through bytes; return what the peer did, plus the rest."""
    out: list[Action] = []
    for action in actions:
        if isinstance(action, Transmit):
            out += peer.receive_datagram(bytes(action.message), now, src)
    return out


def delivered(actions: list[Action]) -> list[Request | Response]:
    return [a.message for a in actions if isinstance(a, Deliver)]


def test_whole_call_between_two_transaction_layers():
    alice_addr, bob_addr = ("192.0.2.101", 5060), BOB
    alice, bob = TransactionLayer(), TransactionLayer()
    invite = make_request(
        "INVITE", "sip:bob@192.0.2.4", from_=NameAddr("sip:alice@example.com"), to=NameAddr("sip:bob@example.com"),
        sent_by=alice_addr, contact="sip:alice@192.0.2.101",
    )  # fmt: skip
    at_bob = exchange(alice.send_request(invite, 0.0, bob_addr), bob, 0.0, alice_addr)
    (invite_in,) = delivered(at_bob)
    assert isinstance(invite_in, Request)
    at_alice = exchange(at_bob, alice, 0.01, bob_addr)  # the 100 Trying
    assert [m.status for m in delivered(at_alice)] == [100]  # type: ignore[union-attr]

    ok = make_response(invite_in, 200, to_tag="bobtag", headers=[("Contact", "<sip:bob@192.0.2.4>")])
    bob_dialog = Dialog.from_incoming(invite_in, ok, local_contact="sip:bob@192.0.2.4", sent_by=bob_addr)
    at_alice = exchange(bob.send_response(ok, 0.1), alice, 0.1, bob_addr)
    (ok_in,) = delivered(at_alice)
    assert isinstance(ok_in, Response) and ok_in.status == 200
    alice_dialog = Dialog.from_outgoing(invite, ok_in, sent_by=alice_addr)
    ack = alice_dialog.create_ack(invite)
    at_bob = exchange(alice.send_request(ack, 0.2, bob_addr), bob, 0.2, alice_addr)
    assert [m.method for m in delivered(at_bob)] == ["ACK"]  # type: ignore[union-attr]
    bob_dialog.receive_request(delivered(at_bob)[0])  # type: ignore[arg-type]

    bye = alice_dialog.create_request("BYE")
    at_bob = exchange(alice.send_request(bye, 5.0, bob_addr), bob, 5.0, alice_addr)
    (bye_in,) = delivered(at_bob)
    assert isinstance(bye_in, Request)
    bob_dialog.receive_request(bye_in)
    assert bob_dialog.state is DialogState.TERMINATED
    at_alice = exchange(bob.send_response(make_response(bye_in, 200), 5.1), alice, 5.1, bob_addr)
    assert [m.status for m in delivered(at_alice)] == [200]  # type: ignore[union-attr]

    # Both layers drain to empty with no further retransmissions.
    for layer in (alice, bob):
        ended = []
        while (deadline := layer.next_deadline()) is not None:
            actions = layer.timeout(deadline)
            assert not any(isinstance(a, Transmit) for a in actions)
            ended += [a for a in actions if isinstance(a, Terminated)]
        assert len(layer) == 0 and ended
