"""HTTP function tools (``tool-calls`` webhooks) and the built-in tools tool templates configure.

``HttpTool`` against a real receiver on 127.0.0.1 that checks every signature; then real calls
through the Twilio media socket (the caller simulator, config/bench.toml's fake providers: each
phrase is 1.0 s of audio) whose scripted LLM calls a tool template of the agent: one POST per tool
call, its answer in the conversation, the start / slow / failed phrases spoken, a result kept when the
caller interrupts, a timeout an error result sent once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from ringline.api.state import CALLS
from ringline.api.store import CallStatus, Role, ToolKind, open_store
from ringline.api.webhooks.signing import DELIVERY_HEADER, EVENT_HEADER, SignatureError, verify
from ringline.api.webhooks.tools import add_agent_tools, webhook_stamp
from ringline.benchmarks.caller import CallerScript, CallResult, clip_script, run_call
from ringline.benchmarks.vendors.twilio_rest import FakeTwilioRest
from ringline.config.settings import AgentConfig, Settings, load_settings
from ringline.engine.call import Call
from ringline.engine.clients import HttpClients
from ringline.engine.http_tools import CallDetails, HttpEndpoint, HttpTool
from ringline.engine.llm.base import ToolCall
from ringline.engine.tools import (
    ToolError,
    ToolPhrases,
    TransferTarget,
    default_registry,
    send_dtmf_tool,
    transfer_tool,
)
from ringline.engine.transports.base import SendDtmfFailed, TransferFailed
from tests.api_fixtures import API, ApiServer, running

pytestmark = pytest.mark.timeout(60)

SECRET = "whsec_test_secret"


# -- a webhook receiver ----------------------------------------------------------------------------


@dataclasses.dataclass
class Received:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    signature_error: str | None
    """Why the signature did not verify (None: it did)."""

    def json(self) -> Any:
        return orjson.loads(self.body)


Answer = Callable[[Received], Awaitable[web.StreamResponse]]


async def answer_ok(received: Received) -> web.StreamResponse:
    return web.json_response({"result": "ok"})


class Receiver:
    """The user's server on 127.0.0.1: records every request, checks its signature against
    ``SECRET``, and answers with ``answer`` (settable per test). ``release`` is set at exit so a
    handler a test keeps waiting lets the server stop."""

    def __init__(self, answer: Answer = answer_ok) -> None:
        self.answer = answer
        self.requests: list[Received] = []
        self.release = asyncio.Event()
        self._arrived = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        try:
            verify(SECRET, request.headers, body, time.time())
            error = None
        except SignatureError as exc:
            error = str(exc)
        received = Received(request.method, request.path, dict(request.query), dict(request.headers), body, error)
        async with self._arrived:
            self.requests.append(received)
            self._arrived.notify_all()
        return await self.answer(received)

    async def wait_for(self, count: int) -> list[Received]:
        async with asyncio.timeout(10), self._arrived:
            await self._arrived.wait_for(lambda: len(self.requests) >= count)
        return self.requests

    async def __aenter__(self) -> Receiver:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release.set()
        assert self._runner is not None
        await self._runner.cleanup()


async def until(predicate: Callable[[], bool], what: str, within_s: float = 10.0) -> None:
    """Wait (polling) for ``predicate``; fail saying ``what`` did not happen."""
    deadline = asyncio.get_running_loop().time() + within_s
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


# -- HttpTool on its own ---------------------------------------------------------------------------


class Control:
    """A CallControl recording faults and transfers; ``send_dtmf`` only when given ``keys``."""

    call_id = "CA-tools"

    def __init__(
        self, *, keys: list[str] | None = None, transfer_error: str | None = None, dtmf_error: str | None = None
    ) -> None:
        self.faults: list[tuple[str, str]] = []
        self.transfers: list[tuple[str, str | None]] = []
        self.hangups: list[str] = []
        self._transfer_error = transfer_error
        if keys is not None:
            self.keys = keys

            async def send_dtmf(digits: str) -> None:
                if dtmf_error is not None:
                    raise SendDtmfFailed(dtmf_error)
                self.keys.append(digits)

            self.send_dtmf = send_dtmf

    def request_hangup(self, reason: str) -> None:
        self.hangups.append(reason)

    def fault(self, stage: str, detail: str) -> None:
        self.faults.append((stage, detail))

    async def transfer(self, destination: str, message: str | None = None, briefing: str | None = None) -> None:
        if self._transfer_error is not None:
            raise TransferFailed(self._transfer_error)
        self.transfers.append((destination, message))


DETAILS = CallDetails("CA-tools", "agt_1", "outbound", "+14155550100", "+14155550199", {"crm_id": 7}, {"name": "Ada"})


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def lookup(receiver: Receiver, session: aiohttp.ClientSession, **endpoint: Any) -> HttpTool:
    settings = Settings.model_validate({"webhooks": {"secret": SECRET}})
    target = HttpEndpoint(f"{receiver.url}/tools/lookup", **endpoint)
    return HttpTool("lookup", target, DETAILS, session, webhook_stamp(settings, "tool-calls"))


async def test_a_tool_call_is_posted_signed_with_the_call_and_its_result_is_the_answer(session) -> None:
    async def answer(received: Received) -> web.StreamResponse:
        return web.json_response({"result": {"status": "shipped", "eta_days": 2}})

    async with Receiver(answer) as receiver:
        tool = lookup(receiver, session, headers={"Authorization": "Bearer tool-key"})
        control = Control()
        result = await tool(ToolCall("call_9", "lookup", {"order": "42"}), control)
    assert result == '{"status":"shipped","eta_days":2}' and not isinstance(result, ToolError)
    (request,) = receiver.requests
    assert request.signature_error is None
    assert (request.method, request.path) == ("POST", "/tools/lookup")
    assert request.headers["Authorization"] == "Bearer tool-key"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers[EVENT_HEADER] == "tool-calls"
    assert request.headers[DELIVERY_HEADER] == "CA-tools:call_9"
    assert request.json() == {
        "type": "tool-calls",
        "call_id": "CA-tools",
        "agent_id": "agt_1",
        "direction": "outbound",
        "from_number": "+14155550100",
        "to_number": "+14155550199",
        "metadata": {"crm_id": 7},
        "variables": {"name": "Ada"},
        "tool_call": {"id": "call_9", "name": "lookup", "arguments": {"order": "42"}},
    }
    assert control.faults == []


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (200, b'{"result": "It ships tomorrow."}', "It ships tomorrow."),
        (200, b'{"result": null}', "null"),
        (200, b'{"order": 42}', '{"order":42}'),
        (200, b"[1, 2]", "[1,2]"),
        (200, b"  plain words  ", "plain words"),
        (204, b"", "ok"),
    ],
)
async def test_answers_become_results(session, status: int, body: bytes, expected: str) -> None:
    async def answer(received: Received) -> web.StreamResponse:
        return web.Response(status=status, body=body)

    async with Receiver(answer) as receiver:
        control = Control()
        result = await lookup(receiver, session)(ToolCall("call_1", "lookup", {}), control)
    assert result == expected and not isinstance(result, ToolError)
    assert control.faults == []


@pytest.mark.parametrize(
    ("status", "body", "why"),
    [
        (200, b'{"error": "no such order"}', "answered an error: no such order"),
        (200, b'{"error": {"code": 4}, "result": "x"}', 'answered an error: {"code":4}'),
        (500, b"database down", "answered HTTP 500: database down"),
        (404, b"", "answered HTTP 404"),
        (302, b"", "answered HTTP 302"),
        (200, b"x" * (64 * 1024 + 1), "answered more than 64 KiB"),
    ],
)
async def test_failures_are_error_results_and_faults(session, status: int, body: bytes, why: str) -> None:
    async def answer(received: Received) -> web.StreamResponse:
        headers = {"Location": "http://127.0.0.1:1/elsewhere"} if status == 302 else None
        return web.Response(status=status, body=body, headers=headers)

    async with Receiver(answer) as receiver:
        control = Control()
        result = await lookup(receiver, session)(ToolCall("call_1", "lookup", {}), control)
    assert isinstance(result, ToolError)
    assert result == f"error: the lookup tool failed: {why}"
    assert control.faults == [("tool", f"lookup: {why}")]
    assert len(receiver.requests) == 1


async def test_a_timeout_is_an_error_result_and_the_request_is_never_sent_again(session) -> None:
    async def stall(received: Received) -> web.StreamResponse:
        await receiver.release.wait()
        return web.json_response({"result": "too late"})

    async with Receiver(stall) as receiver:
        tool, control = lookup(receiver, session, timeout_s=0.3), Control()
        call = ToolCall("call_5", "lookup", {"order": "42"})
        result = await tool(call, control)
        assert result == "error: the lookup tool failed: no answer within 0.3 s"
        assert control.faults == [("tool", "lookup: no answer within 0.3 s")]
        again = await tool(call, control)  # the same call of the tool: its result, no second request
        assert again == result
        receiver.release.set()
        other = await tool(ToolCall("call_6", "lookup", {}), control)  # another call of it is sent
        assert other == "too late"
    assert [r.json()["tool_call"]["id"] for r in receiver.requests] == ["call_5", "call_6"]


async def test_concurrent_runs_of_one_tool_call_send_one_request(session) -> None:
    async def slow(received: Received) -> web.StreamResponse:
        await receiver.release.wait()
        return web.json_response({"result": "once"})

    async with Receiver(slow) as receiver:
        tool, control = lookup(receiver, session), Control()
        call = ToolCall("call_7", "lookup", {})
        first = asyncio.create_task(tool(call, control))
        await receiver.wait_for(1)
        second = asyncio.create_task(tool(call, control))
        receiver.release.set()
        assert await asyncio.gather(first, second) == ["once", "once"]
    assert len(receiver.requests) == 1


class FlakyResolver(AbstractResolver):
    """Resolves every name to 127.0.0.1, on ``ports`` in turn (the last one for good)."""

    def __init__(self, *ports: int) -> None:
        self.ports = list(ports)
        self.lookups = 0

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET):
        self.lookups += 1
        chosen = self.ports.pop(0) if len(self.ports) > 1 else self.ports[0]
        result: ResolveResult = {
            "hostname": host,
            "host": "127.0.0.1",
            "port": chosen,
            "family": socket.AF_INET,
            "proto": 0,
            "flags": socket.AI_NUMERICHOST,
        }
        return [result]

    async def close(self) -> None:
        pass


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_a_connection_that_could_not_be_opened_is_tried_again() -> None:
    async with Receiver() as receiver:
        port = int(receiver.url.rsplit(":", 1)[1])
        resolver = FlakyResolver(closed_port(), closed_port(), port)
        connector = aiohttp.TCPConnector(resolver=resolver, use_dns_cache=False)
        async with aiohttp.ClientSession(connector=connector) as session:
            target = HttpEndpoint(f"http://tools.invalid:{port}/lookup", timeout_s=5.0)
            control = Control()
            result = await HttpTool("lookup", target, DETAILS, session)(ToolCall("call_1", "lookup", {}), control)
    assert result == "ok"
    assert resolver.lookups == 3  # refused twice, then sent
    assert len(receiver.requests) == 1 and control.faults == []


async def test_connecting_gives_up_after_the_retries() -> None:
    port = closed_port()
    async with aiohttp.ClientSession() as session:
        control = Control()
        target = HttpEndpoint(f"http://127.0.0.1:{port}/lookup", timeout_s=5.0)
        result = await HttpTool("lookup", target, DETAILS, session)(ToolCall("call_1", "lookup", {}), control)
    assert isinstance(result, ToolError)
    assert result.startswith("error: the lookup tool failed: cannot connect (3 attempts): ")
    assert [stage for stage, _ in control.faults] == ["tool"]


async def test_a_connection_lost_after_sending_is_not_tried_again() -> None:
    requests: list[bytes] = []

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        requests.append(await reader.readuntil(b"\r\n\r\n"))
        writer.close()  # read the request, answer nothing

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with aiohttp.ClientSession() as session:
            control = Control()
            target = HttpEndpoint(f"http://127.0.0.1:{port}/lookup", timeout_s=5.0)
            result = await HttpTool("lookup", target, DETAILS, session)(ToolCall("call_1", "lookup", {}), control)
    finally:
        server.close()
        await server.wait_closed()
    assert result.startswith("error: the lookup tool failed: the request failed: ServerDisconnectedError")
    assert len(requests) == 1


async def test_a_get_tool_sends_the_arguments_in_the_query(session) -> None:
    async with Receiver() as receiver:
        tool = lookup(receiver, session, method="GET")
        result = await tool(ToolCall("call_2", "lookup", {"order": "42", "items": [1, 2], "rush": True}), Control())
    assert result == "ok"
    (request,) = receiver.requests
    assert request.method == "GET" and request.body == b""
    assert request.query == {"order": "42", "items": "[1,2]", "rush": "true"}
    assert (request.headers["X-Ringline-Call-Id"], request.headers["X-Ringline-Tool-Call-Id"]) == ("CA-tools", "call_2")
    assert request.signature_error is None  # over an empty body


# -- built-in tools of templates -------------------------------------------------------------------

DESK = TransferTarget("+14155550111", "the front desk", "Putting you through to the front desk.")
PBX = TransferTarget("sip:sales@pbx.example.com", "sales")


async def test_transfer_goes_to_an_allowed_destination_with_its_message() -> None:
    tool, handler = transfer_tool("transfer_to_human", "Transfer the caller.", [DESK, PBX])
    assert tool.parameters["properties"]["destination"]["enum"] == ["+14155550111", "sip:sales@pbx.example.com"]
    assert tool.description == (
        "Transfer the caller. Destinations: +14155550111: the front desk; sip:sales@pbx.example.com: sales."
    )
    control = Control()
    assert await handler({"destination": "sip:sales@pbx.example.com"}, control) == (
        "ok: transferring the call to sip:sales@pbx.example.com"
    )
    assert await handler({"destination": "+14155550111"}, control) == "ok: transferring the call to +14155550111"
    assert control.transfers == [("sip:sales@pbx.example.com", None), (DESK.destination, DESK.message)]


async def test_transfer_refuses_other_destinations_and_reports_failures() -> None:
    _, handler = transfer_tool("transfer_to_human", "Transfer the caller.", [DESK])
    control = Control()
    result = await handler({"destination": "+19995550000"}, control)
    assert isinstance(result, ToolError)
    assert result == "error: '+19995550000' is not a destination of transfer_to_human; allowed: +14155550111"
    assert control.transfers == []
    failing = Control(transfer_error="Twilio refused")
    result = await handler({"destination": "+14155550111"}, failing)
    assert isinstance(result, ToolError) and result == "error: cannot transfer the call: Twilio refused"
    assert failing.faults == [("transfer", "transfer_to_human: Twilio refused")]


async def test_send_dtmf_presses_keys_where_the_call_can() -> None:
    tool, handler = send_dtmf_tool("press", "Press keys.")
    assert tool.parameters["required"] == ["digits"]
    control = Control(keys=[])
    assert await handler({"digits": "12#"}, control) == "ok: pressed 12#"
    assert control.keys == ["12#"]
    bad = await handler({"digits": "12x"}, control)
    assert isinstance(bad, ToolError) and bad == "error: '12x' are not keypad keys (digits, *, #, A-D, w to pause)"
    cannot = await handler({"digits": "1"}, Control())
    assert isinstance(cannot, ToolError) and cannot == "error: this call cannot send keypad tones (DTMF)"
    failing = Control(keys=[], dtmf_error="no tones on this line")
    failed = await handler({"digits": "9"}, failing)
    assert isinstance(failed, ToolError) and failed == "error: cannot press 9: no tones on this line"
    assert failing.faults == [("send_dtmf", "press: no tones on this line")] and failing.keys == []


# -- an agent's templates as a call's tools -----------------------------------------------------------


async def test_an_agents_templates_become_the_calls_tools(tmp_path) -> None:
    store = await open_store(f"sqlite:///{tmp_path / 'tools.db'}")
    try:
        lookup_config = function("https://tools.example.com/lookup", messages={"start": "One moment."})
        lookup_config |= {"parameters": {"type": "object", "properties": {"order": {"type": "string"}}}}
        await store.create_tool("lookup", ToolKind.FUNCTION, {k: v for k, v in lookup_config.items() if k != "kind"})
        await store.create_tool("end_call", ToolKind.END_CALL, {"description": "Hang up politely."})
        await store.create_tool("hang_up", ToolKind.END_CALL, {"description": "Also hangs up."})
        desk = {"destination": "+14155550111", "description": "desk"}
        await store.create_tool("to_desk", ToolKind.TRANSFER_CALL, {"description": "Transfer.", "destinations": [desk]})
        await store.create_tool("press", ToolKind.SEND_DTMF, {"description": "Press keys."})
        await store.create_tool("broken", ToolKind.FUNCTION, {"description": "x", "url": "ftp://nope"})
        agent = AgentConfig(tools=("lookup", "end_call", "hang_up", "to_desk", "press", "lookup", "broken"))
        registry = default_registry()
        async with HttpClients() as clients:
            settings = Settings.model_validate({"webhooks": {"secret": SECRET}})
            problems = await add_agent_tools(registry, settings, store, clients, agent, DETAILS)
    finally:
        await store.close()
    assert problems == [
        "tool 'broken': its stored config is invalid: Value error, must be an absolute http:// or https:// URL"
    ]
    tools = {t.name: t for t in registry.tools}
    assert list(tools) == ["lookup", "end_call", "hang_up", "to_desk", "press"]  # listed twice, registered once
    assert tools["lookup"].parameters == lookup_config["parameters"]
    assert tools["end_call"].description == "Hang up politely."  # the template replaces the built-in
    assert [n for n in tools if registry.ends_reply(n)] == ["end_call", "hang_up", "to_desk"]
    assert registry.phrases("lookup") == ToolPhrases(start="One moment.")
    assert registry.phrases("to_desk") is None


# -- tools in real calls -----------------------------------------------------------------------------


def bench(*replies: str, tools: tuple[str, ...] = ("lookup",), webhook: dict[str, Any] | None = None) -> Settings:
    """The bench agent (1 s per phrase) with these scripted LLM replies, tool templates and webhook."""
    data = load_settings("config/bench.toml").model_dump()
    data["webhooks"] = {"secret": SECRET}
    agent = data["agents"]["default"]
    agent.update(tools=tools, webhook=webhook)
    agent["llm"]["replies"] = replies
    return Settings.model_validate(data)


async def create_tool(server: ApiServer, name: str, config: dict[str, Any]) -> None:
    key = await server.key("tools:write")
    async with server.post(f"{API}/tools", key=key, json={"name": name, "config": config}) as resp:
        assert resp.status == 201, await resp.text()


def function(url: str, **config: Any) -> dict[str, Any]:
    return {"kind": "function", "description": "Look up an order.", "url": url} | config


class LiveCall:
    """A simulated caller on the server (one utterance), and the server's side of the call. The
    caller waits for the agent to hang up (every scripted run here ends with ``end_call``)."""

    def __init__(self, server: ApiServer, script: CallerScript | None = None) -> None:
        script = script or clip_script(0, 1, reply_timeout_s=15)
        self.script = dataclasses.replace(script, hangup_after_last_reply=False)
        self.sid = self.script.call_sid or "CA" + secrets.token_hex(16)
        self.script = dataclasses.replace(self.script, call_sid=self.sid)
        self.server = server
        self._task = asyncio.create_task(run_call(f"{server.ws_url}/media/twilio", self.script))
        self._messages: list[Any] = []
        self._events: list[Any] = []

    async def call(self) -> Call:
        return await asyncio.wait_for(self.server.app[CALLS].wait_live(self.sid), 10)

    async def result(self) -> CallResult:
        result = await asyncio.wait_for(self._task, 30)
        assert result.error is None, result.error
        return result

    async def ended(self):
        """The call's row once ended; its transcript and events are read then (``said``, ``events``)."""
        await self.result()
        for _ in range(500):
            row = await self.server.store.get_call(self.sid)
            if row.status is CallStatus.ENDED:
                self._messages = await self.server.store.list_messages(self.sid)
                self._events = await self.server.store.list_events(self.sid)
                return row
            await asyncio.sleep(0.02)
        raise AssertionError(f"call {self.sid} never ended in the store")

    def said(self) -> list[tuple[Role, str]]:
        return [(m.role, m.content) for m in self._messages]

    def events(self, kind: str) -> list[dict[str, Any]]:
        return [dict(e.payload) for e in self._events if e.type == kind]


