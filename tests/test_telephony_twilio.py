"""Twilio call control through the real server: the inbound webhook (``X-Twilio-Signature`` checked,
TwiML that opens ``/media/twilio``), hang-up, and the full outbound flow where the local fake of
api.twilio.com "answers" by opening the media socket its TwiML names and the agent speaks first."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import xml.etree.ElementTree as ET

import pytest

from ringline.api.store import CallStatus, Direction, NumberProvider, Role
from ringline.api.telephony import TELEPHONY, TelephonyError
from ringline.benchmarks.caller import CallerScript, run_call
from ringline.benchmarks.vendors.twilio_rest import FakeTwilioRest
from ringline.config.settings import Settings, load_settings
from tests.api_fixtures import API, ApiServer, running

pytestmark = pytest.mark.timeout(60)

PUBLIC = "https://voice.example.com"
OURS, THEIRS = "+14155550100", "+14155550199"
INBOUND = "/telephony/twilio/inbound"
GREETING = "Thanks for calling Acme."  # one phrase: 1.0 s of audio in config/bench.toml


def settings(twilio: FakeTwilioRest | None) -> Settings:
    data = load_settings("config/bench.toml").model_dump()
    data["telephony"] = {"public_url": PUBLIC}
    if twilio is not None:
        data["telephony"]["twilio"] = {
            "account_sid": twilio.account_sid,
            "auth_token": twilio.auth_token,
            "api_base_url": twilio.url,
            "timeout_s": 2.0,
        }
    return Settings.model_validate(data)


@pytest.fixture
async def twilio():
    async with FakeTwilioRest() as server:
        yield server


def sign(token: str, url: str, form: dict[str, str]) -> str:
    """X-Twilio-Signature as Twilio computes it: HMAC-SHA1 over the URL and the sorted fields."""
    data = url + "".join(k + form[k] for k in sorted(form))
    return base64.b64encode(hmac.new(token.encode(), data.encode(), hashlib.sha1).digest()).decode()


def webhook_form(call_sid: str) -> dict[str, str]:
    return {"CallSid": call_sid, "AccountSid": "AC" + "0" * 32, "From": THEIRS, "To": OURS, "Direction": "inbound"}


def stream_of(twiml: str) -> tuple[str, dict[str, str]]:
    root = ET.fromstring(twiml)
    stream = root.find("Connect/Stream")
    assert root.tag == "Response" and stream is not None
    return stream.attrib["url"], {p.attrib["name"]: p.attrib["value"] for p in stream.findall("Parameter")}


async def greeter(server: ApiServer, *, inbound: bool) -> str:
    """An API agent that speaks first, on our Twilio number (inbound or outbound agent)."""
    config = load_settings("config/bench.toml").agents["default"].model_dump(mode="json")
    config.update(first_speaker="agent", first_message=GREETING)
    agent = await server.store.create_agent("greeter", config)
    which = {"inbound_agent_id": agent.id} if inbound else {"outbound_agent_id": agent.id}
    await server.store.create_number(OURS, NumberProvider.TWILIO, **which)
    return agent.id


def answering(server: ApiServer, stream_url: str, params: dict[str, str], call_sid: str) -> asyncio.Task:
    """Twilio, once the call is answered: open the media socket the TwiML names (our public URL is
    this server) with the TwiML's parameters; the callee waits for the agent's greeting, hears it
    out, then hangs up without a word."""
    assert stream_url.startswith(PUBLIC.replace("https", "wss"))
    url = server.ws_url + stream_url.removeprefix(PUBLIC.replace("https", "wss"))
    script = CallerScript(
        (), wait_for_greeting=True, custom_parameters=params, call_sid=call_sid, reply_timeout_s=10, max_call_s=20
    )
    return asyncio.create_task(run_call(url, script))


async def ended(server: ApiServer, call_id: str):
    for _ in range(300):
        row = await server.store.get_call(call_id)
        if row.status is CallStatus.ENDED:
            return row
        await asyncio.sleep(0.02)
    raise AssertionError(f"call {call_id} never ended")


# -- the inbound webhook -----------------------------------------------------------------------------


async def test_a_signed_inbound_webhook_answers_twiml_streaming_to_our_socket(twilio: FakeTwilioRest) -> None:
    async with running(settings(twilio)) as server:
        path = INBOUND + "?agent=sales&var_team=emea&other=ignored"
        form = webhook_form("CA" + "1" * 32)
        headers = {"X-Twilio-Signature": sign(twilio.auth_token, PUBLIC + path, form)}
        async with server.post(path, data=form, headers=headers) as resp:
            assert resp.status == 200, await resp.text()
            assert resp.content_type == "application/xml"
            url, params = stream_of(await resp.text())
    assert url == "wss://voice.example.com/media/twilio"
    assert params == {"from": THEIRS, "to": OURS, "direction": "inbound", "agent": "sales", "var_team": "emea"}


@pytest.mark.parametrize(
    ("signature", "reason"),
    [
        (None, "no X-Twilio-Signature header"),
        ("bm90IGl0", "X-Twilio-Signature does not match https://voice.example.com/telephony/twilio/inbound"),
        ("wrong-token", "X-Twilio-Signature does not match"),
        ("other-url", "X-Twilio-Signature does not match"),
        ("tampered", "X-Twilio-Signature does not match"),
    ],
)
async def test_an_unsigned_or_forged_webhook_is_403_and_logged(
    twilio: FakeTwilioRest, caplog: pytest.LogCaptureFixture, signature: str | None, reason: str
) -> None:
    form = webhook_form("CA" + "2" * 32)
    headers = {}
    if signature == "wrong-token":
        headers["X-Twilio-Signature"] = sign("another-token", PUBLIC + INBOUND, form)
    elif signature == "other-url":
        headers["X-Twilio-Signature"] = sign(twilio.auth_token, "https://evil.example.com" + INBOUND, form)
    elif signature == "tampered":
        headers["X-Twilio-Signature"] = sign(twilio.auth_token, PUBLIC + INBOUND, form)
        form = form | {"From": "+15005550006"}
    elif signature is not None:
        headers["X-Twilio-Signature"] = signature
    caplog.set_level(logging.WARNING, logger="ringline.api.telephony")
    async with running(settings(twilio)) as server, server.post(INBOUND, data=form, headers=headers) as resp:
        assert (resp.status, await resp.text()) == (403, "invalid webhook signature")
    refused = [r.getMessage() for r in caplog.records if "inbound webhook refused" in r.getMessage()]
    assert len(refused) == 1 and reason in refused[0]


async def test_a_provider_not_configured_has_no_webhook() -> None:
    async with running(settings(None)) as server, server.post(INBOUND, data=webhook_form("CA" + "3" * 32)) as resp:
        assert resp.status == 404
        assert "telephony provider 'twilio' is not configured (configured: none)" in await resp.text()


async def test_an_inbound_call_is_answered_by_its_numbers_agent_which_speaks_first(twilio: FakeTwilioRest) -> None:
    async with running(settings(twilio)) as server:
        agent_id = await greeter(server, inbound=True)
        sid = "CA" + "4" * 32
        form = webhook_form(sid)
        headers = {"X-Twilio-Signature": sign(twilio.auth_token, PUBLIC + INBOUND, form)}
        async with server.post(INBOUND, data=form, headers=headers) as resp:
            url, params = stream_of(await resp.text())
        result = await asyncio.wait_for(answering(server, url, params, sid), 30)
        assert result.error is None and result.greeting.audio_s == pytest.approx(1.0, abs=0.05)
        row = await ended(server, sid)
        assert (row.direction, row.agent_id, row.from_number, row.to_number) == (
            Direction.INBOUND,
            agent_id,
            THEIRS,
            OURS,
        )
        messages = [(m.role, m.content) for m in await server.store.list_messages(sid)]
        assert messages == [(Role.ASSISTANT, GREETING)]


# -- REST: hang-up -------------------------------------------------------------------------------------


async def test_hangup_completes_the_call_and_a_refusal_is_a_telephony_error(twilio: FakeTwilioRest) -> None:
    async with running(settings(twilio)) as server:
        control = server.app[TELEPHONY]["twilio"]
        sid = "CA" + "5" * 32
        twilio.add_call(sid, to=OURS, from_=THEIRS)
        await control.hangup(sid)
        request = twilio.requests[0]
        assert request.path == f"/2010-04-01/Accounts/{twilio.account_sid}/Calls/{sid}.json"
        assert request.authorized and request.form == {"Status": "completed"}
        assert twilio.calls[sid].status == "completed"
        with pytest.raises(TelephonyError) as caught:
            await control.hangup(sid)  # over already
        assert (caught.value.status, caught.value.field) == (400, None)
        assert "error 21220" in str(caught.value)


# -- the whole outbound flow ----------------------------------------------------------------------------


async def test_an_outbound_call_is_answered_through_the_socket_twilio_opens_and_the_agent_speaks_first(
    twilio: FakeTwilioRest,
) -> None:
    async with running(settings(twilio)) as server:
        agent_id = await greeter(server, inbound=False)
        key = await server.key("calls:write")
        body = {"to": THEIRS, "from": OURS, "variables": {"order": "A-17"}}
        async with server.post(f"{API}/calls", key=key, json=body) as resp:
            assert resp.status == 201, await resp.text()
            created = (await resp.json())["data"]
        sid = created["id"]
        assert (created["status"], twilio.calls[sid].status) == ("queued", "queued")
        placed = twilio.requests[0]
        assert placed.authorized and (placed.form["To"], placed.form["From"]) == (THEIRS, OURS)
        url, params = stream_of(twilio.calls[sid].twiml[0])
        assert url == "wss://voice.example.com/media/twilio"
        assert params == {"agent": agent_id, "direction": "outbound", "from": OURS, "to": THEIRS, "var_order": "A-17"}

        result = await asyncio.wait_for(answering(server, url, params, sid), 30)  # the callee picks up
        assert result.error is None and result.call_sid == sid
        assert result.greeting.audio_s == pytest.approx(1.0, abs=0.05)  # the agent spoke, unprompted
        row = await ended(server, sid)
        assert (row.direction, row.agent_id, row.variables) == (Direction.OUTBOUND, agent_id, {"order": "A-17"})
        assert row.started_at is not None and (await server.store.list_calls()).total == 1
        messages = [(m.role, m.content) for m in await server.store.list_messages(sid)]
        assert messages == [(Role.ASSISTANT, GREETING)]
