"""The measured server's own health over a benchmark run, from its ``/metrics``: how late its event
loop ran timers (``ringline_event_loop_lag_seconds``) and how long its garbage collections stopped
it (``ringline_gc_pause_seconds``, per generation). Read ``histograms`` before and after the run;
``loop_health`` gives the run's share: the loop lag's p99 and worst bucket, and each generation's
collection count and longest bucket (bucket bounds: a histogram says "<= 5 ms", not "3.2 ms").
"""

from __future__ import annotations

import urllib.request
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

Buckets = dict[str, dict[float, float]]
"""Per histogram name: cumulative count at each upper bound (s)."""


def histograms(base: str) -> Buckets:
    """The server's loop-lag and GC-pause histograms (GC per generation: ``..._seconds/2``)."""
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    found: Buckets = {}
    for family in text_string_to_metric_families(text):
        if family.name not in ("ringline_event_loop_lag_seconds", "ringline_gc_pause_seconds"):
            continue
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                generation = sample.labels.get("generation")
                name = family.name if generation is None else f"{family.name}/{generation}"
                found.setdefault(name, {})[float(sample.labels["le"])] = sample.value
    return found


def _bound_ms(counts: dict[float, float], q: float) -> str:
    """The upper bound (ms) of the bucket holding quantile ``q`` of ``counts`` ("-" if empty)."""
    bounds = sorted(counts)
    total = counts[bounds[-1]] if bounds else 0.0
    if total <= 0:
        return "-"
    bound = next(b for b in bounds if counts[b] >= q * total)
    return "inf" if bound == float("inf") else f"<={bound * 1000:g}"


def loop_health(before: Buckets, after: Buckets) -> dict[str, Any]:
    """Loop lag p99 / worst and GC count / longest over the run, from two ``histograms`` reads."""

    def delta(name: str) -> dict[float, float]:
        start = before.get(name, {})
        return {b: n - start.get(b, 0.0) for b, n in after.get(name, {}).items()}

    lag = delta("ringline_event_loop_lag_seconds")
    health: dict[str, Any] = {"loop lag p99 ms": _bound_ms(lag, 0.99), "loop lag max ms": _bound_ms(lag, 1.0)}
    for generation in "012":
        pauses = delta(f"ringline_gc_pause_seconds/{generation}")
        health[f"gen{generation} GCs"] = int(max(pauses.values(), default=0))
        health[f"gen{generation} max ms"] = _bound_ms(pauses, 1.0)
    return health
