"""The OpenAI adapter: the real ``openai`` SDK against the local Chat Completions fake on 127.0.0.1."""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest
from aiohttp import web

from ringline.api.app import make_app
from ringline.api.state import CALLS, CLIENTS
from ringline.benchmarks.caller import clip_script, run_call
from ringline.benchmarks.vendors.openai import FakeOpenAi, Script, ScriptedToolCall
from ringline.config.providers import FakeLlmConfig, OpenAiLlmConfig
from ringline.config.settings import Settings, load_settings
from ringline.engine.audio.clock import FakeClock, LoopClock
from ringline.engine.clients import HttpClients
from ringline.engine.errors import ProviderError
from ringline.engine.failover import FailoverLlm
from ringline.engine.llm.base import Context, LlmEvent, Message, TextDelta, Tool, ToolCall
from ringline.engine.llm.fake import FakeLlm
from ringline.engine.llm.openai import OpenAiLlm, warm_up

pytestmark = pytest.mark.timeout(30)

KEY = "sk-test-4f9c2a7e1b3d5f60"
BOOK = Tool(
    "book_table",
    "Book a table.",
    {"type": "object", "properties": {"party": {"type": "integer"}, "time": {"type": "string"}}},
)
WEATHER = Tool("get_weather", "Weather in a city.", {"type": "object", "properties": {"city": {"type": "string"}}})


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAi]:
    async with FakeOpenAi(KEY) as server:
        yield server


@pytest.fixture
async def make_llm(fake: FakeOpenAi):
    made: list[OpenAiLlm] = []

    def make(clock=None, **overrides) -> OpenAiLlm:
        overrides.setdefault("base_url", fake.url)
        config = OpenAiLlmConfig(provider="openai", api_key=KEY, **overrides)
        made.append(OpenAiLlm(config, clock or LoopClock()))
        return made[-1]

    yield make
    for llm in made:
        await llm.aclose()


def context(*messages: Message) -> Context:
    ctx = Context("You are a restaurant's phone agent.")
    for message in messages or (Message("user", "Hi, a table for four please."),):
        ctx.add(message)
    return ctx


async def collect(events: AsyncIterator[LlmEvent]) -> list[LlmEvent]:
    return [event async for event in events]


async def collect_until_error(events: AsyncIterator[LlmEvent], got: list[LlmEvent]) -> None:
    async for event in events:
        got.append(event)


# -- text -----------------------------------------------------------------------------------------


async def test_text_deltas_stream_in_order_and_the_fake_is_the_base_url(fake, make_llm) -> None:
    fake.script(Script(tokens=["Sure", ",", " a table", " for four", " at", " seven."]))
    events = await collect(make_llm().stream(context(), [BOOK]))
    assert events == [TextDelta(t) for t in ["Sure", ",", " a table", " for four", " at", " seven."]]
    request = fake.requests[0]
    assert request.path == "/v1/chat/completions"
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    assert len(fake.requests) == 1


async def test_text_deltas_are_yielded_before_the_stream_ends(fake, make_llm) -> None:
    # Role chunk + 2 tokens, then the server stops answering: the 2 tokens must already be out.
    fake.script(Script(text="one two three four", hang_after=3))
    events = make_llm().stream(context(), [])
    assert await anext(events) == TextDelta("one")
    assert await anext(events) == TextDelta(" two")
    await events.aclose()  # the caller abandons the reply (barge-in): the request is closed
    request = fake.requests[0]
    await asyncio.wait_for(request.disconnected.wait(), 5)
    assert request.chunks_sent == 3


