"""Telnyx and Plivo media sockets end to end: the real server (config/bench.toml) on 127.0.0.1, a
WebSocket client speaking each provider's protocol with a real speech clip, the agent's reply
coming back as the provider's outbound media, its mark or checkpoint acknowledged, and the
provider's stop ending the call as the caller's hang-up."""

from __future__ import annotations

import asyncio
from base64 import b64decode, b64encode
from typing import Any, Protocol

import aiohttp
import numpy as np
import orjson
import pytest

from ringline.api.state import CALLS
from ringline.benchmarks.clips import load_clip
from ringline.config.settings import Settings, load_settings
from ringline.engine.audio.formats import Encoding
from ringline.engine.audio.g711 import decode
from ringline.engine.record import CallRecord, EndReason
from ringline.engine.transports.telnyx.codec import swap16
from tests.api_fixtures import ApiServer, running

pytestmark = pytest.mark.timeout(30)

CLIP = load_clip("book_table.wav")
SILENCE = b"\xff" * 160  # mu-law
SPEECH = [CLIP[i : i + 160] for i in range(0, len(CLIP) - 159, 160)] + [SILENCE] * 40
TONE_AMPLITUDE = 8000  # the bench TTS speaks a sine of this amplitude


def bench() -> Settings:
    return load_settings("config/bench.toml")


class Caller(Protocol):
    """One provider's side of the socket, as far as this test needs it."""

    path: str
    call_id: str

    def opening(self) -> list[dict[str, Any]]: ...
    def media(self, chunk: int, mulaw: bytes) -> dict[str, Any]: ...
    def stop(self) -> dict[str, Any]: ...
    def heard(self, msg: dict[str, Any]) -> tuple[str, Any]:
        """``("audio", pcm16)``, ``("mark", name)`` or ``("other", msg)``."""
        ...

    def ack(self, name: str) -> dict[str, Any]: ...


class TelnyxCaller:
    path = "/media/telnyx"
    call_id = "v3:loopback-telnyx-0001"
    stream_id = "5C6D0C3E-6E2B-4F6A-9B0D-3C1A7F0E2B11"

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding

    def opening(self) -> list[dict[str, Any]]:
        state = b64encode(orjson.dumps({"agent": "default", "var_first_name": "Jane"})).decode()
        start = {
            "call_control_id": self.call_id,
            "call_session_id": "b0e6141e-c81c-11f0-abac-02420aef93a0",
            "client_state": state,
            "from": "+13122010094",
            "to": "+13122123456",
            "media_format": {"encoding": self.encoding, "sample_rate": 8000, "channels": 1},
        }
        return [
            {"event": "connected", "version": "1.0.0"},
            {"event": "start", "sequence_number": "1", "start": start, "stream_id": self.stream_id},
        ]

    def media(self, chunk: int, mulaw: bytes) -> dict[str, Any]:
        audio = mulaw if self.encoding == "PCMU" else swap16(decode(mulaw, Encoding.MULAW))  # L16: big-endian
        body = {
            "track": "inbound",
            "chunk": str(chunk),
            "timestamp": str(20 * chunk),
            "payload": b64encode(audio).decode(),
        }
        return {"event": "media", "sequence_number": str(chunk + 1), "media": body, "stream_id": self.stream_id}

    def stop(self) -> dict[str, Any]:
        return {"event": "stop", "stop": {"call_control_id": self.call_id}, "stream_id": self.stream_id}

    def heard(self, msg: dict[str, Any]) -> tuple[str, Any]:
        if msg.get("event") == "media":
            audio = b64decode(msg["media"]["payload"], validate=True)
            return "audio", decode(audio, Encoding.MULAW) if self.encoding == "PCMU" else swap16(audio)
        if msg.get("event") == "mark":
            return "mark", msg["mark"]["name"]
        return "other", msg

    def ack(self, name: str) -> dict[str, Any]:
        return {"event": "mark", "stream_id": self.stream_id, "mark": {"name": name}}


