"""Embedded STT: Whisper tiny.en (faster-whisper) against Moonshine base-en (onnxruntime).

Run ``python -m ringline.benchmarks.stt_embedded [--repeats 15] [--quick] [--json out.json]``.
Each setting runs in a fresh subprocess (clean load time and RSS). Audio goes through the real
adapters as a call sends it: the speech clips as mu-law 8 kHz in 20 ms frames, with 0.5 s of
silence before and 0.6 s after (the VAD's end-of-turn wait), then ``finalize``.

| column | meaning |
|---|---|
| load s | first ``load_engine`` of the setting: model files to a ready recognizer |
| latency ms | ``finalize`` -> final transcript for ``LATENCY_CLIP`` (2.06 s of speech): median, p95 |
| WER % | word edits (substitutions, deletions, insertions) / reference words, all speech clips |
| RSS MB | process resident memory after loading and transcribing (Python + ringline ~ 60 MB of it) |

The concurrency table finalizes N sessions at the same instant (N = 1, 2, 4, 8) and gives the
median and the slowest latency; "absorbs" is the largest N whose slowest final came within
``ABSORB_MS`` of the single-utterance median.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import statistics
import subprocess
import sys
import time
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # models come from PyPI packages, never a hub

LATENCY_CLIP = "reschedule.wav"
LEAD_S = 0.5
TAIL_S = 0.6
ABSORB_MS = 200.0
CONCURRENCY = (1, 2, 4, 8)

SETTINGS: dict[str, dict[str, Any]] = {
    "whisper": {"provider": "whisper"},
    "whisper-beam5": {"provider": "whisper", "beam_size": 5},
    "whisper-2threads": {"provider": "whisper", "cpu_threads": 2},
    "whisper-float32": {"provider": "whisper", "compute_type": "float32"},
    "whisper-30s-window": {"provider": "whisper", "window": "30s"},
    "moonshine": {"provider": "moonshine"},
    "moonshine-2threads": {"provider": "moonshine", "cpu_threads": 2},
}
"""Rows of the table: a provider config (defaults unless said), one subprocess each."""
POOLS = {
    "whisper workers=1": {"provider": "whisper"},
    "whisper workers=2": {"provider": "whisper", "workers": 2},
    "moonshine workers=1": {"provider": "moonshine"},
    "moonshine workers=2": {"provider": "moonshine", "workers": 2},
}


# -- word error rate ---------------------------------------------------------------------------


def words(text: str) -> list[str]:
    """Lower-case words without punctuation ("I'd" stays one word, "Mm-hm" becomes two)."""
    return re.sub(r"[^a-z0-9' ]+", " ", text.lower().replace("-", " ")).replace(" '", " ").split()


def edit_distance(reference: list[str], hypothesis: list[str]) -> int:
    """Word-level Levenshtein distance: substitutions + deletions + insertions."""
    row = list(range(len(hypothesis) + 1))
    for i, ref in enumerate(reference, 1):
        diagonal, row[0] = row[0], i
        for j, hyp in enumerate(hypothesis, 1):
            diagonal, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, diagonal + (ref != hyp))
    return row[-1]


def word_error_rate(pairs: list[tuple[str, str]]) -> float:
    """Corpus WER of (reference, hypothesis) pairs: total edits / total reference words."""
    edits = sum(edit_distance(words(ref), words(hyp)) for ref, hyp in pairs)
    return edits / max(1, sum(len(words(ref)) for ref, _ in pairs))


# -- one setting, in its own process -------------------------------------------------------------


def utterance(name: str, lead_s: float = LEAD_S, tail_s: float = TAIL_S) -> bytes:
    """A clip as the call buffers it: mu-law 8 kHz with silence before and after."""
    from ringline.benchmarks.clips import RATE, load_clip

    silence = b"\xff"  # mu-law 0
    return silence * int(lead_s * RATE) + load_clip(name) + silence * int(tail_s * RATE)


def config_of(setting: dict[str, Any]) -> Any:
    from ringline.config.providers import MoonshineSttConfig, WhisperSttConfig

    fields = {k: v for k, v in setting.items() if k != "window"}
    return WhisperSttConfig(**fields) if setting["provider"] == "whisper" else MoonshineSttConfig(**fields)


def recognizer_factory(setting: dict[str, Any]) -> Any:
    if setting["provider"] == "moonshine":
        from ringline.engine.stt.moonshine import MoonshineRecognizer

        return MoonshineRecognizer
    if setting.get("window") == "30s":
        return FullWindowWhisper
    from ringline.engine.stt.whisper import WhisperRecognizer

    return WhisperRecognizer


class FullWindowWhisper:
    """faster-whisper's own ``transcribe`` (30 s window, its silence rules): the reference the
    adapter's short window is measured against."""

    def __init__(self, config: Any) -> None:
        from faster_whisper import WhisperModel

        from ringline.engine.stt.whisper import model_dir

        self._model = WhisperModel(
            str(model_dir(config.model)),
            device="cpu",
            compute_type=config.compute_type,
            cpu_threads=config.cpu_threads,
            num_workers=config.workers,
            local_files_only=True,
        )
        self._beam_size = config.beam_size

    def transcribe(self, audio: Any) -> str:
        segments, _ = self._model.transcribe(
            audio, language="en", beam_size=self._beam_size, without_timestamps=True, condition_on_previous_text=False
        )
        return " ".join(s.text.strip() for s in segments)


async def _final_after(session: Any, transcripts: Any, audio: bytes) -> tuple[float, str]:
    for i in range(0, len(audio), 160):
        await session.send(audio[i : i + 160])
    started = time.perf_counter()
    await session.finalize()
    transcript = await anext(transcripts)
    return (time.perf_counter() - started) * 1000, transcript.text