def heard_s(result: CallResult) -> float:
    return result.greeting.audio_s + sum(t.reply.audio_s for t in result.turns)


async def test_an_http_tool_in_a_call_gets_one_post_and_its_answer_reaches_the_llm() -> None:
    async def answer(received: Received) -> web.StreamResponse:
        return web.json_response({"result": "Order 42 ships tomorrow."})

    async with (
        Receiver(answer) as receiver,
        running(
            bench('Let me check. [tool:lookup {"order": "42"}]', "It ships tomorrow. [tool:end_call {}]")
        ) as server,
    ):
        await create_tool(server, "lookup", function(f"{receiver.url}/lookup"))
        live = LiveCall(server, clip_script(0, 1, custom_parameters={"from": "+14155550100", "to": "+14155550199"}))
        call = await live.call()
        row = await live.ended()
    assert row.end_reason == "agent_hangup"
    (request,) = receiver.requests
    assert request.signature_error is None
    body = request.json()
    assert body["type"] == "tool-calls" and body["call_id"] == live.sid and body["agent_id"] == "default"
    assert (body["direction"], body["from_number"], body["to_number"]) == ("inbound", "+14155550100", "+14155550199")
    assert (body["tool_call"]["name"], body["tool_call"]["arguments"]) == ("lookup", {"order": "42"})
    # The result is the tool message right after the call of it, which the next LLM round read.
    context = [(m.role, m.content, [c.id for c in m.tool_calls], m.tool_call_id) for m in call.context.messages[1:]]
    tool_call_id = body["tool_call"]["id"]
    assert context[:3] == [
        ("user", "Tell me more.", [], None),
        ("assistant", "Let me check.", [tool_call_id], None),
        ("tool", "Order 42 ships tomorrow.", [], tool_call_id),
    ]
    assert context[3][:2] == ("assistant", "It ships tomorrow.")
    assert (Role.TOOL, "Order 42 ships tomorrow.") in live.said()
    results = live.events("tool_result")
    assert {"id": tool_call_id, "name": "lookup", "result": "Order 42 ships tomorrow."} in results


