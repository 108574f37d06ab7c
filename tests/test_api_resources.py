"""The control API's resources (agents, phone numbers, SIP trunks, tool templates, API keys, usage)
through real HTTP on the real server with a fresh SQLite store, and ``ringline keys`` on the same store."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Any

import jsonschema
import orjson
import pytest
from openapi_spec_validator import validate as validate_openapi

from ringline.api.store import CallStatus, Direction
from ringline.cli import main as cli
from ringline.config.settings import load_settings
from tests.api_fixtures import API, ApiServer, running

pytestmark = pytest.mark.timeout(60)

Json = dict[str, Any]


async def call(api: ApiServer, method: str, path: str, key: str | None = None, json: Any = None) -> tuple[int, Json]:
    async with api.request(method, API + path, key=key, json=json) as resp:
        return resp.status, await resp.json()


async def ok(api: ApiServer, method: str, path: str, key: str, json: Any = None, status: int = 200) -> Any:
    got, body = await call(api, method, path, key, json)
    assert got == status, body
    return body["data"]


async def failed(api: ApiServer, method: str, path: str, key: str | None, json: Any = None) -> tuple[int, Json]:
    """An error's status and its ``details`` (or its message when it has none)."""
    status, body = await call(api, method, path, key, json)
    assert body["success"] is False and status >= 400, body
    return status, body["details"] or {"error": body["error"]}


# ---- agents ----------------------------------------------------------------------------------


async def test_agent_create_get_list_patch_delete(api: ApiServer) -> None:
    key = await api.key("agents:read", "agents:write")
    sent = {
        "name": "Front desk",
        "system_prompt": "You help {{ caller_name }} book a table. It is {{now}}.",
        "first_message": "Hello {{caller_name}}!",
        "variables": {"caller_name": "there"},
        "turn": {"silence_ms": 600, "sentence_end_silence_ms": 400},
    }
    agent = await ok(api, "POST", "/agents", key, sent, status=201)
    assert agent["id"].startswith("agt_") and agent["name"] == "Front desk" and agent["enabled"] is True
    assert agent["variables_used"] == ["caller_name", "now"]
    assert agent["config"]["turn"]["silence_ms"] == 600
    assert agent["config"]["turn"]["continuation_silence_ms"] == 1200  # defaults filled
    assert agent["config"]["tts"] == (await ok(api, "GET", f"/agents/{agent['id']}", key))["config"]["tts"]
    assert agent["created_at"].endswith(("Z", "+00:00"))
    assert (await api.store.get_agent(agent["id"])).config == sent  # what was sent, no defaults
    status, body = await call(api, "GET", "/agents", key)
    assert status == 200 and [a["id"] for a in body["data"]] == [agent["id"]]
    assert body["meta"]["pagination"] == {"limit": 50, "offset": 0, "total": 1, "has_more": False}

    patched = await ok(
        api, "PATCH", f"/agents/{agent['id']}", key, {"turn": {"silence_ms": 800}, "enabled": False, "variables": None}
    )
    assert patched["enabled"] is False
    assert patched["config"]["turn"]["silence_ms"] == 800
    assert patched["config"]["turn"]["sentence_end_silence_ms"] == 400  # merged, not replaced
    assert patched["config"]["variables"] == {}  # null: back to the default
    assert patched["updated_at"] >= agent["updated_at"]
    assert "variables" not in (await api.store.get_agent(agent["id"])).config

    renamed = await ok(api, "PATCH", f"/agents/{agent['id']}", key, {"name": "Reception"})
    assert renamed["name"] == renamed["config"]["name"] == "Reception"
    assert await ok(api, "DELETE", f"/agents/{agent['id']}", key) is None
    for method in ("GET", "PATCH", "DELETE"):
        status, details = await failed(api, method, f"/agents/{agent['id']}", key, {} if method == "PATCH" else None)
        assert status == 404 and details == {"error": f"no agent {agent['id']}"}


async def test_agent_auth_and_scopes(api: ApiServer) -> None:
    reader = await api.key("agents:read")
    status, _ = await failed(api, "GET", "/agents", None)
    assert status == 401
    status, details = await failed(api, "POST", "/agents", reader, {"name": "x"})
    assert status == 403 and details == {"error": "this API key lacks the scope agents:write"}
    status, _ = await failed(api, "GET", "/agents", await api.key("calls:read"))
    assert status == 403
    assert await ok(api, "GET", "/agents", await api.key("admin")) == []


