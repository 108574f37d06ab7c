"""Plivo's Voice API against the local fake of api.plivo.com: the signed answer-URL webhook (Plivo XML
``<Stream>`` to ``/media/plivo``), create, hang-up and transfer, and the full inbound and outbound
flows where the fake opens the media socket and the agent speaks first."""

from __future__ import annotations

import asyncio
import logging
import xml.etree.ElementTree as ET
from urllib.parse import parse_qsl, urlsplit

import pytest

from ringline.api.store import Direction, NumberProvider, Role
from ringline.api.telephony import TELEPHONY, ParametersTooLarge, TelephonyError
from ringline.api.telephony.plivo import extra_headers
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
from tests.telephony_fakes.plivo import FakePlivo, PlivoCall

pytestmark = pytest.mark.timeout(60)

ANSWER = PUBLIC + "/telephony/plivo/inbound"


def config(fake: FakePlivo, **changes: object) -> dict[str, object]:
    return {
        "auth_id": fake.auth_id,
        "auth_token": fake.auth_token,
        "api_base_url": fake.url,
        "timeout_s": 2.0,
    } | changes


@pytest.fixture
async def plivo():
    async with FakePlivo() as fake:
        yield fake


def stream(xml: str) -> tuple[dict[str, str], str, dict[str, str]]:
    element = ET.fromstring(xml).find("Stream")
    assert element is not None and element.text
    attrib = dict(element.attrib)
    pairs = dict(p.split("=", 1) for p in attrib.pop("extraHeaders").split(","))
    return attrib, element.text, pairs


async def no_stream(url: str, call_id: str, parameters: dict[str, str]):
    return None


def test_extra_headers_refuse_what_they_cannot_carry() -> None:
    assert extra_headers({"agent": "a1", "to": "+1"}) == "agent=a1,to=+1"
    with pytest.raises(ParametersTooLarge, match="cannot carry ',', ';' or '=': in var_note"):
        extra_headers({"var_note": "hi, Ada"})
    with pytest.raises(ParametersTooLarge, match="makes? 606 characters of extraHeaders, Plivo takes 512"):
        extra_headers({"var_long": "x" * 597})


async def test_an_inbound_call_is_answered_with_a_stream_to_our_socket(plivo: FakePlivo) -> None:
    async with running(settings("plivo", config(plivo))) as server:
        connect(plivo, server, "plivo")
        plivo.opener = no_stream  # type: ignore[assignment]
        call, status, xml = await plivo.incoming(ANSWER + "?agent=sales&var_team=emea", from_=THEIRS, to=OURS)
    assert status == 200
    attrib, url, params = stream(xml)
    assert attrib == {"bidirectional": "true", "keepCallAlive": "true", "contentType": "audio/x-mulaw;rate=8000"}
    assert url == "wss://voice.example.com/media/plivo"
    assert params == {"from": THEIRS, "to": OURS, "direction": "inbound", "agent": "sales", "var_team": "emea"}
    assert list(plivo.streams) == [call.call_uuid]


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        ("unsigned", "no X-Plivo-Signature-V3 and X-Plivo-Signature-V3-Nonce headers"),
        ("wrong token", "X-Plivo-Signature-V3 does not match https://voice.example.com/telephony/plivo/inbound"),
    ],
)
async def test_a_webhook_not_signed_by_plivo_is_403_and_logged(
    plivo: FakePlivo, caplog: pytest.LogCaptureFixture, tamper: str, reason: str
) -> None:
    caplog.set_level(logging.WARNING, logger="ringline.api.telephony")
    token = "another-token" if tamper == "wrong token" else plivo.auth_token
    async with running(settings("plivo", config(plivo, auth_token=token))) as server:
        connect(plivo, server, "plivo")
        call = PlivoCall("", "c0ffee00-0000-4000-8000-000000000000", THEIRS, OURS, "inbound", ANSWER)
        status, _ = await plivo.fetch_xml(call, ANSWER, signed=tamper != "unsigned")
    assert status == 403 and plivo.streams == {}
    refused = [r.getMessage() for r in caplog.records if "inbound webhook refused" in r.getMessage()]
    assert len(refused) == 1 and reason in refused[0]


