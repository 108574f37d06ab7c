"""The ``assistant-request`` webhook: which agent answers an inbound call.

``choose_assistant`` against a real receiver on 127.0.0.1 that checks every signature (each way an
answer can pick an agent, and each way it can fail), then real inbound calls through the Twilio media
socket: the chosen agent speaks, a timeout or a malformed answer leaves the number's agent to answer
with a fault recorded, and the media socket goes on reading while the call waits.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from ringline.api.state import CALLS
from ringline.api.store import CallStatus, NumberProvider, Role, Store, open_store
from ringline.api.webhooks.assistant import TRANSIENT, AnswerError, AssistantAnswer, Choice, choose_assistant
from ringline.api.webhooks.signing import DELIVERY_HEADER, EVENT_HEADER
from ringline.benchmarks.caller import CallResult, clip_script, run_call
from ringline.config.settings import AgentConfig, Settings, load_settings
from ringline.engine.clients import HttpClients
from ringline.engine.transports.events import CallStarted
from tests.api_fixtures import ApiServer, running
from tests.test_http_tools import SECRET, Received, Receiver

pytestmark = pytest.mark.timeout(60)

NUMBER, CALLER = "+14155550123", "+14155550100"


def bench_agent(**changes: Any) -> dict[str, Any]:
    """The bench agent's config as JSON (1 s per phrase), every reply ``fallback``."""
    config = load_settings("config/bench.toml").agents["default"].model_dump(mode="json")
    return config | changes


def agent_saying(text: str, **changes: Any) -> dict[str, Any]:
    config = bench_agent(**changes)
    config["llm"] = config["llm"] | {"fallback": text}
    return config


def settings(url: str | None, *, wait_s: float = 2.0, agent: dict[str, Any] | None = None) -> Settings:
    """Bench settings whose account sends only ``assistant-request`` webhooks, to ``url``."""
    data = load_settings("config/bench.toml").model_dump()
    data["webhooks"] = {
        "secret": SECRET,
        "default_url": url,
        "events": ["assistant-request"],
        "assistant_request_timeout_s": wait_s,
    }
    data["agents"]["default"] = agent or agent_saying("The default agent here.")
    return Settings.model_validate(data)


def json_answer(doc: Any, status: int = 200):
    async def answer(received: Received) -> web.StreamResponse:
        return web.json_response(doc, status=status)

    return answer


def raw_answer(body: bytes, status: int = 200):
    async def answer(received: Received) -> web.StreamResponse:
        return web.Response(body=body, status=status)

    return answer


# -- choose_assistant ------------------------------------------------------------------------------


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    store = await open_store(f"sqlite:///{tmp_path / 'assistant.db'}")
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
async def clients() -> AsyncIterator[HttpClients]:
    async with HttpClients() as clients:
        yield clients


STARTED = CallStarted("CA" + "1" * 32, "MZ1", {"from": CALLER, "to": NUMBER, "var_name": "Bob"})
FALLBACK = Choice("agt_number", AgentConfig.model_validate(agent_saying("Number agent.")), {"name": "Bob"})


async def choose(receiver: Receiver, store: Store, clients: HttpClients, **kw: Any) -> Choice:
    return await choose_assistant(settings(f"{receiver.url}/hooks", **kw), store, clients, STARTED, FALLBACK)


async def test_the_request_is_signed_and_describes_the_call(store, clients) -> None:
    async with Receiver(json_answer({})) as receiver:
        choice = await choose(receiver, store, clients)
    assert choice == Choice("agt_number", FALLBACK.agent, {"name": "Bob"}, asked=True)  # {}: keep the agent
    (request,) = receiver.requests
    assert request.signature_error is None and request.path == "/hooks"
    assert (request.headers[EVENT_HEADER], request.headers[DELIVERY_HEADER]) == (
        "assistant-request",
        f"{STARTED.call_id}:assistant-request",
    )
    assert request.json() == {
        "type": "assistant-request",
        "call_id": STARTED.call_id,
        "direction": "inbound",
        "from_number": CALLER,
        "to_number": NUMBER,
        "agent_id": "agt_number",
        "parameters": {"from": CALLER, "to": NUMBER, "var_name": "Bob"},
    }


async def test_no_url_or_a_stream_naming_its_agent_sends_nothing(store, clients) -> None:
    async with Receiver() as receiver:
        assert await choose_assistant(settings(None), store, clients, STARTED, FALLBACK) is FALLBACK
        named = CallStarted(STARTED.call_id, "MZ1", {"agent": "default", "to": NUMBER})
        url = settings(f"{receiver.url}/hooks")
        assert await choose_assistant(url, store, clients, named, FALLBACK) is FALLBACK
        events = settings(f"{receiver.url}/hooks").model_dump()
        events["webhooks"]["events"] = ["status-update"]
        quiet = Settings.model_validate(events)
        assert await choose_assistant(quiet, store, clients, STARTED, FALLBACK) is FALLBACK
    assert receiver.requests == []


