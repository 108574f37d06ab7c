"""SDP parsing/serialization and RFC 3264 offer/answer for PCMU, PCMA and telephone-event."""

from __future__ import annotations

import pytest

from ringline.engine.transports.sip.sdp import (
    PCMA,
    PCMU,
    Direction,
    NegotiatedMedia,
    SdpError,
    SessionDescription,
    answer,
    make_offer,
    negotiate,
)
from tests.sip_messages import ALICE_SDP


def offer(media: str, session_extra: str = "", conn: str = "c=IN IP4 192.0.2.101\n") -> SessionDescription:
    text = f"v=0\no=- 1 1 IN IP4 192.0.2.101\ns=-\n{conn}t=0 0\n{session_extra}{media}"
    return SessionDescription.parse(text.replace("\n", "\r\n").encode())


def test_parse_and_serialize():
    sdp = SessionDescription.parse(ALICE_SDP.encode())
    assert (sdp.username, sdp.session_id, sdp.address, sdp.connection) == (
        "alice", "2890844526", "client.atlanta.example.com", "192.0.2.101",
    )  # fmt: skip
    (audio,) = sdp.media
    assert (audio.kind, audio.port, audio.proto, audio.formats) == ("audio", 49172, "RTP/AVP", ("0", "8", "101"))
    assert audio.rtpmap("101") == ("telephone-event", 8000) and audio.rtpmap("0") == ("PCMU", 8000)
    assert audio.rtpmap("8") == ("PCMA", 8000) and audio.attr("ptime") == "20" and audio.attr("rtcp") is None
    assert audio.direction() is Direction.SENDRECV
    text = str(sdp)
    assert text.startswith("v=0\r\no=alice 2890844526 2890844526 IN IP4 client.atlanta.example.com\r\ns=-\r\n")
    assert SessionDescription.parse(bytes(sdp)) == sdp


def test_answer_prefers_offerers_order_and_adds_telephone_event():
    sdp = SessionDescription.parse(ALICE_SDP.encode())
    ans, media = answer(sdp, "192.0.2.4", 20000, session_id="42")
    assert media == NegotiatedMedia("PCMU", 0, 8000, 101, "192.0.2.101", 49172, 20, Direction.SENDRECV, None)
    assert not media.on_hold
    assert str(ans) == (
        "v=0\r\no=- 42 0 IN IP4 192.0.2.4\r\ns=-\r\nc=IN IP4 192.0.2.4\r\nt=0 0\r\n"
        "m=audio 20000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
        "a=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n"
    )
    pcma_first = offer("m=audio 4000 RTP/AVP 8 0\r\n")
    _, media = answer(pcma_first, "192.0.2.4", 20000)
    assert (media.codec, media.payload_type, media.dtmf_payload_type) == ("PCMA", 8, None)
    _, media = answer(pcma_first, "192.0.2.4", 20000, codecs=(PCMU,))
    assert media.codec == "PCMU"


def test_dynamic_payload_types_and_remote_ptime_and_rtcp():
    sdp = offer(
        "m=audio 4000 RTP/AVP 18 96 97\r\na=rtpmap:96 pcmu/8000\r\na=rtpmap:97 telephone-event/8000\r\n"
        "a=ptime:30\r\na=rtcp:4009\r\n"
    )
    ans, media = answer(sdp, "192.0.2.4", 20000)
    assert (media.codec, media.payload_type, media.dtmf_payload_type) == ("PCMU", 96, 97)
    assert (media.ptime, media.rtcp_port) == (30, 4009)
    assert ans.media[0].formats == ("96", "97") and ans.media[0].attr("ptime") == "20"


@pytest.mark.parametrize(
    ("attrs", "conn", "ours", "hold"),
    [
        ("a=sendonly\r\n", "192.0.2.101", Direction.RECVONLY, True),
        ("a=inactive\r\n", "192.0.2.101", Direction.INACTIVE, True),
        ("a=recvonly\r\n", "192.0.2.101", Direction.SENDONLY, False),
        ("", "0.0.0.0", Direction.SENDRECV, True),
    ],
)
def test_hold_directions(attrs: str, conn: str, ours: Direction, hold: bool):
    sdp = offer(f"m=audio 4000 RTP/AVP 0\r\n{attrs}", conn=f"c=IN IP4 {conn}\n")
    ans, media = answer(sdp, "192.0.2.4", 20000)
    assert media.direction is ours and media.on_hold is hold
    assert ans.media[0].direction() is ours