async def test_create_hangup_and_transfer_on_the_wire(plivo: FakePlivo) -> None:
    async with running(settings("plivo", config(plivo))) as server:
        connect(plivo, server, "plivo")
        plivo.opener = no_stream  # type: ignore[assignment]
        control = server.app[TELEPHONY]["plivo"]
        params = {"agent": "a1", "direction": "outbound", "from": OURS, "to": THEIRS, "var_x": "1"}
        request_uuid = await control.place_call(to=THEIRS, from_=OURS, parameters=params)
        create = plivo.requests[0]
        assert (create.method, create.path, create.authorized) == ("POST", f"/v1/Account/{plivo.auth_id}/Call/", True)
        assert {k: create.body[k] for k in ("from", "to", "answer_method")} == {
            "from": OURS,
            "to": THEIRS,
            "answer_method": "POST",
        }
        answer_url = urlsplit(create.body["answer_url"])
        assert answer_url._replace(query="").geturl() == ANSWER
        assert dict(parse_qsl(answer_url.query)) == {"agent": "a1", "direction": "outbound", "var_x": "1"}
        call, _, _ = await plivo.pick_up(request_uuid)
        await control.transferrer(call.call_uuid)("sip:desk@pbx.example.com")
        transfer = plivo.requests[1]
        assert transfer.path == f"/v1/Account/{plivo.auth_id}/Call/{call.call_uuid}/"
        assert (transfer.body["legs"], transfer.body["aleg_method"]) == ("aleg", "POST")
        for _ in range(200):  # the fake fetches the new XML after answering
            if len(call.xml) == 2:
                break
            await asyncio.sleep(0.01)
        assert call.xml[1] == "<Response><Dial><User>sip:desk@pbx.example.com</User></Dial></Response>"
        await control.hangup(call.call_uuid)
        assert (plivo.requests[2].method, plivo.requests[2].path) == ("DELETE", transfer.path)
        assert call.status == "completed"
        with pytest.raises(TransferFailed, match=r"^Plivo refused the transfer \(HTTP 404\): call not found"):
            await control.transferrer(call.call_uuid)("+14155550111")


async def test_refusals(plivo: FakePlivo) -> None:
    async with running(settings("plivo", config(plivo))) as server:
        control = server.app[TELEPHONY]["plivo"]
        with pytest.raises(TelephonyError) as caught:
            await control.place_call(to="not-a-number", from_=OURS, parameters={})
        assert (caught.value.status, caught.value.field) == (400, "to")
        assert caught.value.provider_message == "invalid 'to' number: not-a-number"
        plivo.fault(500, {"api_id": "x", "error": "internal error"})
        with pytest.raises(TelephonyError) as caught:
            await control.place_call(to=THEIRS, from_=OURS, parameters={})
        assert (caught.value.status, caught.value.retryable) == (500, True)
        with pytest.raises(TelephonyError, match=r"^Plivo refused the hang-up \(HTTP 404\): call not found$"):
            await control.hangup("c0ffee00-0000-4000-8000-000000000000")
    async with running(settings("plivo", config(plivo, auth_token="stale"))) as server:
        with pytest.raises(TelephonyError, match=r"HTTP 401\): Authentication failed"):
            await server.app[TELEPHONY]["plivo"].hangup("c0ffee00-0000-4000-8000-000000000000")


# -- whole calls -------------------------------------------------------------------------------------------


async def test_an_inbound_call_reaches_its_numbers_agent_which_speaks_first(plivo: FakePlivo) -> None:
    async with running(settings("plivo", config(plivo))) as server:
        connect(plivo, server, "plivo")
        agent_id = await greeter(server, NumberProvider.PLIVO, inbound=True)
        call, status, _ = await plivo.incoming(ANSWER, from_=THEIRS, to=OURS)
        assert status == 200
        result = await stream_of(plivo, call.call_uuid)
        assert result.error is None and result.greeting.audio_s == pytest.approx(1.0, abs=0.05)
        row = await ended(server, call.call_uuid)
        assert (row.direction, row.agent_id, row.from_number, row.to_number) == (
            Direction.INBOUND,
            agent_id,
            THEIRS,
            OURS,
        )
        messages = [(m.role, m.content) for m in await server.store.list_messages(row.id)]
        assert messages == [(Role.ASSISTANT, GREETING)]


async def test_an_outbound_call_through_the_api_is_answered_and_the_agent_speaks_first(plivo: FakePlivo) -> None:
    async with running(settings("plivo", config(plivo))) as server:
        connect(plivo, server, "plivo")
        agent_id = await greeter(server, NumberProvider.PLIVO, inbound=False)
        key = await server.key("calls:write")
        body = {"to": THEIRS, "from": OURS, "variables": {"order": "A-17"}, "metadata": {"crm": 7}}
        async with server.post(f"{API}/calls", key=key, json=body) as resp:
            assert resp.status == 201, await resp.text()
            created = (await resp.json())["data"]
        request_uuid = created["id"]
        assert created["status"] == "queued" and request_uuid in plivo.calls
        call, status, _ = await plivo.pick_up(request_uuid)  # the callee answers
        assert status == 200
        result = await stream_of(plivo, call.call_uuid)
        assert result.error is None and result.greeting.audio_s == pytest.approx(1.0, abs=0.05)
        row = await ended(server, call.call_uuid)  # the queued row moved to Plivo's CallUUID
        assert (row.direction, row.agent_id, row.variables, row.metadata) == (
            Direction.OUTBOUND,
            agent_id,
            {"order": "A-17"},
            {"crm": 7},
        )
        assert (row.from_number, row.to_number) == (OURS, THEIRS)
        assert (await server.store.list_calls()).total == 1
        messages = [(m.role, m.content) for m in await server.store.list_messages(row.id)]
        assert messages == [(Role.ASSISTANT, GREETING)]
