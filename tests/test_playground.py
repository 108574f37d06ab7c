"""The playground page end to end: Debian's Chromium (headless, driven by playwright-core from
``tests/playground/run.mjs``) opens ``/playground`` on the real server, starts a call, holds "talk"
while its fake microphone speaks a benchmark clip, and must show the agent's reply text, draw the
turn's latency waterfall and receive the reply's audio. WebRTC runs on 127.0.0.1 only. The page's
screenshot is kept in the test's tmp dir and copied to ``artifacts/playground.png``.

Needs ``node`` and, once, ``cd tests/playground && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci``.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import wave
from pathlib import Path

import numpy as np
import pytest
import soxr

from ringline.api.state import CALLS
from ringline.benchmarks.webrtc import clip_pcm
from ringline.config.settings import Settings
from ringline.engine.record import EndReason
from tests.api_fixtures import running
from tests.test_webrtc import REPLY, bench_settings

pytestmark = pytest.mark.timeout(90)

HERE = Path(__file__).parent / "playground"
ARTIFACT = Path(__file__).parent.parent / "artifacts" / "playground.png"
CHROMIUM = "/usr/bin/chromium"
RATE = 48000
LEAD_S = 1.0
"""Silence before the speech: the fake microphone starts at getUserMedia, before the call is up."""


def speech_wav(path: Path) -> float:
    """A 48 kHz 16-bit WAV (what Chromium's fake capture reads) of a benchmark clip between
    silences; returns how long to hold "talk"."""
    speech = soxr.resample(np.frombuffer(clip_pcm("book_table.wav"), dtype=np.int16), 8000, RATE)
    audio = np.concatenate([np.zeros(int(RATE * LEAD_S)), speech, np.zeros(RATE)]).astype(np.int16)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes(audio.tobytes())
    return len(audio) / RATE


def playground_settings() -> Settings:
    """The bench agent with provider latencies, so the waterfall has something to show."""
    data = bench_settings().model_dump()
    agent = data["agents"]["default"]
    agent["stt"]["final_latency_ms"] = 80
    agent["llm"]["ttft_ms"] = 250
    agent["tts"]["ttfb_ms"] = 120
    return Settings.model_validate(data)


def require_tools() -> None:
    """Missing tools fail the test (CI installs them), with what to do."""
    assert shutil.which("node"), "node is needed to drive Chromium"
    assert Path(CHROMIUM).exists(), "Debian's chromium is needed"
    assert (HERE / "node_modules" / "playwright-core").is_dir(), (
        "playwright-core is missing: cd tests/playground && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci"
    )


async def test_the_playground_talks_to_an_agent_in_chromium(tmp_path: Path) -> None:
    require_tools()
    wav = tmp_path / "speech.wav"
    talk_s = speech_wav(wav)
    screenshot = tmp_path / "playground.png"
    async with running(playground_settings()) as server:
        key = await server.key("calls:write", "calls:read")
        proc = await asyncio.create_subprocess_exec(
            "node",
            str(HERE / "run.mjs"),
            server.url,
            str(screenshot),
            str(wav),
            f"{talk_s:.2f}",
            env=os.environ | {"RINGLINE_API_KEY": key, "CHROMIUM": CHROMIUM},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), 75)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise
        assert proc.returncode == 0, err.decode()[-3000:]
        shown = json.loads(out.decode().strip().splitlines()[-1])
        record = await asyncio.wait_for(server.app[CALLS].wait_finished(shown["callId"]), 15)
    ARTIFACT.parent.mkdir(exist_ok=True)
    shutil.copyfile(screenshot, ARTIFACT)

    assert {"role": "assistant", "text": REPLY} in shown["lines"]
    assert {"role": "user", "text": "Tell me more."} in shown["lines"]
    stages = {s["stage"]: s for s in shown["stages"]}
    assert list(stages) == [
        "user_stopped",
        "stt_final",
        "turn_committed",
        "llm_first_token",
        "tts_first_audio",
        "first_audio_sent",
    ]
    for name in ("stt_final", "llm_first_token", "tts_first_audio", "first_audio_sent"):
        assert int(stages[name]["ms"]) > 0 and stages[name]["width"] != "0%", stages[name]
    assert int(stages["first_audio_sent"]["ms"]) >= 250 + 120  # the LLM's and TTS's latencies at least
    stats = shown["stats"]
    assert stats["packetsReceived"] > 50 and stats["bytesReceived"] > 0
    assert stats["totalAudioEnergy"] > 0, "only silence reached the browser"
    assert shown["problems"] == []
    assert screenshot.stat().st_size > 10_000
    assert record.end_reason is EndReason.CALLER_HANGUP
    assert record.transcript[:2] == [
        {"role": "user", "content": "Tell me more."},
        {"role": "assistant", "content": REPLY},
    ]
