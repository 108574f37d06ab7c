"""WebRTC callers (aiortc) against a running server: reply latency and density of browser calls.

    python -m ringline.benchmarks.webrtc [--calls 1,10] [--turns 2] [--codec opus|PCMU|PCMA]
        [--config config/bench.toml]

Starts ``ringline serve`` pinned to core 0 with a store in a temporary directory, makes an API key
in it, and for each N runs N callers at once in this process (pinned to core 1): each offers audio
(``POST /api/v1/webrtc/offer``), speaks a benchmark clip per turn as its microphone track in real
time, and measures the reply latency from the end of its speech (the last speech frame its track
emitted) to the first reply frame with sound that its remote track decodes. Prints one markdown
row per N: latency median/p95, turns answered, and the server's CPU and RSS.

Host candidates are 127.0.0.1 only, on both sides (no STUN): only loopback is targeted, every call
is bounded in time, and the server it started is stopped with SIGTERM at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import fractions
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import av
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from ringline.benchmarks.clips import SPEECH_CLIPS, load_clip
from ringline.engine.audio.g711 import ulaw_decode
from ringline.engine.transports.webrtc.ice import use_host_addresses

RATE = 8000
FRAME = RATE // 50  # 20 ms
SOUND_RMS = 300.0
"""A received 20 ms frame this loud (PCM16 RMS) is reply audio, not silence or codec noise."""
REPLY_END_S = 0.6
"""A reply is over after this long without sound."""


class SpeechTrack(MediaStreamTrack):
    """A microphone that speaks the clips it is given (8 kHz PCM16), else silence, in real time.
    ``spoke`` resolves to the loop time at which each clip's last frame had played."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._pending: list[tuple[bytes, asyncio.Future[float]]] = []
        self._audio = b""
        self._done: asyncio.Future[float] | None = None
        self._start: float | None = None
        self._pts = 0

    def speak(self, pcm: bytes) -> asyncio.Future[float]:
        spoke: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._pending.append((pcm, spoke))
        return spoke

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        else:
            self._pts += FRAME
            await asyncio.sleep(max(0.0, self._start + self._pts / RATE - loop.time()))
        if not self._audio and self._done is not None:
            if not self._done.done():
                self._done.set_result(loop.time())  # the previous frame, the clip's last, has played
            self._done = None
        if not self._audio and self._pending:
            self._audio, self._done = self._pending.pop(0)
        chunk, self._audio = self._audio[: FRAME * 2], self._audio[FRAME * 2 :]
        frame = av.AudioFrame(format="s16", layout="mono", samples=FRAME)
        frame.planes[0].update(chunk.ljust(FRAME * 2, b"\0"))
        frame.sample_rate, frame.pts, frame.time_base = RATE, self._pts, fractions.Fraction(1, RATE)
        return frame


@dataclass
class Ear:
    """What the caller hears: each decoded frame's arrival time and loudness."""

    frames: int = 0
    sound: list[float] = field(default_factory=list)
    """Loop times of the frames with sound."""
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def listen(self, track: MediaStreamTrack) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            self.frames += 1
            samples = frame.to_ndarray().astype(np.float64)  # type: ignore[union-attr]
            if samples.size and float(np.sqrt(np.mean(samples * samples))) >= SOUND_RMS:
                self.sound.append(loop.time())
                self.changed.set()

    async def reply_after(self, t: float, within_s: float) -> tuple[float, float] | None:
        """(first sound, last sound) of the reply that starts after ``t``; None if none in time."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        while True:
            after = [s for s in self.sound if s > t]
            now = loop.time()
            if after and now - after[-1] >= REPLY_END_S:
                return after[0], after[-1]
            if now >= deadline:
                return (after[0], after[-1]) if after else None
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), min(REPLY_END_S / 3, deadline - now))
            except TimeoutError:
                pass


@dataclass
class BrowserCall:
    call_id: str = ""
    codec: str = ""
    latencies_ms: list[float] = field(default_factory=list)
    turns: int = 0
    frames_heard: int = 0
    error: str = ""
    answer: dict[str, Any] = field(default_factory=dict)


def clip_pcm(name: str) -> bytes:
    return ulaw_decode(load_clip(name))


async def browser_call(
    base_url: str,
    key: str,
    clips: list[bytes],
    *,
    codec: str | None = None,
    agent: str | None = None,
    reply_timeout_s: float = 10.0,
    pause_s: float = 0.3,
) -> BrowserCall:
    """One call: offer, then each clip as one turn, waiting for the reply's end; then hang up."""
    result = BrowserCall()
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    mic = SpeechTrack()
    ear = Ear()
    transceiver = pc.addTransceiver(mic, direction="sendrecv")
    if codec is not None:
        wanted = f"audio/{codec}".lower()
        transceiver.setCodecPreferences(
            [c for c in RTCRtpSender.getCapabilities("audio").codecs if c.mimeType.lower() == wanted]
        )
    listening: asyncio.Task[None] | None = None
    try:
        await pc.setLocalDescription(await pc.createOffer())
        body: dict[str, Any] = {"sdp": pc.localDescription.sdp, "type": "offer"}
        if agent is not None:
            body["agent"] = agent
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{base_url}/api/v1/webrtc/offer", json=body, headers={"Authorization": f"Bearer {key}"}) as resp,
        ):
            reply = await resp.json()
            if resp.status != 200:
                result.error = f"offer answered {resp.status}: {reply.get('error')}"
                return result
        result.answer = data = reply["data"]
        result.call_id, result.codec = data["call_id"], data["codec"]
        await pc.setRemoteDescription(RTCSessionDescription(data["sdp"], "answer"))
        listening = asyncio.create_task(ear.listen(transceiver.receiver.track), name="ear")
        for pcm in clips:
            await asyncio.sleep(pause_s)
            spoke = await asyncio.wait_for(mic.speak(pcm), len(pcm) / 2 / RATE + 10)
            heard = await ear.reply_after(spoke, reply_timeout_s)
            result.turns += 1
            if heard is not None:
                result.latencies_ms.append((heard[0] - spoke) * 1000)
    except Exception as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        result.frames_heard = ear.frames
        mic.stop()
        await pc.close()
        if listening is not None:
            listening.cancel()
            await asyncio.gather(listening, return_exceptions=True)
    return result


