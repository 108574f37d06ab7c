"""Transfers of a live SIP call through the control API, against sipp on 127.0.0.1 on both sides.

Cold (``{"type": "transfer", "destination": ...}``): Ringline REFERs the caller to the destination
(RFC 3515) and learns the outcome from the caller's NOTIFY (a sipfrag status line, RFC 5589); on
success it hangs up, on failure the call goes on and the agent says so. A caller who refuses the
REFER is bridged through Ringline instead: Ringline dials the destination itself (sipp as the
"human") and relays RTP (and RFC 4733 keys) between the two legs until either hangs up, then hangs
up the other. Warm (``"briefing"``): the same bridge, after whoever answers has heard the briefing;
a destination that is busy leaves the call with the agent. A caller who hangs up mid-briefing
leaves nobody to put through: the destination must be hung up on as well.

What each side heard is told apart by pitch: the agent (config/bench.toml's fake TTS) speaks a
440 Hz tone, 1.0 s a phrase; the caller's capture is a 1000 Hz tone, the human's a 700 Hz one. What
went over RTP is read from a dumpcap capture of the loopback interface.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ringline.api.app import CALLS
from ringline.api.sip import SIP_UA
from ringline.api.store import Call as CallRow
from ringline.api.store import CallStatus
from ringline.engine.call import Call
from tests.api_fixtures import API, ApiServer
from tests.sip import make_pcaps
from tests.sip_fixtures import (
    HOST,
    Capture,
    RtpPacket,
    SipServer,
    free_port_block,
    free_udp_port,
    g711_pcm,
    loud,
    rtp_streams,
    run_sipp,
    sip_server,
    sipp_far_end,
)

pytestmark = pytest.mark.timeout(45)

PHRASE_S = 1.0  # config/bench.toml: every phrase is 1.0 s of tone
AGENT_HZ, CALLER_HZ, HUMAN_HZ = 440, 1000, 700
BRIEFING = "A caller wants to book a table for four."
FAILED_MESSAGE = "Sorry, I couldn't transfer you."  # the agents' default transfer_failed_message
CALLER_KEY = "5"
PCMU, PCMA, TELEPHONE_EVENT = make_pcaps.PCMU, make_pcaps.PCMA, make_pcaps.TELEPHONE_EVENT


@pytest.fixture(scope="module")
def pcaps(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The caller's 1000 Hz tone (PCMU) with key 5 pressed (RFC 4733) 2.4 s in, the human's 700 Hz
    tone (PCMU and PCMA), silence."""
    directory = tmp_path_factory.mktemp("pcaps")
    packets = {
        "caller.pcap": caller_speech(),
        "human_pcmu.pcap": make_pcaps.audio_packets(make_pcaps.tone(4.0, PCMU, hz=HUMAN_HZ), PCMU),
        "human_pcma.pcap": make_pcaps.audio_packets(make_pcaps.tone(4.0, PCMA, hz=HUMAN_HZ), PCMA),
        "silence.pcap": make_pcaps.audio_packets(make_pcaps.silence(0.2, PCMU), PCMU),
    }
    paths = {}
    for name, stream in packets.items():
        paths[name] = directory / name
        paths[name].write_bytes(make_pcaps.pcap(stream))
    return paths


def caller_speech() -> list[make_pcaps.Rtp]:
    """2.4 s of tone, key ``CALLER_KEY`` held 100 ms, 6 s more tone: one stream."""
    packets = make_pcaps.audio_packets(make_pcaps.tone(2.4, PCMU, hz=CALLER_HZ), PCMU)
    last = packets[-1]
    press = list(make_pcaps.key_press(CALLER_KEY, seq=last.seq + 1, timestamp=last.timestamp + 160, at=last.at + 0.02))
    after = press[-1]
    return packets + press + make_pcaps.audio_packets(
        make_pcaps.tone(6.0, PCMU, hz=CALLER_HZ), PCMU,
        seq=after.seq + 1, timestamp=last.timestamp + 160 + 800, at=after.at + 0.02,
    )  # fmt: skip


# -- helpers ---------------------------------------------------------------------------------------


def pitch(packet: RtpPacket) -> float:
    """The strongest frequency in a G.711 packet (50 Hz resolution for 20 ms)."""
    samples = g711_pcm([packet]).astype(np.float64)
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    return float(np.argmax(spectrum)) * make_pcaps.RATE / samples.size


