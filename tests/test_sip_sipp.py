"""Ringline's SIP user agent against sipp on 127.0.0.1: calls with speech (PCMU and PCMA) whose reply
comes back over RTP, RFC 4733 keys, CANCEL, BYE both ways, hold, OPTIONS, refusals (488, 401, 403).

sipp plays the caller's RTP from captures made by ``tests/sip/make_pcaps.py``; what Ringline sends back
is read from a dumpcap capture of the loopback interface (``tests/sip_fixtures.Capture``). The agent
is config/bench.toml's: it answers every caller turn with "Sure, here is the answer", 1.0 s of tone.
A failing sipp run prints its errors and SIP message trace.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from ringline.api.sip import SIP_UA
from ringline.api.store import CallStatus, Role
from tests.api_fixtures import API
from tests.sip import make_pcaps
from tests.sip_fixtures import (
    HOST,
    Capture,
    RtpPacket,
    SipServer,
    free_port_block,
    free_udp_port,
    loud,
    rtp_streams,
    run_sipp,
    sip_server,
)

pytestmark = pytest.mark.timeout(45)

REPLY_S = 1.0  # config/bench.toml: every reply is 1.0 s of tone
SPEECH_END_S = make_pcaps.speech_ends(make_pcaps.SPEECH_CLIPS)[0]
SPEECH_PCAP_S = SPEECH_END_S + 2.5  # make_pcaps.speech: each clip is followed by 2.5 s of silence
CODECS = {"PCMU": make_pcaps.PCMU, "PCMA": make_pcaps.PCMA}


@pytest.fixture(scope="module")
def pcaps(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_pcaps.write_all(tmp_path_factory.mktemp("pcaps"))


def sip_and_rtp(server: SipServer) -> str:
    return f"udp port {server.sip_port} or {server.rtp_filter}"


def sip_sent(cap: Capture, method: bytes) -> float:
    """When the capture saw the first ``method`` request."""
    return next(p.at for p in cap.packets() if p.payload.startswith(method + b" "))


async def ended(server: SipServer, *, timeout_s: float = 5.0):
    """The one call in the store, once ended."""
    async with asyncio.timeout(timeout_s):
        while True:
            calls = (await server.api.store.list_calls()).items
            if len(calls) == 1 and calls[0].status is CallStatus.ENDED:
                return calls[0]
            await asyncio.sleep(0.02)


async def in_progress(server: SipServer, *, timeout_s: float = 10.0) -> str:
    """The id of the one call in the store, once in progress."""
    async with asyncio.timeout(timeout_s):
        while True:
            calls = (await server.api.store.list_calls()).items
            if len(calls) == 1 and calls[0].status is CallStatus.IN_PROGRESS:
                return calls[0].id
            await asyncio.sleep(0.02)


def reply_stream(cap: Capture, server: SipServer, rtp_port: int) -> tuple[int, list[RtpPacket]]:
    """The destination port and packets of what Ringline sent from ``rtp_port``."""
    streams = {dst: s for (src, dst), s in rtp_streams(cap.packets()).items() if src == rtp_port}
    assert len(streams) == 1, f"RTP from {rtp_port} went to ports {sorted(streams)}"
    ((dst, packets),) = streams.items()
    return dst, packets


def caller_stream(cap: Capture, media_port: int, rtp_port: int) -> list[RtpPacket]:
    return rtp_streams(cap.packets())[(media_port, rtp_port)]


# -- the harness itself ----------------------------------------------------------------------------


async def test_the_harness_hears_a_stand_ins_reply(tmp_path: Path, pcaps: dict[str, Path]) -> None:
    """sipp as a stand-in for Ringline, answering with a tone: checks pcap playback and the capture
    without the user agent."""
    uas_port, uas_media, uac_media = free_udp_port(), free_port_block(4), free_port_block(4)
    ports = f"udp portrange {uas_media}-{uas_media + 3} or udp portrange {uac_media}-{uac_media + 3}"
    async with Capture(ports, tmp_path / "cap.pcap") as cap:
        stand_in = asyncio.create_task(
            run_sipp(
                "uas_stand_in.xml", None, tmp_path / "uas", sip_port=uas_port, media_port=uas_media, timeout_s=15,
                codec=0, codec_name="PCMU", pcap=pcaps["reply_pcmu.pcap"],
            )
        )  # fmt: skip
        await asyncio.sleep(0.3)  # sipp has no readiness signal; a late start only retransmits the INVITE
        caller = await run_sipp(
            "uac_call.xml", (HOST, uas_port), tmp_path / "uac", media_port=uac_media, timeout_s=15,
            codec=0, codec_name="PCMU", sdp_port="[media_port]", pcap=pcaps["speech_pcmu.pcap"], pause_ms=4000,
        )  # fmt: skip
        answered = await stand_in
    assert caller.ok, caller
    assert answered.ok, answered
    assert caller.logged("rtp_port") == [str(uas_media)]
    streams = rtp_streams(cap.packets())
    heard = streams[(uas_media, uac_media)]
    assert sum(loud(p) for p in heard) == 50  # the stand-in's 1 s tone, whole
    spoken = streams[(uac_media, uas_media)]
    assert [p.seq for p in spoken] == list(range(1, len(spoken) + 1))


# -- calls -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("codec", "pacing"), [("PCMU", "process"), ("PCMA", "process"), ("PCMU", "loop")])
async def test_a_caller_who_speaks_hears_the_agents_reply(
    tmp_path: Path, pcaps: dict[str, Path], codec: str, pacing: str
) -> None:
    """Sent by the pacer's process (the default) or by the loop's own ticker (``rtp_pacing``)."""
    payload_type, media = CODECS[codec], free_port_block(4)
    async with sip_server(rtp_pacing=pacing) as server, Capture(sip_and_rtp(server), tmp_path / "cap.pcap") as cap:
        pacer = server.api.app[SIP_UA].ticker.pacer
        assert (pacer is not None and pacer.running) == (pacing == "process")
        result = await run_sipp(
            "uac_call.xml", server.sip, tmp_path / "sipp", media_port=media, codec=payload_type, codec_name=codec,
            sdp_port="[media_port]", pcap=pcaps[f"speech_{codec.lower()}.pcap"], pause_ms=round(SPEECH_PCAP_S * 1000),
        )  # fmt: skip
        assert result.ok, result
        (rtp_port,) = map(int, result.logged("rtp_port"))
        assert result.logged("rtp_ip") == [HOST]
        assert server.rtp_min <= rtp_port <= server.rtp_max
        row = await ended(server)
        messages = [(m.role, m.content) for m in await server.api.store.list_messages(row.id)]
    assert messages == [(Role.USER, "Tell me more."), (Role.ASSISTANT, "Sure, here is the answer")]
    assert row.end_reason == "caller_hangup"

    dst, reply = reply_stream(cap, server, rtp_port)
    assert dst == media
    assert {p.payload_type for p in reply} == {payload_type}
    assert all(len(p.payload) == 160 for p in reply)  # ptime 20
    assert all(b.seq == (a.seq + 1) & 0xFFFF for a, b in zip(reply, reply[1:], strict=False))
    assert len({p.ssrc for p in reply}) == 1
    sounding = [p for p in reply if loud(p)]
    assert len(sounding) == pytest.approx(REPLY_S / 0.020, abs=2)
    spoke = caller_stream(cap, media, rtp_port)
    latency = sounding[0].at - (spoke[0].at + SPEECH_END_S)
    print(f"{codec}: reply {latency * 1000:.0f} ms after the end of the caller's speech")
    assert 0.2 < latency < 2.0


async def test_replies_go_where_the_callers_rtp_comes_from(tmp_path: Path, pcaps: dict[str, Path]) -> None:
    """Symmetric RTP: the caller's SDP names a port nothing listens on; its RTP comes from another,
    where the reply must go."""
    media, elsewhere = free_port_block(4), free_udp_port()
    async with sip_server() as server, Capture(sip_and_rtp(server), tmp_path / "cap.pcap") as cap:
        result = await run_sipp(
            "uac_call.xml", server.sip, tmp_path / "sipp", media_port=media, codec=0, codec_name="PCMU",
            sdp_port=elsewhere, pcap=pcaps["speech_pcmu.pcap"], pause_ms=round(SPEECH_PCAP_S * 1000),
        )  # fmt: skip
        assert result.ok, result
        (rtp_port,) = map(int, result.logged("rtp_port"))
        await ended(server)
    streams = {dst: s for (src, dst), s in rtp_streams(cap.packets()).items() if src == rtp_port}
    assert sum(loud(p) for p in streams.get(media, [])) == pytest.approx(REPLY_S / 0.020, abs=2)
    assert not any(loud(p) for p in streams.get(elsewhere, [])), "the reply went to the SDP's port"


async def test_keys_pressed_as_rfc_4733_events_reach_the_conversation(tmp_path: Path, pcaps: dict[str, Path]) -> None:
    async with sip_server() as server:
        result = await run_sipp(
            "uac_call.xml", server.sip, tmp_path / "sipp", codec=0, codec_name="PCMU", sdp_port="[media_port]",
            pcap=pcaps["keys_42#.pcap"], pause_ms=3500,
        )  # fmt: skip
        assert result.ok, result
        row = await ended(server)
        messages = [(m.role, m.content) for m in await server.api.store.list_messages(row.id)]
        events = await server.api.store.list_events(row.id)
    assert messages == [(Role.USER, "[DTMF 42#]"), (Role.ASSISTANT, "Sure, here is the answer")]
    assert [e.payload for e in events if e.type == "dtmf"] == [{"digit": "4"}, {"digit": "2"}, {"digit": "#"}]


async def test_a_bye_in_the_middle_of_the_reply_stops_it(tmp_path: Path, pcaps: dict[str, Path]) -> None:
    media = free_port_block(4)
    async with sip_server() as server, Capture(sip_and_rtp(server), tmp_path / "cap.pcap") as cap:
        result = await run_sipp(
            "uac_call.xml", server.sip, tmp_path / "sipp", media_port=media, codec=0, codec_name="PCMU",
            sdp_port="[media_port]", pcap=pcaps["speech_pcmu.pcap"], pause_ms=round((SPEECH_END_S + 0.9) * 1000),
        )  # fmt: skip
        assert result.ok, result
        (rtp_port,) = map(int, result.logged("rtp_port"))
        row = await ended(server)
        await asyncio.sleep(0.3)  # room for any RTP that would (wrongly) go on after the BYE
    bye = sip_sent(cap, b"BYE")
    _, reply = reply_stream(cap, server, rtp_port)
    sounding = [p for p in reply if loud(p)]
    assert sounding and sounding[0].at < bye, "no reply had started before the BYE"
    assert len(sounding) < REPLY_S / 0.020 - 5, "the whole reply was sent"
    after = [p for p in reply if p.at > bye + 0.1]
    assert not after, f"{len(after)} RTP packets more than 100 ms after the BYE"
    assert row.end_reason == "caller_hangup"


async def test_the_agent_hanging_up_sends_bye(tmp_path: Path, pcaps: dict[str, Path]) -> None:
    async with sip_server() as server:
        key = await server.api.key("calls:write")
        call = asyncio.create_task(
            run_sipp(
                "uac_hangup_by_agent.xml", server.sip, tmp_path / "sipp", codec=0, codec_name="PCMU",
                pcap=pcaps["speech_pcmu.pcap"], bye_within_ms=8000,
            )
        )  # fmt: skip
        call_id = await in_progress(server)
        async with server.api.post(f"{API}/calls/{call_id}/control", key=key, json={"type": "end-call"}) as resp:
            assert resp.status == 200, await resp.text()
        result = await call
        assert result.ok, result
        assert "bye_from_agent" in result.logs
        row = await ended(server)
    assert row.end_reason == "api_ended"


async def test_cancel_before_answer_is_answered_200_and_the_invite_487(tmp_path: Path) -> None:
    async with sip_server(ring_s=10.0) as server:  # rings until cancelled
        result = await run_sipp("uac_cancel.xml", server.sip, tmp_path / "sipp", timeout_s=10)
        assert result.ok, result
        calls = (await server.api.store.list_calls()).items
    assert [(c.status, c.end_reason) for c in calls] == [(CallStatus.ENDED, "caller_hangup")]


async def test_an_offer_without_a_common_codec_is_refused_488(tmp_path: Path) -> None:
    async with sip_server() as server:
        result = await run_sipp(
            "uac_refused.xml", server.sip, tmp_path / "sipp", timeout_s=10,
            codec=18, codec_name="G729", code=488, header_check="SIP/2.0 488",
        )  # fmt: skip
        assert result.ok, result
        calls = (await server.api.store.list_calls()).items
    assert all(c.status is CallStatus.ENDED for c in calls)


async def test_options_is_answered_200(tmp_path: Path) -> None:
    async with sip_server() as server:
        result = await run_sipp("uac_options.xml", server.sip, tmp_path / "sipp", timeout_s=10)
    assert result.ok, result


async def test_hold_and_resume_are_answered_with_sdp(tmp_path: Path) -> None:
    async with sip_server() as server:
        result = await run_sipp("uac_hold.xml", server.sip, tmp_path / "sipp", timeout_s=15)
        assert result.ok, result
        row = await ended(server)
    assert result.logged("hold_answer")[0] in ("recvonly", "inactive")
    assert result.logged("resume_answer") == [""]  # neither recvonly, inactive nor sendonly: sendrecv
    assert row.end_reason == "caller_hangup"


async def test_a_reinvite_changing_the_codec_moves_the_call_to_it(tmp_path: Path, pcaps: dict[str, Path]) -> None:
    """PCMU at first, then a re-INVITE offering only PCMA: answered with PCMA, and from then on the
    caller's A-law speech is heard and the reply goes out in A-law (the call itself keeps mu-law)."""
    media = free_port_block(4)
    async with sip_server() as server, Capture(sip_and_rtp(server), tmp_path / "cap.pcap") as cap:
        result = await run_sipp(
            "uac_codec_change.xml", server.sip, tmp_path / "sipp", media_port=media, sdp_port="[media_port]",
            pcap=pcaps["speech_pcma.pcap"], pause_ms=round(SPEECH_PCAP_S * 1000), timeout_s=20,
        )  # fmt: skip
        assert result.ok, result
        (rtp_port,) = map(int, result.logged("rtp_port"))
        row = await ended(server)
        messages = [(m.role, m.content) for m in await server.api.store.list_messages(row.id)]
    assert result.logged("reinvite_codec") == [str(make_pcaps.PCMA)]
    assert messages == [(Role.USER, "Tell me more."), (Role.ASSISTANT, "Sure, here is the answer")]
    _, reply = reply_stream(cap, server, rtp_port)
    switched = next(i for i, p in enumerate(reply) if p.payload_type == make_pcaps.PCMA)
    assert {p.payload_type for p in reply[:switched]} <= {make_pcaps.PCMU}
    assert {p.payload_type for p in reply[switched:]} == {make_pcaps.PCMA}
    sounding = [p for p in reply[switched:] if loud(p)]  # loud() decodes by payload type
    assert len(sounding) == pytest.approx(REPLY_S / 0.020, abs=2)


