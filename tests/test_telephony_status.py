"""Provider call-status callbacks through the real server and each provider's local fake: an outbound
call placed with ``POST /api/v1/calls`` that rings and is never answered ends with the provider's
reason (``busy``, ``no_answer``) and a ``status-update``; a forged callback is 403 and changes
nothing; a ``completed`` for a call the media socket had changes nothing; duplicates, late events and
unknown calls are answered 200 and harmless. Plus each provider's mapping, read from its own words."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any, Protocol

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from ringline.api.store import Call, CallStatus, NumberProvider
from ringline.api.telephony.plivo import plivo_progress
from ringline.api.telephony.status import CallProgress, EarlyProgress, Progress
from ringline.api.telephony.telnyx import telnyx_progress
from ringline.api.telephony.twilio import twilio_progress
from ringline.api.telephony.vonage import vonage_progress
from ringline.benchmarks.caller import CallerScript, CallResult, run_call
from ringline.benchmarks.vendors.twilio_rest import FakeTwilioRest
from ringline.config.settings import Settings
from tests.api_fixtures import API, ApiServer, running
from tests.telephony_fakes.flow import OURS, PUBLIC, THEIRS, connect, ended, greeter, settings, stream_of
from tests.telephony_fakes.plivo import FakePlivo
from tests.telephony_fakes.telnyx import FakeTelnyx
from tests.telephony_fakes.vonage import FakeVonage

pytestmark = pytest.mark.timeout(60)

HOOKS = "http://127.0.0.1:9/hooks"
APPLICATION = "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"
_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PRIVATE_PEM = _KEY.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
).decode()
PUBLIC_PEM = (
    _KEY.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
)


# -- each provider's words ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "progress"),
    [
        ("ringing", Progress.RINGING),
        ("in-progress", Progress.ANSWERED),
        ("completed", Progress.COMPLETED),
        ("busy", Progress.BUSY),
        ("no-answer", Progress.NO_ANSWER),
        ("failed", Progress.FAILED),
        ("canceled", Progress.CANCELLED),
        ("queued", None),
        ("initiated", None),
    ],
)
def test_twilio_call_status(status: str, progress: Progress | None) -> None:
    event = twilio_progress({"CallSid": "CA1", "CallStatus": status, "AccountSid": "AC1"})
    assert event == (None if progress is None else CallProgress(("CA1",), progress, f"CallStatus={status}"))


def telnyx_event(event_type: str, **payload: Any) -> dict[str, Any]:
    return {"data": {"event_type": event_type, "payload": {"call_control_id": "v3:x", **payload}}}


@pytest.mark.parametrize(
    ("cause", "progress"),
    [
        ("user_busy", Progress.BUSY),
        ("call_rejected", Progress.BUSY),
        ("no_answer", Progress.NO_ANSWER),
        ("timeout", Progress.NO_ANSWER),
        ("originator_cancel", Progress.CANCELLED),
        ("not_found", Progress.FAILED),
        ("unspecified", Progress.FAILED),
        ("something_new", Progress.FAILED),
        ("normal_clearing", Progress.COMPLETED),
        ("time_limit", Progress.COMPLETED),
    ],
)
def test_telnyx_hangup_cause(cause: str, progress: Progress) -> None:
    event = telnyx_progress(telnyx_event("call.hangup", hangup_cause=cause))
    assert event == CallProgress(("v3:x",), progress, f"hangup_cause={cause}")


def test_telnyx_events_other_than_hangup_are_not_statuses() -> None:
    assert telnyx_progress(telnyx_event("call.answered")) is None
    assert telnyx_progress(telnyx_event("call.initiated", direction="outgoing")) is None
    assert telnyx_progress({"data": "nonsense"}) is None and telnyx_progress([]) is None
    no_cause = telnyx_progress(telnyx_event("call.hangup"))
    assert no_cause is not None and no_cause.progress is Progress.FAILED


@pytest.mark.parametrize(
    ("status", "progress"),
    [
        ("ringing", Progress.RINGING),
        ("in-progress", Progress.ANSWERED),
        ("completed", Progress.COMPLETED),
        ("busy", Progress.BUSY),
        ("no-answer", Progress.NO_ANSWER),
        ("cancel", Progress.CANCELLED),
        ("timeout", Progress.FAILED),
        ("failed", Progress.FAILED),
    ],
)
def test_plivo_call_status_for_both_its_ids(status: str, progress: Progress) -> None:
    event = plivo_progress({"CallUUID": "c1", "RequestUUID": "r1", "CallStatus": status, "HangupCause": "X"})
    assert event == CallProgress(("c1", "r1"), progress, f"CallStatus={status}, HangupCause=X")
    assert plivo_progress({"RequestUUID": "r1", "CallStatus": status}) == CallProgress(
        ("r1",), progress, f"CallStatus={status}"
    )
    assert plivo_progress({"CallStatus": status}) is None


@pytest.mark.parametrize(
    ("status", "progress"),
    [
        ("ringing", Progress.RINGING),
        ("answered", Progress.ANSWERED),
        ("completed", Progress.COMPLETED),
        ("busy", Progress.BUSY),
        ("timeout", Progress.NO_ANSWER),
        ("unanswered", Progress.NO_ANSWER),
        ("rejected", Progress.FAILED),
        ("failed", Progress.FAILED),
        ("cancelled", Progress.CANCELLED),
        ("started", None),
        ("disconnected", None),
        ("machine", None),
    ],
)
def test_vonage_event_status(status: str, progress: Progress | None) -> None:
    event = vonage_progress({"uuid": "u1", "status": status, "conversation_uuid": "CON-u1"})
    assert event == (None if progress is None else CallProgress(("u1",), progress, f"status={status}"))


def test_vonage_detail_is_kept_for_the_log_and_events_without_a_status_are_ignored() -> None:
    event = vonage_progress({"uuid": "u1", "status": "failed", "detail": "invalid_number"})
    assert event is not None and event.said == "status=failed, detail=invalid_number"
    assert vonage_progress({"uuid": "u1", "dtmf": {"digits": "1"}}) is None and vonage_progress("x") is None


def test_early_progress_keeps_the_last_finals_under_every_id() -> None:
    early = EarlyProgress(limit=4)
    first = CallProgress(("c1", "r1"), Progress.BUSY, "CallStatus=busy")
    early.keep("plivo", first)
    for n in range(2, 5):
        early.keep("twilio", CallProgress((f"c{n}",), Progress.FAILED, "x"))
    assert len(early) == 4 and early.take("c1") is None  # the oldest id went first
    assert early.take("r1") == ("plivo", first) and early.take("r1") is None
    second = CallProgress(("c9", "r9"), Progress.NO_ANSWER, "y")
    early.keep("plivo", second)
    assert early.take("c9") == ("plivo", second) and early.take("r9") is None  # forgotten under both ids
    assert early.take("c4") is not None


# -- each provider's side of a call ------------------------------------------------------------------

WORDS = {
    "twilio": {"ringing": "ringing", "busy": "busy", "no_answer": "no-answer", "completed": "completed"},
    "telnyx": {"busy": "user_busy", "no_answer": "timeout", "completed": "normal_clearing"},
    "plivo": {"ringing": "ringing", "busy": "busy", "no_answer": "no-answer", "completed": "completed"},
    "vonage": {"ringing": "ringing", "busy": "busy", "no_answer": "timeout", "completed": "completed"},
}
"""Our statuses in each provider's words (Telnyx's Call Control reports no ringing)."""


class Side(Protocol):
    """The provider's side of a call placed through the API."""

    name: str

    async def report(self, call_id: str, status: str, *, forged: bool = False) -> int:
        """The provider posts ``status`` (ours: ``ringing``, ``busy`` ...) for the call, signed as it
        signs (with the wrong key if ``forged``); the app's answer."""
        ...

    async def answer(self, call_id: str) -> tuple[str, CallResult]:
        """The callee picks up; the call's id on the media socket and the callee's view, once over."""
        ...


