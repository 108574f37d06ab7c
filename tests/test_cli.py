"""The ``ringline`` command as an operator runs it: a real process, real signals."""

import asyncio
import re
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


async def test_demo_holds_a_conversation_with_a_tool_call_and_a_barge_in_on_embedded_models(tmp_path, capsys):
    """The whole offline stack (Moonshine, the scripted agent, Piper) through the Twilio socket:
    the caller books a table (two turns, then the tool), asks the hours, talks over the answer
    and says thanks; the agent says goodbye and hangs up."""
    out = tmp_path / "demo.wav"
    assert await run_demo(config=None, out=out) == 0
    printed = capsys.readouterr().out
    assert re.search(r"moonshine ready in [\d.]+ s", printed) and re.search(r"piper ready in [\d.]+ s", printed)
    transcript: list[str] = []
    for line in printed.split("Transcript\n", 1)[1].split("\n\n", 1)[0].splitlines():
        if transcript and line.startswith("  caller  ") and transcript[-1].startswith("  caller  "):
            transcript[-1] += " " + line.removeprefix("  caller  ")  # a pause split the turn, as on a busy machine
        else:
            transcript.append(line)
    expected = [
        r"  agent   Thanks for calling Ringline Bistro, how can I help\?",
        r"  caller  I'd like to book a table for two\b.*",
        r"  agent   Lovely\. And for what time\?",
        r"  caller  Seven o'clock tonight\b.*",
        r"  agent   You're booked for two at seven o'clock\. Your confirmation number is R 1001\. Anything else\?",
        r"  caller  What time do you open tomorrow\?",
        r"  agent   We're open from noon .*  \[interrupted\]",
        r"  caller  Thank you so much for your help\.",
        r"  agent   You're welcome\. Thanks for calling Ringline Bistro\. Goodbye!",
        r'  tool    book_table \{"party_size": "two", "time": "seven o\'clock"\} -> R 1001',
    ]
    assert len(transcript) == len(expected), transcript
    for line, pattern in zip(transcript, expected, strict=True):
        assert re.fullmatch(pattern, line, re.IGNORECASE), (line, pattern)
    assert "Call ended: agent_hangup" in printed
    with wave.open(str(out)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (2, 2, 8000)
        assert w.getnframes() > 8000 * 15  # a call of several turns