async def test_a_named_stored_agent_answers_with_the_variables(store, clients) -> None:
    other = await store.create_agent("other", agent_saying("Other agent."))
    answer = {"agent_id": other.id, "variables": {"name": "Ada", "vip": True, "visits": 3}}
    async with Receiver(json_answer(answer)) as receiver:
        choice = await choose(receiver, store, clients)
    assert (choice.agent_id, choice.agent.llm.fallback, choice.fault) == (other.id, "Other agent.", None)
    assert choice.variables == {"name": "Ada", "vip": "true", "visits": "3"}


async def test_a_transient_agent_answers(store, clients) -> None:
    async with Receiver(json_answer({"agent": agent_saying("Transient agent.")})) as receiver:
        choice = await choose(receiver, store, clients)
    assert (choice.agent_id, choice.agent.llm.fallback, choice.fault) == (TRANSIENT, "Transient agent.", None)


async def test_overrides_merge_onto_the_named_or_the_numbers_agent(store, clients) -> None:
    other = await store.create_agent("other", agent_saying("Other agent.", first_message="Hi."))
    overrides = {"first_message": "Hello {{name}}.", "llm": {"fallback": "Overridden."}, "turn": {"silence_ms": 400}}
    async with Receiver(json_answer({"agent_id": other.id, "overrides": overrides})) as receiver:
        named = await choose(receiver, store, clients)
        receiver.answer = json_answer({"overrides": {"first_message": "Number agent, overridden."}})
        number = await choose(receiver, store, clients)
    assert named.agent_id == other.id
    agent = named.agent
    assert (agent.first_message, agent.llm.fallback, agent.turn.silence_ms) == ("Hello {{name}}.", "Overridden.", 400)
    assert agent.turn.sentence_end_silence_ms == 200  # the rest of the table is the stored agent's
    assert (number.agent_id, number.agent.first_message) == ("agt_number", "Number agent, overridden.")
    assert number.agent.llm.fallback == "Number agent."


async def test_an_override_naming_another_provider_replaces_its_table(store, clients) -> None:
    overrides = {"tts": {"provider": "espeak"}}
    async with Receiver(json_answer({"overrides": overrides})) as receiver:
        choice = await choose(receiver, store, clients)
    assert choice.fault is None and choice.agent.tts.provider == "espeak"


@pytest.mark.parametrize(
    ("answer", "fault"),
    [
        (raw_answer(b"<html>ok</html>"), "not JSON (at character 0)"),
        (json_answer([1, 2]), "not a JSON object but list"),
        (json_answer({"agent_id": 5}), "agent_id: Input should be a valid string"),
        (json_answer({"assistant": {}}), "assistant: Extra inputs are not permitted"),
        (
            json_answer({"variables": {"1st": "x"}}),
            "variables.1st.[key]: String should match pattern '^[A-Za-z_][A-Za-z0-9_]*$'",
        ),
        (
            json_answer({"agent": {}, "agent_id": "agt_x"}),
            'Value error, "agent" is a whole transient agent: it takes neither "agent_id" nor "overrides"',
        ),
        (
            json_answer({"agent": {"turn": {"silence_ms": -1}}}),
            "agent: turn.silence_ms: Input should be greater than or equal to 0",
        ),
        (
            json_answer({"overrides": {"language": "not a tag!"}}),
            "overrides: language: String should match pattern '^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$'",
        ),
        (json_answer({"agent_id": "agt_missing"}), "agent_id: unknown agent 'agt_missing'"),
        (json_answer({"error": "boom"}, status=500), "answered HTTP 500"),
        (raw_answer(b"x" * (256 * 1024 + 1)), "answer larger than 256 KiB"),
    ],
)
async def test_an_unusable_answer_leaves_the_numbers_agent_with_a_fault(store, clients, answer, fault: str) -> None:
    async with Receiver(answer) as receiver:
        choice = await choose(receiver, store, clients)
    assert choice == Choice("agt_number", FALLBACK.agent, {"name": "Bob"}, fault=fault, asked=True)


async def test_a_disabled_agent_is_not_chosen(store, clients) -> None:
    off = await store.create_agent("off", agent_saying("Off."), enabled=False)
    async with Receiver(json_answer({"agent_id": off.id})) as receiver:
        choice = await choose(receiver, store, clients)
    assert (choice.agent_id, choice.fault) == ("agt_number", f"agent_id: agent {off.id!r} is disabled")


async def test_no_answer_in_time_leaves_the_numbers_agent(store, clients) -> None:
    async def stall(received: Received) -> web.StreamResponse:
        await receiver.release.wait()
        return web.json_response({"agent": agent_saying("Too late.")})

    async with Receiver(stall) as receiver:
        choice = await choose(receiver, store, clients, wait_s=0.3)
    assert (choice.agent_id, choice.fault) == ("agt_number", "no answer within 0.3 s")
    assert len(receiver.requests) == 1


def test_an_empty_body_is_an_empty_answer() -> None:
    assert AssistantAnswer.parse(b" \n") == AssistantAnswer()
    with pytest.raises(AnswerError) as info:
        AssistantAnswer.parse(b'"agt_1"')
    assert str(info.value) == "not a JSON object but str"


# -- inbound calls ------------------------------------------------------------------------------------