@dataclass
class TwilioSide:
    fake: FakeTwilioRest
    server: ApiServer
    name = "twilio"

    async def report(self, call_id: str, status: str, *, forged: bool = False) -> int:
        placed = next(r for r in self.fake.requests if r.path.endswith("/Calls.json"))
        url = placed.form["StatusCallback"]
        form = {
            "CallSid": call_id,
            "AccountSid": self.fake.account_sid,
            "CallStatus": WORDS["twilio"][status],
            "From": OURS,
            "To": THEIRS,
            "Direction": "outbound-api",
            "ApiVersion": "2010-04-01",
            "CallbackSource": "call-progress-events",
            "SequenceNumber": "1",
        }
        token = "another-token" if forged else self.fake.auth_token
        data = url + "".join(k + form[k] for k in sorted(form))
        signature = base64.b64encode(hmac.new(token.encode(), data.encode(), hashlib.sha1).digest()).decode()
        local = self.server.url + url.removeprefix(PUBLIC)
        async with self.server.session.post(local, data=form, headers={"X-Twilio-Signature": signature}) as resp:
            return resp.status

    async def answer(self, call_id: str) -> tuple[str, CallResult]:
        stream = ET.fromstring(self.fake.calls[call_id].twiml[0]).find("Connect/Stream")
        assert stream is not None
        params = {p.attrib["name"]: p.attrib["value"] for p in stream.findall("Parameter")}
        url = self.server.ws_url + stream.attrib["url"].removeprefix(PUBLIC.replace("https", "wss"))
        script = CallerScript(
            (), wait_for_greeting=True, custom_parameters=params, call_sid=call_id, reply_timeout_s=10, max_call_s=20
        )
        return call_id, await asyncio.wait_for(run_call(url, script), 30)