def sounding(packets: list[RtpPacket], hz: float) -> list[RtpPacket]:
    """The loud packets of ``packets`` whose pitch is ``hz``."""
    return [p for p in packets if loud(p) and abs(pitch(p) - hz) <= 60]


def from_ringline(cap: Capture, server: SipServer, to_port: int) -> list[RtpPacket]:
    """Every RTP packet Ringline sent (from any of its RTP ports) to ``to_port``, in order."""
    streams = rtp_streams(cap.packets())
    packets = [
        p for (src, dst), s in streams.items() if dst == to_port and server.rtp_min <= src <= server.rtp_max for p in s
    ]
    return sorted(packets, key=lambda p: p.at)


def sip_sent(cap: Capture, method: bytes, *, to_port: int) -> list[float]:
    """When the capture saw ``method`` requests go to ``to_port``."""
    return [p.at for p in cap.packets() if p.dst[1] == to_port and p.payload.startswith(method + b" ")]


async def in_progress(server: SipServer, *, timeout_s: float = 10.0) -> Call:
    """The live call of the one call in the store, once it is in progress."""
    async with asyncio.timeout(timeout_s):
        while True:
            calls = (await server.api.store.list_calls()).items
            if len(calls) == 1 and calls[0].status is CallStatus.IN_PROGRESS:
                return await server.api.app[CALLS].wait_live(calls[0].id)
            await asyncio.sleep(0.02)


async def row_becomes(server: SipServer, call_id: str, status: CallStatus, *, timeout_s: float = 10.0) -> CallRow:
    async with asyncio.timeout(timeout_s):
        while True:
            row = await server.api.store.get_call(call_id)
            if row.status is status:
                return row
            assert row.status is not CallStatus.ENDED, f"ended ({row.end_reason}) before it was {status.value}"
            await asyncio.sleep(0.02)


async def transfer(api: ApiServer, call_id: str, **command: Any) -> tuple[int, dict[str, Any]]:
    key = await api.key("calls:write")
    body = {"type": "transfer", **command}
    async with api.post(f"{API}/calls/{call_id}/control", key=key, json=body) as resp:
        return resp.status, await resp.json()


async def legs_left(server: SipServer, *, timeout_s: float = 2.0) -> list[str]:
    """The SIP legs (their Call-IDs) still up ``timeout_s`` from now, or none as soon as there are none."""
    legs = server.api.app[SIP_UA].legs
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            while True:
                if not legs:
                    return []
                await asyncio.sleep(0.02)
    return list(legs)


def sip_and_rtp(server: SipServer) -> str:
    return f"udp port {server.sip_port} or {server.rtp_filter}"


async def events_of(server: SipServer, call_id: str) -> list[tuple[str, dict[str, Any]]]:
    return [(e.type, e.payload) for e in await server.api.store.list_events(call_id)]


# -- cold: REFER -------------------------------------------------------------------------------------


async def test_a_cold_transfer_refers_the_caller_and_hangs_up_once_notified(tmp_path: Path) -> None:
    destination = "sip:desk@127.0.0.1:5099"
    async with sip_server() as server, Capture(sip_and_rtp(server), tmp_path / "cap.pcap") as cap:
        caller_port = free_udp_port()
        caller = asyncio.create_task(
            run_sipp(
                "uac_refer_accepted.xml", server.sip, tmp_path / "caller", sip_port=caller_port,
                refer_within_ms=10000, sipfrag="SIP/2.0 200 OK", bye_within_ms=5000,
            )
        )  # fmt: skip
        call = await in_progress(server)
        status, body = await transfer(server.api, call.call_id, destination=destination)
        result = await caller
        row = await row_becomes(server, call.call_id, CallStatus.ENDED)
        left = await legs_left(server)
        events = await events_of(server, call.call_id)
    assert not left, f"SIP legs left up: {left}"
    assert result.ok, result  # REFER answered 202, both NOTIFYs answered 200, then our BYE
    assert (status, body["data"]["status"], body["data"]["end_reason"]) == (200, "ended", "transferred"), body
    assert result.logged("refer_to") == [f"<{destination}>"]
    assert result.logged("referred_by") == [f"<sip:ringline@{HOST}:{server.sip_port}>"]
    assert result.logged("refer_ruri") == [f"sip:sipp@{HOST}:{caller_port}"]  # the caller's Contact
    assert (result.logged("notify_answered"), result.logged("bye_from_agent")) == (["yes"], ["yes"])
    (final_notify,) = [p.at for p in cap.packets() if p.payload.startswith(b"NOTIFY ") and b"CSeq: 3 " in p.payload]
    (bye,) = sip_sent(cap, b"BYE", to_port=caller_port)
    assert bye > final_notify  # not before the transfer was known to have worked
    assert (row.end_reason, call.record.end_reason.value, call.record.end_detail) == (
        "transferred",
        "transferred",
        destination,
    )
    assert ("control", {"command": "transfer", "destination": destination, "message": None, "briefing": None}) in events
    assert not [e for e in events if e[0] == "transfer_failed"]