# ---- the benchmark --------------------------------------------------------------------------


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


async def _run_calls(base: str, key: str, n: int, turns: int, codec: str | None) -> list[BrowserCall]:
    async def one(i: int) -> BrowserCall:
        await asyncio.sleep(i * 0.1)  # a ramp: offers do not all land in the same instant
        clips = [clip_pcm(SPEECH_CLIPS[(i + t) % len(SPEECH_CLIPS)]) for t in range(turns)]
        return await asyncio.wait_for(browser_call(base, key, clips, codec=codec), 30 + turns * 15)

    return await asyncio.gather(*(one(i) for i in range(n)))


def measure(base: str, key: str, pid: int, n: int, turns: int, codec: str | None) -> dict[str, Any]:
    import psutil

    proc = psutil.Process(pid)
    cpu0, t0 = proc.cpu_times(), time.monotonic()
    calls = asyncio.run(_run_calls(base, key, n, turns, codec))
    cpu1, t1 = proc.cpu_times(), time.monotonic()
    latencies = [ms for c in calls for ms in c.latencies_ms]
    errors = [c.error for c in calls if c.error]
    busy = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
    return {
        "calls": n,
        "codec": next((c.codec for c in calls if c.codec), codec or "?"),
        "latency_median_ms": statistics.median(latencies) if latencies else float("nan"),
        "latency_p95_ms": _percentile(latencies, 0.95),
        "answered": f"{len(latencies)}/{n * turns}",
        "server_cpu_pct": 100 * busy / (t1 - t0),
        "server_rss_mb": proc.memory_info().rss / 1e6,
        "errors": errors[:3],
    }


def main(argv: list[str] | None = None) -> int:
    from ringline.benchmarks.concurrency import REPO, started_server

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", default="1,10", help="comma-separated numbers of simultaneous calls")
    parser.add_argument("--turns", type=int, default=2)
    parser.add_argument("--codec", choices=("opus", "PCMU", "PCMA"), default=None, help="default: the server's choice")
    parser.add_argument("--config", type=Path, default=REPO / "config" / "bench.toml")
    parser.add_argument("--server-core", type=int, default=0)
    parser.add_argument("--caller-core", type=int, default=1, help="this process's core (the callers)")
    args = parser.parse_args(argv)
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > args.caller_core:
        os.sched_setaffinity(0, {args.caller_core})
    args.url = args.server_pid = None
    args.fake, args.protocol = False, "twilio"
    use_host_addresses(["127.0.0.1"])
    rows = []
    with started_server(args) as (ws_url, pid):
        base = ws_url.replace("ws://", "http://", 1).split("/media/")[0]
        key = asyncio.run(_make_key(args.data_dir))
        for n in (int(x) for x in args.calls.split(",")):
            rows.append(measure(base, key, pid, n, args.turns, args.codec))
            print(rows[-1], file=sys.stderr)
    print("| N | codec | median ms | p95 ms | turns answered | server CPU % | server RSS MB |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['calls']} | {r['codec']} | {r['latency_median_ms']:.0f} | {r['latency_p95_ms']:.0f} | "
            f"{r['answered']} | {r['server_cpu_pct']:.0f} | {r['server_rss_mb']:.0f} |"
        )
    return 0 if all(not r["errors"] for r in rows) else 1


async def _make_key(data_dir: Path) -> str:
    from ringline.api.http import generate_key, hash_key
    from ringline.api.store import open_store

    store = await open_store(f"sqlite:///{data_dir / 'ringline.db'}")
    try:
        key = generate_key()
        await store.create_api_key("webrtc-bench", key[:8], hash_key(key), ["calls:write", "calls:read"])
        return key
    finally:
        await store.close()


if __name__ == "__main__":
    sys.exit(main())
