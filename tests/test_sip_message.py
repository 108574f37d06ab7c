"""SIP message parsing and serialization: torture-test style messages (after RFC 4475: compact and
folded headers, odd whitespace, multiple Via, escaped URIs, unknown methods), RFC 3665-style call
flow messages, every malformed input with its exact error, and responses built per RFC 3261 8.2.6."""

from __future__ import annotations

import pytest

from ringline.engine.transports.sip.message import (
    MAX_HEADERS,
    CSeq,
    Headers,
    NameAddr,
    Request,
    Response,
    SipError,
    SipUri,
    Via,
    error_response,
    make_response,
    new_branch,
    new_call_id,
    new_tag,
    parse,
)
from tests.sip_messages import BYE, INVITE, OK, OPTIONS, RINGING, crlf, with_body

# A tortuous INVITE in the style of RFC 4475 3.1.1.1 ("wsinv"): every header is legal but odd.
TORTUOUS = with_body(
    """INVITE sip:vivekg@chair-dnrc.example.com;unknownparam SIP/2.0
TO :
 sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n
from   : "J Rosenberg \\\\\\""       <sip:jdrosen@example.com>
  ;
  tag = 98asjd8
MaX-fOrWaRdS: 0068
Call-ID: wsinv.ndaksdj@192.0.2.1
Content-Length   : {cl}
cseq: 0009
  INVITE
Via  : SIP  /   2.0
 /UDP
    192.0.2.2;branch=390skdjuw
s :
NewFangledHeader:   newfangled value
 continued newfangled value
UnknownHeaderWithUnusualValue: ;;,,;;,;
Content-Type: application/sdp
Route:
 <sip:services.example.com;lr;unknownwith=value;unknown-no-value>
v:  SIP  / 2.0  / TCP     spindle.example.com   ;
  branch  =   z9hG4bK9ikj8  ,
 SIP  /    2.0   / UDP  192.168.255.111   ; branch=
 z9hG4bK30239
m:"Quoted string \\"\\"" <sip:jdrosen@example.com> ; newparam =
      newvalue ;
  secondparam ; q = 0.33

""",
    "v=0\no=mhandley 29739 7272939 IN IP4 192.0.2.3\ns=-\nc=IN IP4 192.0.2.4\nt=0 0\nm=audio 49217 RTP/AVP 0\n",
)

COMPACT = crlf(
    """OPTIONS sip:user@example.com SIP/2.0
v: SIP/2.0/UDP a.example.com;branch=z9hG4bK1, SIP/2.0/UDP b.example.com:5070;branch=z9hG4bK2;received=192.0.2.9
f: "Alice, A." <sip:alice@example.com>;tag=1
t: sip:user@example.com
i: compact-1@example.com
CSeq: 7 OPTIONS
m: <sip:alice@a.example.com>, "B" <sip:b@b.example.com;x=1,2>
k: timer, 100rel
l: 0

"""
)


def test_tortuous_invite_parses():
    msg = parse(TORTUOUS)
    assert isinstance(msg, Request)
    assert (msg.method, msg.uri) == ("INVITE", "sip:vivekg@chair-dnrc.example.com;unknownparam")
    assert msg.to_tag == "1918181833n"
    assert msg.from_addr.display_name == 'J Rosenberg \\"'
    assert msg.from_tag == "98asjd8"
    assert msg.cseq == CSeq(9, "INVITE")
    assert msg.headers.get("Max-Forwards") == "0068"
    assert msg.headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert msg.headers.get("Subject") == ""
    assert [v.branch for v in msg.vias] == ["390skdjuw", "z9hG4bK9ikj8", "z9hG4bK30239"]
    assert [v.transport for v in msg.vias] == ["UDP", "TCP", "UDP"]
    assert msg.vias[1].host == "spindle.example.com"
    assert msg.contact == NameAddr(
        "sip:jdrosen@example.com", 'Quoted string ""', (("newparam", "newvalue"), ("secondparam", None), ("q", "0.33"))
    )
    assert msg.body.startswith(b"v=0\r\n") and msg.body.endswith(b"RTP/AVP 0\r\n")


