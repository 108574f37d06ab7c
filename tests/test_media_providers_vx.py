"""The real server on 127.0.0.1 answering a Vonage and an Exotel media socket: an aiohttp client
speaks each provider's side (connect/start, a speech clip in real time, silence after it), and the
agent's reply must come back in the provider's outbound shape, its marks must round-trip, and the
caller hanging up must end the call as ``caller_hangup``."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from contextlib import suppress

import aiohttp
import orjson
import pytest

from ringline.api.state import CALLS
from ringline.benchmarks.clips import load_clip
from ringline.config.settings import Settings, load_settings
from ringline.engine.audio.g711 import ulaw_decode
from ringline.engine.audio.resample import Resampler
from ringline.engine.record import EndReason
from tests.api_fixtures import ApiServer, running

pytestmark = pytest.mark.timeout(30)

SPEECH_8K = ulaw_decode(load_clip("book_table.wav"))
REPLY_S = 1.0  # config/bench.toml: every reply is one phrase of exactly 1 s


def bench() -> Settings:
    return Settings.model_validate(load_settings("config/bench.toml").model_dump())


def to_16k(pcm: bytes) -> bytes:
    resampler = Resampler(8000, 16000)
    return resampler.process(pcm) + resampler.flush()


async def stream_audio(send: Callable[[bytes], object], audio: bytes, chunk: int, rate: int) -> None:
    """``audio`` in ``chunk``-byte messages at real-time pace, then silence until cancelled, as a
    provider streams the caller's line (deadlines from the start, not accumulated sleeps)."""
    loop = asyncio.get_running_loop()
    origin, sent = loop.time(), 0
    silence = bytes(chunk)
    while True:
        piece = audio[sent : sent + chunk] if sent < len(audio) else silence
        await send(piece + bytes(chunk - len(piece)))
        sent += chunk
        await asyncio.sleep(max(0.0, origin + sent / (2 * rate) - loop.time()))


def mark_offset(name: str) -> int:
    """The byte offset in a playout mark name ``reply.epoch.offset``."""
    return int(name.rsplit(".", 1)[1])


async def finished(server: ApiServer, call_id: str):
    return await asyncio.wait_for(server.app[CALLS].wait_finished(call_id), 10)


async def test_vonage_call_end_to_end() -> None:
    call_id = "aaaaaaaa-bbbb-cccc-dddd-000000000001"
    reply_bytes = int(16000 * 2 * REPLY_S)
    async with running(bench()) as server, server.session.ws_connect(f"{server.ws_url}/media/vonage") as ws:
        await ws.send_str(
            orjson.dumps(
                {"event": "websocket:connected", "content-type": "audio/l16;rate=16000", "call_uuid": call_id}
                | {"from": "447700900123", "to": "447700900000"}
            ).decode()
        )
        caller = asyncio.create_task(stream_audio(ws.send_bytes, to_16k(SPEECH_8K), 640, 16000))
        frames: list[int] = []
        notified: list[str] = []
        try:
            async with asyncio.timeout(15):
                while not notified or mark_offset(notified[-1]) < reply_bytes:
                    msg = await ws.receive()
                    if msg.type is aiohttp.WSMsgType.BINARY:
                        frames.append(len(msg.data))
                    elif msg.type is aiohttp.WSMsgType.TEXT:
                        action = orjson.loads(msg.data)
                        assert action["action"] == "notify", action
                        notified.append(action["payload"]["name"])
                        # Played at once, as far as the server can tell: echo it as Vonage would.
                        echo = {"event": "websocket:notify", "payload": action["payload"]}
                        await ws.send_str(orjson.dumps(echo).decode())
                    else:
                        raise AssertionError(f"socket ended early: {msg.type}")
        finally:
            caller.cancel()
            with suppress(asyncio.CancelledError):
                await caller
        await ws.close()  # Vonage's hang-up: the socket closes
        record = await finished(server, call_id)
    assert frames and set(frames) == {640}  # binary L16 frames of exactly 20 ms at 16 kHz
    assert sum(frames) == reply_bytes
    assert mark_offset(notified[-1]) == reply_bytes
    assert record.end_reason is EndReason.CALLER_HANGUP
    assert [t["role"] for t in record.transcript] == ["user", "assistant"]
    # The final mark came back before the reply could have finished playing: only its echo tells
    # the server the caller heard all of it.
    assert "interrupted" not in record.transcript[1]


async def test_exotel_call_end_to_end() -> None:
    stream_sid, call_sid = "b1e2c3d4e5f60718293a4b5c6d7e8f90", "c0ffee00c0ffee00c0ffee00c0ffee01"
    reply_bytes = int(8000 * 2 * REPLY_S)
    start = {
        "event": "start",
        "sequence_number": "1",
        "stream_sid": stream_sid,
        "start": {
            "stream_sid": stream_sid,
            "call_sid": call_sid,
            "account_sid": "exotel-acc1",
            "from": "+919876543210",
            "to": "+918047491899",
            "custom_parameters": {"var_name": "Asha"},
            "media_format": {"encoding": "audio/x-raw", "sample_rate": "8000", "bit_rate": "16"},
        },
    }
    seq = iter(range(2, 10**6))

    async def send_media(pcm: bytes) -> None:
        n = next(seq)
        payload = base64.b64encode(pcm).decode()
        media = {"chunk": str(n), "timestamp": str(n * 100), "payload": payload}
        await ws.send_str(
            orjson.dumps(
                {"event": "media", "sequence_number": str(n), "stream_sid": stream_sid, "media": media}
            ).decode()
        )

    async with running(bench()) as server, server.session.ws_connect(f"{server.ws_url}/media/exotel") as ws:
        await ws.send_str('{"event":"connected"}')
        await ws.send_str(orjson.dumps(start).decode())
        caller = asyncio.create_task(stream_audio(send_media, SPEECH_8K, 1600, 8000))  # Exotel: ~100 ms chunks
        chunks: list[int] = []
        marks: list[str] = []
        try:
            async with asyncio.timeout(15):
                while not marks or mark_offset(marks[-1]) < reply_bytes:
                    msg = await ws.receive()
                    assert msg.type is aiohttp.WSMsgType.TEXT, f"socket ended early: {msg.type}"
                    out = orjson.loads(msg.data)
                    assert out["stream_sid"] == stream_sid
                    if out["event"] == "media":
                        chunks.append(len(base64.b64decode(out["media"]["payload"], validate=True)))
                    elif out["event"] == "mark":
                        marks.append(out["mark"]["name"])
                        echo = {"event": "mark", "sequence_number": str(next(seq))} | out
                        await ws.send_str(orjson.dumps(echo).decode())
                    else:
                        raise AssertionError(f"unexpected {out}")
        finally:
            caller.cancel()
            with suppress(asyncio.CancelledError):
                await caller
        stop = {"call_sid": call_sid, "account_sid": "exotel-acc1", "reason": "callended"}
        await ws.send_str(orjson.dumps({"event": "stop", "stream_sid": stream_sid, "stop": stop}).decode())
        msg = await asyncio.wait_for(ws.receive(), 10)  # the server ends the call and closes
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        record = await finished(server, call_sid)
    assert chunks and all(size % 320 == 0 and size >= 3200 for size in chunks), chunks  # Exotel's chunk rules
    assert sum(chunks) == reply_bytes
    assert record.end_reason is EndReason.CALLER_HANGUP
    assert [t["role"] for t in record.transcript] == ["user", "assistant"]
    assert "interrupted" not in record.transcript[1]
