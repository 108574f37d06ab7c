"""Live-call control commands and outbound calls, through the real server: calls are real Twilio media
sockets placed by the caller simulator, the store is the server's own, Twilio's REST API is the local
fake (``benchmarks.vendors.twilio_rest``)."""

from __future__ import annotations

import asyncio
import secrets
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from ringline.api.app import CALLS
from ringline.api.store import CallStatus, Direction, NumberProvider, Role
from ringline.benchmarks.caller import CallerScript, CallResult, EndReason, clip_script, run_call
from ringline.benchmarks.vendors.twilio_rest import FakeTwilioRest
from ringline.config.settings import Settings, load_settings
from ringline.engine.call import Call
from ringline.engine.call import CallStatus as LiveStatus
from tests.api_fixtures import API, ApiServer, running

pytestmark = pytest.mark.timeout(60)

PUBLIC = "https://voice.example.com"
OURS, THEIRS = "+14155550100", "+14155550199"
REPLY_S = 1.0  # config/bench.toml: every phrase is rendered as exactly 1.0 s of audio


def bench(
    twilio: FakeTwilioRest | None = None, *, token: str | None = None, public_url: str | None = PUBLIC
) -> Settings:
    data = load_settings("config/bench.toml").model_dump()
    data["telephony"] = {"public_url": public_url}
    if twilio is not None:
        data["telephony"]["twilio"] = {
            "account_sid": twilio.account_sid,
            "auth_token": token or twilio.auth_token,
            "api_base_url": twilio.url,
            "timeout_s": 2.0,
        }
    return Settings.model_validate(data)


@pytest.fixture
async def twilio():
    async with FakeTwilioRest() as server:
        yield server


def new_sid() -> str:
    return "CA" + secrets.token_hex(16)


def listening(sid: str, *, wait_s: float = 6.0) -> CallerScript:
    """A caller who says nothing: hangs up once a reply has been heard out, or after ``wait_s``
    without one."""
    return CallerScript((), reply_timeout_s=wait_s, call_sid=sid, max_call_s=30.0)


class LiveCall:
    """A simulated call in progress on the server, and what it comes to."""

    def __init__(self, server: ApiServer, script: CallerScript) -> None:
        assert script.call_sid is not None
        self.sid = script.call_sid
        self._server = server
        self._task = asyncio.create_task(run_call(f"{server.ws_url}/media/twilio", script))
        self.call: Call | None = None

    async def active(self) -> Call:
        """The server's call, once in progress."""
        call = await asyncio.wait_for(self._server.app[CALLS].wait_live(self.sid), 10)
        for _ in range(500):
            if call.status is LiveStatus.ACTIVE:
                self.call = call
                return call
            await asyncio.sleep(0.01)
        raise AssertionError(f"call {self.sid} never became active")

    async def result(self) -> CallResult:
        return await asyncio.wait_for(self._task, 30)


async def control(server: ApiServer, key: str, call_id: str, **command: Any) -> tuple[int, dict[str, Any]]:
    async with server.post(f"{API}/calls/{call_id}/control", key=key, json=command) as resp:
        return resp.status, await resp.json()


async def ended(server: ApiServer, call_id: str):
    for _ in range(300):
        row = await server.store.get_call(call_id)
        if row.status is CallStatus.ENDED:
            return row
        await asyncio.sleep(0.02)
    raise AssertionError(f"call {call_id} never ended in the store")


async def said(server: ApiServer, call_id: str) -> list[tuple[Role, str]]:
    return [(m.role, m.content) for m in await server.store.list_messages(call_id)]


# -- say, inject-context, end-call ---------------------------------------------------------------


async def test_say_is_spoken_to_the_caller_and_recorded() -> None:
    async with running(bench()) as server:
        key = await server.key("calls:write")
        live = LiveCall(server, listening(new_sid()))
        await live.active()
        status, body = await control(server, key, live.sid, type="say", content="  Thanks for holding.  ")
        assert status == 200, body
        assert body["data"] == {
            "call_id": live.sid,
            "type": "say",
            "accepted": True,
            "status": "in_progress",
            "end_reason": None,
            "response_triggered": None,
        }
        result = await live.result()
        assert result.ended_by is EndReason.HANGUP  # the caller heard the reply out, then hung up
        assert result.greeting.audio_s == pytest.approx(REPLY_S, abs=0.05)  # the only agent audio
        row = await ended(server, live.sid)
        assert row.end_reason == "caller_hangup"
        assert await said(server, live.sid) == [(Role.ASSISTANT, "Thanks for holding.")]
        events = await server.store.list_events(live.sid)
        controls = [e.payload for e in events if e.type == "control"]
        assert controls == [{"command": "say", "content": "Thanks for holding.", "end_after": False}]