async def number_agent(server: ApiServer) -> str:
    agent = await server.store.create_agent("number agent", agent_saying("The number's agent here."))
    await server.store.create_number(NUMBER, NumberProvider.TWILIO, inbound_agent_id=agent.id)
    return agent.id


async def inbound(server: ApiServer, *, greeting: bool = False, **params: str) -> tuple[CallResult, Any, list[Any]]:
    """One inbound call to ``NUMBER`` (one caller turn); its result, its row and messages once ended."""
    sid = "CA" + secrets.token_hex(16)
    parameters = {"from": CALLER, "to": NUMBER} | params
    script = clip_script(0, 1, call_sid=sid, custom_parameters=parameters, wait_for_greeting=greeting)
    result = await run_call(f"{server.ws_url}/media/twilio", script)
    assert result.error is None, result.error
    for _ in range(500):
        row = await server.store.get_call(sid)
        if row.status is CallStatus.ENDED:
            return result, row, await server.store.list_messages(sid)
        await asyncio.sleep(0.02)
    raise AssertionError(f"call {sid} never ended in the store")


async def faults(server: ApiServer, call_id: str) -> list[dict[str, Any]]:
    return [dict(e.payload) for e in await server.store.list_events(call_id) if e.type == "fault"]


async def test_the_answer_names_the_agent_that_takes_the_call() -> None:
    async with Receiver() as receiver, running(settings(f"{receiver.url}/hooks")) as server:
        await number_agent(server)
        other = await server.store.create_agent("other", agent_saying("The other agent here."))
        receiver.answer = json_answer({"agent_id": other.id})
        result, row, messages = await inbound(server)
        assert await faults(server, row.id) == []
    assert row.agent_id == other.id and result.answered == 1
    assert [(m.role, m.content) for m in messages] == [
        (Role.USER, "Tell me more."),
        (Role.ASSISTANT, "The other agent here."),
    ]
    (request,) = receiver.requests
    assert request.signature_error is None and request.json()["call_id"] == row.id


async def test_a_transient_agent_takes_the_call() -> None:
    async with Receiver() as receiver, running(settings(f"{receiver.url}/hooks")) as server:
        await number_agent(server)
        receiver.answer = json_answer({"agent": agent_saying("A transient agent here.")})
        _, row, messages = await inbound(server)
    assert row.agent_id == TRANSIENT
    assert messages[-1].content == "A transient agent here."


async def test_overrides_and_variables_shape_the_greeting() -> None:
    async with Receiver() as receiver, running(settings(f"{receiver.url}/hooks")) as server:
        agent_id = await number_agent(server)
        overrides = {"first_speaker": "agent", "first_message": "Hello {{name}}, this is {{company}}."}
        receiver.answer = json_answer({"overrides": overrides, "variables": {"name": "Ada"}})
        result, row, messages = await inbound(server, greeting=True, var_name="Bob", var_company="Acme")
    assert row.agent_id == agent_id
    assert row.variables == {"name": "Ada", "company": "Acme"}  # the answer's over the stream's
    assert messages[0].content == "Hello Ada, this is Acme."
    assert result.greeting.audio_s > 0


async def test_no_answer_in_time_leaves_the_call_to_the_numbers_agent_and_the_media_flowing() -> None:
    async def stall(received: Received) -> web.StreamResponse:
        await receiver.release.wait()
        return web.json_response({"agent": agent_saying("Too late.")})

    async with Receiver(stall) as receiver, running(settings(f"{receiver.url}/hooks", wait_s=1.0)) as server:
        agent_id = await number_agent(server)
        result, row, messages = await inbound(server)
        assert await faults(server, row.id) == [{"stage": "assistant-request", "detail": "no answer within 1 s"}]
        record = server.app[CALLS].find_record(row.id)
    assert row.agent_id == agent_id and result.answered == 1
    assert messages[-1].content == "The number's agent here."
    # The caller streamed audio all through the wait; none of it was a protocol error.
    assert result.frames_sent > 50 and result.protocol_error_count == 0
    assert record is not None and record.protocol_errors == 0


async def test_a_malformed_answer_leaves_the_call_to_the_numbers_agent() -> None:
    async with Receiver(raw_answer(b'{"agent_id": ')) as receiver, running(settings(f"{receiver.url}/hooks")) as server:
        agent_id = await number_agent(server)
        _, row, messages = await inbound(server)
        (fault,) = await faults(server, row.id)
    assert row.agent_id == agent_id and messages[-1].content == "The number's agent here."
    assert fault == {"stage": "assistant-request", "detail": "not JSON (at character 13)"}
    assert len(receiver.requests) == 1


async def test_outbound_calls_and_streams_naming_their_agent_do_not_ask() -> None:
    async with Receiver() as receiver, running(settings(f"{receiver.url}/hooks")) as server:
        agent_id = await number_agent(server)
        _, row, _ = await inbound(server, agent=agent_id)
        assert row.agent_id == agent_id
        _, row, _ = await inbound(server, direction="outbound")
        assert row.agent_id == agent_id
    assert receiver.requests == []