@dataclass
class TelnyxSide:
    fake: FakeTelnyx
    name = "telnyx"

    async def report(self, call_id: str, status: str, *, forged: bool = False) -> int:
        signer = FakeTelnyx() if forged else None
        return await self.fake.hang_up(call_id, WORDS["telnyx"][status], signer=signer)

    async def answer(self, call_id: str) -> tuple[str, CallResult]:
        assert await self.fake.pick_up(call_id) == 200
        return call_id, await stream_of(self.fake, call_id)


@dataclass
class PlivoSide:
    fake: FakePlivo
    name = "plivo"

    async def report(self, call_id: str, status: str, *, forged: bool = False) -> int:
        if status == "ringing":
            return await self.fake.ring(call_id)
        token = "another-token" if forged else None
        return await self.fake.hang_up(call_id, WORDS["plivo"][status], token=token)

    async def answer(self, call_id: str) -> tuple[str, CallResult]:
        call, status, _ = await self.fake.pick_up(call_id)
        assert status == 200
        return call.call_uuid, await stream_of(self.fake, call.call_uuid)


@dataclass
class VonageSide:
    fake: FakeVonage
    name = "vonage"

    async def report(self, call_id: str, status: str, *, forged: bool = False) -> int:
        secret = "another-signature-secret-0123456789" if forged else None
        return await self.fake.event(call_id, WORDS["vonage"][status], secret=secret)

    async def answer(self, call_id: str) -> tuple[str, CallResult]:
        _, status, _ = await self.fake.pick_up(call_id)
        assert status == 200
        return call_id, await stream_of(self.fake, call_id)


def with_hooks(base: Settings) -> Settings:
    data = base.model_dump()
    data["webhooks"] = {"default_url": HOOKS, "secret": "s" * 32}
    return Settings.model_validate(data)


@dataclass
class Placed:
    server: ApiServer
    side: Side
    call_id: str
    """The id ``POST /calls`` answered (Plivo: the request_uuid)."""


async def place(server: ApiServer, side: Side) -> Placed:
    await greeter(server, NumberProvider(side.name), inbound=False)
    key = await server.key("calls:write")
    async with server.post(f"{API}/calls", key=key, json={"to": THEIRS, "from": OURS}) as resp:
        assert resp.status == 201, await resp.text()
        created = (await resp.json())["data"]
    assert created["status"] == "queued"
    return Placed(server, side, created["id"])


async def statuses(server: ApiServer, call_id: str) -> list[tuple[str, str | None]]:
    """The status-updates queued for the call: (status, end_reason)."""
    items = sorted((await server.store.list_deliveries(call_id=call_id)).items, key=lambda d: d.seq)
    return [(d.payload["status"], d.payload.get("end_reason")) for d in items if d.type == "status-update"]


async def row(server: ApiServer, call_id: str) -> Call:
    return await server.store.get_call(call_id)