async def test_say_with_end_after_hangs_up_once_heard() -> None:
    async with running(bench()) as server:
        key = await server.key("calls:write")
        live = LiveCall(server, listening(new_sid()))
        await live.active()
        status, body = await control(server, key, live.sid, type="say", content="Goodbye now.", end_after=True)
        assert (status, body["data"]["status"]) == (200, "in_progress")
        result = await live.result()
        assert result.ended_by is EndReason.SERVER_CLOSED
        assert result.greeting.audio_s == pytest.approx(REPLY_S, abs=0.05)
        assert (await ended(server, live.sid)).end_reason == "api_ended"


async def test_inject_context_reaches_the_llm_context_and_can_trigger_a_reply() -> None:
    async with running(bench()) as server:
        key = await server.key("calls:write")
        live = LiveCall(server, listening(new_sid()))
        call = await live.active()
        status, body = await control(server, key, live.sid, type="inject-context", content="The caller is a VIP.")
        assert (status, body["data"]["response_triggered"], body["data"]["status"]) == (200, False, "in_progress")
        assert (call.context.messages[-1].role, call.context.messages[-1].content) == ("system", "The caller is a VIP.")
        status, body = await control(
            server, key, live.sid, type="inject-context", content="Offer the upgrade now.", trigger_response=True
        )
        assert (status, body["data"]["response_triggered"]) == (200, True)
        system = [m.content for m in call.context.messages if m.role == "system"]
        assert system[-2:] == ["The caller is a VIP.", "Offer the upgrade now."]
        result = await live.result()
        assert result.greeting.audio_s == pytest.approx(REPLY_S, abs=0.05)  # the agent answered
        await ended(server, live.sid)
        assert await said(server, live.sid) == [
            (Role.SYSTEM, "The caller is a VIP."),
            (Role.SYSTEM, "Offer the upgrade now."),
            (Role.ASSISTANT, "Sure, here is the answer"),
        ]


async def test_end_call_ends_the_call_at_once() -> None:
    async with running(bench()) as server:
        key = await server.key("calls:write")
        live = LiveCall(server, listening(new_sid()))
        await live.active()
        status, body = await control(server, key, live.sid, type="end-call")
        assert status == 200, body
        assert (body["data"]["status"], body["data"]["end_reason"]) == ("ended", "api_ended")
        result = await live.result()
        assert (result.ended_by, result.greeting.audio_s) == (EndReason.SERVER_CLOSED, 0.0)
        row = await ended(server, live.sid)
        assert row.end_reason == "api_ended"


async def test_end_call_with_a_goodbye_speaks_it_first() -> None:
    async with running(bench()) as server:
        key = await server.key("calls:write")
        live = LiveCall(server, listening(new_sid()))
        await live.active()
        status, body = await control(server, key, live.sid, type="end-call", message="Goodbye.")
        assert (status, body["data"]["status"]) == (200, "in_progress")
        result = await live.result()
        assert result.ended_by is EndReason.SERVER_CLOSED
        assert result.greeting.audio_s == pytest.approx(REPLY_S, abs=0.05)
        assert (await ended(server, live.sid)).end_reason == "api_ended"
        assert await said(server, live.sid) == [(Role.ASSISTANT, "Goodbye.")]


# -- transfer --------------------------------------------------------------------------------------


async def test_transfer_redirects_the_call_through_twilio(twilio: FakeTwilioRest) -> None:
    async with running(bench(twilio)) as server:
        key = await server.key("calls:write")
        live = LiveCall(server, listening(new_sid()))
        twilio.add_call(live.sid, to=OURS, from_=THEIRS)
        await live.active()
        status, body = await control(server, key, live.sid, type="transfer", destination="+1 (415) 555-0111")
        assert status == 200, body
        assert (body["data"]["status"], body["data"]["end_reason"]) == ("ended", "transferred")
        request = twilio.requests[0]
        assert request.authorized and request.path.endswith(f"/Calls/{live.sid}.json")
        assert request.form == {"Twiml": "<Response><Dial>+14155550111</Dial></Response>"}
        assert (await live.result()).ended_by is EndReason.SERVER_CLOSED
        assert (await ended(server, live.sid)).end_reason == "transferred"


