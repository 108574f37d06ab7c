"""Ringline and baresip, a real SIP phone, calling each other on 127.0.0.1: baresip speaks a WAV file
(a benchmark clip) and records what it hears; Ringline's agent (config/bench.toml: every reply is 1.0 s
of a 440 Hz tone) records the call. Each side's recording must hold the other's speech."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from ringline.api.app import CALLS
from ringline.api.store import CallStatus, Role
from ringline.benchmarks.clips import load_clip
from ringline.engine.audio.g711 import ulaw_decode
from ringline.engine.call import Call
from ringline.engine.turns import TurnState
from tests.api_fixtures import API
from tests.sip_fixtures import HOST, Baresip, SipServer, read_wav, sip_server, write_wav

pytestmark = pytest.mark.timeout(45)

RATE = 8000
TONE_HZ = 440.0  # the bench TTS's tone
REPLY_S = 1.0
CLIP = ulaw_decode(load_clip("book_table.wav"))
CALLER, CALLEE = "+14155550100", "+14155550199"  # outbound: our number on the trunk, baresip's account


def match(recording: np.ndarray, clip: np.ndarray) -> float:
    """The best normalized cross-correlation of ``clip`` against any stretch of ``recording`` (1.0: the
    very same samples, scaled)."""
    x, c = recording.astype(np.float64), clip.astype(np.float64)
    if len(x) < len(c):
        return 0.0
    n = 1 << (len(x) + len(c)).bit_length()
    dots = np.fft.irfft(np.fft.rfft(x, n) * np.conj(np.fft.rfft(c, n)), n)[: len(x) - len(c) + 1]
    energy = np.cumsum(np.concatenate(([0.0], x * x)))
    windows = np.sqrt(np.maximum(energy[len(c) :] - energy[: len(x) - len(c) + 1], 1e-9))
    return float(np.max(dots / (windows * np.linalg.norm(c))))


def tone_seconds(samples: np.ndarray, hz: float = TONE_HZ) -> float:
    """How long ``samples`` hold a loud tone whose strongest frequency is ``hz`` (20 ms blocks)."""
    blocks = samples[: len(samples) // 160 * 160].reshape(-1, 160).astype(np.float64)
    loud = np.sqrt(np.mean(blocks * blocks, axis=1)) > 1000
    spectrum = np.abs(np.fft.rfft(blocks * np.hanning(160), n=1600, axis=1))
    peak = np.argmax(spectrum, axis=1) * RATE / 1600
    return float(np.sum(loud & (np.abs(peak - hz) < 20))) * 0.020


async def live_call(server: SipServer, *, timeout_s: float = 10.0) -> Call:
    async with asyncio.timeout(timeout_s):
        while True:
            calls = (await server.api.store.list_calls()).items
            if calls and calls[0].status is CallStatus.IN_PROGRESS:
                return await server.api.app[CALLS].wait_live(calls[0].id)
            await asyncio.sleep(0.02)


async def replied(call: Call, *, timeout_s: float = 15.0) -> None:
    """Once the agent has answered and is listening again: its reply played out."""
    async with asyncio.timeout(timeout_s):
        while True:
            if call.turn_state is TurnState.LISTENING and any(m["role"] == "assistant" for m in call.transcript()):
                return
            await asyncio.sleep(0.05)


async def ended(server: SipServer, *, timeout_s: float = 5.0):
    async with asyncio.timeout(timeout_s):
        while True:
            calls = (await server.api.store.list_calls()).items
            if len(calls) == 1 and calls[0].status is CallStatus.ENDED:
                return calls[0]
            await asyncio.sleep(0.02)


def speaking(tmp_path: Path) -> Path:
    """The clip, then 6 s of silence (baresip's aufile stops at the end of its file)."""
    return write_wav(tmp_path / "caller.wav", CLIP + bytes(2 * RATE * 6))


async def test_baresip_calls_ringline_and_each_hears_the_other(tmp_path: Path) -> None:
    async with sip_server(recording=True) as server, Baresip(tmp_path / "baresip", speaking(tmp_path)) as phone:
        response = await phone.command("dial", f"sip:ringline@{HOST}:{server.sip_port}")
        assert response.get("ok"), response
        await phone.event("CALL_ESTABLISHED")
        call = await live_call(server)
        await replied(call)
        await asyncio.sleep(0.3)  # the reply's last packets on their way to baresip's recorder
        await phone.command("hangup")
        await phone.event("CALL_CLOSED")
        row = await ended(server)
        messages = [(m.role, m.content) for m in await server.api.store.list_messages(row.id)]
    assert messages == [(Role.USER, "Tell me more."), (Role.ASSISTANT, "Sure, here is the answer")]
    assert row.end_reason == "caller_hangup"
    heard = phone.recording("dec")
    assert tone_seconds(heard) == pytest.approx(REPLY_S, abs=0.1), phone.log
    assert row.recording_path is not None
    caller_side, rate = read_wav(Path(row.recording_path))  # the left channel: the caller
    assert rate == RATE
    assert match(caller_side, np.frombuffer(CLIP, dtype="<i2")) > 0.8


async def test_ringline_calls_baresip_and_each_hears_the_other(tmp_path: Path) -> None:
    """Outbound, through the control API (``POST /calls`` from a number on a SIP trunk whose host is
    baresip): baresip answers at once and speaks first, as a callee does; the agent answers its turn."""
    async with (
        sip_server(recording=True) as server,
        Baresip(tmp_path / "baresip", speaking(tmp_path), user=CALLEE) as phone,
    ):
        key = await server.api.key()
        trunk = {"name": "baresip", "config": {"host": HOST, "port": phone.sip_port, "transport": "udp"}}
        async with server.api.post(f"{API}/sip-trunks", key=key, json=trunk) as resp:
            assert resp.status == 201, await resp.text()
            trunk_id = (await resp.json())["data"]["id"]
        number = {"number": CALLER, "provider": "sip", "sip_trunk_id": trunk_id}
        async with server.api.post(f"{API}/phone-numbers", key=key, json=number) as resp:
            assert resp.status == 201, await resp.text()
        async with server.api.post(f"{API}/calls", key=key, json={"to": CALLEE, "from": CALLER}) as resp:
            assert resp.status == 201, await resp.text()
            call_id = (await resp.json())["data"]["id"]
        await phone.event("CALL_ESTABLISHED")
        call = await live_call(server)
        assert call.call_id == call_id
        await replied(call)
        await asyncio.sleep(0.3)  # the reply's last packets on their way to baresip's recorder
        await phone.command("hangup")
        await phone.event("CALL_CLOSED")
        row = await ended(server)
        messages = [(m.role, m.content) for m in await server.api.store.list_messages(row.id)]
    assert messages == [(Role.USER, "Tell me more."), (Role.ASSISTANT, "Sure, here is the answer")]
    assert row.end_reason == "caller_hangup"
    assert tone_seconds(phone.recording("dec")) == pytest.approx(REPLY_S, abs=0.1), phone.log
    assert row.recording_path is not None
    caller_side, rate = read_wav(Path(row.recording_path))
    assert rate == RATE
    assert match(caller_side, np.frombuffer(CLIP, dtype="<i2")) > 0.8