def test_compact_headers_expand_and_lists_split():
    msg = parse(COMPACT)
    names = [name for name, _ in msg.headers]
    assert names == [
        "Via",
        "Via",
        "From",
        "To",
        "Call-ID",
        "CSeq",
        "Contact",
        "Contact",
        "Supported",
        "Supported",
        "Content-Length",
    ]
    assert msg.headers.get("i") == msg.headers.get("CALL-id") == "compact-1@example.com"
    assert msg.from_addr.display_name == "Alice, A."
    assert msg.vias[1].sent_by == ("b.example.com", 5070)
    assert msg.vias[1].received == "192.0.2.9"
    assert msg.headers.get_all("m") == ["<sip:alice@a.example.com>", '"B" <sip:b@b.example.com;x=1,2>']
    assert msg.headers.get_all("Supported") == ["timer", "100rel"]


def test_call_flow_messages():
    invite, ringing, ok, bye = parse(INVITE), parse(RINGING), parse(OK), parse(BYE)
    assert isinstance(invite, Request) and isinstance(bye, Request)
    assert isinstance(ringing, Response) and (ringing.status, ringing.reason) == (180, "Ringing")
    assert isinstance(ok, Response) and ok.headers.get_all("Record-Route") == [
        "<sip:ss2.biloxi.example.com;lr>",
        "<sip:ss1.atlanta.example.com;lr>",
    ]
    assert invite.body.startswith(b"v=0\r\no=alice") and len(invite.body) == int(invite.headers.get("l") or 0)
    assert invite.branch == "z9hG4bK2d4790.1"
    assert bye.headers.get_all("Route")[0] == "<sip:ss2.biloxi.example.com;lr>"


@pytest.mark.parametrize("raw", [TORTUOUS, COMPACT, INVITE, RINGING, OK, BYE, OPTIONS])
def test_serialize_round_trips(raw: bytes):
    msg = parse(raw)
    again = parse(bytes(msg))
    assert again == msg
    assert bytes(again) == bytes(msg)


def test_serialization_writes_correct_content_length():
    msg = parse(INVITE)
    assert isinstance(msg, Request)
    changed = Request(msg.method, msg.uri, msg.headers.set("Content-Length", "3"), b"hello")
    data = bytes(changed)
    assert data.count(b"Content-Length") == 1
    assert data.endswith(b"Content-Length: 5\r\n\r\nhello")
    assert bytes(Response(200, "OK", parse(OK).headers)).endswith(b"Content-Length: 0\r\n\r\n")


def test_unknown_method_and_escaped_uris():
    raw = crlf(
        """NEWMETHOD sip:%61lice@example.com;transport=udp SIP/2.0
Via: SIP/2.0/UDP [2001:db8::9:1]:5070;branch=z9hG4bKunk;rport
From: <sip:sips%3Auser%40example.com@example.net>;tag=a
To: <sip:%61lice@example.com>
Call-ID: unknown-method@example.com
CSeq: 8 NEWMETHOD
Max-Forwards: 70

"""
    )
    msg = parse(raw)
    assert isinstance(msg, Request) and msg.method == "NEWMETHOD"
    assert msg.sip_uri() == SipUri("sip", "%61lice", "example.com", None, (("transport", "udp"),))
    assert msg.from_addr.sip_uri().user == "sips%3Auser%40example.com"
    via = msg.top_via
    assert (via.host, via.port, via.wants_rport, via.rport) == ("[2001:db8::9:1]", 5070, True, None)


def test_content_length_over_udp():
    base = "OPTIONS sip:a@b SIP/2.0\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\nFrom: <sip:a@b>;tag=1\nTo: <sip:a@b>\n"
    base += "Call-ID: cl@h\nCSeq: 1 OPTIONS\n"
    longer = parse(crlf(base + "Content-Length: 4\n\n") + b"abcdEXTRA")
    assert longer.body == b"abcd"
    absent = parse(crlf(base + "\n") + b"whole rest")
    assert absent.body == b"whole rest"
    lf_only = parse((base + "l: 2\n\nxyz").encode())
    assert lf_only.body == b"xy"
    leading = parse(b"\r\n\r\n" + crlf(base + "\n"))
    assert isinstance(leading, Request) and leading.call_id == "cl@h"


