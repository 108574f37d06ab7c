"""Vonage's Voice API against the local fake of api.nexmo.com: the signed answer webhook (an NCCO
connecting ``/media/vonage`` with the parameters and the call uuid as headers), create, hang-up and
transfer, and the full inbound and outbound flows where the fake opens the media socket and the
agent speaks first."""

from __future__ import annotations

import logging
import time
from urllib.parse import parse_qsl, urlsplit

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from ringline.api.store import Direction, NumberProvider, Role
from ringline.api.telephony import TELEPHONY, TelephonyError
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
from tests.telephony_fakes.vonage import FakeVonage, VonageCall

pytestmark = pytest.mark.timeout(60)

ANSWER = PUBLIC + "/telephony/vonage/inbound"
APPLICATION = "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"
_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PRIVATE_PEM = _KEY.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
).decode()
PUBLIC_PEM = (
    _KEY.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
)


def config(fake: FakeVonage, **changes: object) -> dict[str, object]:
    return {
        "application_id": APPLICATION,
        "private_key": PRIVATE_PEM,
        "signature_secret": fake.signature_secret,
        "api_base_url": fake.url,
        "timeout_s": 2.0,
    } | changes


@pytest.fixture
async def vonage():
    async with FakeVonage(APPLICATION, PUBLIC_PEM) as fake:
        yield fake


async def no_stream(url: str, call_id: str, parameters: dict[str, str]):
    return None


async def test_an_inbound_call_is_connected_to_our_socket_with_its_uuid(vonage: FakeVonage) -> None:
    async with running(settings("vonage", config(vonage))) as server:
        connect(vonage, server, "vonage")
        vonage.opener = no_stream  # type: ignore[assignment]
        call, status, ncco = await vonage.incoming(
            ANSWER + "?agent=sales&var_team=emea", from_="14155550199", to="14155550100"
        )
    assert status == 200
    assert ncco == [
        {
            "action": "connect",
            "endpoint": [
                {
                    "type": "websocket",
                    "uri": "wss://voice.example.com/media/vonage",
                    "content-type": "audio/l16;rate=16000",
                    "headers": {
                        "from": THEIRS,
                        "to": OURS,
                        "direction": "inbound",
                        "agent": "sales",
                        "var_team": "emea",
                        "uuid": call.uuid,
                    },
                }
            ],
        }
    ]
    assert list(vonage.streams) == [call.uuid]


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        ("unsigned", "no signed JWT in Authorization: Bearer"),
        ("wrong secret", "the JWT's signature does not match the signature secret"),
        ("stale", "not within 300 s"),
        ("no secret", "no [telephony.vonage] signature_secret to check signed webhooks with"),
    ],
)
async def test_a_webhook_not_signed_by_vonage_is_403_and_logged(
    vonage: FakeVonage, caplog: pytest.LogCaptureFixture, tamper: str, reason: str
) -> None:
    caplog.set_level(logging.WARNING, logger="ringline.api.telephony")
    changes = {"signature_secret": None} if tamper == "no secret" else {}
    async with running(settings("vonage", config(vonage, **changes))) as server:
        connect(vonage, server, "vonage")
        call = VonageCall("c0ffee00-0000-4000-8000-000000000000", "14155550199", "14155550100", ANSWER)
        if tamper == "unsigned":
            status, _ = await vonage.get_webhook(ANSWER + "?uuid=" + call.uuid, {})
        else:
            secret = "another-secret-another-secret-0000" if tamper == "wrong secret" else None
            status, _ = await vonage.answer(call, secret=secret, iat=time.time() - 900 if tamper == "stale" else None)
    assert status == 403 and vonage.streams == {}
    refused = [r.getMessage() for r in caplog.records if "inbound webhook refused" in r.getMessage()]
    assert len(refused) == 1 and reason in refused[0]