def test_session_level_direction_and_our_own_hold():
    sdp = offer("m=audio 4000 RTP/AVP 0\r\n", session_extra="a=sendonly\r\n")
    assert answer(sdp, "192.0.2.4", 1)[1].direction is Direction.RECVONLY
    plain = offer("m=audio 4000 RTP/AVP 0\r\n")
    assert answer(plain, "192.0.2.4", 1, direction=Direction.SENDONLY)[1].direction is Direction.SENDONLY


def test_other_streams_are_rejected_with_port_zero():
    sdp = offer(
        "m=video 5000 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\nm=audio 4000 RTP/AVP 8\r\nc=IN IP4 192.0.2.77\r\n"
    )
    ans, media = answer(sdp, "192.0.2.4", 20000)
    assert [(m.kind, m.port) for m in ans.media] == [("video", 0), ("audio", 20000)]
    assert (media.codec, media.remote_host, media.remote_port) == ("PCMA", "192.0.2.77", 4000)


@pytest.mark.parametrize(
    "media",
    [
        "m=audio 4000 RTP/AVP 18\r\n",
        "m=audio 4000 RTP/SAVP 0\r\n",
        "m=audio 0 RTP/AVP 0\r\n",
        "m=video 4000 RTP/AVP 0\r\n",
        "m=audio 4000 RTP/AVP 96\r\na=rtpmap:96 opus/48000/2\r\n",
        "",
    ],
)
def test_no_common_codec(media: str):
    with pytest.raises(SdpError, match="^no common codec$"):
        answer(offer(media), "192.0.2.4", 20000)


def test_offer_and_remote_answer():
    ours = make_offer("192.0.2.1", 30000, session_id="7", session_version=3)
    assert str(ours) == (
        "v=0\r\no=- 7 3 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
        "m=audio 30000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
        "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n"
    )
    theirs = offer("m=audio 6000 RTP/AVP 8 101\r\na=rtpmap:101 telephone-event/8000\r\na=ptime:40\r\n")
    assert negotiate(ours, theirs) == NegotiatedMedia(
        "PCMA", 8, 8000, 101, "192.0.2.101", 6000, 40, Direction.SENDRECV, None
    )
    # Our answerer is happy to answer our own offer: the two sides agree.
    ans, media = answer(ours, "192.0.2.4", 20000)
    assert negotiate(ours, ans).codec == media.codec == "PCMU"
    held = offer("m=audio 6000 RTP/AVP 0\r\na=recvonly\r\n")
    assert negotiate(ours, held).direction is Direction.SENDONLY
    for bad in ("m=audio 0 RTP/AVP 0\r\n", "m=audio 6000 RTP/AVP 18\r\n"):
        with pytest.raises(SdpError, match="^no common codec$"):
            negotiate(ours, offer(bad))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "SDP does not start with v=0"),
        (b"v=1\r\n", "SDP does not start with v=0"),
        (b"v=0\r\no=- 1 1 IN IP4 h\r\nnonsense\r\n", "malformed SDP line 'nonsense'"),
        (b"v=0\r\ns=-\r\n", "missing o= line"),
        (b"v=0\r\no=- 1 IN IP4 h\r\n", "malformed o= line '- 1 IN IP4 h'"),
        (b"v=0\r\no=- 1 1 IN IP4 h\r\nc=IN IP4\r\n", "malformed c= line 'IN IP4'"),
        (b"v=0\r\no=- 1 1 IN IP4 h\r\nm=audio x RTP/AVP 0\r\n", "malformed m= line 'audio x RTP/AVP 0'"),
        (b"v=0\r\no=- 1 1 IN IP4 h\r\nm=audio 70000 RTP/AVP 0\r\n", "malformed m= line 'audio 70000 RTP/AVP 0'"),
        (b"v=0\r\no=- 1 1 IN IP4 \xff\r\n", "SDP is not valid UTF-8"),
    ],
)
def test_malformed_sdp(data: bytes, message: str):
    with pytest.raises(SdpError) as info:
        SessionDescription.parse(data)
    assert str(info.value) == message


def test_missing_connection_address():
    with pytest.raises(SdpError, match="^missing connection address$"):
        answer(offer("m=audio 4000 RTP/AVP 0\r\n", conn=""), "192.0.2.4", 20000)


def test_pcmu_pcma_constants():
    assert (PCMU.payload_type, PCMA.payload_type, PCMU.clock_rate) == (0, 8, 8000)
