"""Outbound SIP calls through the control API (``POST /api/v1/calls`` from a number on a SIP trunk),
against sipp on 127.0.0.1 as the far end: answered (PCMU, PCMA) and ended by the API with our BYE,
busy, refused, unanswered (our CANCEL), answered after a digest challenge, and the refusals of the
API itself.

Each test starts sipp as a server (``sipp_far_end``: listening before anything is dialled), points a
trunk at it, and places the call. What the far end saw is in its logs (``SippResult.logged``); what
Ringline sent over RTP, in a dumpcap capture. The agent (config/bench.toml) greets first here: its
greeting is 1.0 s of tone.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from ringline.api.app import CALLS
from ringline.api.store import Call as CallRow
from ringline.api.store import CallStatus, Role
from ringline.config.settings import load_settings
from ringline.engine.call import Call
from ringline.engine.turns import TurnState
from tests.api_fixtures import API, ApiServer, running
from tests.sip import make_pcaps
from tests.sip_fixtures import (
    HOST,
    Capture,
    SippResult,
    SipServer,
    loud,
    rtp_streams,
    sip_server,
    sipp_far_end,
)

pytestmark = pytest.mark.timeout(40)

OURS, THEIRS = "+14155550100", "+14155550199"
GREETING_S = 1.0  # config/bench.toml: every phrase is 1.0 s of tone
CODECS = {"PCMU": make_pcaps.PCMU, "PCMA": make_pcaps.PCMA}
SPEECH_END_S = make_pcaps.speech_ends(make_pcaps.SPEECH_CLIPS)[0]
HOOKS = "http://127.0.0.1:9/hooks"  # nothing listens: deliveries stay queued, which is all we look at
NONCE = "dcd98b7102dd2f0e8b11d0f600bfb0c093"


async def post(api: ApiServer, key: str, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    async with api.post(f"{API}{path}", key=key, json=body) as resp:
        return resp.status, await resp.json()


async def sip_number(api: ApiServer, key: str, trunk: dict[str, Any] | None, *, greet: bool = True) -> None:
    """``OURS`` as a number of provider ``sip`` on a trunk with ``trunk`` as its config (None: no trunk),
    calling with an agent that greets first (``greet``) or the config's default agent."""
    body: dict[str, Any] = {"number": OURS, "provider": "sip"}
    if trunk is not None:
        status, created = await post(api, key, "/sip-trunks", {"name": "far end", "config": trunk})
        assert status == 201, created
        body["sip_trunk_id"] = created["data"]["id"]
    if greet:
        config = load_settings("config/bench.toml").agents["default"].model_dump(mode="json")
        config.update(first_speaker="agent", first_message="Hello, this is Ringline.")
        body["outbound_agent_id"] = (await api.store.create_agent("greeter", config)).id
    status, created = await post(api, key, "/phone-numbers", body)
    assert status == 201, created


def trunk_at(port: int, **config: Any) -> dict[str, Any]:
    return {"host": HOST, "port": port, "transport": "udp", **config}


async def place(api: ApiServer, key: str) -> str:
    """``POST /calls`` from ``OURS`` to ``THEIRS``: the queued call's id."""
    status, body = await post(api, key, "/calls", {"to": THEIRS, "from": OURS})
    assert status == 201, body
    call = body["data"]
    assert (call["status"], call["direction"], call["from_number"], call["to_number"]) == (
        "queued",
        "outbound",
        OURS,
        THEIRS,
    )
    return call["id"]


async def status_becomes(api: ApiServer, call_id: str, status: CallStatus, *, timeout_s: float = 10.0) -> CallRow:
    async with asyncio.timeout(timeout_s):
        while True:
            row = await api.store.get_call(call_id)
            if row.status is status:
                return row
            assert row.status is not CallStatus.ENDED, f"ended ({row.end_reason}) before it was {status.value}"
            await asyncio.sleep(0.02)


async def greeted(api: ApiServer, call_id: str, *, timeout_s: float = 10.0) -> Call:
    """The live call, once its greeting has played out."""
    call = await asyncio.wait_for(api.app[CALLS].wait_live(call_id), timeout_s)
    async with asyncio.timeout(timeout_s):
        while True:
            if call.turn_state is TurnState.LISTENING and any(m["role"] == "assistant" for m in call.transcript()):
                return call
            await asyncio.sleep(0.02)


async def end_call(api: ApiServer, key: str, call_id: str) -> None:
    status, body = await post(api, key, f"/calls/{call_id}/control", {"type": "end-call"})
    assert status == 200, body
    assert (body["data"]["status"], body["data"]["end_reason"]) == ("ended", "api_ended")


# -- answered ------------------------------------------------------------------------------------


