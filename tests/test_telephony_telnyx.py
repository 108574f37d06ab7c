"""Telnyx Call Control through the official SDK against the local fake of api.telnyx.com: the signed
webhooks (``call.initiated`` answered, ``call.answered`` streamed to ``/media/telnyx``), dial,
hang-up and transfer, and the full inbound and outbound flows where the fake opens the media
socket and the agent speaks first."""

from __future__ import annotations

import base64
import logging
import time

import orjson
import pytest

from ringline.api.store import Direction, NumberProvider, Role
from ringline.api.telephony import TELEPHONY, TelephonyError
from ringline.api.telephony.telnyx import decode_state, encode_state
from ringline.engine.transports.base import TransferFailed
from tests.api_fixtures import API, running
from tests.telephony_fakes.flow import (
    GREETING,
    OURS,
    PUBLIC,
    THEIRS,
    connect,
    ended,
    greeter,
    settings,
    stream_of,
)
from tests.telephony_fakes.telnyx import FakeTelnyx

pytestmark = pytest.mark.timeout(60)

WEBHOOK = PUBLIC + "/telephony/telnyx/inbound"
CONNECTION = "1494404757140276705"


def config(fake: FakeTelnyx, **changes: object) -> dict[str, object]:
    return {
        "api_key": fake.api_key,
        "connection_id": CONNECTION,
        "public_key": fake.public_key,
        "api_base_url": fake.url,
        "timeout_s": 2.0,
    } | changes


@pytest.fixture
async def telnyx():
    async with FakeTelnyx() as fake:
        yield fake


def test_client_state_carries_the_parameters_and_ignores_others() -> None:
    params = {"agent": "sales", "var_note": 'say "hi" & <smile>'}
    assert decode_state(encode_state(params)) == params
    assert decode_state(base64.b64encode(b'{"other": 1}').decode()) is None
    assert decode_state("not base64!") is None and decode_state(None) is None


# -- webhooks ------------------------------------------------------------------------------------------


async def test_an_incoming_call_is_answered_then_streamed_with_its_parameters(telnyx: FakeTelnyx) -> None:
    async with running(settings("telnyx", config(telnyx))) as server:
        connect(telnyx, server, "telnyx")
        opened: list[tuple[str, str, dict[str, str]]] = []

        async def record(url: str, call_id: str, parameters: dict[str, str]):
            opened.append((url, call_id, parameters))

        telnyx.opener = record  # type: ignore[assignment]
        call, status = await telnyx.incoming(WEBHOOK + "?agent=sales&var_team=emea", from_=THEIRS, to=OURS)
        assert status == 200
        answer = telnyx.requests[0]
        assert answer.path == f"/v2/calls/{call.call_control_id}/actions/answer" and answer.authorized
        expected = {"from": THEIRS, "to": OURS, "direction": "inbound", "agent": "sales", "var_team": "emea"}
        assert decode_state(answer.body["client_state"]) == expected
        await stream_started(telnyx, call.call_control_id)
        stream = telnyx.requests[1]
        assert stream.path == f"/v2/calls/{call.call_control_id}/actions/streaming_start"
        assert stream.body == {
            "stream_url": "wss://voice.example.com/media/telnyx",
            "stream_track": "inbound_track",
            "stream_bidirectional_mode": "rtp",
            "stream_bidirectional_codec": "PCMU",
            "custom_parameters": [
                {"name": "direction", "value": "inbound"},
                {"name": "agent", "value": "sales"},
                {"name": "var_team", "value": "emea"},
            ],
        }
        assert telnyx.webhooks == [(WEBHOOK + "?agent=sales&var_team=emea", 200)] * 2
        assert [(url, cid) for url, cid, _ in opened] == [(server.ws_url + "/media/telnyx", call.call_control_id)]
        assert opened[0][2] == expected


async def stream_started(telnyx: FakeTelnyx, call_id: str) -> None:
    await stream_of(telnyx, call_id)


async def no_stream(url: str, call_id: str, parameters: dict[str, str]):
    return None


async def test_events_not_ours_are_acknowledged_and_ignored(telnyx: FakeTelnyx) -> None:
    async with running(settings("telnyx", config(telnyx))) as server:
        connect(telnyx, server, "telnyx")
        telnyx.opener = no_stream  # type: ignore[assignment]
        call, _ = await telnyx.incoming(WEBHOOK, from_=THEIRS, to=OURS)
        await stream_started(telnyx, call.call_control_id)
        before = len(telnyx.requests)
        assert before == 2  # answer, streaming_start
        call.client_state = None  # someone else's call.answered, and a hang-up
        assert await telnyx.event(call, "call.answered") == 200
        assert await telnyx.event(call, "call.hangup") == 200
        assert len(telnyx.requests) == before


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        ("unsigned", "Missing required header: telnyx-signature-ed25519"),
        ("stale", "Webhook timestamp is too old or too new"),
        ("other key", "signature"),
        ("no public key", "no [telephony.telnyx] public_key to check webhook signatures with"),
    ],
)
async def test_a_webhook_not_signed_by_telnyx_is_403_and_logged(
    telnyx: FakeTelnyx, caplog: pytest.LogCaptureFixture, tamper: str, reason: str
) -> None:
    changes = {"public_key": None} if tamper == "no public key" else {}
    if tamper == "other key":
        changes = {"public_key": FakeTelnyx().public_key}
    caplog.set_level(logging.WARNING, logger="ringline.api.telephony")
    async with running(settings("telnyx", config(telnyx, **changes))) as server:
        connect(telnyx, server, "telnyx")
        body = orjson.dumps({"data": {"event_type": "call.initiated", "payload": {"call_control_id": "v3:x"}}})
        headers = telnyx.sign(body, int(time.time()) - 600 if tamper == "stale" else None)
        if tamper == "unsigned":
            del headers["telnyx-signature-ed25519"]
        status = await telnyx.post_webhook(WEBHOOK, headers, data=body)
    assert status == 403 and telnyx.requests == []
    refused = [r.getMessage() for r in caplog.records if "inbound webhook refused" in r.getMessage()]
    assert len(refused) == 1 and reason.lower() in refused[0].lower()


