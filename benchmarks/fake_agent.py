"""A tiny Twilio-speaking agent server for testing the caller simulator (and measuring it alone).

Per call it detects the end of the caller's speech by energy (``eot_silence_ms`` of quiet after
speech, counted in received frames, so it needs no timers), then streams ``reply_s`` of audio in
20 ms media messages paced on an absolute clock (``lead_ms`` sent at once), a mark every
``mark_every`` chunks and one at the end. Caller speech of ``barge_in_ms`` while it talks stops
the reply and sends ``clear``. Optionally it greets first and hangs up after some replies.

Run it alone: ``python -m ringline.benchmarks.fake_agent --port 8765`` (serves /media/twilio).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from aiohttp import WSMsgType, web

from ringline.benchmarks.clips import load_clip
from ringline.benchmarks.recording import ulaw_to_pcm16
from ringline.benchmarks.wire import encode_frames

FRAME_S = 0.020
_ABS = np.abs(ulaw_to_pcm16(bytes(range(256))).astype(np.int32))  # |PCM16| of each mu-law byte


@dataclass(frozen=True, slots=True)
class FakeAgentConfig:
    reply_audio: bytes = b"\x80\x00\x80\x00" * 40  # mu-law 8 kHz; looped to reply_s
    reply_s: float = 1.0
    eot_silence_ms: float = 200.0
    speech_level: float = 500.0  # mean |PCM16| of a frame counted as speech
    lead_ms: float = 60.0  # audio sent ahead of real time at the start of a reply
    mark_every: int = 10  # a mark after every this many chunks (0: only the final mark)
    barge_in_ms: float = 100.0  # caller speech while replying that stops the reply
    greeting_s: float = 0.0
    hangup_after_replies: int | None = None  # close the socket after this many finished replies


@dataclass(slots=True)
class FakeCallRecord:
    """What one connection received, for assertions."""

    events: list[dict[str, Any]] = field(default_factory=list)  # every message except media
    media_seq: list[int] = field(default_factory=list)  # sequenceNumber of each media message
    media_timestamps: list[int] = field(default_factory=list)
    media_chunks: list[int] = field(default_factory=list)
    replies_started: int = 0
    clears_sent: int = 0
    marks_sent: list[str] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)  # set when the handler returned

    def of(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("event") == event]


class FakeAgent:
    def __init__(self, config: FakeAgentConfig | None = None, *, keep_records: bool = True) -> None:
        self.config = config or FakeAgentConfig()
        self.keep_records = keep_records  # False for a long-running server: forget ended calls
        self.calls: list[FakeCallRecord] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/media/twilio", self.handle)
        app.router.add_get("/health", _health)
        return app

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        record = FakeCallRecord()
        self.calls.append(record)
        try:
            await _FakeCall(ws, record, self.config).run()
        finally:
            record.done.set()
            if not self.keep_records:
                self.calls.remove(record)
        return ws


async def _health(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


class _FakeCall:
    def __init__(self, ws: web.WebSocketResponse, record: FakeCallRecord, config: FakeAgentConfig) -> None:
        self.ws = ws
        self.record = record
        self.config = config
        self.sid = ""
        self.speaker: asyncio.Task[None] | None = None
        self.heard_speech = 0  # speech frames in the current caller turn
        self.quiet = 0  # silent frames since the last speech frame
        self.replies_done = 0

    async def run(self) -> None:
        eot = round(self.config.eot_silence_ms / 20)
        barge = round(self.config.barge_in_ms / 20)
        try:
            async for msg in self.ws:
                if msg.type is not WSMsgType.TEXT:
                    continue
                data = orjson.loads(msg.data)
                event = data.get("event")
                if event != "media":
                    self.record.events.append(data)
                if event == "start":
                    self.sid = data["streamSid"]
                    if self.config.greeting_s > 0:
                        self._speak(self.config.greeting_s)
                elif event == "media":
                    await self._on_media(data, eot, barge)
                elif event == "stop":
                    break
                if self.config.hangup_after_replies is not None and (
                    self.replies_done >= self.config.hangup_after_replies
                ):
                    break
        finally:
            await self._silence()
            await self.ws.close()

    async def _on_media(self, data: dict[str, Any], eot: int, barge: int) -> None:
        media = data["media"]
        self.record.media_seq.append(int(data["sequenceNumber"]))
        self.record.media_chunks.append(int(media["chunk"]))
        self.record.media_timestamps.append(int(media["timestamp"]))
        frame = np.frombuffer(base64.b64decode(media["payload"]), dtype=np.uint8)
        if _ABS[frame].mean() >= self.config.speech_level:
            self.heard_speech += 1
            self.quiet = 0
            if self.speaker is not None and not self.speaker.done() and self.heard_speech >= barge:
                self.speaker.cancel()
                self.speaker = None
                self.record.clears_sent += 1
                await self.ws.send_str(orjson.dumps({"event": "clear", "streamSid": self.sid}).decode())
        else:
            self.quiet += 1
            if self.heard_speech and self.quiet >= eot:
                self.heard_speech = 0
                self._speak(self.config.reply_s)

    def _speak(self, seconds: float) -> None:
        if self.speaker is not None:
            self.speaker.cancel()
        self.record.replies_started += 1
        self.speaker = asyncio.create_task(self._stream(seconds))

    async def _silence(self) -> None:
        if self.speaker is not None:
            self.speaker.cancel()
            await asyncio.gather(self.speaker, return_exceptions=True)

    async def _stream(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        frames = encode_frames(self.config.reply_audio)
        n = max(1, round(seconds / FRAME_S))
        reply_no = self.record.replies_started
        template = '{"event":"media","streamSid":"' + self.sid + '","media":{"payload":"%s"}}'
        t0 = loop.time() - self.config.lead_ms / 1000.0
        for j in range(n):
            delay = t0 + j * FRAME_S - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await self.ws.send_str(template % frames[j % len(frames)])
            every = self.config.mark_every
            if every and (j + 1) % every == 0 and j + 1 < n:
                await self._mark(f"r{reply_no}-{j + 1}")
        await self._mark(f"r{reply_no}-end")
        await asyncio.sleep(max(0.0, t0 + n * FRAME_S - loop.time()))
        self.replies_done += 1

    async def _mark(self, name: str) -> None:
        self.record.marks_sent.append(name)
        await self.ws.send_str(orjson.dumps({"event": "mark", "streamSid": self.sid, "mark": {"name": name}}).decode())


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m ringline.benchmarks.fake_agent")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--reply-s", type=float, default=1.0)
    p.add_argument("--eot-ms", type=float, default=200.0)
    args = p.parse_args()
    config = FakeAgentConfig(reply_audio=load_clip("thanks.wav"), reply_s=args.reply_s, eot_silence_ms=args.eot_ms)

    async def serve() -> None:
        runner = web.AppRunner(FakeAgent(config, keep_records=False).app())
        await runner.setup()
        await web.TCPSite(runner, args.host, args.port).start()
        print(f"fake agent on ws://{args.host}:{args.port}/media/twilio", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    try:
        import uvloop
    except ImportError:  # pragma: no cover
        asyncio.run(serve())
    else:
        uvloop.run(serve())


if __name__ == "__main__":
    main()