class PlivoCaller:
    path = "/media/plivo"
    call_id = "7a1c0b8e-2f4d-4e5a-9c3b-1d2e3f4a5b6c"
    stream_id = "20170ada-f610-433b-8758-c02a2aab3662"

    def opening(self) -> list[dict[str, Any]]:
        start = {
            "callId": self.call_id,
            "streamId": self.stream_id,
            "accountId": "MAXXXXXXXXXXXXXXXXXX",
            "tracks": ["inbound"],
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000},
        }
        headers = "agent=default,from=14155550100,to=14155550199,var_first_name=Jane"
        return [{"event": "start", "sequenceNumber": 1, "start": start, "extra_headers": headers}]

    def media(self, chunk: int, mulaw: bytes) -> dict[str, Any]:
        body = {"track": "inbound", "timestamp": str(1705312200000 + 20 * chunk), "chunk": chunk}
        body["payload"] = b64encode(mulaw).decode()
        return {"event": "media", "sequenceNumber": chunk + 1, "streamId": self.stream_id, "media": body}

    def stop(self) -> dict[str, Any]:
        return {"event": "stop", "streamId": self.stream_id}

    def heard(self, msg: dict[str, Any]) -> tuple[str, Any]:
        if msg.get("event") == "playAudio":
            assert msg["streamId"] == self.stream_id
            assert (msg["media"]["contentType"], msg["media"]["sampleRate"]) == ("audio/x-mulaw", 8000)
            return "audio", decode(b64decode(msg["media"]["payload"], validate=True), Encoding.MULAW)
        if msg.get("event") == "checkpoint":
            assert msg["streamId"] == self.stream_id
            return "mark", msg["name"]
        return "other", msg

    def ack(self, name: str) -> dict[str, Any]:
        return {"event": "playedStream", "streamId": self.stream_id, "name": name}


async def send(ws: aiohttp.ClientWebSocketResponse, msg: dict[str, Any]) -> None:
    await ws.send_str(orjson.dumps(msg).decode())


async def hear_reply(ws: aiohttp.ClientWebSocketResponse, caller: Caller) -> tuple[bytes, str]:
    """The reply's audio (PCM16) up to its first mark, which is acknowledged."""
    audio = bytearray()
    while True:
        msg = await ws.receive(timeout=10)
        assert msg.type is aiohttp.WSMsgType.TEXT, msg
        kind, value = caller.heard(orjson.loads(msg.data))
        if kind == "audio":
            audio += value
        elif kind == "mark" and audio:
            await send(ws, caller.ack(value))
            return bytes(audio), value
        elif kind != "mark":
            pytest.fail(f"unexpected message {value!r}")


async def call(server: ApiServer, caller: Caller, order: list[int]) -> tuple[bytes, CallRecord]:
    async with server.session.ws_connect(server.ws_url + caller.path) as ws:
        for msg in caller.opening():
            await send(ws, msg)
        for chunk in order:
            await send(ws, caller.media(chunk, SPEECH[chunk]))
        audio, _ = await hear_reply(ws, caller)
        await send(ws, caller.stop())
        closing = await ws.receive(timeout=10)
        assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    record = await asyncio.wait_for(server.app[CALLS].wait_finished(caller.call_id), 10)
    return audio, record


def assert_answered(audio: bytes, record: CallRecord) -> None:
    pcm = np.frombuffer(audio, dtype="<i2")
    assert len(pcm) == pytest.approx(8000, rel=0.05)  # the bench reply: 1 s at 8 kHz
    assert TONE_AMPLITUDE * 0.9 < np.abs(pcm).max() < TONE_AMPLITUDE * 1.1  # right byte order and codec
    assert record.end_reason is EndReason.CALLER_HANGUP
    assert record.protocol_errors == 0
    assert [(t["role"], t.get("interrupted", False)) for t in record.transcript] == [
        ("user", False),
        ("assistant", False),
    ]


@pytest.mark.parametrize("encoding", ["PCMU", "L16"])
async def test_telnyx_call_end_to_end_with_chunks_out_of_order(encoding: str) -> None:
    caller = TelnyxCaller(encoding)
    order = list(range(len(SPEECH)))
    for i in range(3, len(order) - 2, 10):  # every tenth pair overtakes each other
        order[i], order[i + 1] = order[i + 1], order[i]
    async with running(bench()) as server:
        audio, record = await call(server, caller, order)
        row = await server.store.get_call(caller.call_id)
    assert_answered(audio, record)
    assert (row.from_number, row.to_number, row.variables) == ("+13122010094", "+13122123456", {"first_name": "Jane"})


async def test_plivo_call_end_to_end() -> None:
    caller = PlivoCaller()
    async with running(bench()) as server:
        audio, record = await call(server, caller, list(range(len(SPEECH))))
        row = await server.store.get_call(caller.call_id)
    assert_answered(audio, record)
    assert (row.from_number, row.to_number, row.variables) == ("14155550100", "14155550199", {"first_name": "Jane"})