async def test_transfer_with_an_announcement_hands_over_once_it_is_heard(twilio: FakeTwilioRest) -> None:
    async with running(bench(twilio)) as server:
        key = await server.key("calls:write")
        live = LiveCall(server, listening(new_sid()))
        twilio.add_call(live.sid)
        await live.active()
        status, body = await control(
            server,
            key,
            live.sid,
            type="transfer",
            destination="sip:desk@pbx.example.com",
            message="Putting you through.",
        )
        assert (status, body["data"]["status"]) == (200, "forwarding")
        status, body = await control(server, key, live.sid, type="say", content="One more thing.")
        assert (status, body["code"]) == (409, "conflict")
        assert body["error"] == f"call {live.sid} is forwarding, not in progress"
        result = await live.result()
        assert result.greeting.audio_s == pytest.approx(REPLY_S, abs=0.05)
        assert result.ended_by is EndReason.SERVER_CLOSED
        assert (await ended(server, live.sid)).end_reason == "transferred"
        assert twilio.calls[live.sid].twiml == ["<Response><Dial><Sip>sip:desk@pbx.example.com</Sip></Dial></Response>"]


async def test_a_transfer_twilio_refuses_answers_502_and_the_call_goes_on(twilio: FakeTwilioRest) -> None:
    async with running(bench(twilio)) as server:
        key = await server.key("calls:write")
        live = LiveCall(server, listening(new_sid()))
        twilio.add_call(live.sid, status="completed")  # Twilio thinks the call is over
        call = await live.active()
        status, body = await control(server, key, live.sid, type="transfer", destination="+14155550111")
        assert (status, body["code"]) == (502, "upstream_error")
        assert body["error"].startswith("the transfer to +14155550111 failed, the call goes on: ")
        assert "Call is not in-progress. Cannot redirect." in body["error"]
        assert call.status is LiveStatus.ACTIVE
        result = await live.result()
        assert result.ended_by is EndReason.HANGUP  # the caller heard the apology out, then hung up
        assert result.greeting.audio_s == pytest.approx(REPLY_S, abs=0.05)
        assert (await ended(server, live.sid)).end_reason == "caller_hangup"
        assert await said(server, live.sid) == [(Role.ASSISTANT, "Sorry, I couldn't transfer you.")]
        events = await server.store.list_events(live.sid)
        statuses = [e.payload["status"] for e in events if e.type == "status"]
        assert statuses == ["active", "transferring", "active", "ending", "ended"]
        (failed,) = [e.payload for e in events if e.type == "transfer_failed"]
        assert failed["destination"] == "+14155550111" and "Cannot redirect" in failed["detail"]
        assert [e.payload["stage"] for e in events if e.type == "fault"] == ["transfer"]


async def test_transfer_without_twilios_rest_api_is_refused_and_the_call_goes_on() -> None:
    async with running(bench()) as server:
        key = await server.key("calls:write")
        live = LiveCall(server, listening(new_sid(), wait_s=1.0))
        call = await live.active()
        status, body = await control(server, key, live.sid, type="transfer", destination="+14155550111")
        assert (status, body["code"]) == (409, "conflict")
        assert body["error"] == (
            f"call {live.sid} cannot be transferred: transfer on twilio needs its REST API: "
            "configure [telephony.twilio]"
        )
        assert call.status is LiveStatus.ACTIVE
        assert (await live.result()).ended_by is EndReason.HANGUP
        assert (await ended(server, live.sid)).end_reason == "caller_hangup"


# -- refusals --------------------------------------------------------------------------------------


async def test_commands_to_calls_not_in_progress() -> None:
    async with running(bench()) as server:
        key = await server.key("calls:write")
        status, body = await control(server, key, "CA-nobody", type="say", content="Hello?")
        assert (status, body["code"], body["error"]) == (404, "not_found", "no call CA-nobody")
        queued = await server.store.create_call(Direction.OUTBOUND, id=new_sid())
        status, body = await control(server, key, queued.id, type="end-call")
        assert (status, body["error"]) == (409, f"call {queued.id} is queued, not in progress yet")
        result = await run_call(f"{server.ws_url}/media/twilio", clip_script(0, 1))
        await ended(server, result.call_sid)
        status, body = await control(server, key, result.call_sid, type="inject-context", content="Too late.")
        assert (status, body["error"]) == (
            409,
            f"call {result.call_sid} has ended (caller_hangup), it is not in progress",
        )


