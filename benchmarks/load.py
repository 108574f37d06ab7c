"""Many simulated calls at once, and the report a load run produces.

``run_load`` starts ``n_calls`` calls staggered evenly over ``ramp_s``, each a further
``i / n_calls`` of a frame later so that their 20 ms frame grids spread evenly over the 20 ms (a
default stagger of exactly one frame would put every call's frames in the same millisecond: one
burst per 20 ms, where a provider's streams each start with their own call), waits for all of
them, and aggregates:

- latency: last speech frame sent -> first reply media received, over every answered turn of
  every call; median and p95 (linear interpolation between closest ranks).
- turns answered / expected: a turn is answered when reply audio arrived within the script's
  reply_timeout_s of its last speech frame.
- gaps: intervals between consecutive media messages inside one reply; the max and the count
  over 60 ms. Underruns: silence the caller heard inside a reply because its playback buffer
  ran dry before the next chunk came (a server that sends ahead hides arrival gaps; this
  cannot be hidden).
- audio per wall second: sum of reply audio seconds / sum of reply spans, a span being first
  message arrival -> last message arrival + that message's audio. 1.0 is real time; below 1.0
  the server fell behind.
- barge-in, over every talked-over turn of every call (the caller's speech started while agent
  audio was playing at the caller, e.g. ``Utterance(barge_in_after_ms=...)``): how many there
  were, how many had the agent audio cut by a ``clear``, and ``agent_stop_ms`` median, p95 and
  max: send time of the caller's first speech frame -> the moment the agent audio stopped
  playing at the caller, i.e. the clear's arrival at the caller (read off the socket by the
  caller's event loop), or, if no clear came while audio was still queued, the moment the
  caller's playback buffer ran dry. Turns whose agent audio was still playing when the call
  ended have no stop time and are left out of the stop figures (but counted as talked over).
- the caller's own health: late_frames (media frames sent 20 ms or more after their slot), the
  caller process's CPU %, and the host's steal time (CPU the hypervisor gave to other guests, %
  of all cores): late frames with a caller well under 100 % CPU point at the machine, not the
  caller or the server.
- with ``server_pid``: the server's CPU % = (user + system CPU seconds) / wall seconds over the
  steady window (all calls started -> the first call ended; the whole run if that window is
  under a second), RSS before the first call, peak RSS, and (peak - before) / n_calls.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

import aiohttp
import numpy as np
import psutil

from ringline.benchmarks.call import Metronome, run_call
from ringline.benchmarks.protocols import WireFactory
from ringline.benchmarks.script import CallerScript, CallResult
from ringline.benchmarks.session import FRAME_S

MB = 1024 * 1024
SAMPLE_INTERVAL_S = 0.25


@dataclass(slots=True)
class LoadReport:
    calls: int
    failed_calls: int = 0  # connect/socket errors
    errors: list[str] = field(default_factory=list)  # first few
    wall_s: float = 0.0
    turns_expected: int = 0
    turns_answered: int = 0
    latency_median_ms: float | None = None
    latency_p95_ms: float | None = None
    latency_max_ms: float | None = None
    max_gap_ms: float = 0.0
    gaps_over_60ms: int = 0
    max_underrun_ms: float = 0.0
    underruns_over_60ms: int = 0  # replies whose longest underrun was over 60 ms
    reply_audio_s: float = 0.0
    reply_span_s: float = 0.0
    audio_per_wall_s: float | None = None
    clears: int = 0
    talked_over_turns: int = 0  # caller speech started while agent audio played (barge-ins)
    talked_over_cleared: int = 0  # of those, agent audio cut by a clear
    agent_stop_median_ms: float | None = None  # talked-over turns: speech start -> agent audio stopped
    agent_stop_p95_ms: float | None = None
    agent_stop_max_ms: float | None = None
    protocol_errors: int = 0
    frames_sent: int = 0
    late_frames: int = 0
    max_send_lag_ms: float = 0.0
    caller_cpu_pct: float | None = None
    host_steal_pct: float | None = None  # CPU time the hypervisor took, % of all cores, steady window
    steady_window_s: float | None = None
    server_pid: int | None = None
    server_cpu_pct: float | None = None
    server_rss_before_mb: float | None = None
    server_rss_peak_mb: float | None = None
    server_rss_per_call_mb: float | None = None
    results: list[CallResult] = field(default_factory=list, repr=False)

    def to_dict(self, *, include_calls: bool = False) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "results"}
        if include_calls:
            d["calls_detail"] = [r.to_dict() for r in self.results]
        return d

    def format(self) -> str:
        def ms(v: float | None) -> str:
            return "-" if v is None else f"{v:.1f} ms"

        lines = [
            f"calls {self.calls} ({self.failed_calls} failed) in {self.wall_s:.1f} s; "
            f"turns answered {self.turns_answered}/{self.turns_expected}; "
            f"latency median {ms(self.latency_median_ms)}, p95 {ms(self.latency_p95_ms)}, "
            f"max {ms(self.latency_max_ms)}",
            f"agent audio: {_num(self.audio_per_wall_s, '.3f')} audio-s per wall-s; "
            f"max gap {self.max_gap_ms:.0f} ms, gaps>60ms {self.gaps_over_60ms}; "
            f"max underrun {self.max_underrun_ms:.0f} ms; clears {self.clears}; "
            f"protocol errors {self.protocol_errors}",
            f"caller: late frames {self.late_frames}/{self.frames_sent}, "
            f"max send lag {self.max_send_lag_ms:.1f} ms, CPU {_num(self.caller_cpu_pct, '.0f')} %; "
            f"host steal {_num(self.host_steal_pct, '.1f')} %",
        ]
        if self.talked_over_turns:
            lines.append(
                f"barge-in: talked-over turns {self.talked_over_turns}, agent audio cleared "
                f"{self.talked_over_cleared}/{self.talked_over_turns}; agent stop median "
                f"{ms(self.agent_stop_median_ms)}, p95 {ms(self.agent_stop_p95_ms)}, max {ms(self.agent_stop_max_ms)}"
            )
        if self.server_pid is not None:
            lines.append(
                f"server pid {self.server_pid}: CPU {_num(self.server_cpu_pct, '.1f')} % "
                f"over {_num(self.steady_window_s, '.1f')} s; RSS {_num(self.server_rss_before_mb, '.1f')}"
                f" -> {_num(self.server_rss_peak_mb, '.1f')} MB "
                f"({_num(self.server_rss_per_call_mb, '.3f')} MB/call)"
            )
        lines.extend(f"error: {e}" for e in self.errors)
        return "\n".join(lines)


def _num(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


@dataclass(slots=True)
class _Sample:
    t: float
    caller_cpu_s: float
    steal_s: float  # all cores together
    server_cpu_s: float | None
    server_rss: int | None


class _Sampler:
    """Samples this process's CPU and the server's CPU and RSS every SAMPLE_INTERVAL_S."""

    def __init__(self, server_pid: int | None) -> None:
        self._me = psutil.Process()
        self._server = psutil.Process(server_pid) if server_pid is not None else None
        self.samples: list[_Sample] = []

    def sample(self) -> None:
        loop = asyncio.get_running_loop()
        mine = self._me.cpu_times()
        server_cpu = server_rss = None
        if self._server is not None:
            with contextlib.suppress(psutil.Error):
                t = self._server.cpu_times()
                server_cpu = t.user + t.system
                server_rss = self._server.memory_info().rss
        steal = getattr(psutil.cpu_times(), "steal", 0.0)
        self.samples.append(_Sample(loop.time(), mine.user + mine.system, steal, server_cpu, server_rss))

    async def run(self) -> None:
        while True:
            await asyncio.sleep(SAMPLE_INTERVAL_S)
            self.sample()

    def rate(self, attr: str, start: float, end: float) -> tuple[float | None, float | None]:
        """CPU % of ``attr`` between the first sample at/after ``start`` and the last at/before ``end``."""
        window = [s for s in self.samples if start <= s.t <= end and getattr(s, attr) is not None]
        if len(window) < 2 or window[-1].t - window[0].t < 1.0:
            window = [s for s in self.samples if getattr(s, attr) is not None]
        if len(window) < 2:
            return None, None
        a, b = window[0], window[-1]
        return 100.0 * (getattr(b, attr) - getattr(a, attr)) / (b.t - a.t), b.t - a.t


def start_offsets(n_calls: int, ramp_s: float) -> list[float]:
    """When each call starts (s after the first): evenly over ``ramp_s``, and call i a further
    ``i / n_calls`` of a frame, so that the calls' 20 ms frame grids fall evenly over the frame."""
    return [i * (ramp_s + FRAME_S) / n_calls for i in range(n_calls)]


