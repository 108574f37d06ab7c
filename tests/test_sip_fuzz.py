"""Property tests (hypothesis, bounded to a few seconds): hostile or broken input never raises
anything but the protocol's own error, the transaction layer never raises at all, and whatever
parses serializes back to the same message."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ringline.engine.transports.sip.digest import AuthResult, Challenge, Credentials, DigestError, DigestVerifier
from ringline.engine.transports.sip.layer import TransactionLayer
from ringline.engine.transports.sip.message import SipError, SipUri, error_response, parse
from ringline.engine.transports.sip.sdp import SdpError, SessionDescription, answer
from ringline.engine.transports.sip.transaction import Transmit
from tests.sip_messages import ALICE_SDP, BYE, INVITE, OK, OPTIONS, RINGING
from tests.test_sip_message import COMPACT, TORTUOUS

GOLDEN = [INVITE, RINGING, OK, BYE, OPTIONS, COMPACT, TORTUOUS]
FUZZ = settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
SIP_BYTES = [b":", b";", b",", b"<", b">", b'"', b"\\", b" ", b"\t", b"\r\n", b"\n", b"\r\n ", b"\r", b"=",
             b"/", b"@", b"%", b"[", b"]", b"0", b"-1", b"99999999999", b"\x00", b"\xff", b"SIP/2.0",
             b"z9hG4bK", b"tag="]  # fmt: skip


@st.composite
def mutated(draw: st.DrawFn, corpus: list[bytes] = GOLDEN) -> bytes:
    """A golden message with a few random edits: byte flips, cuts, insertions of SIP-meaningful
    bytes, duplicated or dropped lines, truncation."""
    data = bytearray(draw(st.sampled_from(corpus)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "dup_line", "drop_line", "truncate"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "cut":
            del data[pos : pos + draw(st.integers(1, 20))]
        elif op == "insert":
            data[pos:pos] = draw(st.sampled_from(SIP_BYTES))
        elif op in ("dup_line", "drop_line"):
            lines = bytes(data).split(b"\r\n")
            i = draw(st.integers(0, len(lines) - 1))
            lines[i:i] = [lines[i]] if op == "dup_line" else []
            if op == "drop_line":
                del lines[i]
            data = bytearray(b"\r\n".join(lines))
        elif op == "truncate":
            del data[pos:]
    return bytes(data)


def check_parse(data: bytes) -> None:
    try:
        msg = parse(data)
    except SipError as exc:
        answer_ = error_response(data, exc)  # must not raise either
        if answer_ is not None:
            assert 400 <= answer_.status < 600
            assert parse(bytes(answer_)).headers.get("Warning") == answer_.headers.get("Warning")
        return
    again = parse(bytes(msg))
    assert again == parse(bytes(again))
    assert (again.call_id, again.cseq, again.body) == (msg.call_id, msg.cseq, msg.body)
    assert [v.branch for v in again.vias] == [v.branch for v in msg.vias]


@FUZZ
@given(st.binary(max_size=2000))
def test_random_bytes_only_raise_sip_error(data: bytes):
    check_parse(data)


@FUZZ
@given(mutated())
def test_mutated_messages_only_raise_sip_error(data: bytes):
    check_parse(data)


@FUZZ
@given(st.lists(st.one_of(mutated(), st.binary(max_size=300)), min_size=1, max_size=8), st.floats(0, 100))
def test_transaction_layer_never_raises(datagrams: list[bytes], step: float):
    layer = TransactionLayer()
    now = 0.0
    for data in datagrams:
        for action in layer.receive_datagram(data, now, ("192.0.2.9", 5060)):
            if isinstance(action, Transmit):
                bytes(action.message)
        now += step
        layer.timeout(now)
    while (deadline := layer.next_deadline()) is not None:
        layer.timeout(deadline)
    assert len(layer) == 0 or all(t.state.value in ("trying", "proceeding") for t in layer._servers.values())


@FUZZ
@given(st.text(max_size=200))
def test_uri_parser_only_raises_sip_error(text: str):
    try:
        uri = SipUri.parse(text)
    except SipError:
        return
    assert SipUri.parse(str(uri)) == uri


@FUZZ
@given(mutated([ALICE_SDP.replace("\n", "\r\n").encode()]))
def test_sdp_only_raises_sdp_error(data: bytes):
    try:
        sdp = SessionDescription.parse(data)
        answer(sdp, "192.0.2.4", 20000)
    except SdpError:
        pass


@FUZZ
@given(st.text(max_size=300))
def test_digest_headers_only_raise_digest_error(text: str):
    for parser in (Challenge.parse, Credentials.parse):
        try:
            parser(text)
        except DigestError:
            pass
    verifier = DigestVerifier("r", secret=b"s" * 32)
    result = verifier.verify("Digest " + text, method="INVITE", now=1.0, password_for=lambda user: "pw")
    assert result in (AuthResult.INVALID, AuthResult.STALE, AuthResult.OK)