@pytest.mark.parametrize("codec", ["PCMU", "PCMA"])
async def test_an_answered_call_greets_and_the_api_ends_it_with_bye(tmp_path: Path, codec: str) -> None:
    payload_type = CODECS[codec]
    async with (
        sip_server() as server,
        sipp_far_end("uas_answer.xml", tmp_path / "sipp", codec=payload_type, codec_name=codec) as far,
        Capture(f"udp dst port {far.media_port}", tmp_path / "cap.pcap") as cap,
    ):
        key = await server.api.key()
        await sip_number(server.api, key, trunk_at(far.sip_port, codecs=["PCMU", "PCMA"]))
        call_id = await place(server.api, key)
        assert call_id.startswith("SIP")
        await status_becomes(server.api, call_id, CallStatus.IN_PROGRESS)
        await greeted(server.api, call_id)
        await end_call(server.api, key, call_id)
        result = await far.result()
        row = await status_becomes(server.api, call_id, CallStatus.ENDED)
        messages = [(m.role, m.content) for m in await server.api.store.list_messages(call_id)]
    assert result.ok, result  # it got the ACK of its 200 and our BYE
    assert result.logged("ruri") == [f"sip:{THEIRS}@{HOST}:{far.sip_port}"]
    assert result.logged("caller") == [OURS]
    assert (result.logged("acked"), result.logged("bye")) == (["yes"], ["yes"])
    (offer_port,) = map(int, result.logged("offer_port"))
    assert server.rtp_min <= offer_port <= server.rtp_max
    assert row.end_reason == "api_ended"
    assert messages == [(Role.ASSISTANT, "Hello, this is Ringline.")]

    heard = rtp_streams(cap.packets())[(offer_port, far.media_port)]
    assert {p.payload_type for p in heard} == {payload_type}
    assert sum(loud(p) for p in heard) == pytest.approx(GREETING_S / 0.020, abs=1)


async def test_early_media_is_taken_in_but_not_heard_as_the_callee(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """183 with SDP, then speech as early media (an announcement), then the answer: the call starts
    on the answer and its agent never hears the announcement as a caller turn."""
    pcaps = make_pcaps.write_all(tmp_path / "pcaps")
    early_ms = round((SPEECH_END_S + 0.3) * 1000)  # answered right after the speech: still queued
    async with (
        sip_server() as server,
        sipp_far_end(
            "uas_early_media.xml",
            tmp_path / "sipp",
            codec=make_pcaps.PCMU,
            codec_name="PCMU",
            pcap=pcaps["speech_pcmu.pcap"],
            early_ms=early_ms,
        ) as far,  # fmt: skip
    ):
        key = await server.api.key()
        await sip_number(server.api, key, trunk_at(far.sip_port))
        with caplog.at_level(logging.INFO, logger="ringline.engine.transports.sip.outbound"):
            call_id = await place(server.api, key)
            await status_becomes(server.api, call_id, CallStatus.IN_PROGRESS)
        await greeted(server.api, call_id)
        await end_call(server.api, key, call_id)
        result = await far.result()
        row = await status_becomes(server.api, call_id, CallStatus.ENDED)
        messages = [(m.role, m.content) for m in await server.api.store.list_messages(call_id)]
    assert result.ok, result
    assert f"early media from {HOST}:{far.media_port} (PCMU)" in caplog.text
    assert row.end_reason == "api_ended"
    assert messages == [(Role.ASSISTANT, "Hello, this is Ringline.")]  # no caller turn from the announcement


# -- not answered --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "reason", "end_reason"),
    [(486, "Busy Here", "busy"), (603, "Decline", "busy"), (404, "Not Found", "failed")],
)
async def test_a_refused_call_ends_with_its_reason_and_a_status_update(
    tmp_path: Path, code: int, reason: str, end_reason: str
) -> None:
    async with (
        sip_server(webhook_url=HOOKS) as server,
        sipp_far_end("uas_refuse.xml", tmp_path / "sipp", code=code, reason=reason) as far,
    ):
        key = await server.api.key()
        await sip_number(server.api, key, trunk_at(far.sip_port))
        call_id = await place(server.api, key)
        row = await status_becomes(server.api, call_id, CallStatus.ENDED)
        result = await far.result()
        deliveries = (await server.api.store.list_deliveries(call_id=call_id)).items
        assert server.api.app[CALLS].get(call_id) is None
    assert result.ok, result  # the refusal was ACKed
    assert result.logged("refusal_acked") == ["yes"]
    assert row.end_reason == end_reason
    updates = sorted((d.payload["status"], d.payload.get("end_reason")) for d in deliveries)
    assert updates == [("ended", end_reason), ("queued", None)]
    assert {d.type for d in deliveries} == {"status-update"}


async def ring_out(server: SipServer, key: str, workdir: Path) -> tuple[CallRow, float, SippResult]:
    """A call to a far end that rings and never answers: its row once ended, how long that took
    from the POST, and what the far end saw."""
    async with sipp_far_end("uas_no_answer.xml", workdir) as far:
        await sip_number(server.api, key, trunk_at(far.sip_port))
        placed = asyncio.get_running_loop().time()
        call_id = await place(server.api, key)
        row = await status_becomes(server.api, call_id, CallStatus.ENDED)
        waited = asyncio.get_running_loop().time() - placed
        return row, waited, await far.result()