NOT_A_DESTINATION = (
    "neither a sip: URI nor a valid phone number (not in international format: start with + and the country code)"
)


@pytest.mark.parametrize(
    ("command", "details"),
    [
        ({"type": "shout"}, {"type": "Input should be 'inject-context', 'say', 'end-call' or 'transfer'"}),
        ({"content": "hi"}, {"type": "required"}),
        ({"type": "say"}, {"content": "required"}),
        ({"type": "say", "content": "   "}, {"content": "String should have at least 1 character"}),
        ({"type": "say", "content": "hi", "destination": "+14155550111"}, {"destination": "unknown field"}),
        (
            {"type": "inject-context", "content": "x", "trigger_response": "maybe"},
            {"trigger_response": "Input should be a valid boolean, unable to interpret input"},
        ),
        ({"type": "transfer"}, {"destination": "required"}),
        ({"type": "transfer", "destination": "415 555 0111"}, {"destination": NOT_A_DESTINATION}),
        (
            {"type": "transfer", "destination": "sip:pbx.example.com"},
            {"destination": "not a SIP URI: want sip:user@host"},
        ),
    ],
)
async def test_invalid_commands_answer_422_by_field(
    api: ApiServer, command: dict[str, Any], details: dict[str, str]
) -> None:
    key = await api.key("calls:write")
    status, body = await control(api, key, "CA-any", **command)
    assert (status, body["code"], body["details"]) == (422, "validation_error", details)


async def test_control_needs_calls_write(api: ApiServer) -> None:
    key = await api.key("calls:read")
    status, body = await control(api, key, "CA-any", type="end-call")
    assert (status, body["error"]) == (403, "this API key lacks the scope calls:write")


async def test_ten_commands_a_minute_per_call() -> None:
    async with running(bench()) as server:
        key = await server.key("calls:write")
        live = LiveCall(server, listening(new_sid(), wait_s=1.0))
        call = await live.active()
        for i in range(10):
            status, body = await control(server, key, live.sid, type="inject-context", content=f"note {i}")
            assert status == 200, body
        status, body = await control(server, key, live.sid, type="inject-context", content="note 10")
        assert (status, body["code"], body["error"]) == (
            429,
            "rate_limited",
            "too many control commands for this call: 10 per 60 s",
        )
        assert [m.content for m in call.context.messages if m.role == "system"][-1] == "note 9"
        status, body = await control(server, key, "CA-other", type="inject-context", content="note")
        assert status == 404  # another call's limit is its own
        await live.result()


# -- outbound calls --------------------------------------------------------------------------------


async def outbound_setup(server: ApiServer) -> tuple[str, str]:
    """An API agent that greets by name, and our Twilio number with it as the outbound agent."""
    config = load_settings("config/bench.toml").agents["default"].model_dump(mode="json")
    config.update(first_speaker="agent", first_message="Hello {{first_name}}, about order {{order}}.")
    agent = await server.store.create_agent("outbound agent", config)
    await server.store.create_number(OURS, NumberProvider.TWILIO, outbound_agent_id=agent.id)
    return agent.id, await server.key("calls:write")


def stream_of(twiml: str) -> tuple[str, dict[str, str]]:
    stream = ET.fromstring(twiml).find("Connect/Stream")
    assert stream is not None
    return stream.attrib["url"], {p.attrib["name"]: p.attrib["value"] for p in stream.findall("Parameter")}


