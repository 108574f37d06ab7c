"""Cloud adapter overhead under load: reply latency through the real Deepgram, OpenAI and ElevenLabs
adapters (their SDKs, on the server's shared HTTP clients) against the local vendor fakes at
published latencies, for N concurrent calls.

    python -m ringline.benchmarks.adapters [--calls 1,100] [--repeat 3] [--turns 3] [--preemptive off]
        [--hesitate-ms 400]

The target (issue 3): at 100 concurrent calls the adapters add no more than 5 ms to the p95
compared with 1 call.

Three processes, so that only the server's own work is charged to it: the vendor fakes
(``vendors/serve.py``: Deepgram live, OpenAI chat completions, ElevenLabs multi-stream-input, all on
127.0.0.1) pinned to ``--vendor-core``; ``ringline serve`` pinned to ``--server-core`` with
``config/bench_latency.toml``'s agent whose STT, LLM and TTS are switched to the ``deepgram``,
``openai`` and ``elevenlabs`` adapters pointed at the fakes; and the caller simulator pinned to
``--caller-core``. The fakes get the latencies the fake providers have in
``bench_latency.toml`` (STT final 150 ms after it is asked for, LLM first token 350 ms then 50
tokens/s, TTS first audio 150 ms, replies of ``seconds_per_phrase`` of audio) and the same
500 ms end-of-turn silence, so the one-call row is comparable with ``latency.py``'s.

The one-call row plays ``--baseline-turns`` turns (30), the others ``--turns`` (3) per call: the
p95 of 3 replies would be their maximum, which sits below the p95 of 300 replies from the same
distribution, so comparing them would charge the sample sizes' difference to the load.

Every N is run ``--repeat`` times (3) on the same server and fakes, the order alternating (1, 100,
then 100, 1, ...) so that a drift in the VM's speed falls on both sides. One repeat's p95 delta
is not enough to judge a 5 ms target: the one-call p95 of 30 replies alone has a 95 % bootstrap
interval some 13 ms wide on this VM. So after the per-run table comes a pooled one: per N, all
its replies' median and p95, the p95's change from N = 1 with a 95 % percentile-bootstrap
interval (both samples resampled), and each repeat's own delta. Last, where the p95 moved: the same
comparison for each of the reply's stages on the server (its call records' marks: STT final after
the caller stopped, the end-of-turn wait, LLM first token, TTS first audio, first frame sent), for
the three adapter stages summed per reply (what the adapters and the loop they run on take), and
for the whole reply on the server (first frame sent after the caller stopped). With
``--preemptive on`` the LLM may answer before the turn ends, so its stage is not a hop of the reply.

Per run it prints a markdown row per N: caller-measured reply latency median and p95, the p95's
change from that repeat's N = 1, the server's per-stage medians and the replies prepared ahead of
the turn's end that were used and discarded (``latency.py``'s columns), answered/expected turns,
the server's CPU % and the fakes' (if the fakes' core is saturated, the fakes are the bottleneck,
not the adapters), and from the server's ``/metrics`` over the run: its event loop's lag (p99 and
the worst bucket, from ``ringline_event_loop_lag_seconds``) and its garbage collections (count
and longest bucket), which say whether a slow reply waited on the server's loop or elsewhere.
``--hesitate-ms`` has every caller pause that long mid-turn and go on (``caller.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from ringline.benchmarks.concurrency import REPO, add_hesitate_option, pin, started_server, stop_process
from ringline.benchmarks.health import histograms, loop_health
from ringline.benchmarks.latency import STAGES, markdown, measure_calls, toml_text

READY_TIMEOUT_S = 30.0
SETTINGS = REPO / "config" / "bench_latency.toml"


def vendor_settings(data: dict[str, Any]) -> list[str]:
    """``vendors/serve.py`` options giving the fakes the latencies of the config's fake providers."""
    agent = data["agents"]["default"]
    stt, llm, tts = agent["stt"], agent["llm"], agent["tts"]
    text = llm.get("fallback", "Sure, here is the answer to that.")
    seconds_per_char = tts.get("seconds_per_phrase", 1.0) / max(1, len(text.strip()))
    options = {
        "--stt-transcript": stt.get("fallback", "Tell me more."),
        "--stt-final-ms": stt.get("final_latency_ms", 0),
        "--llm-text": text,
        "--llm-ttft-ms": llm.get("ttft_ms", 0),
        "--llm-tokens-per-s": llm.get("tokens_per_s", 0),
        "--tts-ttfa-ms": tts.get("ttfb_ms", 0),
        "--tts-rtf": tts.get("realtime_factor", 0),
        "--tts-seconds-per-char": seconds_per_char,
    }
    return [str(item) for pair in options.items() for item in pair]