async def _measure(setting: dict[str, Any], repeats: int) -> dict[str, Any]:
    import psutil

    from ringline.benchmarks.clips import CLIP_TEXTS, SPEECH_CLIPS
    from ringline.engine.audio import MULAW_8K, LoopClock
    from ringline.engine.stt.segments import EmbeddedStt, load_engine

    config, factory = config_of(setting), recognizer_factory(setting)
    engine = await asyncio.to_thread(load_engine, config, factory)
    session = await EmbeddedStt(config, LoopClock(), factory).open(MULAW_8K)
    transcripts = aiter(session)
    await _final_after(session, transcripts, utterance(LATENCY_CLIP))  # first runs are slow
    pairs, texts = [], {}
    for name in SPEECH_CLIPS:
        _, text = await _final_after(session, transcripts, utterance(name))
        pairs.append((CLIP_TEXTS[name], text))
        texts[name] = text
    latencies = [(await _final_after(session, transcripts, utterance(LATENCY_CLIP)))[0] for _ in range(repeats)]
    await session.aclose()
    return {
        "load_s": engine.load_s,
        "latency_ms": statistics.median(latencies),
        "p95_ms": percentile(latencies, 95),
        "wer": word_error_rate(pairs),
        "rss_mb": psutil.Process().memory_info().rss / 2**20,
        "texts": texts,
    }


async def _concurrency(setting: dict[str, Any], repeats: int) -> dict[str, Any]:
    from ringline.engine.audio import MULAW_8K, LoopClock
    from ringline.engine.stt.segments import EmbeddedStt, load_engine

    config, factory = config_of(setting), recognizer_factory(setting)
    await asyncio.to_thread(load_engine, config, factory)
    stt = EmbeddedStt(config, LoopClock(), factory)
    audio = utterance(LATENCY_CLIP)
    rows = {}
    for n in (1, *CONCURRENCY):  # the first round warms up
        sessions = [await stt.open(MULAW_8K) for _ in range(n)]
        iterators = [aiter(s) for s in sessions]
        medians, slowest = [], []
        for _ in range(max(1, repeats // n)):
            for s in sessions:
                await s.send(audio)
            started = time.perf_counter()
            for s in sessions:
                await s.finalize()
            times = await asyncio.gather(*(_arrival(t, started) for t in iterators))
            medians.append(statistics.median(times))
            slowest.append(max(times))
        for s in sessions:
            await s.aclose()
        rows[n] = {"median_ms": statistics.median(medians), "max_ms": statistics.median(slowest)}
    return rows


async def _arrival(transcripts: Any, started: float) -> float:
    await anext(transcripts)
    return (time.perf_counter() - started) * 1000


def percentile(values: list[float], p: float) -> float:
    """Linear interpolation between closest ranks."""
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo, hi = math.floor(k), math.ceil(k)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def _child(kind: str, setting: dict[str, Any], repeats: int) -> None:
    run = _measure if kind == "table" else _concurrency
    print(json.dumps(asyncio.run(run(setting, repeats))))


def _in_subprocess(kind: str, setting: dict[str, Any], repeats: int) -> dict[str, Any]:
    argv = [sys.executable, "-m", "ringline.benchmarks.stt_embedded", "--child", kind, json.dumps(setting)]
    done = subprocess.run([*argv, "--repeats", str(repeats)], capture_output=True, text=True, timeout=900, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{kind} {setting} failed:\n{done.stderr}")
    return json.loads(done.stdout.splitlines()[-1])


# -- report ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ringline.benchmarks.stt_embedded", description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=15, help="latency repeats per setting")
    p.add_argument("--quick", action="store_true", help="default settings only")
    p.add_argument("--texts", action="store_true", help="print each setting's transcripts")
    p.add_argument("--json", help="write all results here")
    p.add_argument("--child", nargs=2, metavar=("KIND", "SETTING"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        _child(args.child[0], json.loads(args.child[1]), args.repeats)
        return 0

    settings = {k: v for k, v in SETTINGS.items() if not args.quick or k in ("whisper", "moonshine")}
    print(f"{'engine':10} {'setting':22} {'load s':>6} {'median ms':>9} {'p95 ms':>7} {'WER %':>6} {'RSS MB':>7}")
    results: dict[str, Any] = {"table": {}, "concurrency": {}}
    for label, setting in settings.items():
        r = results["table"][label] = _in_subprocess("table", setting, args.repeats)
        engine, _, variant = label.partition("-")
        print(
            f"{engine:10} {variant or 'default':22} {r['load_s']:6.2f} {r['latency_ms']:9.0f} {r['p95_ms']:7.0f}"
            f" {100 * r['wer']:6.1f} {r['rss_mb']:7.0f}"
        )
        if args.texts:
            for name, text in r["texts"].items():
                print(f"{'':12}{name:18} {text!r}")

    print(f"\nsimultaneous utterance ends ({LATENCY_CLIP}), median / slowest final ms")
    print(f"{'pool':22} " + " ".join(f"{'N=' + str(n):>13}" for n in CONCURRENCY) + "  absorbs")
    pools = {k: v for k, v in POOLS.items() if not args.quick or "workers=1" in k}
    for label, setting in pools.items():
        rows = {int(n): r for n, r in _in_subprocess("concurrency", setting, args.repeats).items()}
        results["concurrency"][label] = rows
        base = rows[1]["median_ms"]
        absorbs = max((n for n in CONCURRENCY if rows[n]["max_ms"] <= base + ABSORB_MS), default=0)
        cells = " ".join(f"{rows[n]['median_ms']:6.0f}/{rows[n]['max_ms']:6.0f}" for n in CONCURRENCY)
        print(f"{label:22} {cells}  {absorbs}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
