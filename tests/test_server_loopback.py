"""The real server on 127.0.0.1 with real WebSocket callers streaming speech in real time."""

import asyncio
import base64

import aiohttp
import orjson
import pytest
from aiohttp import web

from ringline.api.app import CALLS, make_app
from ringline.benchmarks.caller import CallerScript, Utterance, clip_script, run_call
from ringline.benchmarks.clips import load_clip
from ringline.benchmarks.script import EndReason as CallerEnd
from ringline.config.settings import Settings, load_settings
from ringline.engine.record import EndReason

pytestmark = pytest.mark.timeout(60)

BOOK = load_clip("book_table.wav")
PRICES = load_clip("prices.wav")


def settings(**agent_overrides) -> Settings:
    """config/bench.toml with overrides for the default agent (dotted paths)."""
    data = load_settings("config/bench.toml").model_dump()
    agent = data["agents"]["default"]
    for path, value in agent_overrides.items():
        node = agent
        *parents, leaf = path.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    data["server"]["max_protocol_errors"] = 5
    return Settings.model_validate(data)


class Server:
    def __init__(self, app: web.Application, url: str) -> None:
        self.app = app
        self.url = url
        self.ws_url = url.replace("http", "ws", 1) + "/media/twilio"

    @property
    def calls(self):
        return self.app[CALLS]

    async def record(self, call_sid: str):
        return await asyncio.wait_for(self.calls.wait_finished(call_sid), 10)


@pytest.fixture
async def serve():
    runners = []

    async def start(config: Settings | None = None) -> Server:
        app = make_app(config or settings())
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        return Server(app, f"http://127.0.0.1:{port}")

    yield start
    for runner in runners:
        await runner.cleanup()


def script(*utterances: Utterance, **kw) -> CallerScript:
    kw.setdefault("pause_ms", 200)
    kw.setdefault("reply_timeout_s", 5)
    kw.setdefault("max_call_s", 30)
    return CallerScript(tuple(utterances), **kw)


async def test_each_turn_gets_a_reply(serve):
    server = await serve()
    result = await run_call(server.ws_url, clip_script(0, 2, pause_ms=200, reply_timeout_s=5))
    assert result.error is None
    assert result.answered == 2
    for turn in result.turns:
        assert turn.latency_ms is not None
        assert turn.reply.audio_s == pytest.approx(1.0)  # bench replies are exactly 1 s
    record = await server.record(result.call_sid)
    assert record.end_reason is EndReason.CALLER_HANGUP
    assert [t["role"] for t in record.transcript] == ["user", "assistant"] * 2
    assert len(record.turns) == 2 and all(t.first_audio_sent is not None for t in record.turns)
    assert len(server.calls) == 0


async def test_barge_in_clears_and_truncates(serve):
    server = await serve(
        settings(**{"tts.seconds_per_phrase": 4.0, "llm.fallback": "one two three four five six seven eight"})
    )
    result = await run_call(server.ws_url, script(Utterance(BOOK), Utterance(PRICES, barge_in_after_ms=1000)))
    assert result.error is None
    assert result.clears == 1
    talked_over = result.turns[1]
    assert talked_over.talked_over
    assert talked_over.agent_stop_ms is not None
    assert result.turns[0].reply.cleared
    assert talked_over.answered  # the interruption itself gets a reply
    record = await server.record(result.call_sid)
    first_reply = record.transcript[1]
    assert first_reply["role"] == "assistant" and first_reply["interrupted"] is True
    heard = first_reply["content"].split()
    assert 1 <= len(heard) <= 4  # about a second of four: the start of the reply, not all of it
    assert heard == ["one", "two", "three", "four", "five", "six", "seven", "eight"][: len(heard)]


async def test_false_interruption_does_not_clear_the_reply_for_good(serve):
    server = await serve(settings(**{"tts.seconds_per_phrase": 3.0, "stt.transcripts": ["Book a table.", ""]}))
    result = await run_call(server.ws_url, script(Utterance(BOOK), Utterance(PRICES, barge_in_after_ms=600)))
    assert result.error is None
    record = await server.record(result.call_sid)
    assistant = [t for t in record.transcript if t["role"] == "assistant"]
    assert assistant[0]["content"] == "Sure, here is the answer"
    assert "interrupted" not in assistant[0]
    # The reply resumed where the caller stopped hearing it: all 3 s reached the caller.
    total_audio = result.turns[0].reply.audio_s + result.turns[1].reply.audio_s + result.greeting.audio_s
    assert total_audio >= 3.0


async def test_caller_hanging_up_mid_reply_ends_the_call_cleanly(serve):
    server = await serve(settings(**{"tts.seconds_per_phrase": 3.0}))
    result = await run_call(server.ws_url, script(Utterance(BOOK), hangup_mid_reply_ms=1000))
    assert result.ended_by is CallerEnd.HANGUP_MID_REPLY
    record = await server.record(result.call_sid)
    assert record.end_reason is EndReason.CALLER_HANGUP
    assert record.transcript[-1].get("interrupted") is True
    assert len(server.calls) == 0
    leaked = [t for t in asyncio.all_tasks() if result.call_sid in t.get_name() and not t.done()]
    assert leaked == []


async def test_agent_hangs_up_with_end_call(serve):
    server = await serve(settings(**{"llm.replies": ["Goodbye! [tool:end_call {}]"]}))
    result = await run_call(server.ws_url, script(Utterance(BOOK), hangup_after_last_reply=False))
    assert result.ended_by is CallerEnd.SERVER_CLOSED
    assert result.turns[0].reply.audio_s == pytest.approx(1.0)  # the goodbye was heard first
    record = await server.record(result.call_sid)
    assert record.end_reason is EndReason.AGENT_HANGUP