REQ = (
    "OPTIONS sip:a@b SIP/2.0\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\nFrom: <sip:a@b>;tag=1\nTo: <sip:a@b>\n"
    "Call-ID: bad@h\nCSeq: 1 OPTIONS\n"
)


@pytest.mark.parametrize(
    ("raw", "message", "status"),
    [
        (b"", "empty message", 400),
        (b"\r\n\r\n", "empty message", 400),
        (crlf(REQ), "truncated message: no blank line after headers", 400),
        (crlf(REQ + "Content-Length: 20\n\n") + b"0123456789", "body shorter than Content-Length (10 < 20)", 400),
        (crlf(REQ + "Content-Length: -5\n\n"), "invalid Content-Length '-5'", 400),
        (crlf(REQ + "Content-Length: five\n\n"), "invalid Content-Length 'five'", 400),
        (crlf(REQ + "Content-Length: 99999999999999\n\n"), "Content-Length 999999999999 exceeds 65535", 400),
        (crlf(REQ + "Content-Length: 70000\n\n"), "Content-Length 70000 exceeds 65535", 400),
        (crlf(REQ + "Content-Length: 1\nl: 2\n\nxx"), "conflicting Content-Length headers", 400),
        (crlf(REQ.replace("Call-ID: bad@h\n", "") + "\n"), "missing Call-ID header", 400),
        (crlf(REQ.replace("Via: SIP/2.0/UDP h;branch=z9hG4bKx\n", "") + "\n"), "missing Via header", 400),
        (crlf(REQ + "i: other@h\n\n"), "multiple Call-ID headers", 400),
        (crlf(REQ.replace("CSeq: 1 OPTIONS", "CSeq: 1 INVITE") + "\n"),
         "CSeq method 'INVITE' does not match request method 'OPTIONS'", 400),
        (crlf(REQ.replace("CSeq: 1 OPTIONS", "CSeq: 4294967296 OPTIONS") + "\n"), "CSeq number out of range", 400),
        (crlf(REQ.replace("CSeq: 1 OPTIONS", "CSeq: OPTIONS") + "\n"), "invalid CSeq 'OPTIONS'", 400),
        (crlf(REQ.replace("SIP/2.0\n", "SIP/7.0\n", 1) + "\n"), "unsupported SIP version 'SIP/7.0'", 505),
        (crlf(REQ.replace("OPTIONS sip:a@b SIP/2.0", "OPTIONS  sip:a@b SIP/2.0") + "\n"),
         "malformed request line 'OPTIONS  sip:a@b SIP/2.0'", 400),
        (crlf(REQ.replace("sip:a@b SIP", "sip:a@b:99999 SIP") + "\n"), "invalid port in URI 'sip:a@b:99999'", 400),
        (crlf(REQ.replace("sip:a@b SIP", "nocolon SIP") + "\n"), "invalid Request-URI 'nocolon'", 400),
        (crlf(REQ + "Max-Forwards: lots\n\n"), "invalid Max-Forwards 'lots'", 400),
        (crlf(REQ + "this is not a header\n\n"), "malformed header line 'this is not a header'", 400),
        (crlf(REQ.replace("UDP h;", "UDP ;") + "\n"), "invalid Via 'SIP/2.0/UDP ;branch=z9hG4bKx'", 400),
        (crlf(REQ.replace("SIP/2.0/UDP h", "HTTP/1.1/UDP h") + "\n"), "unsupported Via protocol 'HTTP/1.1'", 400),
        (crlf(REQ.replace("To: <sip:a@b>", "To: <sip:a@b") + "\n"), "invalid name-addr '<sip:a@b'", 400),
        (crlf(REQ.replace("Call-ID: bad@h", "Call-ID: ") + "\n"), "invalid Call-ID ''", 400),
        (crlf(REQ + "X: \xff\n\n").replace(b"\xc3\xbf", b"\xff"), "headers are not valid UTF-8", 400),
        (crlf(REQ + "".join(f"X-{i}: {i}\n" for i in range(MAX_HEADERS)) + "\n"), "more than 128 headers", 400),
        (b"x" * 65536, "message larger than 65535 bytes", 513),
        (crlf("SIP/2.0 99 Odd\nVia: SIP/2.0/UDP h\n\n"), "malformed status line 'SIP/2.0 99 Odd'", 400),
        (crlf("SIP/3.0 200 OK\nVia: SIP/2.0/UDP h\n\n"), "unsupported SIP version 'SIP/3.0'", 400),
    ],
)  # fmt: skip
def test_malformed_messages(raw: bytes, message: str, status: int):
    with pytest.raises(SipError) as info:
        parse(raw)
    assert str(info.value) == message
    assert info.value.status == status