async def test_a_cold_transfer_that_fails_goes_on_and_the_agent_says_so(tmp_path: Path) -> None:
    destination = "sip:desk@127.0.0.1:5099"
    async with sip_server() as server, Capture(sip_and_rtp(server), tmp_path / "cap.pcap") as cap:
        caller_port, caller_media = free_udp_port(), free_port_block(4)
        caller = asyncio.create_task(
            run_sipp(
                "uac_refer_failed.xml", server.sip, tmp_path / "caller", sip_port=caller_port, media_port=caller_media,
                refer_within_ms=10000, sipfrag="SIP/2.0 486 Busy Here", pause_ms=4000,
            )
        )  # fmt: skip
        call = await in_progress(server)
        status, body = await transfer(server.api, call.call_id, destination=destination)
        row_after = await row_becomes(server, call.call_id, CallStatus.IN_PROGRESS)  # the call goes on
        result = await caller
        row = await row_becomes(server, call.call_id, CallStatus.ENDED)
        left = await legs_left(server)
        events = await events_of(server, call.call_id)
        messages = [m.content for m in await server.api.store.list_messages(call.call_id)]
    assert not left, f"SIP legs left up: {left}"
    assert result.ok, result  # REFER answered 202, the NOTIFY 200, no BYE from us; the caller's BYE answered
    assert result.logged("refer_to") == [f"<{destination}>"]
    assert status == 502, body
    assert body["error"] == f"the transfer to {destination} failed, the call goes on: the transfer failed: 486", body
    assert row_after.end_reason is None
    assert not sip_sent(cap, b"BYE", to_port=caller_port)
    assert (row.end_reason, call.record.end_reason.value) == ("caller_hangup", "caller_hangup")
    failed = [payload for kind, payload in events if kind == "transfer_failed"]
    assert failed == [{"destination": destination, "detail": "the transfer failed: 486"}]
    assert [kind for kind, _ in events].count("fault") >= 1
    assert messages == [FAILED_MESSAGE]

    heard = from_ringline(cap, server, caller_media)
    (notify,) = [p.at for p in cap.packets() if p.payload.startswith(b"NOTIFY ")]
    said = sounding(heard, AGENT_HZ)
    assert len(said) == pytest.approx(PHRASE_S / 0.020, abs=2)  # the transfer_failed_message, whole
    assert said[0].at > notify
    assert len(said) == len([p for p in heard if loud(p)])  # and nothing else


# -- bridged through Ringline --------------------------------------------------------------------------


def assert_bridged(cap: Capture, server: SipServer, caller_media: int, human_media: int, after: float) -> None:
    """The caller's tone reached the human and the human's tone the caller, through Ringline, from
    ``after`` on, for most of the 3 s the human talked."""
    to_human, to_caller = from_ringline(cap, server, human_media), from_ringline(cap, server, caller_media)
    relayed, answered = sounding(to_human, CALLER_HZ), sounding(to_caller, HUMAN_HZ)
    assert len(relayed) > 100, f"{len(relayed)} packets of the caller reached the human"
    assert len(answered) > 100, f"{len(answered)} packets of the human reached the caller"
    assert relayed[0].at >= after and answered[0].at >= after
    assert len({p.src for p in relayed}) == 1 and len({p.src for p in answered}) == 1  # one port each leg
    assert relayed[0].src != answered[0].src
    keys = [p for p in to_human if p.payload_type == TELEPHONE_EVENT]  # the caller's key, pressed through
    assert keys and {p.payload[0] for p in keys} == {make_pcaps.EVENTS[CALLER_KEY]}, keys
    assert any(p.payload[1] & 0x80 for p in keys)  # ended
    for stream in (to_human, to_caller):  # the hand-over from the agent to the bridge is seamless
        assert len({p.ssrc for p in stream}) == 1
        assert all(b.seq == (a.seq + 1) & 0xFFFF for a, b in zip(stream, stream[1:], strict=False))