def adapter_config(data: dict[str, Any], vendors: dict[str, dict[str, str]], preemptive: bool) -> dict[str, Any]:
    """The settings with the default agent's providers switched to the cloud adapters."""
    agent = data["agents"]["default"]
    agent["stt"] = {
        "provider": "deepgram",
        "api_key": vendors["deepgram"]["api_key"],
        "base_url": vendors["deepgram"]["url"],
    }
    agent["llm"] = {"provider": "openai", "api_key": vendors["openai"]["api_key"], "base_url": vendors["openai"]["url"]}
    agent["tts"] = {
        "provider": "elevenlabs",
        "api_key": vendors["elevenlabs"]["api_key"],
        "base_url": vendors["elevenlabs"]["url"],
        "transport": "websocket",
    }
    agent.setdefault("turn", {})["preemptive_generation"] = preemptive
    return data


class VendorLag:
    """The fakes' own event loop lag between ``start`` and ``stop`` (``vendors/serve.py``'s SIGUSR1)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self._proc = proc

    def _read(self) -> dict[str, Any]:
        assert self._proc.stdout is not None
        self._proc.send_signal(signal.SIGUSR1)
        readable, _, _ = select.select([self._proc.stdout], [], [], READY_TIMEOUT_S)
        return json.loads(self._proc.stdout.readline()) if readable else {}

    def start(self) -> None:
        self._read()

    def stop(self) -> dict[str, Any]:
        lag = self._read()
        return {"vendors lag p99 ms": lag.get("lag_p99_ms"), "vendors lag max ms": lag.get("lag_max_ms")}


@contextlib.contextmanager
def started_vendors(options: list[str], core: int | None) -> Iterator[tuple[dict[str, Any], int, VendorLag]]:
    """Start the vendor fakes in their own process; yield (their addresses and keys, pid, lag reader)."""
    cmd = pin(core) + [sys.executable, "-m", "ringline.benchmarks.vendors.serve", *options]
    log_file = tempfile.NamedTemporaryFile(prefix="ringline-vendors-", suffix=".log", delete=False)  # noqa: SIM115
    print(f"starting: {' '.join(cmd)} (log {log_file.name})", file=sys.stderr)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log_file, text=True)
    ok = False
    try:
        assert proc.stdout is not None
        readable, _, _ = select.select([proc.stdout], [], [], READY_TIMEOUT_S)
        line = proc.stdout.readline() if readable else ""
        if not line:
            raise SystemExit(f"the vendor fakes did not start within {READY_TIMEOUT_S:.0f} s (log {log_file.name})")
        yield json.loads(line), proc.pid, VendorLag(proc)
        ok = True
    finally:
        stop_process(proc, log_file, keep_log=not ok, what="vendor")


class CpuMeter:
    """A process's CPU % (one core = 100) between ``start`` and ``stop``."""

    def __init__(self, pid: int) -> None:
        self._process = psutil.Process(pid)
        self._at = self._cpu = 0.0

    def _now(self) -> tuple[float, float]:
        times = self._process.cpu_times()
        return time.monotonic(), times.user + times.system

    def start(self) -> None:
        self._at, self._cpu = self._now()

    def stop(self) -> float:
        at, cpu = self._now()
        return 100.0 * (cpu - self._cpu) / max(at - self._at, 1e-9)


