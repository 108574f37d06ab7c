"""Serve the Deepgram, OpenAI chat and ElevenLabs fakes together, standalone, for benchmarks that
point a Ringline server at them from another process (so the fakes' CPU is not the server's)::

    python -m ringline.benchmarks.vendors.serve --stt-final-ms 150 --llm-ttft-ms 350 --tts-ttfa-ms 150

Prints one JSON line on stdout once all three listen on 127.0.0.1 (``{"deepgram": {"url",
"api_key"}, "openai": {...}, "elevenlabs": {...}}``), then serves until SIGTERM or SIGINT. On
SIGUSR1 it prints how late its own event loop ran a 10 ms timer since the last SIGUSR1 (one JSON
line: ``lag_p50_ms``, ``lag_p99_ms``, ``lag_max_ms``, ``samples``), so a benchmark can tell a slow
fake from a slow server, and collects its garbage: it collects at start-up and at each SIGUSR1
only (``collector.hold``), so send one between runs.
Every request is answered the same way. Deepgram transcribes each utterance as
``--stt-transcript``, ``--stt-final-ms`` after it is asked for (or after its own endpointing).
OpenAI streams ``--llm-text``, its first token ``--llm-ttft-ms`` after the request (the role
chunk just before it), ``--llm-tokens-per-s`` after. ElevenLabs voices each generation
``--tts-ttfa-ms`` to first audio, ``--tts-rtf`` times real time after, ``--tts-seconds-per-char``
of audio per character.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time

from ringline.benchmarks import collector
from ringline.benchmarks.vendors.deepgram import FakeDeepgram
from ringline.benchmarks.vendors.elevenlabs import FakeElevenLabs, Latency
from ringline.benchmarks.vendors.openai import FakeOpenAi, Script

DEEPGRAM_KEY = "dg-bench-key"
OPENAI_KEY = "sk-bench-key"
ELEVENLABS_KEY = "xi-bench-key"


LAG_PROBE_S = 0.01


class LagProbe:
    """How late this loop runs a ``LAG_PROBE_S`` timer, since the last ``report``."""

    def __init__(self) -> None:
        self.samples: list[float] = []

    async def run(self) -> None:
        while True:
            started = time.monotonic()
            await asyncio.sleep(LAG_PROBE_S)
            self.samples.append(max(0.0, time.monotonic() - started - LAG_PROBE_S))

    def report(self) -> None:
        ordered, self.samples = sorted(self.samples), []
        collector.hold()  # between runs: collect what the last one left, none while one runs

        def pct(q: float) -> float:
            return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] * 1000 if ordered else 0.0

        print(
            json.dumps({"lag_p50_ms": pct(50), "lag_p99_ms": pct(99), "lag_max_ms": pct(100), "samples": len(ordered)}),
            flush=True,
        )


async def serve(args: argparse.Namespace) -> None:
    deepgram = FakeDeepgram(
        api_key=DEEPGRAM_KEY, fallback=args.stt_transcript, final_latency_ms=args.stt_final_ms, idle_timeout_s=60.0
    )
    # The fake's ttft_s is to its first chunk, the role chunk; the first token follows one step later.
    step = 1 / args.llm_tokens_per_s if args.llm_tokens_per_s else 0.0
    ttft = max(0.0, args.llm_ttft_ms / 1000 - step)
    reply = Script(text=args.llm_text, ttft_s=ttft, tokens_per_s=args.llm_tokens_per_s)
    openai = FakeOpenAi(OPENAI_KEY, default=reply)
    latency = Latency(
        ttfa_s=args.tts_ttfa_ms / 1000, realtime_factor=args.tts_rtf, seconds_per_char=args.tts_seconds_per_char
    )
    elevenlabs = FakeElevenLabs(ELEVENLABS_KEY, latency=latency)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    probe = LagProbe()
    probing = asyncio.create_task(probe.run())
    loop.add_signal_handler(signal.SIGUSR1, probe.report)
    async with deepgram, openai, elevenlabs:
        ready = {
            "deepgram": {"url": deepgram.url, "api_key": DEEPGRAM_KEY},
            "openai": {"url": openai.url, "api_key": OPENAI_KEY},
            "elevenlabs": {"url": elevenlabs.url, "api_key": ELEVENLABS_KEY},
        }
        collector.hold()
        print(json.dumps(ready), flush=True)
        await stop.wait()
        probing.cancel()
        print(
            f"served {len(deepgram.connections)} Deepgram sockets, {len(openai.requests)} chat completions, "
            f"{len(elevenlabs.requests)} ElevenLabs requests",
            file=sys.stderr,
        )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m ringline.benchmarks.vendors.serve", description=__doc__.split("\n")[0])
    p.add_argument("--stt-transcript", default="Tell me more.")
    p.add_argument("--stt-final-ms", type=float, default=150.0)
    p.add_argument("--llm-text", default="Sure, here is the answer to that.")
    p.add_argument("--llm-ttft-ms", type=float, default=350.0)
    p.add_argument("--llm-tokens-per-s", type=float, default=50.0)
    p.add_argument("--tts-ttfa-ms", type=float, default=150.0)
    p.add_argument("--tts-rtf", type=float, default=0.2)
    p.add_argument("--tts-seconds-per-char", type=float, default=0.03)
    args = p.parse_args(argv)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        asyncio.run(serve(args))
        return
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(serve(args))


if __name__ == "__main__":
    main()