@pytest.mark.parametrize(
    ("code", "reason", "codec"),
    [(405, "Method Not Allowed", "PCMA"), (501, "Not Implemented", "PCMU")],
    ids=["405-pcma", "501-pcmu"],
)
async def test_a_refused_refer_bridges_the_caller_to_the_destination_through_ringline(
    tmp_path: Path, pcaps: dict[str, Path], code: int, reason: str, codec: str
) -> None:
    payload_type = PCMA if codec == "PCMA" else PCMU
    async with (
        sip_server() as server,
        sipp_far_end(
            "uas_human.xml", tmp_path / "human", codec=payload_type, codec_name=codec,
            pcap=pcaps[f"human_{codec.lower()}.pcap"], talk_ms=3000,
        ) as human,
        Capture(sip_and_rtp(server), tmp_path / "cap.pcap") as cap,
    ):  # fmt: skip
        destination = f"sip:human@{HOST}:{human.sip_port}"
        caller_port, caller_media = free_udp_port(), free_port_block(4)
        caller = asyncio.create_task(
            run_sipp(
                "uac_refer_refused.xml", server.sip, tmp_path / "caller", sip_port=caller_port, media_port=caller_media,
                refer_within_ms=10000, code=code, reason=reason, pcap=pcaps["caller.pcap"], bye_within_ms=10000,
            )
        )  # fmt: skip
        call = await in_progress(server)
        status, body = await transfer(server.api, call.call_id, destination=destination)
        answered = await human.result()
        result = await caller
        row = await row_becomes(server, call.call_id, CallStatus.ENDED)
        left = await legs_left(server)
        events = await events_of(server, call.call_id)
        await asyncio.sleep(0.3)  # room for RTP that would (wrongly) go on after the BYEs
    assert not left, f"SIP legs left up: {left}"
    assert result.ok, result  # REFER refused, then our BYE once the human hung up
    assert answered.ok, answered  # INVITE answered, ACKed, its BYE answered 200
    assert (status, body["data"]["status"], body["data"]["end_reason"]) == (200, "ended", "transferred"), body
    assert result.logged("refer_to") == [f"<{destination}>"]
    assert answered.logged("ruri") == [destination]
    assert (row.end_reason, call.record.end_reason.value, call.record.end_detail) == (
        "transferred",
        "transferred",
        destination,
    )
    assert not [kind for kind, _ in events if kind == "transfer_failed"]

    (refused,) = [p.at for p in cap.packets() if p.payload.startswith(f"SIP/2.0 {code} ".encode())]
    assert_bridged(cap, server, caller_media, human.media_port, after=refused)
    assert {p.payload_type for p in from_ringline(cap, server, human.media_port)} <= {payload_type, TELEPHONE_EVENT}
    (human_bye,) = sip_sent(cap, b"BYE", to_port=server.sip_port)
    (our_bye,) = sip_sent(cap, b"BYE", to_port=caller_port)
    assert human_bye < our_bye < human_bye + 1.0
    late = [p for p in from_ringline(cap, server, caller_media) if p.at > human_bye + 0.1]
    assert not late, f"{len(late)} RTP packets to the caller more than 100 ms after the human hung up"


# -- warm: briefed, then bridged -------------------------------------------------------------------