async def test_a_slow_tool_says_its_start_and_slow_phrases() -> None:
    async def slow(received: Received) -> web.StreamResponse:
        await receiver.release.wait()
        return web.json_response({"result": "found it"})

    messages = {"start": "One moment.", "slow": "Still looking.", "slow_after_s": 0.5}
    async with (
        Receiver(slow) as receiver,
        running(bench("Let me check. [tool:lookup {}]", "Here it is. [tool:end_call {}]")) as server,
    ):
        await create_tool(server, "lookup", function(f"{receiver.url}/lookup", messages=messages))
        live = LiveCall(server)
        call = await live.call()
        await until(lambda: any(m.content == messages["slow"] for m in call.context.messages), "the slow phrase")
        receiver.release.set()
        result = await live.result()
        await live.ended()
    assistant = [content for role, content in live.said() if role is Role.ASSISTANT]
    assert assistant == ["Let me check.", "One moment.", "Still looking.", "Here it is."]
    # Every phrase is 1.0 s of audio: the caller heard all four.
    assert heard_s(result) == pytest.approx(4.0, abs=0.1)
    assert len(receiver.requests) == 1


async def test_a_fast_tool_says_its_start_phrase_but_not_the_slow_one() -> None:
    messages = {"start": "One moment.", "slow": "Still looking.", "slow_after_s": 5}
    async with (
        Receiver() as receiver,
        running(bench("Let me check. [tool:lookup {}]", "Done. [tool:end_call {}]")) as server,
    ):
        await create_tool(server, "lookup", function(f"{receiver.url}/lookup", messages=messages))
        live = LiveCall(server)
        await live.ended()
    assistant = [content for role, content in live.said() if role is Role.ASSISTANT]
    assert assistant == ["Let me check.", "One moment.", "Done."]