async def test_unknown_agent_is_refused_with_a_reason(serve):
    server = await serve()
    result = await run_call(server.ws_url, script(Utterance(BOOK), custom_parameters={"agent": "nope"}))
    assert result.close_code == 1008
    assert len(server.calls) == 0


async def _raw_socket(server: Server):
    session = aiohttp.ClientSession()
    ws = await session.ws_connect(server.ws_url)
    return session, ws


def _start(stream="MZ0001", call="CA0001") -> str:
    return orjson.dumps(
        {"event": "start", "streamSid": stream, "start": {"streamSid": stream, "callSid": call}}
    ).decode()


async def test_malformed_messages_do_not_crash_the_server_and_the_next_call_works(serve):
    server = await serve()
    session, ws = await _raw_socket(server)
    async with session:
        await ws.send_str('{"event":"media","streamSid":"MZ0001","media":{"payload":"/w=="}}')  # before start
        await ws.send_str("not json")
        await ws.send_str(_start())
        await ws.send_str('{"event":"nonsense"}')
        await ws.send_str('{"event":"media","streamSid":"MZother","media":{"payload":"/w=="}}')
        await ws.send_str('{"event":"media","streamSid":"MZ0001","media":{"payload":"@@@"}}')
        await ws.send_bytes(b"\x00\x01")
        msg = await ws.receive(timeout=10)  # the fifth error ends the call: the server closes
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    record = await server.record("CA0001")
    assert record.end_reason is EndReason.PROTOCOL_ERROR
    assert record.protocol_errors == 5
    result = await run_call(server.ws_url, clip_script(1, 1, reply_timeout_s=5))
    assert result.answered == 1


async def test_oversized_message_closes_only_that_socket(serve):
    server = await serve()
    session, ws = await _raw_socket(server)
    async with session:
        await ws.send_str(_start("MZ0002", "CA0002"))
        await ws.send_str('{"event":"media","streamSid":"MZ0002","media":{"payload":"' + "A" * 70000 + '"}}')
        msg = await ws.receive(timeout=10)
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    record = await server.record("CA0002")
    assert record.end_reason is EndReason.TRANSPORT_CLOSED
    assert record.end_detail == "socket error: Message size 70061 exceeds limit 65536"
    result = await run_call(server.ws_url, clip_script(2, 1, reply_timeout_s=5))
    assert result.answered == 1


async def test_socket_dropped_mid_reply_ends_the_call(serve):
    server = await serve(settings(**{"tts.seconds_per_phrase": 3.0}))
    session, ws = await _raw_socket(server)
    async with session:
        await ws.send_str(_start("MZ0003", "CA0003"))
        frames = [BOOK[i : i + 160].ljust(160, b"\xff") for i in range(0, len(BOOK), 160)] + [b"\xff" * 160] * 30
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for k, frame in enumerate(frames):
            await asyncio.sleep(max(0.0, t0 + k * 0.02 - loop.time()))
            payload = base64.b64encode(frame).decode()
            await ws.send_str('{"event":"media","streamSid":"MZ0003","media":{"payload":"' + payload + '"}}')
        while (msg := await ws.receive(timeout=5)).type is aiohttp.WSMsgType.TEXT:
            if orjson.loads(msg.data)["event"] == "media":
                break  # the reply is playing: now the network goes away
        ws._response.connection.transport.abort()  # no stop, no close frame
    record = await server.record("CA0003")
    assert record.end_reason is EndReason.TRANSPORT_CLOSED
    assert len(server.calls) == 0


async def test_graceful_shutdown_ends_live_calls(serve):
    server = await serve(settings(**{"tts.seconds_per_phrase": 3.0}))
    session, ws = await _raw_socket(server)
    async with session:
        await ws.send_str(_start("MZ0004", "CA0004"))
        live = await asyncio.wait_for(server.calls.wait_live("CA0004"), 10)
        await server.app.shutdown()
        msg = await ws.receive(timeout=10)
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert live.record.end_reason is EndReason.SERVER_SHUTDOWN
    record = await server.record("CA0004")
    assert record is live.record


async def test_socket_that_never_starts_is_closed_after_the_timeout(serve):
    data = settings().model_dump()
    data["server"]["media_idle_timeout_s"] = 0.3
    server = await serve(Settings.model_validate(data))
    session, ws = await _raw_socket(server)
    async with session:
        await ws.send_str('{"event":"connected","protocol":"Call","version":"1.0.0"}')
        msg = await ws.receive(timeout=10)
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)


async def test_call_record_is_served_by_id(serve):
    server = await serve()
    result = await run_call(server.ws_url, clip_script(3, 1, reply_timeout_s=5))
    await server.record(result.call_sid)
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{server.url}/calls/{result.call_sid}") as resp:
            assert resp.status == 200
            body = await resp.json()
        async with session.get(f"{server.url}/calls/CAnope") as missing:
            assert missing.status == 404
            assert (await missing.json())["error"]["code"] == "not_found"
    assert body["status"] == "ended" and body["end_reason"] == "caller_hangup"
    assert [t["role"] for t in body["transcript"]] == ["user", "assistant"]
    (turn,) = body["turns"]
    assert turn["first_audio_sent"] is not None and turn["first_audio_sent"] > turn["stt_final"]