@pytest.fixture(params=["twilio", "telnyx", "plivo", "vonage"])
async def provider(request: pytest.FixtureRequest):
    """A running server with one provider's fake configured (webhooks to a closed port: queued)."""
    name = request.param
    if name == "twilio":
        async with FakeTwilioRest() as fake:
            config = {"account_sid": fake.account_sid, "auth_token": fake.auth_token, "api_base_url": fake.url}
            async with running(with_hooks(settings("twilio", config | {"timeout_s": 2.0}))) as server:
                yield server, TwilioSide(fake, server)
    elif name == "telnyx":
        async with FakeTelnyx() as fake:
            config = {"api_key": fake.api_key, "connection_id": "1494404757140276705", "public_key": fake.public_key}
            async with running(with_hooks(settings("telnyx", config | {"api_base_url": fake.url}))) as server:
                connect(fake, server, "telnyx")
                yield server, TelnyxSide(fake)
    elif name == "plivo":
        async with FakePlivo() as fake:
            config = {"auth_id": fake.auth_id, "auth_token": fake.auth_token, "api_base_url": fake.url}
            async with running(with_hooks(settings("plivo", config))) as server:
                connect(fake, server, "plivo")
                yield server, PlivoSide(fake)
    else:
        async with FakeVonage(APPLICATION, PUBLIC_PEM) as fake:
            config = {"application_id": APPLICATION, "private_key": PRIVATE_PEM, "api_base_url": fake.url}
            config["signature_secret"] = fake.signature_secret
            async with running(with_hooks(settings("vonage", config))) as server:
                connect(fake, server, "vonage")
                yield server, VonageSide(fake)


# -- calls never answered ------------------------------------------------------------------------------


@pytest.mark.parametrize("outcome", ["busy", "no_answer"])
async def test_a_call_that_rings_and_is_never_answered_ends_with_the_providers_reason(
    provider: tuple[ApiServer, Side], outcome: str
) -> None:
    server, side = provider
    placed = await place(server, side)
    expected: list[tuple[str, str | None]] = [("queued", None)]
    if "ringing" in WORDS[side.name]:
        assert await side.report(placed.call_id, "ringing") == 200
        assert (await row(server, placed.call_id)).status is CallStatus.RINGING
        expected.append(("ringing", None))
    assert await side.report(placed.call_id, outcome) == 200
    ended_row = await row(server, placed.call_id)
    assert (ended_row.status, ended_row.end_reason, ended_row.started_at) == (CallStatus.ENDED, outcome, None)
    assert ended_row.duration_s == 0.0
    expected.append(("ended", outcome))
    assert await statuses(server, placed.call_id) == expected

    assert await side.report(placed.call_id, outcome) == 200  # a provider's retry
    if "ringing" in WORDS[side.name]:
        assert await side.report(placed.call_id, "ringing") == 200  # late, out of order
    assert await side.report(placed.call_id, "completed") == 200
    assert await row(server, placed.call_id) == ended_row
    assert await statuses(server, placed.call_id) == expected
    async with server.get(f"{API}/calls/{placed.call_id}", key=await server.key("calls:read")) as resp:
        body = (await resp.json())["data"]
    assert (body["status"], body["end_reason"]) == ("ended", outcome)


async def test_a_forged_status_callback_is_403_and_changes_nothing(
    provider: tuple[ApiServer, Side], caplog: pytest.LogCaptureFixture
) -> None:
    server, side = provider
    placed = await place(server, side)
    before = await row(server, placed.call_id)
    caplog.set_level(logging.WARNING, logger="ringline.api.telephony")
    assert await side.report(placed.call_id, "busy", forged=True) == 403
    assert await row(server, placed.call_id) == before
    assert await statuses(server, placed.call_id) == [("queued", None)]
    refused = [r.getMessage() for r in caplog.records if "refused from" in r.getMessage()]
    inbound = side.name == "telnyx"  # Telnyx's call events, hang-ups included, come to the inbound route
    assert len(refused) == 1 and ("inbound webhook" if inbound else "status callback") in refused[0]


async def test_a_completed_callback_after_an_answered_call_changes_nothing(provider: tuple[ApiServer, Side]) -> None:
    server, side = provider
    placed = await place(server, side)
    if "ringing" in WORDS[side.name]:  # rings first: the media socket takes over a ringing row too
        assert await side.report(placed.call_id, "ringing") == 200
    media_id, result = await side.answer(placed.call_id)
    assert result.error is None and result.greeting.audio_s == pytest.approx(1.0, abs=0.05)
    over = await ended(server, media_id)
    assert over.end_reason not in {"busy", "no_answer", "failed", "cancelled"} and over.started_at is not None
    sent = await statuses(server, media_id)
    assert sent[-1] == ("ended", over.end_reason) and ("in_progress", None) in sent
    assert await side.report(placed.call_id, "completed") == 200
    assert await row(server, media_id) == over
    assert await statuses(server, media_id) == sent
    assert (await server.store.list_calls()).total == 1