async def test_a_warm_transfer_briefs_whoever_answers_then_bridges_the_caller(
    tmp_path: Path, pcaps: dict[str, Path]
) -> None:
    async with (
        sip_server() as server,
        sipp_far_end(
            "uas_human.xml", tmp_path / "human", codec=PCMA, codec_name="PCMA",
            pcap=pcaps["human_pcma.pcap"], talk_ms=4000,
        ) as human,
        Capture(sip_and_rtp(server), tmp_path / "cap.pcap") as cap,
    ):  # fmt: skip
        destination = f"sip:human@{HOST}:{human.sip_port}"
        caller_port, caller_media = free_udp_port(), free_port_block(4)
        caller = asyncio.create_task(
            run_sipp(
                "uac_hangup_by_agent.xml", server.sip, tmp_path / "caller", sip_port=caller_port,
                media_port=caller_media, codec=0, codec_name="PCMU", pcap=pcaps["caller.pcap"], bye_within_ms=15000,
            )
        )  # fmt: skip
        call = await in_progress(server)
        status, body = await transfer(server.api, call.call_id, destination=destination, briefing=BRIEFING)
        answered = await human.result()
        result = await caller
        row = await row_becomes(server, call.call_id, CallStatus.ENDED)
        left = await legs_left(server)
        events = await events_of(server, call.call_id)
    assert not left, f"SIP legs left up: {left}"
    assert result.ok, result  # the caller got our BYE once the human hung up
    assert answered.ok, answered
    assert (status, body["data"]["status"], body["data"]["end_reason"]) == (200, "ended", "transferred"), body
    assert answered.logged("ruri") == [destination]
    assert (row.end_reason, call.record.end_reason.value, call.record.end_detail) == (
        "transferred",
        "transferred",
        destination,
    )
    control = {"command": "transfer", "destination": destination, "message": None, "briefing": BRIEFING}
    assert ("control", control) in events
    assert not [kind for kind, _ in events if kind == "transfer_failed"]

    to_human = from_ringline(cap, server, human.media_port)
    briefing = sounding(to_human, AGENT_HZ)
    assert len(briefing) == pytest.approx(PHRASE_S / 0.020, abs=2)  # the briefing, whole
    first_relayed = sounding(to_human, CALLER_HZ)[0]
    assert first_relayed.at > briefing[-1].at  # the caller is put through once the briefing has played
    assert all(abs(pitch(p) - AGENT_HZ) <= 60 for p in to_human if loud(p) and p.at < first_relayed.at)
    assert {p.payload_type for p in to_human} <= {PCMA, TELEPHONE_EVENT}  # the briefing too, in the leg's codec
    assert_bridged(cap, server, caller_media, human.media_port, after=briefing[-1].at)
    assert not sounding(from_ringline(cap, server, caller_media), AGENT_HZ)  # the caller waited, unanswered
    (human_bye,) = sip_sent(cap, b"BYE", to_port=server.sip_port)
    (our_bye,) = sip_sent(cap, b"BYE", to_port=caller_port)
    assert human_bye < our_bye < human_bye + 1.0


async def test_a_warm_transfer_to_a_busy_destination_goes_on_and_the_agent_says_so(
    tmp_path: Path, pcaps: dict[str, Path]
) -> None:
    async with (
        sip_server() as server,
        sipp_far_end("uas_refuse.xml", tmp_path / "busy", code=486, reason="Busy Here") as busy,
        Capture(sip_and_rtp(server), tmp_path / "cap.pcap") as cap,
    ):
        destination = f"sip:human@{HOST}:{busy.sip_port}"
        caller_port, caller_media = free_udp_port(), free_port_block(4)
        caller = asyncio.create_task(
            run_sipp(
                "uac_call.xml", server.sip, tmp_path / "caller", sip_port=caller_port, media_port=caller_media,
                codec=0, codec_name="PCMU", sdp_port="[media_port]", pcap=pcaps["silence.pcap"], pause_ms=4000,
            )
        )  # fmt: skip
        call = await in_progress(server)
        status, body = await transfer(server.api, call.call_id, destination=destination, briefing=BRIEFING)
        row_after = await row_becomes(server, call.call_id, CallStatus.IN_PROGRESS)  # the call goes on
        refused = await busy.result()
        result = await caller
        row = await row_becomes(server, call.call_id, CallStatus.ENDED)
        left = await legs_left(server)
        events = await events_of(server, call.call_id)
        messages = [m.content for m in await server.api.store.list_messages(call.call_id)]
    assert not left, f"SIP legs left up: {left}"
    assert result.ok, result  # no BYE from us: the caller hung up after 4 s
    assert refused.ok, refused
    assert refused.logged("refusal_acked") == ["yes"]
    detail = f"{destination}: busy (486 Busy Here)"
    assert status == 502, body
    assert body["error"] == f"the transfer to {destination} failed, the call goes on: {detail}", body
    assert row_after.end_reason is None
    assert not sip_sent(cap, b"BYE", to_port=caller_port)
    assert (row.end_reason, call.record.end_reason.value) == ("caller_hangup", "caller_hangup")
    assert [payload for kind, payload in events if kind == "transfer_failed"] == [
        {"destination": destination, "detail": detail}
    ]
    assert messages == [FAILED_MESSAGE]

    (busy_at,) = [p.at for p in cap.packets() if p.payload.startswith(b"SIP/2.0 486 ")]
    heard = from_ringline(cap, server, caller_media)
    said = sounding(heard, AGENT_HZ)
    assert len(said) == pytest.approx(PHRASE_S / 0.020, abs=2)  # the transfer_failed_message, whole
    assert said[0].at > busy_at
    assert len(said) == len([p for p in heard if loud(p)])  # and nothing else: no briefing to the caller