def reply_latencies(report: dict[str, Any]) -> list[float]:
    """The caller-measured latency (ms) of every answered reply in a caller report (``keep_calls``)."""
    return [
        turn["latency_ms"]
        for call in report.get("calls_detail", [])
        for turn in call["turns"]
        if turn.get("answered") and turn.get("latency_ms") is not None
    ]


HOPS = ("STT final", "end of turn", "LLM first token", "TTS first audio", "audio sent")
"""A reply's stages on the server, in the order of ``STAGES``' marks (each from the one before; the
first from when the caller stopped)."""
ADAPTER_HOPS = ("STT final", "LLM first token", "TTS first audio")
REPLY = "reply (caller)"
"""The samples key of the caller-measured reply latencies."""


def stage_times(turn: dict[str, Any]) -> dict[str, float] | None:
    """One answered turn's stages (ms) from its call record's marks (ms after the caller stopped),
    with the adapter stages' sum (``adapters``) and the whole reply on the server (``server``);
    None if a mark is missing."""
    marks = [turn.get(stage) for stage in STAGES]
    if any(mark is None for mark in marks):
        return None
    hops = dict(zip(HOPS, (float(d) for d in np.diff([0.0, *marks])), strict=True))
    return {"server": float(marks[-1]), "adapters": sum(hops[h] for h in ADAPTER_HOPS), **hops}


def run_samples(report: dict[str, Any]) -> dict[str, list[float]]:
    """A run's samples: the caller-measured reply latencies (``REPLY``) and, per stage of
    ``stage_times``, its value for every answered turn of the server's records."""
    samples: dict[str, list[float]] = {REPLY: reply_latencies(report)}
    for turn in report.get("server_turns", []):
        for stage, ms in (stage_times(turn) or {}).items():
            samples.setdefault(stage, []).append(ms)
    return samples


def p95(values: list[float]) -> float | None:
    """The caller's p95 (linear interpolation between closest ranks, as ``load.py``)."""
    return float(np.percentile(values, 95)) if values else None


def p95_delta_interval(base: list[float], loaded: list[float], resamples: int = 2000) -> tuple[float, float]:
    """A 95 % percentile-bootstrap interval of ``p95(loaded) - p95(base)``: both samples resampled
    with replacement, independently, ``resamples`` times (seeded, so a rerun on the same numbers
    prints the same interval)."""
    rng = np.random.default_rng(0)
    base_arr, loaded_arr = np.asarray(base), np.asarray(loaded)
    base_p95 = np.percentile(base_arr[rng.integers(0, len(base_arr), (resamples, len(base_arr)))], 95, axis=1)
    loaded_p95 = np.percentile(loaded_arr[rng.integers(0, len(loaded_arr), (resamples, len(loaded_arr)))], 95, axis=1)
    low, high = np.percentile(loaded_p95 - base_p95, [2.5, 97.5])
    return float(low), float(high)


def measure_run(
    n: int, url: str, pid: int, args: argparse.Namespace, vendor_cpu: CpuMeter, vendor_lag: VendorLag
) -> tuple[dict[str, Any], dict[str, list[float]], bool]:
    """One caller run of ``n`` calls: its row, its samples (``run_samples``), and whether it
    answered every turn without errors."""
    base = "http" + url[2:].removesuffix(f"/media/{args.protocol}")
    vendor_cpu.start()
    vendor_lag.start()
    before = histograms(base)
    turns = args.baseline_turns if n == 1 else args.turns
    measured, report = measure_calls(url, pid, n, argparse.Namespace(**(vars(args) | {"turns": turns})))
    health = loop_health(before, histograms(base)) | vendor_lag.stop()
    row = {
        "calls": n,
        "answered": measured["answered"],
        "median": measured["median"],
        "p95": measured["p95"],
        "p95 delta vs 1": None,
        **{stage: measured[stage] for stage in STAGES},
        "prepared used": measured["prepared used"],
        "prepared discarded": measured["prepared discarded"],
        "server CPU %": measured["server CPU %"],
        "vendors CPU %": vendor_cpu.stop(),
        "caller CPU %": report.get("caller_cpu_pct"),
        "caller late frames": report.get("late_frames"),
        **health,
    }
    if "error" in report:
        print(f"error at N = {n}: {report['error']}", file=sys.stderr)
    complete = "error" not in report and not report.get("failed_calls")
    complete &= report.get("turns_answered") == report.get("turns_expected")
    print(json.dumps(row), file=sys.stderr)
    print(f"stage p95 ms: {json.dumps(report.get('stage_p95_ms'))}", file=sys.stderr)
    return row, run_samples(report), complete


