"""Rate limiting: GCRA (the generic cell rate algorithm), one float per key, O(1) per request.

``limit`` requests per ``period`` seconds behave like a token bucket of ``limit`` tokens refilled
at ``limit / period`` a second: a quiet key may burst up to ``limit`` at once, then is held to the
steady rate. Unlike a fixed window there is no double burst at a window edge, and unlike a sliding
log it stores one number per key: the theoretical arrival time (TAT) of the next request.

For each request at ``now`` (``T = period / limit``)::

    tat = max(stored or now, now)
    if tat + T - period > now: refuse, retry after (tat + T - period - now)
    else: stored = tat + T

A key whose TAT has passed is indistinguishable from a key never seen, so it can be forgotten:
entries are kept in last-use order and expired ones are dropped from the old end as new requests
arrive (amortized O(1)). ``max_keys`` caps memory even under a flood of distinct keys by dropping
the least recently used entry, which only ever forgives that key.

``clock`` is monotonic seconds (``time.monotonic`` by default); tests pass a fake one.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

_EPSILON = 1e-9


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    """Requests that could be made right now after this one."""
    reset_after: float
    """Seconds until the full ``limit`` is available again."""
    retry_after: float
    """Seconds until a request would be allowed; 0 when this one was."""

    def headers(self) -> dict[str, str]:
        """``X-RateLimit-*`` (Reset in whole seconds from now, rounded up) and, if refused, ``Retry-After``."""
        out = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(math.ceil(self.reset_after - _EPSILON)),
        }
        if not self.allowed:
            out["Retry-After"] = str(self.retry_seconds)
        return out

    @property
    def retry_seconds(self) -> int:
        """``retry_after`` in whole seconds, rounded up, at least 1 (for a ``Retry-After`` header)."""
        return max(1, math.ceil(self.retry_after - _EPSILON))


class RateLimiter:
    def __init__(
        self,
        limit: int,
        period_s: float = 60.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ) -> None:
        if limit < 1 or period_s <= 0 or max_keys < 1:
            raise ValueError("limit, period_s and max_keys must be positive")
        self.limit = limit
        self.period = period_s
        self._interval = period_s / limit
        self._clock = clock
        self._max_keys = max_keys
        self._tats: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        """Keys currently remembered."""
        return len(self._tats)

    def hit(self, key: str) -> Decision:
        """Count one request for ``key`` if it is allowed, and say whether it was."""
        now = self._clock()
        tats = self._tats
        tat = max(tats.pop(key, now), now)
        new_tat = tat + self._interval
        allow_at = new_tat - self.period
        if allow_at > now + _EPSILON:
            tats[key] = tat  # unchanged, but now the most recently used
            decision = Decision(False, self.limit, 0, tat - now, allow_at - now)
        else:
            tats[key] = new_tat
            remaining = int((self.period - (new_tat - now)) / self._interval + _EPSILON)
            decision = Decision(True, self.limit, remaining, new_tat - now, 0.0)
        self._evict(now)
        return decision

    def _evict(self, now: float) -> None:
        tats = self._tats
        while len(tats) > self._max_keys:
            tats.popitem(last=False)
        while tats:
            oldest, tat = next(iter(tats.items()))
            if tat > now:
                break
            del tats[oldest]
