"""The ``ringline`` command as an operator runs it: a real process, real signals."""

import asyncio
import signal
import socket
import sys
import wave

import aiohttp
import pytest

from ringline.demo import run_demo

pytestmark = pytest.mark.timeout(90)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def start_server(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ringline", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )


async def test_bad_config_exits_2_with_the_reason(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text("[agents.default.turn]\nsilence_ms = -5\n")
    proc = await start_server("serve", "--config", str(config), "--port", "0")
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    assert "agents.default.turn.silence_ms: Input should be greater than or equal to 0" in err.decode()


async def test_sigterm_ends_live_calls_cleanly_and_exits_0():
    port = free_port()
    proc = await start_server("serve", "--config", "config/bench.toml", "--port", str(port))
    try:
        banner = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert f"127.0.0.1:{port}" in banner.decode()
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/health") as resp:
                assert (await resp.json()) == {"status": "ok", "calls": 0}
            ws = await session.ws_connect(f"ws://127.0.0.1:{port}/media/twilio")
            await ws.send_str('{"event":"start","streamSid":"MZ1","start":{"streamSid":"MZ1","callSid":"CA1"}}')
            for _ in range(100):  # the call is live once /health counts it
                async with session.get(f"http://127.0.0.1:{port}/health") as resp:
                    if (await resp.json())["calls"] == 1:
                        break
            else:
                pytest.fail("the call never went live")
            proc.send_signal(signal.SIGTERM)
            msg = await ws.receive(timeout=15)
            assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0
        assert "call ended: server_shutdown" in err.decode()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_demo_holds_a_conversation_and_writes_a_stereo_wav(tmp_path, capsys):
    out = tmp_path / "demo.wav"
    assert await run_demo(config=None, out=out) == 0
    printed = capsys.readouterr().out
    assert "caller  Hi, I'd like to book a table for two." in printed
    assert "agent   We open at noon tomorrow" in printed
    assert "Call ended: agent_hangup" in printed
    with wave.open(str(out)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (2, 2, 8000)
        assert w.getnframes() > 8000 * 10  # a call of several turns