async def run_load(
    url: str,
    n_calls: int,
    script_factory: Callable[[int], CallerScript],
    *,
    ramp_s: float | None = None,
    server_pid: int | None = None,
    record_first: bool = False,
    connect_timeout_s: float = 10.0,
    wire_factory: WireFactory | None = None,
) -> LoadReport:
    """Run ``n_calls`` calls (call i follows ``script_factory(i)``) and report on them.

    ``ramp_s`` defaults to 20 ms a call, at most 5 s. ``record_first`` records call 0.
    ``wire_factory`` (``protocols.wire_factory``) picks the provider protocol; default Twilio.
    """
    if n_calls < 1:
        raise ValueError("n_calls must be at least 1")
    offsets = start_offsets(n_calls, min(5.0, 0.02 * n_calls) if ramp_s is None else ramp_s)
    ramp = offsets[-1]
    scripts = [script_factory(i) for i in range(n_calls)]
    loop = asyncio.get_running_loop()
    sampler = _Sampler(server_pid)
    sampler.sample()
    rss_before = sampler.samples[0].server_rss
    done_at: list[float] = []

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http, Metronome() as metronome:
        t_start = loop.time()

        async def one(i: int) -> CallResult:
            await asyncio.sleep(max(0.0, t_start + offsets[i] - loop.time()))
            result = await run_call(
                url,
                scripts[i],
                session=http,
                record=record_first and i == 0,
                connect_timeout_s=connect_timeout_s,
                metronome=metronome,
                wire_factory=wire_factory,
            )
            done_at.append(loop.time())
            return result

        sampler_task = asyncio.create_task(sampler.run(), name="load-sampler")
        try:
            results = await asyncio.gather(*(one(i) for i in range(n_calls)))
        finally:
            sampler_task.cancel()
            await asyncio.gather(sampler_task, return_exceptions=True)
        sampler.sample()
        t_end = loop.time()

    report = aggregate(results, scripts)
    report.wall_s = t_end - t_start
    steady_start = t_start + ramp
    steady_end = min(done_at) if done_at else t_end
    report.caller_cpu_pct, _ = sampler.rate("caller_cpu_s", steady_start, steady_end)
    steal, _ = sampler.rate("steal_s", steady_start, steady_end)
    report.host_steal_pct = None if steal is None else steal / (psutil.cpu_count() or 1)
    if server_pid is not None:
        report.server_pid = server_pid
        report.server_cpu_pct, report.steady_window_s = sampler.rate("server_cpu_s", steady_start, steady_end)
        rss = [s.server_rss for s in sampler.samples if s.server_rss is not None]
        if rss_before is not None and rss:
            peak = max(rss)
            report.server_rss_before_mb = rss_before / MB
            report.server_rss_peak_mb = peak / MB
            report.server_rss_per_call_mb = (peak - rss_before) / MB / n_calls
    return report