async def test_a_failing_tool_says_its_failed_phrase_and_the_llm_gets_an_error_result() -> None:
    async def broken(received: Received) -> web.StreamResponse:
        return web.Response(status=503, text="maintenance")

    messages = {"failed": "Sorry, I can't reach our order system."}
    async with (
        Receiver(broken) as receiver,
        running(bench("Let me check. [tool:lookup {}]", "Please try again later. [tool:end_call {}]")) as server,
    ):
        await create_tool(server, "lookup", function(f"{receiver.url}/lookup", messages=messages))
        live = LiveCall(server)
        call = await live.call()
        result = await live.result()
        await live.ended()
    error = "error: the lookup tool failed: answered HTTP 503: maintenance"
    assert [(m.role, m.content) for m in call.context.messages[2:]] == [
        ("assistant", "Let me check."),
        ("tool", error),
        ("assistant", "Sorry, I can't reach our order system."),
        ("assistant", "Please try again later."),
        ("tool", "ok: the call ends after this reply"),
    ]
    assert (Role.TOOL, error) in live.said()
    assert {"stage": "tool", "detail": "lookup: answered HTTP 503: maintenance"} in live.events("fault")
    assert heard_s(result) == pytest.approx(3.0, abs=0.1)
    assert len(receiver.requests) == 1