async def test_the_caller_hanging_up_ends_the_bridge_with_a_bye_to_the_destination(
    tmp_path: Path, pcaps: dict[str, Path]
) -> None:
    async with (
        sip_server() as server,
        sipp_far_end("uas_answer.xml", tmp_path / "human", codec=0, codec_name="PCMU") as human,
        Capture(sip_and_rtp(server), tmp_path / "cap.pcap") as cap,
    ):
        destination = f"sip:human@{HOST}:{human.sip_port}"
        caller_media = free_port_block(4)
        caller = asyncio.create_task(
            run_sipp(
                "uac_call.xml", server.sip, tmp_path / "caller", media_port=caller_media, codec=0, codec_name="PCMU",
                sdp_port="[media_port]", pcap=pcaps["caller.pcap"], pause_ms=3000,
            )
        )  # fmt: skip
        call = await in_progress(server)
        status, body = await transfer(server.api, call.call_id, destination=destination, briefing=BRIEFING)
        result = await caller
        answered = await human.result()
        row = await row_becomes(server, call.call_id, CallStatus.ENDED)
        left = await legs_left(server)
    assert not left, f"SIP legs left up: {left}"
    assert result.ok, result  # its BYE answered 200
    assert answered.ok, answered  # our BYE came
    assert answered.logged("bye") == ["yes"]
    assert (status, body["data"]["end_reason"]) == (200, "transferred"), body
    assert row.end_reason == "transferred"
    to_human = from_ringline(cap, server, human.media_port)
    assert len(sounding(to_human, CALLER_HZ)) > 50  # bridged for a while before the caller hung up
    (caller_bye,) = sip_sent(cap, b"BYE", to_port=server.sip_port)
    (our_bye,) = sip_sent(cap, b"BYE", to_port=human.sip_port)
    assert caller_bye < our_bye < caller_bye + 1.0


async def test_a_caller_who_hangs_up_during_the_briefing_leaves_nobody_on_the_line(
    tmp_path: Path, pcaps: dict[str, Path]
) -> None:
    """The caller's BYE comes 0.5 s after the ACK, while whoever answered hears the 1.0 s briefing:
    there is nobody to put through any more, so the destination must be hung up on too (a leg
    left up would also keep the server from stopping: hence the overall bound)."""
    async with (
        asyncio.timeout(20),
        sip_server() as server,
        sipp_far_end("uas_answer.xml", tmp_path / "human", codec=0, codec_name="PCMU", timeout_s=8) as human,
        Capture(sip_and_rtp(server), tmp_path / "cap.pcap") as cap,
    ):
        destination = f"sip:human@{HOST}:{human.sip_port}"
        caller = asyncio.create_task(
            run_sipp(
                "uac_call.xml", server.sip, tmp_path / "caller", codec=0, codec_name="PCMU",
                sdp_port="[media_port]", pcap=pcaps["silence.pcap"], pause_ms=500,
            )
        )  # fmt: skip
        call = await in_progress(server)
        posted = asyncio.create_task(transfer(server.api, call.call_id, destination=destination, briefing=BRIEFING))
        result = await caller
        answered = await human.result(timeout_s=15)
        row = await row_becomes(server, call.call_id, CallStatus.ENDED)
        await posted
        assert result.ok, result
        # Checked before the server stops: a leg left up keeps it from stopping.
        assert not await legs_left(server), "a leg was left up"
        assert answered.ok, answered  # our BYE came
        assert answered.logged("bye") == ["yes"]
        assert row.end_reason == "caller_hangup"
    (caller_bye,) = sip_sent(cap, b"BYE", to_port=server.sip_port)  # the capture, complete once closed
    briefing = sounding(from_ringline(cap, server, human.media_port), AGENT_HZ)
    assert briefing and briefing[0].at < caller_bye, "the caller did not hang up mid-briefing"
    assert briefing[-1].at < caller_bye + 0.2, "the briefing went on after the caller had gone"