async def test_an_outbound_call_is_placed_through_twilio_and_answered_by_its_agent(twilio: FakeTwilioRest) -> None:
    async with running(bench(twilio)) as server:
        agent_id, key = await outbound_setup(server)
        request = {
            "to": "(415) 555-0199",
            "country": "us",
            "from": OURS,
            "variables": {"order": "A-17"},
            "metadata": {"crm_id": 42, "tags": ["vip"]},
            "first_name": "Ada",
        }
        async with server.post(f"{API}/calls", key=key, json=request) as resp:
            assert resp.status == 201, await resp.text()
            created = (await resp.json())["data"]
        sid = created["id"]
        assert sid in twilio.calls and sid.startswith("CA")
        assert (created["status"], created["direction"], created["agent_id"]) == ("queued", "outbound", agent_id)
        assert (created["from_number"], created["to_number"]) == (OURS, THEIRS)
        assert created["metadata"] == {"crm_id": 42, "tags": ["vip"]}
        assert created["variables"] == {"first_name": "Ada", "order": "A-17"}
        sent = twilio.requests[0]
        assert (sent.form["To"], sent.form["From"]) == (THEIRS, OURS)
        url, params = stream_of(sent.form["Twiml"])
        assert url == "wss://voice.example.com/media/twilio"
        assert params == {
            "agent": agent_id,
            "direction": "outbound",
            "from": OURS,
            "to": THEIRS,
            "var_first_name": "Ada",
            "var_order": "A-17",
        }
        assert (await server.store.get_call(sid)).status is CallStatus.QUEUED

        # Twilio connects the answered call's stream, with the parameters it was given
        script = clip_script(0, 1, wait_for_greeting=True, custom_parameters=params, call_sid=sid)
        live = LiveCall(server, script)
        await live.active()
        for _ in range(200):
            if (await server.store.get_call(sid)).status is CallStatus.IN_PROGRESS:
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("the queued row never became in_progress")
        result = await live.result()
        assert result.error is None and result.answered == 1 and result.greeting.audio_s > 0
        row = await ended(server, sid)
        assert (row.direction, row.agent_id, row.end_reason) == (Direction.OUTBOUND, agent_id, "caller_hangup")
        assert (row.from_number, row.to_number, row.metadata) == (OURS, THEIRS, {"crm_id": 42, "tags": ["vip"]})
        assert row.started_at is not None
        messages = await said(server, sid)
        assert messages[0] == (Role.ASSISTANT, "Hello Ada, about order A-17.")
        assert (await server.store.list_calls()).total == 1


async def test_a_queued_outbound_call_sends_its_status_update(twilio: FakeTwilioRest) -> None:
    settings = bench(twilio).model_dump()
    settings["webhooks"] = {"default_url": "http://127.0.0.1:9/hooks", "secret": "s" * 32}
    async with running(Settings.model_validate(settings)) as server:
        _, key = await outbound_setup(server)
        async with server.post(f"{API}/calls", key=key, json={"to": THEIRS, "from": OURS}) as resp:
            assert resp.status == 201
            sid = (await resp.json())["data"]["id"]
        queued = (await server.store.list_deliveries(call_id=sid)).items
        assert [(d.type, d.payload["status"]) for d in queued] == [("status-update", "queued")]


async def test_an_explicit_agent_a_config_agent_name(twilio: FakeTwilioRest) -> None:
    async with running(bench(twilio)) as server:
        _, key = await outbound_setup(server)
        async with server.post(
            f"{API}/calls", key=key, json={"to": THEIRS, "from": OURS, "agent_id": "default"}
        ) as resp:
            assert resp.status == 201
            created = (await resp.json())["data"]
        assert created["agent_id"] == "default"
        assert stream_of(twilio.requests[0].form["Twiml"])[1]["agent"] == "default"


BIG_VARIABLES = {name: name[0] * 1000 for name in ("long", "longer", "longest", "more")}