async def test_an_unanswered_call_is_cancelled_and_ends_no_answer(tmp_path: Path) -> None:
    async with sip_server(no_answer_timeout_s=1.0) as server:
        row, waited, ringing = await ring_out(server, await server.api.key(), tmp_path / "sipp")
    assert ringing.ok, ringing  # CANCEL, 200 to it, 487 to the INVITE and the 487's ACK
    (invite_cseq,) = ringing.logged("invite_cseq")
    assert ringing.logged("cancel_cseq") == [invite_cseq] == ringing.logged("ack_cseq")
    assert 1.0 <= waited < 3.0
    assert row.end_reason == "no_answer"
    assert row.started_at is None


async def test_a_cancelled_call_gives_its_rtp_port_back(tmp_path: Path) -> None:
    """One RTP port pair only: the call after the cancelled one needs it back."""
    async with sip_server(rtp_ports=2, no_answer_timeout_s=1.0) as server:
        key = await server.api.key()
        _, _, ringing = await ring_out(server, key, tmp_path / "ringing")
        number = await server.api.store.find_number(OURS)
        assert number is not None
        async with sipp_far_end("uas_answer.xml", tmp_path / "answering", codec=0, codec_name="PCMU") as far:
            patch = {"config": {"port": far.sip_port}}
            async with server.api.patch(f"{API}/sip-trunks/{number.sip_trunk_id}", key=key, json=patch) as resp:
                assert resp.status == 200, await resp.text()
            call_id = await place(server.api, key)
            await status_becomes(server.api, call_id, CallStatus.IN_PROGRESS)
            await end_call(server.api, key, call_id)
            answering = await far.result()
    assert answering.ok, answering
    assert answering.logged("offer_port") == ringing.logged("offer_port") == [str(server.rtp_min)]


# -- digest ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("qop", [False, True], ids=["rfc2069", "qop-auth"])
async def test_a_trunk_that_challenges_gets_the_digest_answer(tmp_path: Path, qop: bool) -> None:
    async with (
        sip_server() as server,
        sipp_far_end(
            "uas_auth.xml", tmp_path / "sipp", realm="trunk.example", nonce=NONCE,
            qop_param=', qop="auth"' if qop else "", user="ringline", password="s3cret",
        ) as far,
    ):  # fmt: skip
        key = await server.api.key()
        await sip_number(server.api, key, trunk_at(far.sip_port, username="ringline", password="s3cret"))
        call_id = await place(server.api, key)
        await status_becomes(server.api, call_id, CallStatus.IN_PROGRESS)
        await end_call(server.api, key, call_id)
        result = await far.result()
        row = await status_becomes(server.api, call_id, CallStatus.ENDED)
    assert result.ok, result
    assert result.logged("auth") == ["valid"]
    assert row.end_reason == "api_ended"


async def test_a_trunk_that_refuses_the_credentials_fails_the_call(tmp_path: Path) -> None:
    async with (
        sip_server() as server,
        sipp_far_end(
            "uas_auth.xml", tmp_path / "sipp", realm="trunk.example", nonce=NONCE,
            qop_param="", user="ringline", password="s3cret",
        ) as far,
    ):  # fmt: skip
        key = await server.api.key()
        await sip_number(server.api, key, trunk_at(far.sip_port, username="ringline", password="guess"))
        call_id = await place(server.api, key)
        row = await status_becomes(server.api, call_id, CallStatus.ENDED)
        result = await far.result()
    assert result.ok, result  # the 403 was ACKed
    assert result.logged("auth") == ["invalid"]
    assert row.end_reason == "failed"


# -- refused by the API ----------------------------------------------------------------------------


async def test_a_sip_number_without_the_user_agent_is_503() -> None:
    async with running(load_settings("config/bench.toml")) as api:
        key = await api.key()
        await sip_number(api, key, trunk_at(5060), greet=False)
        status, body = await post(api, key, "/calls", {"to": THEIRS, "from": OURS})
        assert (await api.store.list_calls()).total == 0
    assert (status, body["code"], body["error"]) == (
        503,
        "not_configured",
        "outbound SIP calls need the SIP user agent: configure [telephony.sip]",
    )


async def test_a_sip_number_without_a_trunk_is_422() -> None:
    async with sip_server() as server:
        key = await server.api.key()
        await sip_number(server.api, key, None, greet=False)
        status, body = await post(server.api, key, "/calls", {"to": THEIRS, "from": OURS})
        assert (await server.api.store.list_calls()).total == 0
    assert (status, body["code"], body["details"]) == (
        422,
        "validation_error",
        {"from": f"{OURS} has no sip_trunk_id to call through"},
    )