async def test_a_timed_out_tool_is_an_error_result_sent_once() -> None:
    async def stall(received: Received) -> web.StreamResponse:
        await receiver.release.wait()
        return web.json_response({"result": "too late"})

    async with (
        Receiver(stall) as receiver,
        running(bench("Let me check. [tool:lookup {}]", "That took too long. [tool:end_call {}]")) as server,
    ):
        await create_tool(server, "lookup", function(f"{receiver.url}/lookup", timeout_s=0.3))
        live = LiveCall(server)
        await live.ended()
        assert len(receiver.requests) == 1  # before the receiver lets go of it
    said = live.said()
    assert (Role.TOOL, "error: the lookup tool failed: no answer within 0.3 s") in said
    assert said[-1] == (Role.ASSISTANT, "That took too long.")
    assert {"stage": "tool", "detail": "lookup: no answer within 0.3 s"} in live.events("fault")
    assert len(receiver.requests) == 1


async def test_a_tool_result_lands_even_when_the_caller_interrupts_while_it_runs() -> None:
    async def slow(received: Received) -> web.StreamResponse:
        await receiver.release.wait()
        return web.json_response({"result": "found it"})

    script = clip_script(0, 2, barge_in_after_ms=300, reply_timeout_s=15)
    async with (
        Receiver(slow) as receiver,
        running(bench("Let me check that for you. [tool:lookup {}]", "Go on. [tool:end_call {}]")) as server,
    ):
        await create_tool(server, "lookup", function(f"{receiver.url}/lookup"))
        live = LiveCall(server, script)
        call = await live.call()
        await receiver.wait_for(1)
        users = lambda: [m for m in call.context.messages if m.role == "user"]  # noqa: E731
        await until(lambda: len(users()) == 2, "the caller's second turn (talking over the reply)")
        assert not any(m.role == "tool" for m in call.context.messages)  # the tool is still running
        receiver.release.set()
        await until(lambda: any(m.role == "tool" for m in call.context.messages), "the tool result")
        messages = call.context.messages
        at = next(i for i, m in enumerate(messages) if m.tool_calls)
        assert messages[at].interrupted  # cut short by the caller ...
        assert (messages[at + 1].role, messages[at + 1].content) == ("tool", "found it")  # ... the result kept
        assert messages[at + 1].tool_call_id == messages[at].tool_calls[0].id
        await live.ended()
    assert (Role.TOOL, "found it") in live.said()
    assert len(receiver.requests) == 1


