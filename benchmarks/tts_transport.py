"""ElevenLabs transports compared: WebSocket (the call's multi-context socket, a context per reply)
against HTTP (one streaming request per phrase), both through the real adapter against the local
fake with the same server-side latency model: time to first audio of each request or generation,
synthesis speed, and the cost of setting up a connection (TCP + TLS handshakes).

    python -m ringline.benchmarks.tts_transport [--ttfa-ms 150] [--connect-ms 100] [--replies 5]

Times are from the start of the reply (the moment the responder calls ``Tts.stream``), median
over ``--replies`` replies of three phrases:

- ``phrases ready``: all three phrases are there at once (a scripted line, a fast LLM);
- ``LLM streaming``: the LLM yields a phrase at 300, 600 and 900 ms (its first-token time and pace).

Each is measured twice. WebSocket: a call's first reply (which opens the call's socket) and its
later replies (which find it open). HTTP: with the adapter's default (a client, hence a new
connection, per reply) and with the shared clients the server gives every call
(``clients=HttpClients()``), whose connections stay warm across replies.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from ringline.benchmarks.vendors.elevenlabs import FakeElevenLabs, Latency
from ringline.config.providers import ElevenLabsTtsConfig
from ringline.engine.audio.clock import LoopClock
from ringline.engine.audio.formats import MULAW_8K
from ringline.engine.clients import HttpClients
from ringline.engine.tts.elevenlabs import ElevenLabsTts

KEY = "xi-bench"
PHRASES = ("Sure, I can help with that.", "Your table for two is booked at eight tonight.", "Anything else?")
SCENARIOS = {"phrases ready": (0.0, 0.0, 0.0), "LLM streaming": (0.3, 0.6, 0.9)}


@dataclass(frozen=True, slots=True)
class Timing:
    first_audio: float
    last_audio: float


async def _llm(at: Sequence[float], start: float) -> AsyncIterator[str]:
    loop = asyncio.get_running_loop()
    for text, t in zip(PHRASES, at, strict=True):
        if (delay := start + t - loop.time()) > 0:
            await asyncio.sleep(delay)
        yield text


async def reply(tts: ElevenLabsTts, at: Sequence[float]) -> Timing:
    loop = asyncio.get_running_loop()
    start = loop.time()
    first = last = None
    phrases = set()
    async for audio in tts.stream(_llm(at, start), MULAW_8K):
        last = loop.time() - start
        first = last if first is None else first
        phrases.add(audio.phrase)
    assert first is not None and last is not None and phrases == {0, 1, 2}
    return Timing(first, last)


VARIANTS = (
    "websocket, call's first reply",
    "websocket, later replies",
    "http, connection per reply",
    "http, shared pool",
)


async def measure(fake: FakeElevenLabs, variant: str, at: Sequence[float], replies: int) -> Timing:
    transport = variant.partition(",")[0]
    config = ElevenLabsTtsConfig(provider="elevenlabs", api_key=KEY, base_url=fake.url, transport=transport)
    async with HttpClients() as shared:
        timings = []
        if variant in ("websocket, call's first reply", "http, connection per reply"):
            for _ in range(replies):  # every reply is a new call's
                tts = ElevenLabsTts(config, LoopClock(), clients=shared if transport == "websocket" else None)
                timings.append(await reply(tts, at))
                await tts.aclose()
        else:
            tts = ElevenLabsTts(config, LoopClock(), clients=shared)
            await reply(tts, at)  # warm: later replies find a connection open
            timings = [await reply(tts, at) for _ in range(replies)]
            await tts.aclose()
    return Timing(statistics.median(t.first_audio for t in timings), statistics.median(t.last_audio for t in timings))


async def run(args: argparse.Namespace) -> list[tuple[str, str, Timing]]:
    latency = Latency(
        ttfa_s=args.ttfa_ms / 1000,
        realtime_factor=args.rtf,
        connect_s=args.connect_ms / 1000,
        seconds_per_char=0.06,
    )
    rows = []
    async with FakeElevenLabs(KEY, latency=latency) as fake:
        for scenario, at in SCENARIOS.items():
            for variant in VARIANTS:
                rows.append((scenario, variant, await measure(fake, variant, at, args.replies)))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ttfa-ms", type=float, default=150.0, help="time to first audio per request/generation")
    parser.add_argument("--connect-ms", type=float, default=100.0, help="cost of a new connection")
    parser.add_argument("--rtf", type=float, default=0.1, help="synthesis time per second of audio")
    parser.add_argument("--replies", type=int, default=5)
    args = parser.parse_args(argv)
    rows = asyncio.run(run(args))
    print(
        f"ElevenLabs fake: {args.ttfa_ms:g} ms to first audio per request/generation, {args.connect_ms:g} ms per "
        f"new connection, realtime factor {args.rtf:g}; 3 phrases ({len(''.join(PHRASES)) * 0.06:.1f} s of audio); "
        f"median of {args.replies} replies, ms from the start of the reply"
    )
    print(f"{'scenario':<15} {'transport':<28} {'first audio':>12} {'last audio':>11}")
    for scenario, variant, timing in rows:
        print(f"{scenario:<15} {variant:<28} {timing.first_audio * 1000:>12.0f} {timing.last_audio * 1000:>11.0f}")


if __name__ == "__main__":
    main()