def test_unsupported_uri_scheme_is_416():
    msg = parse(crlf(REQ.replace("sip:a@b SIP", "mailto:a@b SIP") + "\n"))
    assert isinstance(msg, Request) and msg.uri == "mailto:a@b"
    with pytest.raises(SipError, match="^unsupported URI scheme 'mailto'$") as info:
        msg.sip_uri()
    assert info.value.status == 416


def test_error_response_answers_what_it_can():
    bad = crlf(REQ + "Content-Length: -5\n\n")
    with pytest.raises(SipError) as info:
        parse(bad)
    resp = error_response(bad, info.value)
    assert resp is not None and (resp.status, resp.reason) == (400, "Bad Request")
    assert resp.headers.get_all("Via") == ["SIP/2.0/UDP h;branch=z9hG4bKx"]
    assert resp.call_id == "bad@h" and resp.cseq == CSeq(1, "OPTIONS") and resp.from_tag == "1"
    assert resp.to_tag  # RFC 3261 8.2.6.2: a To tag is added
    assert resp.headers.get("Warning") == "399 ringline \"invalid Content-Length '-5'\""
    assert parse(bytes(resp)).headers.remove("Content-Length") == resp.headers

    version = crlf(REQ.replace("SIP/2.0\n", "SIP/7.0\n", 1) + "\n")
    assert error_response(version, SipError("unsupported SIP version 'SIP/7.0'", status=505)).status == 505  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "raw",
    [
        crlf(REQ.replace("Call-ID: bad@h\n", "") + "\n"),  # nothing to copy the Call-ID from
        crlf(REQ.replace("CSeq: 1 OPTIONS", "CSeq: x") + "\n"),
        crlf(REQ.replace("OPTIONS sip", "ACK sip").replace("1 OPTIONS", "1 ACK") + "Content-Length: x\n\n"),
        crlf("SIP/2.0 200 OK\nVia: SIP/2.0/UDP h\nl: -1\n\n"),
        crlf(REQ),  # truncated: no end of headers
        b"\x00\x01garbage",
    ],
)
def test_error_response_gives_up(raw: bytes):
    assert error_response(raw, SipError("whatever")) is None


def test_make_response_per_8_2_6():
    invite = parse(INVITE)
    assert isinstance(invite, Request)
    trying = make_response(invite, 100, to_tag="abc")
    assert (trying.status, trying.reason, trying.to_tag) == (100, "Trying", None)
    ringing = make_response(invite, 180, to_tag="abc", headers=[("Contact", "<sip:bob@192.0.2.4>")])
    assert ringing.headers.get_all("Via") == invite.headers.get_all("Via")
    assert ringing.to_tag == "abc" and ringing.from_tag == "9fxced76sl"
    assert ringing.call_id == invite.call_id and ringing.cseq == invite.cseq
    assert ringing.headers.get("Contact") == "<sip:bob@192.0.2.4>"
    ok = make_response(invite, 200, "Fine", to_tag="abc", body=b"v=0\r\n", content_type="application/sdp")
    assert (ok.reason, ok.headers.get("Content-Type"), ok.body) == ("Fine", "application/sdp", b"v=0\r\n")
    assert make_response(invite, 699).reason == ""


def test_typed_parse():
    assert Request.parse(INVITE) == parse(INVITE) and Response.parse(OK) == parse(OK)
    with pytest.raises(SipError, match="^expected a request, got a response$"):
        Request.parse(OK)
    with pytest.raises(SipError, match="^expected a response, got a request$"):
        Response.parse(INVITE)