async def test_a_transfer_tool_on_a_call_that_cannot_transfer_is_an_error_the_llm_hears() -> None:
    config = {"kind": "transfer_call", "destinations": [{"destination": "+14155550111", "description": "desk"}]}
    replies = ('One moment. [tool:to_desk {"destination": "+14155550111"}]', "Sorry. [tool:end_call {}]")
    async with running(bench(*replies, tools=("to_desk",))) as server:
        await create_tool(server, "to_desk", config)
        live = LiveCall(server)
        await live.ended()
    said = live.said()
    error = "error: cannot transfer the call: transfer on twilio needs its REST API: configure [telephony.twilio]"
    assert any(role is Role.TOOL and content.startswith(error) for role, content in said)
    assert said[-1] == (Role.ASSISTANT, "Sorry.")
    assert [e["stage"] for e in live.events("fault")] == ["transfer"]


async def test_a_template_that_is_missing_at_call_time_is_a_fault_and_the_call_goes_on() -> None:
    async with running(bench("Hello there. [tool:end_call {}]", tools=("lookup", "gone"))) as server:
        await create_tool(server, "lookup", {"kind": "function", "description": "Look up an order."})
        live = LiveCall(server)
        await live.ended()
    assert live.events("fault") == [
        {"stage": "tools", "detail": "tool 'lookup': no URL: give the tool one, or the agent or account a webhook URL"},
        {"stage": "tools", "detail": "tool 'gone': no such tool template"},
    ]
    assert (live.said())[-1] == (Role.ASSISTANT, "Hello there.")