def steady(row: dict[str, Any]) -> bool:
    """Whether the caller kept its own clock through the run. A run in which it sent frames 20 ms
    or more late measured a stall of the VM (the caller's reading of the replies stalled too), not
    what the server adds: its replies are left out of the pooled rows (its own row still shows)."""
    return not row.get("caller late frames")


Run = tuple[dict[str, Any], dict[str, list[float]]]
"""A run's row and its samples (``run_samples``)."""


def _by_calls(runs: list[Run]) -> dict[int, list[Run]]:
    by_calls: dict[int, list[Run]] = {}
    for row, samples in runs:
        by_calls.setdefault(row["calls"], []).append((row, samples))
    return by_calls


def _pool(group: list[Run], key: str) -> list[float]:
    """The steady runs' samples of ``key``, pooled."""
    return [v for row, samples in group if steady(row) for v in samples.get(key, [])]


def _delta(base: list[float], values: list[float]) -> tuple[float | None, str | None]:
    """The p95's change from ``base`` and its 95 % interval (as text), or None without samples."""
    if not base or not values:
        return None, None
    low, high = p95_delta_interval(base, values)
    return p95(values) - p95(base), f"{low:+.0f} .. {high:+.0f}"  # type: ignore[operator]


def pooled(runs: list[Run]) -> list[dict[str, Any]]:
    """One row per N over the repeats: the steady runs' reply latencies pooled (median, p95, the
    p95's change from N = 1 with its bootstrap interval), each repeat's own change (a stalled
    run's marked ``*``), the runs left out and why, and the mean server CPU."""
    by_calls = _by_calls(runs)
    one = _pool(by_calls.get(1, []), REPLY)
    summary = []
    for n, group in by_calls.items():
        values = _pool(group, REPLY)
        deltas = [
            f"{r['p95 delta vs 1']:+.0f}" + ("" if steady(r) else "*")
            for r, _ in group
            if n != 1 and r["p95 delta vs 1"] is not None
        ]
        left_out = [
            f"repeat {r['repeat']}: {r['caller late frames']} late caller frames" for r, _ in group if not steady(r)
        ]
        cpu = [r["server CPU %"] for r, _ in group if r["server CPU %"] is not None]
        delta, interval = _delta(one, values) if n != 1 else (None, None)
        summary.append({
            "calls": n,
            "runs pooled": f"{sum(steady(r) for r, _ in group)} of {len(group)}",
            "replies": len(values),
            "median": float(np.median(values)) if values else None,
            "p95": p95(values),
            "p95 delta vs 1": delta,
            "delta 95 % interval": interval,
            "delta per run": " / ".join(deltas) or None,
            "left out": "; ".join(left_out) or None,
            "server CPU %": statistics.fmean(cpu) if cpu else None,
        })  # fmt: skip
    return summary


def pooled_stages(runs: list[Run]) -> list[dict[str, Any]]:
    """Where the p95 moved: per N other than 1, a row per sample kind (the caller's reply, the
    reply on the server, the adapter stages' sum, each stage) with its pooled p95 at 1 and at N,
    the change and its bootstrap interval (steady runs only, as ``pooled``)."""
    by_calls = _by_calls(runs)
    base = by_calls.get(1, [])
    rows = []
    for n, group in by_calls.items():
        if n == 1:
            continue
        for key in (REPLY, "server", "adapters", *HOPS):
            one, values = _pool(base, key), _pool(group, key)
            delta, interval = _delta(one, values)
            rows.append({
                "calls": n,
                "p95 of": key,
                "at 1": p95(one),
                "at N": p95(values),
                "delta": delta,
                "delta 95 % interval": interval,
            })  # fmt: skip
    return rows


