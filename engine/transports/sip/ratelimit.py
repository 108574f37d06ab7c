"""Requests per source address: a token bucket each, so one flooding peer cannot take the UA."""

from __future__ import annotations

import logging
from collections import OrderedDict

log = logging.getLogger(__name__)

MAX_SOURCES = 10_000
"""Buckets kept; the least recently seen source is forgotten first (a spoofed-address flood
cannot grow memory without bound)."""


class SourceLimiter:
    """``allow(source, now)``: at most ``rate`` requests a second from one source, in bursts of
    ``burst``. A refused source is logged at most once a second."""

    def __init__(self, rate: float, *, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self.dropped = 0
        self._logged_at: dict[str, float] = {}

    def allow(self, source: str, now: float) -> bool:
        buckets = self._buckets
        tokens, at = buckets.pop(source, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        allowed = tokens >= 1.0
        buckets[source] = (tokens - 1.0 if allowed else tokens, now)
        if len(buckets) > MAX_SOURCES:
            buckets.popitem(last=False)
        if not allowed:
            self.dropped += 1
            if now - self._logged_at.get(source, float("-inf")) >= 1.0:
                if len(self._logged_at) > MAX_SOURCES:
                    self._logged_at.clear()
                self._logged_at[source] = now
                log.warning("sip: %s over %g requests a second: dropping (%d so far)", source, self.rate, self.dropped)
        return allowed