async def test_a_tool_without_a_url_goes_to_the_agents_webhook_url() -> None:
    async def answer(received: Received) -> web.StreamResponse:
        return web.json_response({"result": "from the agent's server"})

    async with Receiver(answer) as receiver:
        webhook = {"url": f"{receiver.url}/agent-hooks", "events": ["tool-calls"]}
        settings = bench("Checking. [tool:lookup {}]", "Done. [tool:end_call {}]", webhook=webhook)
        async with running(settings) as server:
            await create_tool(server, "lookup", {"kind": "function", "description": "Look up an order."})
            live = LiveCall(server)
            await live.ended()
    (request,) = receiver.requests
    assert request.path == "/agent-hooks" and request.signature_error is None
    assert request.json()["tool_call"]["name"] == "lookup"
    assert (Role.TOOL, "from the agent's server") in live.said()


async def test_a_transfer_tool_announces_then_hands_the_call_over() -> None:
    desk = {"destination": "+14155550111", "description": "the front desk", "message": "Putting you through."}
    # (Said before the tool call, words would be cut: Call.transfer takes the floor for the announcement.)
    replies = ('[tool:to_desk {"destination": "+14155550111"}]', "Never said.")
    async with FakeTwilioRest() as twilio:
        settings = bench(*replies, tools=("to_desk",)).model_dump()
        settings["telephony"] = {
            "twilio": {"account_sid": twilio.account_sid, "auth_token": twilio.auth_token, "api_base_url": twilio.url}
        }
        async with running(Settings.model_validate(settings)) as server:
            await create_tool(server, "to_desk", {"kind": "transfer_call", "destinations": [desk]})
            live = LiveCall(server)
            twilio.add_call(live.sid)
            result = await live.result()
            row = await live.ended()
    assert row.end_reason == "transferred"
    assert twilio.calls[live.sid].twiml == ["<Response><Dial>+14155550111</Dial></Response>"]
    assistant = [content for role, content in live.said() if role is Role.ASSISTANT]
    assert assistant == ["", "Putting you through."]  # the tool call (no words), and no LLM round after it
    assert (Role.TOOL, "ok: transferring the call to +14155550111") in live.said()
    assert heard_s(result) == pytest.approx(1.0, abs=0.1)