def run(args: argparse.Namespace) -> tuple[list[dict[str, Any]], list[Run], bool]:
    """Every run's row, every run with its samples, and whether every run answered every turn
    without errors.

    Repeats alternate the order of N (1, 100, then 100, 1, ...) so that a drift in the VM's speed
    falls on both sides; each repeat's delta compares the N = 1 and N rows of that repeat."""
    data = tomllib.loads(args.config.read_text())
    rows: list[dict[str, Any]] = []
    runs: list[Run] = []
    complete = True
    with (
        started_vendors(vendor_settings(data), args.vendor_core) as (vendors, vendor_pid, vendor_lag),
        tempfile.TemporaryDirectory() as tmp,
    ):
        config = Path(tmp) / "bench_adapters.toml"
        config.write_text(toml_text(adapter_config(data, vendors, args.preemptive == "on")))
        args.config = config
        vendor_cpu = CpuMeter(vendor_pid)
        with started_server(args) as (url, pid):
            for repeat in range(1, args.repeat + 1):
                repeat_rows = []
                for n in args.counts if repeat % 2 else reversed(args.counts):
                    print(f"--- repeat {repeat}/{args.repeat}: {n} calls", file=sys.stderr)
                    row, samples, ok = measure_run(n, url, pid, args, vendor_cpu, vendor_lag)
                    complete &= ok
                    repeat_rows.append(row := {"repeat": repeat, **row})
                    runs.append((row, samples))
                    time.sleep(1.0)  # let the server settle between runs
                one = next((r["p95"] for r in repeat_rows if r["calls"] == 1 and r["p95"] is not None), None)
                for row in repeat_rows:
                    if one is not None and row["p95"] is not None:
                        row["p95 delta vs 1"] = row["p95"] - one
                rows += sorted(repeat_rows, key=lambda r: r["calls"])
    return rows, runs, complete


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ringline.benchmarks.adapters", description=__doc__.split("\n")[0])
    p.add_argument("--calls", default="1,100", help="comma-separated N (default 1,100); include 1 for the delta")
    p.add_argument("--turns", type=int, default=3, help="turns per call (default 3)")
    p.add_argument(
        "--baseline-turns",
        type=int,
        default=30,
        help="turns of the one-call run (default 30: its p95 is then a p95, not the largest of 3 replies)",
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="runs of every N, alternating their order (default 3); the summary pools their replies",
    )
    p.add_argument("--preemptive", choices=("on", "off"), default="off", help="preemptive generation (default off)")
    add_hesitate_option(p)
    p.add_argument("--config", type=Path, default=SETTINGS, help="latencies and turn settings (default bench_latency)")
    p.add_argument("--server-core", type=int, default=0)
    p.add_argument("--caller-core", type=int, default=1)
    p.add_argument("--vendor-core", type=int, default=1, help="core of the vendor fakes (default: the caller's)")
    args = p.parse_args(argv)
    args.counts = [int(n) for n in args.calls.split(",") if n.strip()]
    if not args.counts or min(args.counts) < 1 or max(args.counts) > 1000:
        p.error("--calls: want 1..1000 each")
    if args.repeat < 1:
        p.error("--repeat: want 1 or more")
    args.url = args.server_pid = None
    args.fake = False
    args.param = []
    args.barge_in_ms = None
    args.protocol = "twilio"
    rows, runs, complete = run(args)
    print(markdown(rows))
    print()
    print(markdown(pooled(runs)))
    if len(args.counts) > 1 and 1 in args.counts:
        print()
        print(markdown(pooled_stages(runs)))
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