def test_generators():
    assert new_branch().startswith("z9hG4bK") and new_branch() != new_branch()
    assert len(new_tag()) == 12 and new_tag() != new_tag()
    assert new_call_id("192.0.2.1").endswith("@192.0.2.1")


def test_headers_type():
    h = Headers([("v", "SIP/2.0/UDP a"), ("call-id", "x"), ("www-authenticate", "Digest")])
    assert list(h) == [("Via", "SIP/2.0/UDP a"), ("Call-ID", "x"), ("WWW-Authenticate", "Digest")]
    assert "CALL-ID" in h and "i" in h and "Route" not in h
    h2 = h.prepend("Via", "SIP/2.0/UDP b").add("Via", "SIP/2.0/UDP c")
    assert h2.get_all("via") == ["SIP/2.0/UDP b", "SIP/2.0/UDP a", "SIP/2.0/UDP c"]
    assert h2.replace_first("Via", "SIP/2.0/UDP z").get("Via") == "SIP/2.0/UDP z"
    assert h2.set("Via", "one").get_all("Via") == ["one"] and h2.remove("v").get("Via") is None
    assert h.get("X-Missing", "dflt") == "dflt" and len(h) == 3 and h == Headers(list(h))
    with pytest.raises(ValueError, match="invalid header"):
        Headers([("Subject", "hi\r\nInjected: yes")])


def test_uri_and_header_value_types():
    uri = SipUri.parse("sips:alice:secret@[2001:DB8::1]:5061;transport=tcp;lr?subject=hi&priority=urgent")
    assert (uri.scheme, uri.user, uri.password, uri.host, uri.port) == (
        "sips",
        "alice",
        "secret",
        "[2001:db8::1]",
        5061,
    )
    assert uri.param("lr") == "" and uri.param("transport") == "tcp" and uri.param("maddr") is None
    assert str(uri) == "sips:alice:secret@[2001:db8::1]:5061;transport=tcp;lr?subject=hi&priority=urgent"
    assert str(uri.without_headers()) == "sips:alice:secret@[2001:db8::1]:5061;transport=tcp;lr"
    assert SipUri.parse("tel:+1-201-555-0123;phone-context=example.com").user == "+1-201-555-0123"
    assert str(SipUri.parse("sip:example.com")) == "sip:example.com"
    for bad, message in [
        ("sip:", "invalid URI 'sip:'"),
        ("sip:a b@c", "invalid URI 'sip:a b@c'"),
        ("sip:user@ho$t", "invalid host in URI 'sip:user@ho$t'"),
        ("sip:user@host:", "invalid port in URI 'sip:user@host:'"),
        ("sip:user@host;=x", "invalid parameter '=x'"),
    ]:
        with pytest.raises(SipError) as info:
            SipUri.parse(bad)
        assert str(info.value) == message

    addr = NameAddr.parse('"Bob \\"B\\"" <sip:bob@example.com;transport=udp>;tag=xy;expires=60')
    assert addr.display_name == 'Bob "B"' and addr.tag == "xy" and addr.param("expires") == "60"
    assert str(addr) == '"Bob \\"B\\"" <sip:bob@example.com;transport=udp>;tag=xy;expires=60'
    plain = NameAddr.parse("sip:bob@example.com;tag=1")  # addr-spec: the parameter belongs to the header
    assert plain.uri == "sip:bob@example.com" and plain.tag == "1"
    assert str(plain.with_tag("2")) == "<sip:bob@example.com>;tag=2"
    assert NameAddr.parse("Bob Smith <sip:b@c>").display_name == "Bob Smith"

    via = Via.parse("SIP/2.0/UDP 192.0.2.1:5062 (a comment);branch=z9hG4bKa;received=10.0.0.1;rport=4000")
    assert (via.branch, via.received, via.rport, via.sent_by) == ("z9hG4bKa", "10.0.0.1", 4000, ("192.0.2.1", 5062))
    assert str(via.with_param("rport", "1")) == "SIP/2.0/UDP 192.0.2.1:5062;branch=z9hG4bKa;received=10.0.0.1;rport=1"
    assert Via.parse("SIP/2.0/TLS h").sent_by == ("h", 5061)
    assert str(CSeq.parse(" 2147483647   INVITE ")) == "2147483647 INVITE"
