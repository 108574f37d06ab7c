"""Embedded TTS benchmark: Piper (joe voice) and eSpeak NG, in-process, through the ``Tts`` seam.

    python -m ringline.benchmarks.tts_embedded [--engines piper,piper-w2,espeak] [--repeats 15]
        [--rounds 5] [--max-concurrency 32] [--grow-ms 200] [--json out.json]

Each engine runs in a fresh child process (so load time and memory are its own) and reports:

- load s: ``warm_up`` (import, load the model, speak one short phrase): what the server waits for.
- first audio median/p95 ms: stream start -> first ``SpeechAudio`` of ``SENTENCE`` (12 words),
  one synthesis at a time, ``--repeats`` times.
- RTF: synthesis time of the whole sentence / its audio duration (median; 0.1 = ten times faster
  than real time).
- RSS MB: resident memory of the child at the end, and its growth over the child before loading.
- concurrent: the most syntheses started at once whose slowest first audio stays within
  ``--grow-ms`` of one synthesis alone; k = 1, 2, 3, 4, 6, 8, ... up to ``--max-concurrency``.
  Each of ``--rounds`` rounds times one synthesis alone and then k at once (so both see the same
  machine), and the medians over rounds are compared.

``piper`` has ``workers = 1`` (one inference at a time, spread over every core), ``piper-w2``
``workers = 2`` (two at once, the cores split between them). The machine is shared: the host's
load average is printed with the results; repeat runs and compare medians.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

SENTENCE = "Thanks for calling, your table for four is booked for eight tonight."
"""12 words: a typical first phrase of a reply."""
ENGINES: dict[str, dict[str, Any]] = {
    "piper": {"provider": "piper", "workers": 1},
    "piper-w2": {"provider": "piper", "workers": 2},
    "espeak": {"provider": "espeak"},
}
CONCURRENCY_STEPS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)


def percentile(values: list[float], p: float) -> float:
    """Linear interpolation between closest ranks."""
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


# -- child: one engine --------------------------------------------------------------------------


async def _one(text: str) -> AsyncIterator[str]:
    yield text


async def _speak_once(tts: Any) -> tuple[float, float, float]:
    """(first audio s, whole synthesis s, audio s) of ``SENTENCE``."""
    from ringline.engine.audio.formats import MULAW_8K

    began = time.perf_counter()
    first = None
    audio = 0.0
    async for item in tts.stream(_one(SENTENCE), MULAW_8K):
        if first is None:
            first = time.perf_counter() - began
        audio += item.chunk.duration
    assert first is not None, "no audio"
    return first, time.perf_counter() - began, audio


async def _measure(engine: str, repeats: int, rounds: int, max_concurrency: int, grow_ms: float) -> dict[str, Any]:
    import psutil
    from pydantic import TypeAdapter

    from ringline.config.providers import TtsConfig
    from ringline.engine.audio.clock import LoopClock
    from ringline.engine.providers import build_tts

    config: Any = TypeAdapter(TtsConfig).validate_python(ENGINES[engine])
    module = __import__(f"ringline.engine.tts.{config.provider}", fromlist=["warm_up"])
    process = psutil.Process()
    rss_before = process.memory_info().rss
    began = time.perf_counter()
    await module.warm_up(config)
    load_s = time.perf_counter() - began

    clock = LoopClock()
    firsts, rtfs = [], []
    for _ in range(repeats):
        first, whole, audio = await _speak_once(build_tts(config, clock))
        firsts.append(first * 1000)
        rtfs.append(whole / audio)
    base = statistics.median(firsts)

    sweep = []
    capacity = 0
    for k in (k for k in CONCURRENCY_STEPS if k <= max_concurrency):
        alone, worst, typical = [], [], []
        for _ in range(rounds):  # each round pairs one synthesis alone with k at once: same conditions
            alone.append((await _speak_once(build_tts(config, clock)))[0] * 1000)
            results = await asyncio.gather(*(_speak_once(build_tts(config, clock)) for _ in range(k)))
            worst.append(max(r[0] for r in results) * 1000)
            typical.append(statistics.median(r[0] for r in results) * 1000)
        row = {
            "k": k,
            "alone_ms": statistics.median(alone),
            "median_ms": statistics.median(typical),
            "worst_ms": statistics.median(worst),
        }
        sweep.append(row)
        if row["worst_ms"] > row["alone_ms"] + grow_ms:
            break
        capacity = k
    rss = process.memory_info().rss
    return {
        "engine": engine,
        "load_s": load_s,
        "first_median_ms": base,
        "first_p95_ms": percentile(firsts, 95),
        "rtf": statistics.median(rtfs),
        "rss_mb": rss / 2**20,
        "rss_growth_mb": (rss - rss_before) / 2**20,
        "concurrent": capacity,
        "sweep": sweep,
    }


# -- parent: table --------------------------------------------------------------------------------


def _run_child(engine: str, args: argparse.Namespace) -> dict[str, Any]:
    command = [
        sys.executable, "-m", "ringline.benchmarks.tts_embedded", "--child", engine,
        "--repeats", str(args.repeats), "--rounds", str(args.rounds),
        "--max-concurrency", str(args.max_concurrency), "--grow-ms", str(args.grow_ms),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout_s, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{engine} failed:\n{done.stderr}")
    return json.loads(done.stdout.splitlines()[-1])


def render(results: list[dict[str, Any]], grow_ms: float) -> str:
    lines = [
        "| engine | load s | first audio median ms | first audio p95 ms | RTF | RSS MB (growth) | concurrent |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['engine']} | {r['load_s']:.2f} | {r['first_median_ms']:.1f} | {r['first_p95_ms']:.1f} "
            f"| {r['rtf']:.3f} | {r['rss_mb']:.0f} ({r['rss_growth_mb']:+.0f}) | {r['concurrent']} |"
        )
    lines.append("")
    lines.append(f"Concurrency sweep: first audio ms, alone -> k at once median/slowest (limit: alone +{grow_ms:g}):")
    for r in results:
        steps = ", ".join(
            f"k={s['k']}: {s['alone_ms']:.0f} -> {s['median_ms']:.0f}/{s['worst_ms']:.0f}" for s in r["sweep"]
        )
        lines.append(f"  {r['engine']}: {steps}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ringline.benchmarks.tts_embedded", description=__doc__.split("\n")[0])
    p.add_argument("--engines", default=",".join(ENGINES), help="comma-separated, of: " + ", ".join(ENGINES))
    p.add_argument("--repeats", type=int, default=15, help="one-at-a-time syntheses per engine")
    p.add_argument("--rounds", type=int, default=5, help="rounds per concurrency step")
    p.add_argument("--max-concurrency", type=int, default=32)
    p.add_argument("--grow-ms", type=float, default=200.0)
    p.add_argument("--timeout-s", type=float, default=600.0, help="per engine")
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--child", choices=list(ENGINES), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        result = asyncio.run(_measure(args.child, args.repeats, args.rounds, args.max_concurrency, args.grow_ms))
        print(json.dumps(result))
        return 0
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = [e for e in engines if e not in ENGINES]
    if unknown:
        p.error(f"unknown engine(s): {', '.join(unknown)}")
    load = os.getloadavg()
    results = [_run_child(engine, args) for engine in engines]
    print(f'sentence: "{SENTENCE}" ({len(SENTENCE.split())} words); {os.cpu_count()} CPUs')
    print(render(results, args.grow_ms))
    print(f"host load average before/after: {load[0]:.2f} / {os.getloadavg()[0]:.2f}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as file:
            json.dump(results, file, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