@pytest.mark.parametrize(
    ("request_body", "details"),
    [
        ({"to": "555-0199", "from": OURS}, {"to": "not in international format: start with + and the country code"}),
        ({"to": THEIRS, "from": "+14155550123"}, {"from": "+14155550123 is not one of your numbers"}),
        (
            {"to": THEIRS, "from": "+14155550124"},
            {
                "from": "+14155550124 is a number on exotel; outbound calls are placed through "
                "Twilio, Telnyx, Plivo, Vonage or SIP-trunk numbers"
            },
        ),
        ({"to": THEIRS, "from": OURS, "agent_id": "nobody"}, {"agent_id": "unknown agent 'nobody'"}),
        (
            {"to": THEIRS, "from": OURS, "variables": {"bad-name": "x"}},
            {"variables.bad-name.[key]": "String should match pattern '^[A-Za-z_][A-Za-z0-9_]{0,63}$'"},
        ),
        (
            {"to": THEIRS, "from": OURS, "variables": BIG_VARIABLES},
            {"variables": "too large: the stream parameters make 4449 characters of TwiML, Twilio takes 4000"},
        ),
        ({"to": THEIRS, "from": OURS, "metadata": {"blob": "x" * 17000}}, {"metadata": "more than 16 KiB of JSON"}),
    ],
)
async def test_outbound_calls_refused_before_twilio_is_asked(
    twilio: FakeTwilioRest, request_body: dict[str, Any], details: dict[str, str]
) -> None:
    async with running(bench(twilio)) as server:
        _, key = await outbound_setup(server)
        await server.store.create_number("+14155550124", NumberProvider.EXOTEL)
        async with server.post(f"{API}/calls", key=key, json=request_body) as resp:
            body = await resp.json()
        assert (resp.status, body["code"], body["details"]) == (422, "validation_error", details)
        assert twilio.requests == [] and (await server.store.list_calls()).total == 0


async def test_twilio_refusing_the_number_is_422_with_its_message(twilio: FakeTwilioRest) -> None:
    async with running(bench(twilio)) as server:
        _, key = await outbound_setup(server)
        twilio.fault(400, 21215)
        async with server.post(f"{API}/calls", key=key, json={"to": "+442071838750", "from": OURS}) as resp:
            body = await resp.json()
        message = (
            "Account not authorized to call +442071838750. Perhaps you need to enable some international permissions."
        )
        assert (resp.status, body["error"], body["details"]) == (
            422,
            f"Twilio refused the call: {message}",
            {"to": message},
        )
        assert (await server.store.list_calls()).total == 0


async def test_twilio_failing_or_refusing_our_credentials_is_502(twilio: FakeTwilioRest) -> None:
    async with running(bench(twilio)) as server:
        _, key = await outbound_setup(server)
        twilio.fault(500)
        async with server.post(f"{API}/calls", key=key, json={"to": THEIRS, "from": OURS}) as resp:
            body = await resp.json()
        assert (resp.status, body["code"]) == (502, "upstream_error")
        assert body["error"] == (
            "Twilio did not place the call: Twilio refused the request (HTTP 500, error 20500): "
            "An internal server error has occurred"
        )
    async with running(bench(twilio, token="stale-token")) as server:  # the same data directory: number and agent
        key = await server.key("calls:write")
        async with server.post(f"{API}/calls", key=key, json={"to": THEIRS, "from": OURS}) as resp:
            body = await resp.json()
        assert resp.status == 502 and "Your AccountSid or AuthToken was incorrect." in body["error"]
        assert (await server.store.list_calls()).total == 0


async def test_outbound_calls_need_twilio_and_a_public_url(twilio: FakeTwilioRest) -> None:
    no_twilio = "outbound calls need Twilio's REST API: set [telephony.twilio] account_sid and auth_token"
    no_url = "outbound calls need [telephony] public_url: the address Twilio reaches this server at"
    for settings, missing in ((bench(), no_twilio), (bench(twilio, public_url=None), no_url)):
        async with running(settings) as server:  # both on the same data directory
            key = await server.key("calls:write")
            if missing is no_twilio:
                await outbound_setup(server)
            async with server.post(f"{API}/calls", key=key, json={"to": THEIRS, "from": OURS}) as resp:
                body = await resp.json()
            assert (resp.status, body["code"], body["error"]) == (503, "not_configured", missing)
    assert twilio.requests == []


async def test_the_openapi_document_shows_the_commands_as_a_union(api: ApiServer) -> None:
    async with api.get(f"{API}/openapi.json") as resp:
        doc = await resp.json()
    control = doc["paths"]["/calls/{call_id}/control"]["post"]
    ref = control["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    schema = doc["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert schema["discriminator"]["propertyName"] == "type"
    assert sorted(schema["discriminator"]["mapping"]) == ["end-call", "inject-context", "say", "transfer"]
    assert len(schema["oneOf"]) == 4
    assert {"404", "409", "429", "502"} <= set(control["responses"])
    outbound = doc["paths"]["/calls"]["post"]
    assert {"201", "422", "502", "503"} <= set(outbound["responses"])
    assert "from" in doc["components"]["schemas"]["OutboundCallCreate"]["properties"]