def aggregate(results: list[CallResult], scripts: list[CallerScript]) -> LoadReport:
    """The load report's call metrics (everything but timing and process samples)."""
    report = LoadReport(calls=len(results), results=results)
    report.turns_expected = sum(len(s.utterances) for s in scripts)
    latencies: list[float] = []
    stops: list[float] = []
    for r in results:
        if r.error is not None:
            report.failed_calls += 1
            if len(report.errors) < 5:
                report.errors.append(r.error)
        report.clears += r.clears
        report.protocol_errors += r.protocol_error_count
        report.frames_sent += r.frames_sent
        report.late_frames += r.late_frames
        report.max_send_lag_ms = max(report.max_send_lag_ms, r.max_send_lag_ms)
        for turn in r.turns:
            if turn.answered and turn.latency_ms is not None:
                report.turns_answered += 1
                latencies.append(turn.latency_ms)
            if turn.talked_over:
                report.talked_over_turns += 1
                report.talked_over_cleared += turn.agent_cleared
                if turn.agent_stop_ms is not None:
                    stops.append(turn.agent_stop_ms)
        for reply in [r.greeting, *(t.reply for t in r.turns)]:
            span = reply.span_s
            if span is None:
                continue
            report.reply_audio_s += reply.audio_s
            report.reply_span_s += span
            report.max_gap_ms = max(report.max_gap_ms, reply.max_gap_ms)
            report.gaps_over_60ms += reply.gaps_over_60ms
            report.max_underrun_ms = max(report.max_underrun_ms, reply.max_underrun_ms)
            report.underruns_over_60ms += reply.max_underrun_ms > 60.0
    report.latency_median_ms, report.latency_p95_ms, report.latency_max_ms = _summary(latencies)
    report.agent_stop_median_ms, report.agent_stop_p95_ms, report.agent_stop_max_ms = _summary(stops)
    if report.reply_span_s > 0:
        report.audio_per_wall_s = report.reply_audio_s / report.reply_span_s
    return report


def _summary(values: list[float]) -> tuple[float | None, float | None, float | None]:
    """Median, p95 (linear interpolation between closest ranks) and max; Nones if empty."""
    if not values:
        return None, None, None
    arr = np.asarray(values)
    return float(np.median(arr)), float(np.percentile(arr, 95)), float(arr.max())