# -- REST ------------------------------------------------------------------------------------------------


async def test_dial_hangup_and_transfer_on_the_wire(telnyx: FakeTelnyx) -> None:
    async with running(settings("telnyx", config(telnyx))) as server:
        control = server.app[TELEPHONY]["telnyx"]
        params = {"agent": "a1", "direction": "outbound", "from": OURS, "to": THEIRS}
        call_id = await control.place_call(to=THEIRS, from_=OURS, parameters=params)
        dial = telnyx.requests[0]
        assert (dial.path, dial.authorized) == ("/v2/calls", True)
        assert dial.headers["Authorization"] == f"Bearer {telnyx.api_key}"
        assert {k: dial.body[k] for k in ("connection_id", "to", "from", "webhook_url", "webhook_url_method")} == {
            "connection_id": CONNECTION,
            "to": THEIRS,
            "from": OURS,
            "webhook_url": WEBHOOK,
            "webhook_url_method": "POST",
        }
        assert decode_state(dial.body["client_state"]) == params and call_id in telnyx.calls
        await control.transferrer(call_id)("sip:desk@pbx.example.com")
        assert (telnyx.requests[1].path, telnyx.requests[1].body) == (
            f"/v2/calls/{call_id}/actions/transfer",
            {"to": "sip:desk@pbx.example.com"},
        )
        await control.hangup(call_id)
        assert telnyx.requests[2].path == f"/v2/calls/{call_id}/actions/hangup"
        with pytest.raises(TransferFailed, match=r"^Telnyx refused the transfer \(HTTP 422, error 90018\): Call has"):
            await control.transferrer(call_id)("+14155550111")


async def test_refusals_map_to_fields_and_retryability(telnyx: FakeTelnyx) -> None:
    async with running(settings("telnyx", config(telnyx))) as server:
        control = server.app[TELEPHONY]["telnyx"]
        with pytest.raises(TelephonyError) as caught:
            await control.place_call(to="12345", from_=OURS, parameters={})
        error = caught.value
        assert (error.status, error.field, error.retryable) == (422, "to", False)
        assert error.provider_message == "Invalid phone number: The 'to' phone number or SIP URI is invalid."
        telnyx.fault(503, {"errors": [{"code": "90000", "title": "Service unavailable"}]})
        with pytest.raises(TelephonyError) as caught:
            await control.place_call(to=THEIRS, from_=OURS, parameters={})
        assert (caught.value.status, caught.value.field, caught.value.retryable) == (503, None, True)
        assert len([r for r in telnyx.requests if r.path == "/v2/calls"]) == 2  # the SDK does not retry
    async with running(settings("telnyx", config(telnyx, api_key="KEYstale"))) as server:
        with pytest.raises(TelephonyError, match=r"HTTP 401, error 10009\): Authentication failed"):
            await server.app[TELEPHONY]["telnyx"].hangup("v3:whatever")


# -- whole calls -------------------------------------------------------------------------------------------


async def test_an_inbound_call_reaches_its_numbers_agent_which_speaks_first(telnyx: FakeTelnyx) -> None:
    async with running(settings("telnyx", config(telnyx))) as server:
        connect(telnyx, server, "telnyx")
        agent_id = await greeter(server, NumberProvider.TELNYX, inbound=True)
        call, _ = await telnyx.incoming(WEBHOOK, from_=THEIRS, to=OURS)
        result = await stream_of(telnyx, call.call_control_id)
        assert result.error is None and result.greeting.audio_s == pytest.approx(1.0, abs=0.05)
        row = await ended(server, call.call_control_id)
        assert (row.direction, row.agent_id, row.from_number, row.to_number) == (
            Direction.INBOUND,
            agent_id,
            THEIRS,
            OURS,
        )
        messages = [(m.role, m.content) for m in await server.store.list_messages(row.id)]
        assert messages == [(Role.ASSISTANT, GREETING)]


async def test_an_outbound_call_through_the_api_is_answered_and_the_agent_speaks_first(telnyx: FakeTelnyx) -> None:
    async with running(settings("telnyx", config(telnyx))) as server:
        connect(telnyx, server, "telnyx")
        agent_id = await greeter(server, NumberProvider.TELNYX, inbound=False)
        key = await server.key("calls:write")
        body = {"to": THEIRS, "from": OURS, "variables": {"order": "A-17"}}
        async with server.post(f"{API}/calls", key=key, json=body) as resp:
            assert resp.status == 201, await resp.text()
            created = (await resp.json())["data"]
        call_id = created["id"]
        assert created["status"] == "queued" and telnyx.calls[call_id].state == "parked"
        assert await telnyx.pick_up(call_id) == 200  # the callee answers
        result = await stream_of(telnyx, call_id)
        assert result.error is None and result.call_sid == call_id
        assert result.greeting.audio_s == pytest.approx(1.0, abs=0.05)  # the agent spoke, unprompted
        row = await ended(server, call_id)
        assert (row.direction, row.agent_id, row.variables) == (Direction.OUTBOUND, agent_id, {"order": "A-17"})
        assert (await server.store.list_calls()).total == 1
        messages = [(m.role, m.content) for m in await server.store.list_messages(call_id)]
        assert messages == [(Role.ASSISTANT, GREETING)]