async def test_create_hangup_and_transfer_on_the_wire(vonage: FakeVonage) -> None:
    async with running(settings("vonage", config(vonage))) as server:
        control = server.app[TELEPHONY]["vonage"]
        params = {"agent": "a1", "direction": "outbound", "from": OURS, "to": THEIRS, "var_x": "1"}
        call_uuid = await control.place_call(to=THEIRS, from_=OURS, parameters=params)
        create = vonage.requests[0]
        assert (create.path, create.authorized) == ("/v1/calls", True)
        claims = jwt.decode(create.headers["Authorization"].removeprefix("Bearer "), PUBLIC_PEM, algorithms=["RS256"])
        assert claims["application_id"] == APPLICATION
        assert create.body["to"] == [{"type": "phone", "number": "14155550199"}]
        assert (create.body["from"], create.body["answer_method"]) == (
            {"type": "phone", "number": "14155550100"},
            "GET",
        )
        answer_url = urlsplit(create.body["answer_url"][0])
        assert answer_url._replace(query="").geturl() == ANSWER
        assert dict(parse_qsl(answer_url.query)) == {"agent": "a1", "direction": "outbound", "var_x": "1"}
        await control.transferrer(call_uuid)("sip:desk@pbx.example.com")
        transfer = vonage.requests[1]
        assert (transfer.method, transfer.path) == ("PUT", f"/v1/calls/{call_uuid}")
        assert transfer.body == {
            "action": "transfer",
            "destination": {
                "type": "ncco",
                "ncco": [{"action": "connect", "endpoint": [{"type": "sip", "uri": "sip:desk@pbx.example.com"}]}],
            },
        }
        await control.hangup(call_uuid)
        assert vonage.requests[2].body == {"action": "hangup"} and vonage.calls[call_uuid].status == "completed"
        with pytest.raises(TransferFailed, match=r"^Vonage refused the transfer \(HTTP 400\): Bad Request: The call"):
            await control.transferrer(call_uuid)("+14155550111")


async def test_refusals(vonage: FakeVonage) -> None:
    async with running(settings("vonage", config(vonage))) as server:
        control = server.app[TELEPHONY]["vonage"]
        with pytest.raises(TelephonyError) as caught:
            await control.place_call(to="not-a-number", from_=OURS, parameters={})
        assert (caught.value.status, caught.value.field) == (400, "to")
        vonage.fault(503, {"title": "Service Unavailable"})
        with pytest.raises(TelephonyError) as caught:
            await control.hangup("c0ffee00-0000-4000-8000-000000000000")
        assert (caught.value.status, caught.value.retryable) == (503, True)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    async with running(settings("vonage", config(vonage, private_key=other.decode()))) as server:
        with pytest.raises(TelephonyError, match=r"HTTP 401\): Unauthorized"):
            await server.app[TELEPHONY]["vonage"].hangup("c0ffee00-0000-4000-8000-000000000000")


# -- whole calls -------------------------------------------------------------------------------------------


async def test_an_inbound_call_reaches_its_numbers_agent_which_speaks_first(vonage: FakeVonage) -> None:
    async with running(settings("vonage", config(vonage))) as server:
        connect(vonage, server, "vonage")
        agent_id = await greeter(server, NumberProvider.VONAGE, inbound=True)
        call, status, _ = await vonage.incoming(ANSWER, from_="14155550199", to="14155550100")
        assert status == 200
        result = await stream_of(vonage, call.uuid)
        assert result.error is None and result.greeting.audio_s == pytest.approx(1.0, abs=0.05)
        row = await ended(server, call.uuid)
        assert (row.direction, row.agent_id, row.from_number, row.to_number) == (
            Direction.INBOUND,
            agent_id,
            THEIRS,
            OURS,
        )
        messages = [(m.role, m.content) for m in await server.store.list_messages(row.id)]
        assert messages == [(Role.ASSISTANT, GREETING)]


async def test_an_outbound_call_through_the_api_is_answered_and_the_agent_speaks_first(vonage: FakeVonage) -> None:
    async with running(settings("vonage", config(vonage))) as server:
        connect(vonage, server, "vonage")
        agent_id = await greeter(server, NumberProvider.VONAGE, inbound=False)
        key = await server.key("calls:write")
        body = {"to": THEIRS, "from": OURS, "variables": {"order": "A-17"}}
        async with server.post(f"{API}/calls", key=key, json=body) as resp:
            assert resp.status == 201, await resp.text()
            created = (await resp.json())["data"]
        call_uuid = created["id"]
        assert created["status"] == "queued" and vonage.calls[call_uuid].status == "started"
        _, status, _ = await vonage.pick_up(call_uuid)  # the callee answers
        assert status == 200
        result = await stream_of(vonage, call_uuid)
        assert result.error is None and result.greeting.audio_s == pytest.approx(1.0, abs=0.05)
        row = await ended(server, call_uuid)
        assert (row.direction, row.agent_id, row.variables) == (Direction.OUTBOUND, agent_id, {"order": "A-17"})
        assert (row.from_number, row.to_number) == (OURS, THEIRS)
        assert (await server.store.list_calls()).total == 1
        messages = [(m.role, m.content) for m in await server.store.list_messages(call_uuid)]
        assert messages == [(Role.ASSISTANT, GREETING)]