# -- Twilio: answered without a stream, unknown calls ------------------------------------------------


@pytest.fixture
async def twilio():
    async with FakeTwilioRest() as fake:
        config = {"account_sid": fake.account_sid, "auth_token": fake.auth_token, "api_base_url": fake.url}
        async with running(with_hooks(settings("twilio", config))) as server:
            yield server, TwilioSide(fake, server)


async def test_the_create_call_request_asks_twilio_for_the_status_events(twilio: tuple[ApiServer, TwilioSide]) -> None:
    server, side = twilio
    await place(server, side)
    placed = side.fake.requests[0]
    assert placed.form["StatusCallback"] == PUBLIC + "/telephony/twilio/status"
    assert placed.form["StatusCallbackMethod"] == "POST"
    events = [v for k, v in placed.pairs if k == "StatusCallbackEvent"]
    assert events == ["initiated", "ringing", "answered", "completed"]


async def test_a_call_answered_whose_stream_never_started_ends_failed(twilio: tuple[ApiServer, TwilioSide]) -> None:
    server, side = twilio
    placed = await place(server, side)
    assert await side.report(placed.call_id, "completed") == 200
    over = await row(server, placed.call_id)
    assert (over.status, over.end_reason) == (CallStatus.ENDED, "failed")
    assert await statuses(server, placed.call_id) == [("queued", None), ("ended", "failed")]


async def test_a_status_for_a_call_not_ours_is_200_and_logged(
    twilio: tuple[ApiServer, TwilioSide], caplog: pytest.LogCaptureFixture
) -> None:
    server, side = twilio
    await place(server, side)  # so the fake has a StatusCallback URL
    caplog.set_level(logging.INFO, logger="ringline.api.telephony")
    stranger = "CA" + "9" * 32
    assert await side.report(stranger, "busy") == 200
    logged = [r.getMessage() for r in caplog.records if stranger in r.getMessage()]
    assert logged == [f"twilio: status callback (CallStatus=busy) for call {stranger}, not in the store"]
    assert (await server.store.list_calls()).total == 1


async def test_an_unconfigured_provider_has_no_status_route(twilio: tuple[ApiServer, TwilioSide]) -> None:
    server, _ = twilio
    async with server.post("/telephony/plivo/status", data={"CallStatus": "busy"}) as resp:
        assert resp.status == 404
        assert "telephony provider 'plivo' is not configured (configured: twilio)" in await resp.text()


# -- Telnyx: the status route, and a hang-up before the dial is answered -----------------------------


@pytest.fixture
async def telnyx():
    async with FakeTelnyx() as fake:
        config = {"api_key": fake.api_key, "connection_id": "1494404757140276705", "public_key": fake.public_key}
        async with running(with_hooks(settings("telnyx", config | {"api_base_url": fake.url}))) as server:
            connect(fake, server, "telnyx")
            yield server, TelnyxSide(fake)


async def test_telnyx_hangups_are_taken_at_the_status_route_too(telnyx: tuple[ApiServer, TelnyxSide]) -> None:
    server, side = telnyx
    placed = await place(server, side)
    status = await side.fake.hang_up(placed.call_id, "call_rejected", url=PUBLIC + "/telephony/telnyx/status")
    assert status == 200
    assert (await row(server, placed.call_id)).end_reason == "busy"
    assert await statuses(server, placed.call_id) == [("queued", None), ("ended", "busy")]


async def test_a_call_that_ends_before_the_dial_is_answered_is_created_ended(
    telnyx: tuple[ApiServer, TelnyxSide],
) -> None:
    server, side = telnyx
    await greeter(server, NumberProvider.TELNYX, inbound=False)
    side.fake.hangup_at_dial = "no_answer"  # call.hangup reaches us before the call's row exists
    key = await server.key("calls:write")
    async with server.post(f"{API}/calls", key=key, json={"to": THEIRS, "from": OURS}) as resp:
        assert resp.status == 201, await resp.text()
        created = (await resp.json())["data"]
    assert (created["status"], created["end_reason"]) == ("ended", "no_answer")
    assert await statuses(server, created["id"]) == [("queued", None), ("ended", "no_answer")]
    assert side.fake.webhooks == [(PUBLIC + "/telephony/telnyx/inbound", 200)]