async def test_the_reply_ends_at_finish_reason_and_its_body_is_read_aside(fake, make_llm) -> None:
    fake.script(Script(text="All set.", done_after_s=30.0), Script(text="Anything else?"))
    llm = make_llm()
    async with asyncio.timeout(5):  # not waiting the 30 s for [DONE] and the end of the body
        events = await collect(llm.stream(context(), []))
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "All set."
    first = fake.requests[0]
    assert not first.finished.is_set()  # the body is still open, being read aside
    async with asyncio.timeout(5):  # nor does the next reply wait for it: it takes another connection
        second = await collect(llm.stream(context(), []))
    assert "".join(e.text for e in second if isinstance(e, TextDelta)) == "Anything else?"
    assert not first.finished.is_set() and fake.requests[1].peer != first.peer
    await fake.close()  # the server ends the body: the reading aside ends with it
    await asyncio.wait_for(llm.settle(), 5)
    assert first.finished.is_set() and not first.disconnected.is_set()


async def test_the_next_turn_reuses_the_connection(fake, make_llm) -> None:
    llm = make_llm()
    for _ in range(3):
        await collect(llm.stream(context(), []))
        await llm.settle()  # the body read to its end: the connection is back in the pool
    assert len({r.peer for r in fake.requests}) == 1 and fake.requests[0].peer is not None