async def test_agent_provider_keys_are_never_answered_and_environment_keys_never_stored(
    api: ApiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = await api.key("agents:read", "agents:write")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-the-environment")
    sent = {
        "name": "keyed",
        "llm": {"provider": "openai", "model": "gpt-4o-mini"},
        "tts": {"provider": "elevenlabs", "api_key": "el-sent-secret", "voice_id": "v1"},
        "tts_fallbacks": [{"provider": "openai", "api_key": "sk-fallback-secret"}, {"provider": "espeak"}],
        "analysis": {"llm": {"provider": "openai", "api_key": "sk-analysis-secret"}},
    }
    async with api.post(API + "/agents", key=key, json=sent) as resp:
        assert resp.status == 201
        text = await resp.text()
    for secret in ("sk-from-the-environment", "el-sent-secret", "sk-fallback-secret", "sk-analysis-secret", "****"):
        assert secret not in text
    agent = orjson.loads(text)["data"]
    assert agent["config"]["tts"]["voice_id"] == "v1" and agent["config"]["llm"]["model"] == "gpt-4o-mini"
    stored = (await api.store.get_agent(agent["id"])).config
    assert stored == sent  # the environment's key is not in it

    # what GET answers, edited and sent back whole, keeps the keys there are
    config = agent["config"] | {"first_message": "Hi."}
    await ok(api, "PATCH", f"/agents/{agent['id']}", key, config)
    stored = (await api.store.get_agent(agent["id"])).config
    assert "api_key" not in stored["llm"] and stored["tts"]["api_key"] == "el-sent-secret"
    assert stored["tts_fallbacks"][0]["api_key"] == "sk-fallback-secret"
    assert stored["analysis"]["llm"]["api_key"] == "sk-analysis-secret"
    assert stored["first_message"] == "Hi."
    # a masked key is taken as not sent
    await ok(api, "PATCH", f"/agents/{agent['id']}", key, {"tts": {"api_key": "**********"}})
    assert (await api.store.get_agent(agent["id"])).config["tts"]["api_key"] == "el-sent-secret"

    monkeypatch.delenv("OPENAI_API_KEY")  # reading never needs the environment's key
    assert "api_key" not in (await ok(api, "GET", f"/agents/{agent['id']}", key))["config"]["llm"]
    status, details = await failed(api, "PATCH", f"/agents/{agent['id']}", key, {"description": "d"})
    assert status == 422 and details == {
        "llm": "api_key is missing: set it here or in the environment as OPENAI_API_KEY"
    }
    status, details = await failed(api, "PATCH", f"/agents/{agent['id']}", key, {"tts": {"api_key": None}})
    assert status == 422 and set(details) == {"llm", "tts"}  # null drops the stored key: the environment has none

    # a provider that changes replaces its table instead of merging into it
    patch = {"llm": {"provider": "fake"}, "tts": {"speed": 1.1}, "tts_fallbacks": [{"provider": "espeak"}]}
    patched = await ok(api, "PATCH", f"/agents/{agent['id']}", key, patch)
    assert patched["config"]["llm"]["provider"] == "fake" and patched["config"]["tts"]["speed"] == 1.1
    stored = (await api.store.get_agent(agent["id"])).config
    assert stored["llm"] == {"provider": "fake"} and stored["tts_fallbacks"] == [{"provider": "espeak"}]
    assert (stored["tts"]["api_key"], stored["tts"]["voice_id"]) == ("el-sent-secret", "v1")

    # a fallback sent without its key keeps the key of the same provider's fallback at its position; null drops it
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-the-environment")
    fallbacks = [{"provider": "openai", "api_key": "sk-1"}, {"provider": "openai", "api_key": "sk-2"}]
    await ok(api, "PATCH", f"/agents/{agent['id']}", key, {"tts_fallbacks": fallbacks})
    fallbacks = [
        {"provider": "openai", "voice": "echo"},
        {"provider": "openai", "api_key": None},
        {"provider": "openai"},
    ]
    await ok(api, "PATCH", f"/agents/{agent['id']}", key, {"tts_fallbacks": fallbacks})
    assert (await api.store.get_agent(agent["id"])).config["tts_fallbacks"] == [
        {"provider": "openai", "voice": "echo", "api_key": "sk-1"},
        {"provider": "openai"},
        {"provider": "openai"},
    ]


@pytest.mark.parametrize(
    ("body", "details"),
    [
        ({"name": "a", "colour": "red"}, {"colour": "unknown field"}),
        ({}, {"name": "required"}),
        ({"name": ""}, {"name": "String should have at least 1 character"}),
        (
            {"name": "a", "timezone": "Mars/Base"},
            {"timezone": "unknown time zone 'Mars/Base' (want an IANA name like 'Europe/Paris')"},
        ),
        (
            {"name": "a", "tts": {"provider": "openai", "api_key": "k", "speed": 9}},
            {"tts.speed": "Input should be less than or equal to 4"},
        ),
        (
            {"name": "a", "stt": {"provider": "deepgram"}},
            {"stt": "api_key is missing: set it here or in the environment as DEEPGRAM_API_KEY"},
        ),
        (
            {"name": "a", "tts_fallbacks": [{"provider": "espeak", "pitch": 120}]},
            {"tts_fallbacks.0.pitch": "Input should be less than or equal to 99"},
        ),
        ({"name": "a", "enabled": "maybe"}, {"enabled": "Input should be a valid boolean, unable to interpret input"}),
    ],
)
async def test_agent_validation_errors_name_the_field(
    api: ApiServer, monkeypatch: pytest.MonkeyPatch, body: Json, details: Json
) -> None:
    monkeypatch.delenv("DEEPGRAM_API_KEY", raising=False)
    status, got = await failed(api, "POST", "/agents", await api.key("agents:write"), body)
    assert status == 422 and got == details


@pytest.mark.parametrize("text", ["Hi {{first name}}", "Hi {{ name }", "Hi {{1st}}", "{{}}"])
async def test_agent_malformed_placeholders_are_422(api: ApiServer, text: str) -> None:
    key = await api.key("agents:write")
    for field in ("system_prompt", "first_message"):
        status, details = await failed(api, "POST", "/agents", key, {"name": "a", field: text})
        assert status == 422 and list(details) == [field]
        assert details[field].startswith("malformed placeholder at '{{")


async def test_agent_patch_is_revalidated_whole(api: ApiServer) -> None:
    key = await api.key("agents:write")
    agent = await ok(api, "POST", "/agents", key, {"name": "a"}, status=201)
    path = f"/agents/{agent['id']}"
    assert await failed(api, "PATCH", path, key, {"name": None}) == (422, {"name": "required"})
    assert await failed(api, "PATCH", path, key, {"turn": {"silence_ms": -1}}) == (
        422,
        {"turn.silence_ms": "Input should be greater than or equal to 0"},
    )
    assert await failed(api, "PATCH", path, key, {"vad": {"stop_ms": 900}}) == (
        422,
        {"body": "turn.silence_ms (500 ms) must be at least vad.stop_ms (900 ms)"},
    )
    assert await failed(api, "PATCH", path, key, {"colour": 1}) == (422, {"colour": "unknown field"})
    assert await failed(api, "PATCH", path, key, {"first_message": "{{ oops"}) == (
        422,
        {
            "first_message": "malformed placeholder at '{{ oops': write {{name}}, the name made of letters, digits "
            "and underscores, not starting with a digit"
        },
    )
    assert (await api.store.get_agent(agent["id"])).config == {"name": "a"}  # nothing was written


async def test_agent_list_filters_and_pages(api: ApiServer) -> None:
    key = await api.key("agents:read", "agents:write")
    ids = [
        (await ok(api, "POST", "/agents", key, {"name": f"a{i}", "enabled": i != 1}, status=201))["id"]
        for i in range(3)
    ]
    status, body = await call(api, "GET", "/agents?enabled=false", key)
    assert [a["id"] for a in body["data"]] == [ids[1]] and body["meta"]["pagination"]["total"] == 1
    status, body = await call(api, "GET", "/agents?limit=2", key)
    assert [a["id"] for a in body["data"]] == [ids[2], ids[1]]  # newest first
    assert body["meta"]["pagination"] == {"limit": 2, "offset": 0, "total": 3, "has_more": True}
    status, body = await call(api, "GET", "/agents?limit=2&offset=2", key)
    assert [a["id"] for a in body["data"]] == [ids[0]] and body["meta"]["pagination"]["has_more"] is False
    assert await failed(api, "GET", "/agents?limit=101", key) == (
        422,
        {"query.limit": "Input should be less than or equal to 100"},
    )
    assert await failed(api, "GET", "/agents?enabled=perhaps", key) == (
        422,
        {"query.enabled": "Input should be a valid boolean, unable to interpret input"},
    )


async def test_agent_in_use_cannot_be_deleted(api: ApiServer) -> None:
    key = await api.key("admin")
    agent = await ok(api, "POST", "/agents", key, {"name": "busy"}, status=201)
    number = await ok(
        api,
        "POST",
        "/phone-numbers",
        key,
        {"number": "+14155552671", "provider": "twilio", "inbound_agent_id": agent["id"]},
        status=201,
    )
    status, details = await failed(api, "DELETE", f"/agents/{agent['id']}", key)
    assert status == 409 and details == {"error": f"agent {agent['id']} is still assigned to a phone number"}
    await ok(api, "DELETE", f"/phone-numbers/{number['id']}", key)

    live = await api.store.create_call(Direction.INBOUND, agent_id=agent["id"], status=CallStatus.IN_PROGRESS)
    status, details = await failed(api, "DELETE", f"/agents/{agent['id']}", key)
    assert status == 409 and details == {"error": f"agent {agent['id']} has 1 live or queued call: end them first"}
    await api.store.end_call(live.id, "caller_hangup")
    assert await ok(api, "DELETE", f"/agents/{agent['id']}", key) is None


# ---- phone numbers ---------------------------------------------------------------------------


async def test_phone_number_crud(api: ApiServer) -> None:
    key = await api.key("numbers:read", "numbers:write", "agents:write")
    agent = await ok(api, "POST", "/agents", key, {"name": "a"}, status=201)
    number = await ok(
        api,
        "POST",
        "/phone-numbers",
        key,
        {
            "number": "(415) 555-2671",
            "country": "us",
            "provider": "twilio",
            "inbound_agent_id": agent["id"],
            "label": "Main",
        },
        status=201,
    )
    assert number["id"].startswith("num_") and number["number"] == "+14155552671"
    assert (number["provider"], number["inbound_agent_id"], number["outbound_agent_id"], number["sip_trunk_id"]) == (
        "twilio",
        agent["id"],
        None,
        None,
    )
    assert await ok(api, "GET", f"/phone-numbers/{number['id']}", key) == number
    other = await ok(
        api, "POST", "/phone-numbers", key, {"number": "+44 20 7183 8750", "provider": "telnyx"}, status=201
    )
    status, body = await call(api, "GET", f"/phone-numbers?agent_id={agent['id']}", key)
    assert [n["id"] for n in body["data"]] == [number["id"]] and body["meta"]["pagination"]["total"] == 1
    status, body = await call(api, "GET", "/phone-numbers?limit=1", key)
    assert [n["id"] for n in body["data"]] == [other["id"]] and body["meta"]["pagination"]["has_more"] is True

    patched = await ok(
        api,
        "PATCH",
        f"/phone-numbers/{number['id']}",
        key,
        {"label": "Sales", "inbound_agent_id": None, "outbound_agent_id": agent["id"]},
    )
    assert (patched["label"], patched["inbound_agent_id"], patched["outbound_agent_id"]) == ("Sales", None, agent["id"])
    patched = await ok(
        api, "PATCH", f"/phone-numbers/{number['id']}", key, {"number": "020 7183 8751", "country": "GB"}
    )
    assert patched["number"] == "+442071838751" and patched["label"] == "Sales"

    status, details = await failed(api, "PATCH", f"/phone-numbers/{number['id']}", key, {"number": "+442071838750"})
    assert status == 409 and details == {"error": "phone number +442071838750 already exists"}
    await ok(api, "DELETE", f"/phone-numbers/{number['id']}", key)
    assert (await failed(api, "GET", f"/phone-numbers/{number['id']}", key))[0] == 404
    assert (await failed(api, "DELETE", f"/phone-numbers/{number['id']}", key))[0] == 404


async def test_phone_number_errors(api: ApiServer) -> None:
    key = await api.key("numbers:read", "numbers:write")
    await ok(api, "POST", "/phone-numbers", key, {"number": "+14155552671", "provider": "twilio"}, status=201)
    cases = [
        (
            {"number": "+1 415 555 2671", "provider": "plivo"},
            409,
            {"error": "phone number +14155552671 already exists"},
        ),
        (
            {"number": "+14155552672", "provider": "twilio", "inbound_agent_id": "agt_nope"},
            422,
            {"inbound_agent_id": "no agent agt_nope"},
        ),
        (
            {"number": "+14155552672", "provider": "sip", "sip_trunk_id": "trk_nope", "outbound_agent_id": "agt_x"},
            422,
            {"outbound_agent_id": "no agent agt_x", "sip_trunk_id": "no SIP trunk trk_nope"},
        ),
        (
            {"number": "020 7183 8750", "provider": "twilio"},
            422,
            {"number": "not in international format: start with + and the country code"},
        ),
        ({"number": "+1 415 555", "provider": "twilio"}, 422, {"number": "not a valid phone number for its country"}),
        (
            {"number": "020 7183 8750", "country": "XX", "provider": "twilio"},
            422,
            {"country": "not an ISO 3166-1 alpha-2 country code with a phone numbering plan"},
        ),
        (
            {"number": "+14155552672", "provider": "skype"},
            422,
            {"provider": "Input should be 'twilio', 'telnyx', 'plivo', 'vonage', 'exotel' or 'sip'"},
        ),
        (
            {"number": "+14155552672", "provider": "twilio", "sip_trunk_id": "trk_1"},
            422,
            {"sip_trunk_id": "only a number of provider sip uses a SIP trunk"},
        ),
        ({"provider": "twilio"}, 422, {"number": "required"}),
    ]
    for body, status, details in cases:
        assert await failed(api, "POST", "/phone-numbers", key, body) == (status, details), body
    number = (await ok(api, "GET", "/phone-numbers", key))[0]
    path = f"/phone-numbers/{number['id']}"
    assert await failed(api, "PATCH", path, key, {"provider": None}) == (422, {"provider": "may not be null"})
    assert await failed(api, "PATCH", path, key, {"country": "US"}) == (422, {"country": "only with number"})
    assert await failed(api, "PATCH", path, key, {"sip_trunk_id": "trk_1"}) == (
        422,
        {"sip_trunk_id": "only a number of provider sip uses a SIP trunk"},
    )
    assert await failed(api, "PATCH", path, key, {"provider": "sip", "inbound_agent_id": "agt_gone"}) == (
        422,
        {"inbound_agent_id": "no agent agt_gone"},
    )
    assert (await failed(api, "PATCH", "/phone-numbers/num_nope", key, {"label": "x"}))[0] == 404
    reader = await api.key("numbers:read")
    assert (await failed(api, "POST", "/phone-numbers", reader, {"number": "+14155552673", "provider": "twilio"}))[
        0
    ] == 403
    assert (await failed(api, "GET", "/phone-numbers", None))[0] == 401
    assert (await failed(api, "GET", "/phone-numbers", await api.key("agents:read")))[0] == 403


# ---- SIP trunks ------------------------------------------------------------------------------


async def test_sip_trunk_crud_keeps_the_password_and_never_answers_it(api: ApiServer) -> None:
    key = await api.key("numbers:read", "numbers:write")
    sent = {
        "name": "Carrier",
        "config": {
            "host": "sip.example.com",
            "transport": "tls",
            "username": "acme",
            "password": "p4ss-word",
            "outbound_proxy": "sip:proxy.example.com:5070",
            "registration": True,
        },
    }
    async with api.post(API + "/sip-trunks", key=key, json=sent) as resp:
        assert resp.status == 201
        text = await resp.text()
    assert "p4ss-word" not in text
    trunk = orjson.loads(text)["data"]
    assert trunk["id"].startswith("trk_") and trunk["name"] == "Carrier"
    assert trunk["config"] == {
        "host": "sip.example.com",
        "port": 5061,
        "transport": "tls",
        "username": "acme",
        "password_set": True,
        "codecs": ["PCMU", "PCMA"],
        "outbound_proxy": "sip:proxy.example.com:5070",
        "registration": True,
        "allowed_addresses": [],
    }
    assert (await api.store.get_sip_trunk(trunk["id"])).config["password"] == "p4ss-word"
    assert await ok(api, "GET", f"/sip-trunks/{trunk['id']}", key) == trunk
    status, body = await call(api, "GET", "/sip-trunks", key)
    assert [t["id"] for t in body["data"]] == [trunk["id"]] and body["meta"]["pagination"]["total"] == 1

    patched = await ok(
        api,
        "PATCH",
        f"/sip-trunks/{trunk['id']}",
        key,
        {"name": "Carrier B", "config": {"transport": "udp", "password": "****"}},
    )
    assert patched["name"] == "Carrier B" and patched["config"]["port"] == 5060  # the default follows the transport
    assert (await api.store.get_sip_trunk(trunk["id"])).config["password"] == "p4ss-word"
    status, details = await failed(api, "PATCH", f"/sip-trunks/{trunk['id']}", key, {"config": {"password": None}})
    assert status == 422 and details == {"config.registration": "needs username and password"}
    patched = await ok(
        api, "PATCH", f"/sip-trunks/{trunk['id']}", key, {"config": {"password": None, "registration": None}}
    )
    assert patched["config"]["password_set"] is False and patched["config"]["registration"] is False

    number = await ok(
        api,
        "POST",
        "/phone-numbers",
        key,
        {"number": "+14155552671", "provider": "sip", "sip_trunk_id": trunk["id"]},
        status=201,
    )
    status, details = await failed(api, "DELETE", f"/sip-trunks/{trunk['id']}", key)
    assert status == 409 and details == {"error": f"SIP trunk {trunk['id']} is still used by a phone number"}
    await ok(api, "DELETE", f"/phone-numbers/{number['id']}", key)
    await ok(api, "DELETE", f"/sip-trunks/{trunk['id']}", key)
    assert (await failed(api, "GET", f"/sip-trunks/{trunk['id']}", key))[0] == 404


async def test_sip_trunk_errors(api: ApiServer) -> None:
    key = await api.key("numbers:write")
    cases = [
        ({"name": "t", "config": {"host": "not a host!"}}, {"config.host": "not a host name or IP address"}),
        (
            {"name": "t", "config": {"host": "10.0.0.1", "port": 70000}},
            {"config.port": "Input should be less than or equal to 65535"},
        ),
        (
            {"name": "t", "config": {"host": "[2001:db8::1]", "transport": "sctp"}},
            {"config.transport": "Input should be 'udp', 'tcp' or 'tls'"},
        ),
        ({"name": "t", "config": {"host": "h", "codecs": ["PCMU", "PCMU"]}}, {"config.codecs": "each codec once"}),
        (
            {"name": "t", "config": {"host": "h", "codecs": ["opus"]}},
            {"config.codecs.0": "Input should be 'PCMU' or 'PCMA'"},
        ),
        (
            {"name": "t", "config": {"host": "h", "outbound_proxy": "sip:a b"}},
            {"config.outbound_proxy": "not host[:port] or a sip: URI of one"},
        ),
        (
            {"name": "t", "config": {"host": "h", "registration": True}},
            {"config.registration": "needs username and password"},
        ),
        ({"config": {"host": "h"}}, {"name": "required"}),
    ]
    for body, details in cases:
        assert await failed(api, "POST", "/sip-trunks", key, body) == (422, details), body
    trunk = await ok(api, "POST", "/sip-trunks", key, {"name": "t", "config": {"host": "10.0.0.1"}}, status=201)
    assert trunk["config"]["port"] == 5060 and trunk["config"]["password_set"] is False
    assert await failed(api, "PATCH", f"/sip-trunks/{trunk['id']}", key, {"config": {"port": 0}}) == (
        422,
        {"config.port": "Input should be greater than or equal to 1"},
    )
    assert await failed(api, "PATCH", f"/sip-trunks/{trunk['id']}", key, {"config": {"host": None}}) == (
        422,
        {"config.host": "required"},
    )
    assert (await failed(api, "PATCH", "/sip-trunks/trk_nope", key, {"name": "x"}))[0] == 404
    assert (await failed(api, "GET", "/sip-trunks", key))[0] == 403  # write without read


# ---- tool templates --------------------------------------------------------------------------

LOOKUP = {
    "kind": "function",
    "description": "Look up a booking by its reference.",
    "url": "https://bookings.example.com/lookup",
    "headers": {"Authorization": "Bearer s3cret-token", "X-Shop-Token": "t0k", "X-Trace": "abc"},
    "parameters": {"type": "object", "properties": {"reference": {"type": "string"}}, "required": ["reference"]},
}


async def test_function_tool_crud_masks_credentials(api: ApiServer) -> None:
    key = await api.key("tools:read", "tools:write")
    async with api.post(API + "/tools", key=key, json={"name": "lookup_booking", "config": LOOKUP}) as resp:
        assert resp.status == 201
        text = await resp.text()
    assert "s3cret-token" not in text and "t0k" not in text
    tool = orjson.loads(text)["data"]
    assert tool["id"].startswith("tool_") and tool["kind"] == "function"
    assert tool["config"]["headers"] == {"Authorization": "****", "X-Shop-Token": "****", "X-Trace": "abc"}
    assert (tool["config"]["method"], tool["config"]["timeout_s"]) == ("POST", 10.0)
    row = await api.store.get_tool(tool["id"])
    assert row.config["headers"]["Authorization"] == "Bearer s3cret-token"
    assert await ok(api, "GET", f"/tools/{tool['id']}", key) == tool
    status, body = await call(api, "GET", "/tools", key)
    assert [t["name"] for t in body["data"]] == ["lookup_booking"] and body["meta"]["pagination"]["total"] == 1

    # sent back as answered, with one change: the masked values stay what they were
    patched = await ok(api, "PATCH", f"/tools/{tool['id']}", key, {"config": tool["config"] | {"timeout_s": 5}})
    assert patched["config"]["timeout_s"] == 5
    row = await api.store.get_tool(tool["id"])
    assert row.config["headers"] == LOOKUP["headers"]
    patched = await ok(api, "PATCH", f"/tools/{tool['id']}", key, {"config": {"headers": {"X-Trace": None}}})
    assert patched["config"]["headers"] == {"Authorization": "****", "X-Shop-Token": "****"}

    await ok(api, "POST", "/tools", key, {"name": "hang_up", "config": {"kind": "end_call"}}, status=201)
    assert await failed(api, "POST", "/tools", key, {"name": "hang_up", "config": {"kind": "send_dtmf"}}) == (
        409,
        {"error": "a tool named 'hang_up' already exists"},
    )
    assert await failed(api, "PATCH", f"/tools/{tool['id']}", key, {"name": "hang_up"}) == (
        409,
        {"error": "a tool named 'hang_up' already exists"},
    )
    await ok(api, "DELETE", f"/tools/{tool['id']}", key)
    for method in ("GET", "DELETE"):
        assert (await failed(api, method, f"/tools/{tool['id']}", key))[0] == 404


async def test_builtin_tools_and_switching_kind(api: ApiServer) -> None:
    key = await api.key("tools:read", "tools:write")
    dtmf = await ok(api, "POST", "/tools", key, {"name": "press-keys", "config": {"kind": "send_dtmf"}}, status=201)
    assert dtmf["kind"] == "send_dtmf" and dtmf["config"]["description"].startswith("Press keys")
    transfer = {
        "kind": "transfer_call",
        "destinations": [
            {"destination": "+1 (415) 555-2671", "description": "Sales", "message": "Putting you through."},
            {"destination": "sip:support@pbx.example.com;transport=tls"},
        ],
    }
    switched = await ok(api, "PATCH", f"/tools/{dtmf['id']}", key, {"config": transfer})
    assert switched["kind"] == "transfer_call"
    assert [d["destination"] for d in switched["config"]["destinations"]] == [
        "+14155552671",
        "sip:support@pbx.example.com;transport=tls",
    ]
    assert switched["config"]["description"] == "Transfer the caller to a person or another line."
    row = await api.store.get_tool(dtmf["id"])
    assert row.kind.value == "transfer_call" and "kind" not in row.config


@pytest.mark.parametrize(
    ("config", "details"),
    [
        (
            {**LOOKUP, "parameters": {"type": "string"}},
            {"config.parameters": 'must be a JSON schema of "type": "object"'},
        ),
        (
            {**LOOKUP, "parameters": {"type": "object", "properties": {"a": {"type": "nonsense"}}}},
            {
                "config.parameters": (
                    "not a JSON schema: 'nonsense' is not valid under any of the given schemas (at properties/a/type)"
                )
            },
        ),
        (
            {**LOOKUP, "parameters": {"type": "object", "required": "a"}},
            {"config.parameters": "not a JSON schema: 'a' is not of type 'array' (at required)"},
        ),
        ({**LOOKUP, "url": "ftp://example.com/x"}, {"config.url": "must be an absolute http:// or https:// URL"}),
        (
            {**LOOKUP, "url": "https://user:pw@example.com/x"},
            {"config.url": "no credentials in the URL: send them in headers"},
        ),
        ({**LOOKUP, "method": "TRACE"}, {"config.method": "Input should be 'GET', 'POST', 'PUT', 'PATCH' or 'DELETE'"}),
        ({**LOOKUP, "timeout_s": 0}, {"config.timeout_s": "Input should be greater than 0"}),
        (
            {**LOOKUP, "headers": {"Bad Header": "x"}},
            {"config.headers.Bad Header.[key]": "String should match pattern '^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,100}$'"},
        ),
        ({**LOOKUP, "headers": {"X-A": "a\r\nb"}}, {"config.headers": "header X-A has a line break"}),
        (
            {**LOOKUP, "headers": {"Authorization": "****"}},
            {"config.headers.Authorization": "a masked value: send the real one"},
        ),
        ({"kind": "function", "url": "https://x.example"}, {"config.description": "required"}),
        (
            {"kind": "teleport"},
            {
                "config": (
                    "Input tag 'teleport' found using 'kind' does not match any of the expected tags: "
                    "'function', 'end_call', 'transfer_call', 'send_dtmf'"
                )
            },
        ),
        (
            {"kind": "transfer_call", "destinations": []},
            {"config.destinations": "List should have at least 1 item after validation, not 0"},
        ),
        (
            {"kind": "transfer_call", "destinations": [{"destination": "12345"}]},
            {
                "config.destinations.0.destination": (
                    "not an E.164 number or sip: URI: not in international format: start with + and the country code"
                )
            },
        ),
        (
            {"kind": "transfer_call", "destinations": [{"destination": "sip:"}]},
            {"config.destinations.0.destination": "not a SIP URI (sip:user@host[:port][;params])"},
        ),
        ({"kind": "end_call", "url": "https://x.example"}, {"config.url": "unknown field"}),
    ],
)
async def test_tool_validation_errors_name_the_field(api: ApiServer, config: Json, details: Json) -> None:
    status, got = await failed(api, "POST", "/tools", await api.key("tools:write"), {"name": "t", "config": config})
    assert (status, got) == (422, details)


async def test_tool_names_and_scopes(api: ApiServer) -> None:
    key = await api.key("tools:write")
    for name in ("has space", "", "x" * 65, "ünïcode", "a.b"):
        status, details = await failed(api, "POST", "/tools", key, {"name": name, "config": {"kind": "end_call"}})
        assert status == 422 and list(details) == ["name"], name
    await ok(api, "POST", "/tools", key, {"name": "A-z_0" + "9" * 59, "config": {"kind": "end_call"}}, status=201)
    assert (await failed(api, "GET", "/tools", key))[0] == 403
    assert (
        await failed(api, "POST", "/tools", await api.key("tools:read"), {"name": "x", "config": {"kind": "end_call"}})
    )[0] == 403
    assert (await failed(api, "PATCH", "/tools/tool_nope", key, {"name": "x"}))[0] == 404
    assert await failed(api, "PATCH", "/tools/tool_nope", key, {"name": "y"}) == (404, {"error": "no tool tool_nope"})
    assert await failed(api, "PATCH", "/tools/tool_nope", key, {"name": None}) == (422, {"name": "may not be null"})


# ---- API keys --------------------------------------------------------------------------------


async def test_api_keys_create_once_list_revoke_delete(api: ApiServer) -> None:
    admin = await api.key("admin")
    created = await ok(
        api, "POST", "/api-keys", admin, {"name": "ci", "scopes": ["agents:read", "calls:write"]}, status=201
    )
    secret = created["key"]
    assert secret.startswith("rl_") and created["prefix"] == secret[:8]
    assert created["scopes"] == ["agents:read", "calls:write"] and created["revoked_at"] is None
    assert await ok(api, "GET", "/agents", secret) == []  # the new key works (and is now cached)
    assert (await failed(api, "GET", "/api-keys", secret))[0] == 403

    listed = await ok(api, "GET", "/api-keys", admin)
    assert {k["id"] for k in listed} == {created["id"], listed[-1]["id"]} and len(listed) == 2
    for k in listed:
        assert set(k) == {"id", "name", "prefix", "scopes", "created_at", "last_used_at", "revoked_at"}
    got = await ok(api, "GET", f"/api-keys/{created['id']}", admin)
    assert got == {k: v for k, v in created.items() if k not in ("key", "last_used_at")} | {
        "last_used_at": got["last_used_at"]
    }

    revoked = await ok(api, "POST", f"/api-keys/{created['id']}/revoke", admin)
    assert revoked["revoked_at"] is not None
    status, details = await failed(api, "GET", "/agents", secret)  # at once, despite the lookup's cache
    assert (status, details) == (401, {"error": "invalid or revoked API key"})
    again = await ok(api, "POST", f"/api-keys/{created['id']}/revoke", admin)
    assert again["revoked_at"] == revoked["revoked_at"]

    other = await ok(api, "POST", "/api-keys", admin, {"name": "tmp", "scopes": ["admin"]}, status=201)
    assert await ok(api, "GET", "/usage", other["key"])  # admin implies calls:read
    await ok(api, "DELETE", f"/api-keys/{other['id']}", admin)
    assert (await failed(api, "GET", "/usage", other["key"]))[0] == 401
    for method, path in (("GET", ""), ("DELETE", ""), ("POST", "/revoke")):
        assert (await failed(api, method, f"/api-keys/{other['id']}{path}", admin))[0] == 404


async def test_api_key_errors(api: ApiServer) -> None:
    admin = await api.key("admin")
    cases = [
        (
            {"name": "x", "scopes": ["agents:delete"]},
            {
                "scopes.0": "Input should be 'agents:read', 'agents:write', "
                "'calls:read', 'calls:write', 'numbers:read', 'numbers:write', 'tools:read', 'tools:write' or 'admin'"
            },
        ),
        ({"name": "x", "scopes": []}, {"scopes": "List should have at least 1 item after validation, not 0"}),
        ({"name": "x", "scopes": ["admin", "admin"]}, {"scopes": "each scope once"}),
        ({"name": "x", "scopes": ["admin"], "key_hash": "00"}, {"key_hash": "unknown field"}),
    ]
    for body, details in cases:
        assert await failed(api, "POST", "/api-keys", admin, body) == (422, details)
    writer = await api.key("agents:write", "calls:read", "numbers:write", "tools:write")
    assert (await failed(api, "POST", "/api-keys", writer, {"name": "x", "scopes": ["admin"]}))[0] == 403
    assert (await failed(api, "GET", "/api-keys", None))[0] == 401


# ---- usage -----------------------------------------------------------------------------------


async def _ended_call(api: ApiServer, agent_id: str | None, seconds: float | None) -> None:
    row = await api.store.create_call(Direction.INBOUND, agent_id=agent_id)
    start = row.created_at + timedelta(seconds=1)
    if seconds is not None:
        await api.store.update_call_status(row.id, CallStatus.IN_PROGRESS, at=start)
    await api.store.end_call(row.id, "caller_hangup", at=start + timedelta(seconds=seconds or 0))


async def test_usage_per_agent_and_day(api: ApiServer) -> None:
    key = await api.key("calls:read")
    for agent_id, seconds in (("agt_a", 60), ("agt_a", 30), ("agt_b", 120), ("agt_b", None), (None, 6)):
        await _ended_call(api, agent_id, seconds)
    day = (await api.store.list_calls(limit=1)).items[0].created_at.date().isoformat()
    usage = await ok(api, "GET", "/usage", key)
    assert (usage["calls"], usage["minutes"]) == (5, 3.6)
    assert usage["agents"] == [
        {"agent_id": "agt_b", "calls": 2, "minutes": 2.0},
        {"agent_id": "agt_a", "calls": 2, "minutes": 1.5},
        {"agent_id": None, "calls": 1, "minutes": 0.1},
    ]
    assert usage["days"] == [
        {"day": day, "agent_id": None, "calls": 1, "minutes": 0.1},
        {"day": day, "agent_id": "agt_a", "calls": 2, "minutes": 1.5},
        {"day": day, "agent_id": "agt_b", "calls": 2, "minutes": 2.0},
    ]
    assert set(usage) == {"from", "to", "calls", "minutes", "agents", "days"}

    only_a = await ok(api, "GET", "/usage?agent_id=agt_a&from=2020-01-01T00:00:00Z&to=2020-12-31T00:00:00Z", key)
    assert (only_a["calls"], only_a["agents"], only_a["from"]) == (0, [], "2020-01-01T00:00:00Z")
    only_a = await ok(api, "GET", "/usage?agent_id=agt_a", key)
    assert (only_a["calls"], only_a["minutes"]) == (2, 1.5)
    assert await failed(api, "GET", "/usage?from=2025-02-01T00:00:00Z&to=2025-01-01T00:00:00Z", key) == (
        422,
        {"query.from": "must be before `to`"},
    )
    assert await failed(api, "GET", "/usage?from=2020-01-01&to=2024-01-01", key) == (
        422,
        {"query.from": "at most 366 days before `to`"},
    )
    assert (await failed(api, "GET", "/usage?from=yesterday", key))[0] == 422
    assert (await failed(api, "GET", "/usage?since=2020-01-01", key)) == (422, {"query.since": "unknown field"})
    assert (await failed(api, "GET", "/usage", await api.key("agents:read")))[0] == 403


# ---- the OpenAPI document --------------------------------------------------------------------


def _readable(schema: Any) -> Any:
    """``schema`` as a response must satisfy it: without its ``writeOnly`` properties (OpenAPI 3.1)."""
    if isinstance(schema, list):
        return [_readable(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _readable(v) for k, v in schema.items()}
    props = out.get("properties")
    if isinstance(props, dict) and (hidden := {k for k, v in props.items() if v.get("writeOnly")}):
        out["properties"] = {k: v for k, v in props.items() if k not in hidden}
        out["required"] = [r for r in out.get("required", []) if r not in hidden]
    return out


def _response_schema(doc: Json, path: str, method: str, status: int) -> Json:
    spec = doc["paths"][path][method]["responses"][str(status)]
    if "$ref" in spec:
        spec = doc["components"]["responses"][spec["$ref"].rsplit("/", 1)[1]]
    return spec["content"]["application/json"]["schema"] | {"components": _readable(doc["components"])}


async def test_openapi_documents_the_resources_and_responses_match_it(api: ApiServer) -> None:
    async with api.get(API + "/openapi.json") as resp:
        doc = await resp.json()
    validate_openapi(doc)
    mine = {
        "/agents": {"get", "post"},
        "/agents/{agent_id}": {"get", "patch", "delete"},
        "/phone-numbers": {"get", "post"},
        "/phone-numbers/{number_id}": {"get", "patch", "delete"},
        "/sip-trunks": {"get", "post"},
        "/sip-trunks/{trunk_id}": {"get", "patch", "delete"},
        "/tools": {"get", "post"},
        "/tools/{tool_id}": {"get", "patch", "delete"},
        "/api-keys": {"get", "post"},
        "/api-keys/{key_id}": {"get", "delete"},
        "/api-keys/{key_id}/revoke": {"post"},
        "/usage": {"get"},
    }
    for path, methods in mine.items():
        assert set(doc["paths"][path]) == methods, path
    assert doc["paths"]["/api-keys"]["post"]["security"][0] == {"bearerAuth": ["admin"]}
    assert "409" in doc["paths"]["/agents/{agent_id}"]["delete"]["responses"]
    assert {p["name"] for p in doc["paths"]["/usage"]["get"]["parameters"]} == {"from", "to", "agent_id"}
    assert doc["components"]["schemas"]["Agent"]["properties"]["config"]["$ref"].endswith("/AgentConfig")
    assert doc["components"]["schemas"]["OpenAiTtsConfig"]["properties"]["api_key"]["writeOnly"] is True

    admin = await api.key("admin")
    agent = {"name": "a", "tts": {"provider": "openai", "api_key": "k"}}
    trunk = {"name": "t", "config": {"host": "h", "password": "p"}}
    tool = {"name": "t", "config": LOOKUP}
    exchanges = [
        ("post", "/agents", "/agents", agent),
        ("post", "/agents", "/agents", {"name": 5}),
        ("get", "/agents", "/agents", None),
        ("patch", "/agents/{agent_id}", "/agents/{agent}", {"enabled": False}),
        ("get", "/agents/{agent_id}", "/agents/agt_nope", None),
        ("post", "/sip-trunks", "/sip-trunks", trunk),
        ("get", "/sip-trunks", "/sip-trunks", None),
        (
            "post",
            "/phone-numbers",
            "/phone-numbers",
            {"number": "+14155552671", "provider": "sip", "inbound_agent_id": "{agent}", "sip_trunk_id": "{trunk}"},
        ),
        ("post", "/phone-numbers", "/phone-numbers", {"number": "+14155552671", "provider": "twilio"}),
        ("get", "/phone-numbers", "/phone-numbers", None),
        ("delete", "/agents/{agent_id}", "/agents/{agent}", None),
        ("post", "/tools", "/tools", tool),
        ("get", "/tools", "/tools", None),
        (
            "post",
            "/tools",
            "/tools",
            {"name": "u", "config": {"kind": "transfer_call", "destinations": [{"destination": "sip:a@b"}]}},
        ),
        ("post", "/api-keys", "/api-keys", {"name": "k", "scopes": ["calls:read"]}),
        ("get", "/api-keys", "/api-keys", None),
        ("post", "/api-keys/{key_id}/revoke", "/api-keys/{key}/revoke", None),
        ("get", "/usage", "/usage", None),
    ]
    ids: dict[str, str] = {}
    statuses = []
    for method, template, path, payload in exchanges:
        text = orjson.dumps(payload).decode()
        for name, value in ids.items():
            path, text = path.replace("{" + name + "}", value), text.replace("{" + name + "}", value)
        status, body = await call(api, method.upper(), path, admin, orjson.loads(text))
        statuses.append(status)
        jsonschema.validate(body, _response_schema(doc, template, method, status), cls=jsonschema.Draft202012Validator)
        if status == 201:
            ids[template.strip("/").split("-")[-1].rstrip("s")] = body["data"]["id"]
    assert statuses == [201, 422, 200, 200, 404, 201, 200, 201, 409, 200, 409, 201, 200, 201, 201, 200, 200, 200]


# ---- ringline keys ---------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _root_logging():
    """``main`` sets up logging for a process; put pytest's back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:], root.level = handlers, level


def _keys_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli(["keys", *args])
    out, err = capsys.readouterr()
    return code, out, err


async def test_keys_command_creates_a_key_the_server_accepts(tmp_path, capsys) -> None:
    config = tmp_path / "ringline.toml"
    config.write_text(f'[api]\ndata_dir = "{tmp_path / "data"}"\n')
    code, out, err = await asyncio.to_thread(
        _keys_cli, capsys, "create", "--name", "ci", "--scopes", "agents:read, calls:write", "--config", str(config)
    )
    assert code == 0, err
    secret = out.strip()
    assert secret.startswith("rl_") and len(secret) == 46
    assert "created API key key_" in err and "agents:read, calls:write" in err
    key_id = err.split("created API key ")[1].split()[0]

    code, out, _ = await asyncio.to_thread(_keys_cli, capsys, "list", "--config", str(config))
    assert code == 0 and out.startswith(
        f"{key_id}  {secret[:8]}...  active  last used never  agents:read,calls:write  ci"
    )
    assert secret not in out

    async with running(load_settings(config)) as server:
        assert await ok(server, "GET", "/agents", secret) == []
        assert (await failed(server, "GET", "/api-keys", secret))[0] == 403
        code, out, _ = await asyncio.to_thread(_keys_cli, capsys, "revoke", key_id, "--config", str(config))
        assert code == 0 and out.startswith(f"revoked API key {key_id} (ci)")
    async with running(load_settings(config)) as server:
        assert (await failed(server, "GET", "/agents", secret))[0] == 401

    code, out, _ = await asyncio.to_thread(_keys_cli, capsys, "list", "--config", str(config))
    assert "  revoked " in out
    code, _, err = await asyncio.to_thread(_keys_cli, capsys, "revoke", "key_nope", "--config", str(config))
    assert code == 1 and err.strip() == "ringline: no API key key_nope"
    code, _, err = await asyncio.to_thread(
        _keys_cli, capsys, "create", "--name", "x", "--scopes", "agents:read,agents:delete", "--config", str(config)
    )
    assert code == 2 and err.startswith("ringline: unknown scopes ['agents:delete']; known: admin, agents:read")


async def test_keys_command_uses_the_default_data_dir(data_dir, capsys) -> None:
    code, out, _ = await asyncio.to_thread(_keys_cli, capsys, "create", "--name", "ops", "--scopes", "admin")
    assert code == 0
    assert (data_dir / "ringline.db").exists()
    async with running() as server:
        assert await ok(server, "GET", "/api-keys", out.strip())