async def test_a_send_dtmf_tool_presses_keys_on_the_call() -> None:
    replies = ('Pressing one. [tool:press {"digits": "1w2#"}]', "Done. [tool:end_call {}]")
    async with running(bench(*replies, tools=("press",))) as server:
        await create_tool(server, "press", {"kind": "send_dtmf"})
        live = LiveCall(server)
        result = await live.result()
        await live.ended()
    assert (Role.TOOL, "ok: pressed 1w2#") in live.said()
    assert {"sent": "1w2#"} in live.events("dtmf")
    # Two 1 s phrases, and the tones: 3 keys of 100 ms tone + 100 ms gap, and a 0.5 s pause.
    assert heard_s(result) == pytest.approx(2.0 + 0.6 + 0.5, abs=0.15)


# -- agents name existing tools -----------------------------------------------------------------------


async def test_an_agent_may_only_name_tools_that_exist(api: ApiServer) -> None:
    key = await api.key()
    await create_tool(api, "lookup", {"kind": "function", "description": "Look up.", "url": "https://x.example/t"})
    async with api.post(f"{API}/agents", key=key, json={"name": "a", "tools": ["lookup", "nope", "lookup"]}) as resp:
        assert resp.status == 422
        body = await resp.json()
    assert body["details"] == {"tools.1": "no tool template named 'nope'", "tools.2": "tool 'lookup' is listed twice"}
    async with api.post(f"{API}/agents", key=key, json={"name": "a", "tools": ["lookup"]}) as resp:
        assert resp.status == 201
        agent = (await resp.json())["data"]
    assert agent["config"]["tools"] == ["lookup"]
    async with api.patch(f"{API}/agents/{agent['id']}", key=key, json={"tools": ["missing"]}) as resp:
        assert resp.status == 422
        assert (await resp.json())["details"] == {"tools.0": "no tool template named 'missing'"}