async def test_the_fake_receives_the_exact_context_and_tool_schema(fake, make_llm) -> None:
    call = ToolCall("call_abc", "book_table", {"party": 4, "time": "19:30"})
    ctx = context(
        Message("user", "A table for four at half past seven."),
        Message("assistant", "", tool_calls=(call,)),
        Message("tool", "booked: table 12", tool_call_id="call_abc"),
        Message("assistant", "Done, table twelve is", interrupted=True),
        Message("user", "Thanks!"),
    )
    fake.script(Script(text="You're welcome."))
    await collect(make_llm(temperature=0.2, max_tokens=42, parallel_tool_calls=False).stream(ctx, [BOOK, WEATHER]))
    body = fake.requests[0].body
    assert body["messages"] == [
        {"role": "system", "content": "You are a restaurant's phone agent."},
        {"role": "user", "content": "A table for four at half past seven."},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_abc",
                    "type": "function",
                    "function": {"name": "book_table", "arguments": '{"party":4,"time":"19:30"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_abc", "content": "booked: table 12"},
        {"role": "assistant", "content": "Done, table twelve is"},
        {"role": "user", "content": "Thanks!"},
    ]
    assert body["tools"] == [
        {"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}}
        for t in (BOOK, WEATHER)
    ]
    assert body["parallel_tool_calls"] is False
    assert body["temperature"] == 0.2
    assert body["max_tokens"] == 42
    assert "max_completion_tokens" not in body
    assert body["model"] == "gpt-4o-mini"
    assert body["stream"] is True


async def test_without_tools_neither_tools_nor_parallel_tool_calls_is_sent(fake, make_llm) -> None:
    await collect(make_llm(max_tokens=None, model="llama3.1:8b").stream(context(), []))
    body = fake.requests[0].body
    assert "tools" not in body and "parallel_tool_calls" not in body
    assert "max_tokens" not in body and "max_completion_tokens" not in body
    assert body["model"] == "llama3.1:8b"


def test_api_openai_com_gets_max_completion_tokens_others_max_tokens() -> None:
    def request(base_url: str | None) -> dict:
        config = OpenAiLlmConfig(provider="openai", api_key=KEY, base_url=base_url, max_tokens=99)
        return OpenAiLlm(config, LoopClock()).request(context(), [])

    assert request(None)["max_completion_tokens"] == 99 and "max_tokens" not in request(None)
    assert request("https://api.openai.com/v1")["max_completion_tokens"] == 99
    assert request("http://127.0.0.1:8000/v1")["max_tokens"] == 99  # vLLM
    assert request("http://localhost:11434/v1")["max_tokens"] == 99  # Ollama


async def test_warm_up_sends_nothing(fake) -> None:
    config = OpenAiLlmConfig(provider="openai", api_key=KEY, base_url=fake.url)
    await warm_up(config)
    async with HttpClients() as clients:
        await warm_up(config, clients)
        assert clients.count == 1  # the shared client is made, ready for the first call
    assert fake.requests == []


# -- shared clients -------------------------------------------------------------------------------


async def test_adapters_on_shared_clients_share_one_connection_and_aclose_leaves_it_open(fake) -> None:
    config = OpenAiLlmConfig(provider="openai", api_key=KEY, base_url=fake.url)
    async with HttpClients() as clients:
        first = OpenAiLlm(config, LoopClock(), clients=clients)
        await collect(first.stream(context(), []))
        await first.aclose()  # the call ended: the shared client is not its to close
        second = OpenAiLlm(config, LoopClock(), clients=clients)
        await collect(second.stream(context(), []))
        assert first.client() is second.client() and clients.count == 1
        other = OpenAiLlm(config.model_copy(update={"timeout_s": 3.0}), LoopClock(), clients=clients)
        assert other.client() is not first.client() and clients.count == 2  # another timeout: its own
    assert len(fake.requests) == 2 and fake.requests[0].peer == fake.requests[1].peer
    await asyncio.wait_for(fake.requests[1].finished.wait(), 5)


async def test_concurrent_requests_past_aiohttps_default_limit_each_get_a_connection_then_reuse_them(fake) -> None:
    config = OpenAiLlmConfig(provider="openai", api_key=KEY, base_url=fake.url, first_token_timeout_s=5.0)
    n = 120  # aiohttp's connector allows 100 unless told otherwise
    fake.script(*[Script(text="Sure.", headers_after_s=0.5) for _ in range(n)])  # all in flight at once
    async with HttpClients() as clients:
        llm = OpenAiLlm(config, LoopClock(), clients=clients)
        replies = await asyncio.gather(*(collect(llm.stream(context(), [])) for _ in range(n)))
        await llm.settle()  # every body read to its end: every connection back in the pool
        assert all(replies)
        peers = {r.peer for r in fake.requests}
        assert len(peers) == n  # none waited for another's connection
        await collect(llm.stream(context(), []))
        assert fake.requests[-1].peer in peers  # a pooled connection, not a new one


# -- tool calls -----------------------------------------------------------------------------------


async def test_a_tool_call_is_assembled_from_fragmented_arguments(fake, make_llm) -> None:
    args = {"party": 4, "time": "19:30", "name": "Ana María"}
    fake.script(Script(text="One moment.", tool_calls=[ScriptedToolCall("book_table", args, id="call_X1", pieces=9)]))
    events = await collect(make_llm().stream(context(), [BOOK]))
    assert events == [TextDelta("One"), TextDelta(" moment."), ToolCall("call_X1", "book_table", args)]


async def test_parallel_tool_calls_each_yielded_as_soon_as_the_next_starts(fake, make_llm) -> None:
    first = ScriptedToolCall("get_weather", {"city": "Paris"}, id="call_A", pieces=4)
    second = ScriptedToolCall("get_weather", {"city": "Tokyo"}, id="call_B", pieces=4)
    # Chunks: role, first's head + 4 pieces, second's head; then the server stops answering.
    fake.script(Script(tool_calls=[first, second], hang_after=7))
    events = make_llm().stream(context(), [WEATHER])
    assert await anext(events) == ToolCall("call_A", "get_weather", {"city": "Paris"})
    await events.aclose()

    fake.script(Script(tool_calls=[first, second, ScriptedToolCall("book_table", {"party": 2}, pieces=5)]))
    events = await collect(make_llm().stream(context(), [WEATHER, BOOK]))
    assert [(e.id, e.name, e.arguments) for e in events if isinstance(e, ToolCall)][:2] == [
        ("call_A", "get_weather", {"city": "Paris"}),
        ("call_B", "get_weather", {"city": "Tokyo"}),
    ]
    assert len(events) == 3 and events[2].name == "book_table" and events[2].arguments == {"party": 2}
    assert events[2].id.startswith("call_")


@pytest.mark.parametrize("arguments", ['{"party": 4, "time": ', "[4]"])
async def test_arguments_that_are_not_a_json_object_call_the_tool_with_nothing(
    fake, make_llm, caplog, arguments
) -> None:
    fake.script(Script(tool_calls=[ScriptedToolCall("book_table", arguments, id="call_bad")]))
    with caplog.at_level(logging.WARNING, logger="ringline.engine.llm.openai"):
        events = await collect(make_llm().stream(context(), [BOOK]))
    assert events == [ToolCall("call_bad", "book_table", {})]
    assert "tool call book_table call_bad: arguments are" in caplog.text


# -- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "retryable"),
    [(400, False), (403, False), (404, False), (408, True), (409, True), (429, True), (500, True), (503, True)],
)
async def test_http_errors_map_to_provider_errors(fake, make_llm, status, retryable) -> None:
    fake.script(Script(status=status, retry_after="7" if status == 429 else None))
    with pytest.raises(ProviderError) as raised:
        await collect(make_llm().stream(context(), []))
    assert raised.value.retryable is retryable
    assert str(raised.value).startswith(f"openai: HTTP {status}")
    assert len(fake.requests) == 1  # the SDK did not retry: Ringline decides
    assert raised.value.retry_after == (7.0 if status == 429 else None)
    if status == 429:
        assert str(raised.value) == (
            "openai: HTTP 429 rate_limit_exceeded: Rate limit reached for requests. (retry after 7 s)"
        )


class Faults:
    def __init__(self) -> None:
        self.seen: list[str] = []

    def fault(self, stage: str, detail: str) -> None:
        self.seen.append(detail)


async def test_a_429_is_retried_after_its_retry_after_when_that_fits_the_budget(fake, make_llm) -> None:
    fake.script(Script(status=429, retry_after="0.3"), Script(text="After the wait."))
    faults = Faults()
    fallback = FakeLlm(FakeLlmConfig(replies=("From the fallback.",)), LoopClock())
    llm = FailoverLlm(make_llm(), fallback, faults, budget_s=2.0)
    events = await collect(llm.stream(context(), []))
    assert events == [TextDelta("After"), TextDelta(" the"), TextDelta(" wait.")]
    assert len(fake.requests) == 2
    assert fake.requests[1].received_at - fake.requests[0].received_at >= 0.3
    assert faults.seen == [
        "llm: openai: HTTP 429 rate_limit_exceeded: Rate limit reached for requests. (retry after 0.3 s)"
    ]


async def test_a_429_whose_retry_after_is_past_the_budget_goes_to_the_fallback_at_once(fake, make_llm) -> None:
    fake.script(Script(status=429, retry_after="30"), Script(text="Too late."))
    faults = Faults()
    fallback = FakeLlm(FakeLlmConfig(replies=("From the fallback.",)), LoopClock())
    llm = FailoverLlm(make_llm(), fallback, faults, budget_s=2.0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    events = await collect(llm.stream(context(), []))
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "From the fallback."
    assert loop.time() - started < 1.0
    assert len(fake.requests) == 1  # no retry of the primary: it said not before 30 s
    assert len(faults.seen) == 1 and "(retry after 30 s)" in faults.seen[0]


async def test_a_wrong_key_is_401_and_not_retryable(fake, make_llm) -> None:
    fake.api_key = "sk-another-key-entirely"
    with pytest.raises(ProviderError) as raised:
        await collect(make_llm().stream(context(), []))
    assert not raised.value.retryable
    assert str(raised.value) == "openai: HTTP 401 invalid_api_key: Incorrect API key provided."


async def test_a_refused_connection_is_retryable(make_llm) -> None:
    closed = FakeOpenAi(KEY)
    await closed.start()
    url = closed.url
    await closed.close()
    with pytest.raises(ProviderError) as raised:
        await collect(make_llm(base_url=url).stream(context(), []))
    assert raised.value.retryable
    assert str(raised.value).startswith("openai: connection error")


@pytest.mark.parametrize("where", ["before the headers", "after the headers", "after the role chunk"])
async def test_no_first_token_in_time_cancels_the_request(fake, make_llm, where) -> None:
    script = {
        "before the headers": Script(text="late", headers_after_s=3600),
        "after the headers": Script(text="late", hang_after=0),
        "after the role chunk": Script(text="late", hang_after=1),  # a role chunk is not a token
    }[where]
    fake.script(script)
    clock = FakeClock()
    task = asyncio.create_task(collect(make_llm(clock, first_token_timeout_s=2.0).stream(context(), [])))
    request = await fake.wait_request()
    await clock.advance(1.9)
    assert not task.done()
    await clock.advance(0.2)
    with pytest.raises(ProviderError) as raised:
        await task
    assert raised.value.retryable
    assert str(raised.value) == "openai: no first token within 2 s"
    await asyncio.wait_for(request.disconnected.wait(), 5)


async def test_a_reply_that_stalls_mid_way_fails_at_the_request_deadline(fake, make_llm) -> None:
    fake.script(Script(text="one two three four", hang_after=3))
    clock = FakeClock()
    got: list[LlmEvent] = []
    two = asyncio.Event()

    async def consume() -> None:
        async for event in make_llm(clock, timeout_s=5.0).stream(context(), []):
            got.append(event)
            if len(got) == 2:
                two.set()

    task = asyncio.create_task(consume())
    request = await fake.wait_request()
    await two.wait()  # past the first token: only the request deadline is left
    await clock.advance(4.9)
    assert not task.done()
    await clock.advance(0.2)
    with pytest.raises(ProviderError) as raised:
        await task
    assert raised.value.retryable and str(raised.value) == "openai: no complete reply within 5 s"
    assert got == [TextDelta("one"), TextDelta(" two")]
    await asyncio.wait_for(request.disconnected.wait(), 5)


async def test_a_deadline_passing_while_the_consumer_is_busy_never_cancels_the_consumer(fake, make_llm) -> None:
    fake.script(Script(text="one two three"))
    clock = FakeClock()
    events = make_llm(clock, timeout_s=5.0).stream(context(), [])
    assert await anext(events) == TextDelta("one")
    await clock.advance(6)  # this task is in the test, not in the stream: it must not be cancelled
    with pytest.raises(ProviderError, match="no complete reply within 5 s"):
        await anext(events)
    assert asyncio.current_task().cancelling() == 0


async def test_a_stream_cut_mid_way_raises_retryable_after_the_tokens_so_far(fake, make_llm) -> None:
    fake.script(Script(text="one two three four", cut_after=3))
    got: list[LlmEvent] = []
    with pytest.raises(ProviderError) as raised:
        await collect_until_error(make_llm().stream(context(), []), got)
    assert got == [TextDelta("one"), TextDelta(" two")]
    assert raised.value.retryable
    assert str(raised.value).startswith("openai: connection error (ReadError: Response payload is not completed")


async def test_an_error_event_mid_stream_raises_retryable(fake, make_llm) -> None:
    fake.script(Script(text="one two three", error_after=2))
    got: list[LlmEvent] = []
    with pytest.raises(ProviderError) as raised:
        await collect_until_error(make_llm().stream(context(), []), got)
    assert got == [TextDelta("one")]
    assert raised.value.retryable
    assert str(raised.value).startswith("openai: error in the stream server_error: The server had an error")


async def test_the_api_key_appears_in_no_log_and_no_error(fake, make_llm, caplog) -> None:
    fake.script(
        Script(text="fine"),
        Script(status=500, error_message=f"upstream refused the key {KEY}"),
        Script(text="one two", error_after=1, error_message=f"bad key {KEY}"),
    )
    llm = make_llm()
    errors: list[ProviderError] = []
    with caplog.at_level(logging.DEBUG):
        await collect(llm.stream(context(), []))
        for _ in range(2):
            try:
                await collect(llm.stream(context(), []))
            except ProviderError as exc:
                errors.append(exc)
                logging.getLogger("test").warning("llm failed", exc_info=True)
        fake.api_key = "sk-rotated"
        try:
            await collect(llm.stream(context(), []))
        except ProviderError as exc:
            errors.append(exc)
            logging.getLogger("test").warning("llm failed", exc_info=True)
    assert len(errors) == 3
    assert "[redacted]" in str(errors[0]) and "[redacted]" in str(errors[1])
    assert "HTTP Request: POST" in caplog.text  # the SDK's own logging was captured
    for text in [caplog.text, *("".join(traceback.format_exception(e)) for e in errors), repr(llm)]:
        assert KEY not in text


# -- the fake's wire format -----------------------------------------------------------------------


async def test_the_fake_speaks_chat_completions_sse(fake) -> None:
    fake.script(Script(tokens=["Hi", "!"], tool_calls=[ScriptedToolCall("f", {"a": 1}, id="call_1", pieces=2)]))
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": True}
    body["stream_options"] = {"include_usage": True}
    async with (
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {KEY}"}) as session,
        session.post(fake.url + "/chat/completions", json=body) as response,
    ):
        assert response.headers["Content-Type"] == "text/event-stream; charset=utf-8"
        raw = (await response.read()).decode()
    events = [line.removeprefix("data: ") for line in raw.split("\n\n") if line]
    assert events[-1] == "[DONE]"
    chunks = [orjson.loads(e) for e in events[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"} and len({c["id"] for c in chunks}) == 1
    assert all(c["model"] == "m" and isinstance(c["created"], int) for c in chunks)
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas[0]["role"] == "assistant"
    assert [d.get("content") for d in deltas[1:3]] == ["Hi", "!"]
    assert deltas[3]["tool_calls"] == [
        {"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": ""}}
    ]
    assert "".join(d["tool_calls"][0]["function"]["arguments"] for d in deltas[4:6]) == '{"a":1}'
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "tool_calls"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0


async def test_the_fake_answers_without_streaming_and_refuses_a_bad_key(fake) -> None:
    fake.script(Script(text="Plain answer."))
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    async with aiohttp.ClientSession() as session:
        async with session.post(
            fake.url + "/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"}
        ) as r:
            completion = await r.json()
        async with session.post(fake.url + "/chat/completions", json=body, headers={"Authorization": "Bearer no"}) as r:
            assert r.status == 401
            error = await r.json()
    assert completion["object"] == "chat.completion"
    assert completion["choices"][0]["message"] == {"role": "assistant", "content": "Plain answer.", "refusal": None}
    assert completion["choices"][0]["finish_reason"] == "stop"
    assert set(error["error"]) == {"message", "type", "param", "code"} and error["error"]["code"] == "invalid_api_key"


# -- a whole call ---------------------------------------------------------------------------------


async def test_calls_through_the_real_server_are_answered_on_the_apps_shared_client(fake) -> None:
    data = load_settings("config/bench.toml").model_dump()
    data["agents"]["default"]["llm"] = {"provider": "openai", "api_key": KEY, "base_url": fake.url}
    fake.default = Script(text="Your table for four is booked.")
    runner = web.AppRunner(make_app(Settings.model_validate(data)))
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        result = await run_call(f"ws://127.0.0.1:{port}/media/twilio", clip_script(0, 1, reply_timeout_s=5))
        record = await asyncio.wait_for(runner.app[CALLS].wait_finished(result.call_sid), 10)
        again = await run_call(f"ws://127.0.0.1:{port}/media/twilio", clip_script(1, 1, reply_timeout_s=5))
        clients = runner.app[CLIENTS]
        assert clients.count == 1  # made at start-up, shared by both calls
    finally:
        await runner.cleanup()
    assert repr(clients) == "<HttpClients closed>"  # the app closed it when it stopped
    assert again.error is None and again.answered == 1
    assert len({r.peer for r in fake.requests}) == 1  # the second call's request reused the connection
    assert result.error is None and result.answered == 1
    assert result.turns[0].reply.audio_s > 0
    assert [t["content"] for t in record.transcript if t["role"] == "assistant"] == ["Your table for four is booked."]
    sent = fake.requests[0].body
    assert sent["messages"][-1] == {"role": "user", "content": record.transcript[0]["content"]}
    assert [t["function"]["name"] for t in sent["tools"]] == ["end_call"]