async def test_a_caller_outside_the_allowed_addresses_answers_a_digest_challenge(tmp_path: Path) -> None:
    async with sip_server(allowed_addresses=[], username="trunk", password="s3cret") as server:
        result = await run_sipp(
            "uac_auth.xml", server.sip, tmp_path / "sipp", timeout_s=15, user="trunk", password="s3cret", pause_ms=500
        )
        assert result.ok, result
        row = await ended(server)
    assert result.logged("challenge_realm") == ["ringline"]
    assert row.end_reason == "caller_hangup"


async def test_a_caller_outside_the_allowed_addresses_with_the_wrong_password_is_not_let_in(tmp_path: Path) -> None:
    async with sip_server(allowed_addresses=[], username="trunk", password="s3cret") as server:
        result = await run_sipp(
            "uac_auth.xml", server.sip, tmp_path / "sipp", timeout_s=5, user="trunk", password="guess", pause_ms=500
        )
        calls = (await server.api.store.list_calls()).items
    assert not result.ok
    refusal = re.search(r"SIP/2.0 (401|403) [^\n]*\n(?:[^\n]+\n)*?\s*CSeq: *2 INVITE", result.messages)
    assert refusal, result
    assert not calls


async def test_a_caller_outside_the_allowed_addresses_without_digest_configured_is_refused_403(tmp_path: Path) -> None:
    async with sip_server(allowed_addresses=[]) as server:
        result = await run_sipp(
            "uac_refused.xml", server.sip, tmp_path / "sipp", timeout_s=10,
            codec=0, codec_name="PCMU", code=403, header_check="SIP/2.0 403",
        )  # fmt: skip
        assert result.ok, result
        calls = (await server.api.store.list_calls()).items
    assert not calls
