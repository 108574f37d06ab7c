"""The process's one 20 ms RTP clock: a single timer drives every call's sending.

``RtpTicker`` wakes at ``origin + n * interval`` (deadlines from the origin on the injected clock,
``loop.time()`` by default; never accumulated sleeps) and calls every registered callback once with
the tick number ``n`` and the time. One timer for 200 calls costs one wake-up per tick instead of
200, and every call's packets go out in the same burst, 20 ms apart. Callbacks register for one of
two phases: every ``SEND`` callback runs before any ``RECEIVE`` callback, so the packets of all
calls leave in one tight burst and the inbound work of the tick (jitter buffers, waking the calls'
readers) comes after it.

If the loop stalls past later deadlines (a blocking call somewhere, a busy machine):

- up to ``max_catch_up`` ticks late, the missed ticks run back to back at once (burst): no tick
  number is skipped, packets stay in order and the far end's jitter buffer absorbs the burst;
- more than that, the missed ticks are skipped: the next tick run is the one now due, so senders
  see the tick number jump (``RtpSession`` then keeps its RTP timestamps on the wall clock and
  drops the audio that would have played meanwhile) and ``stats.skipped`` counts them.

With an ``RtpPacer`` (``pacer=``), the ticker builds and the pacer's process sends: tick ``n``'s
packets go to the calls' lanes (handed over once the tick's callbacks ran) and leave at
``origin + n * interval + pacer.lead``, so a tick run up to ``lead`` late is not heard (see
``pacer.py``). The pacer starts and stops with the ticker.

``stats`` records how late each tick ran (p50/p99/max) for benchmarks and metrics. A sender that
raises is logged and unregistered, so one broken call cannot stop the others.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING

from ringline.engine.audio.clock import Clock, LoopClock

if TYPE_CHECKING:
    from .pacer import RtpPacer

log = logging.getLogger(__name__)

__all__ = ["RECEIVE", "SEND", "RtpTicker", "Sender", "TickStats"]

SEND = 0
RECEIVE = 1

Sender = Callable[[int, float], None]
"""Called once per tick with the tick number and the clock time; must not block."""


def _percentile(samples: deque[float], q: float) -> float:
    if not samples:
        return 0.0
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


class TickStats:
    """How late ticks ran after their deadlines, in seconds (the last ``keep`` ticks)."""

    __slots__ = ("_samples", "_work", "bursts", "count", "max", "skipped")

    def __init__(self, keep: int = 1 << 16) -> None:
        self._samples: deque[float] = deque(maxlen=keep)
        self._work: deque[float] = deque(maxlen=keep)
        """How long each tick's callbacks took (``time.perf_counter``: a measurement, not a deadline)."""
        self.count = 0
        self.max = 0.0
        self.bursts = 0
        """Ticks run a whole interval or more late (catching up, back to back)."""
        self.skipped = 0
        """Ticks never run (the loop stalled for more than ``max_catch_up`` ticks)."""

    def record(self, lateness: float) -> None:
        self._samples.append(lateness)
        self.count += 1
        if lateness > self.max:
            self.max = lateness

    def percentile(self, q: float) -> float:
        """Lateness percentile ``q`` (0-100), seconds."""
        return _percentile(self._samples, q)

    def work_percentile(self, q: float) -> float:
        """Percentile ``q`` of the time a tick's callbacks took, seconds."""
        return _percentile(self._work, q)

    def reset(self) -> None:
        self._samples.clear()
        self._work.clear()
        self.count = self.bursts = self.skipped = 0
        self.max = 0.0


class RtpTicker:
    def __init__(
        self,
        clock: Clock | None = None,
        *,
        interval: float = 0.02,
        max_catch_up: int = 5,
        pacer: RtpPacer | None = None,
    ) -> None:
        if pacer is not None and pacer.interval != interval:
            raise ValueError(f"the pacer's interval {pacer.interval} differs from the ticker's {interval}")
        self._clock = clock or LoopClock()
        self.pacer = pacer
        """Sends what the ticks build, when set (see the module's docstring)."""
        self.interval = interval
        self.max_catch_up = max_catch_up
        self._senders: dict[Sender, int] = {}
        self._snapshot: tuple[Sender, ...] = ()
        self._task: asyncio.Task[None] | None = None
        self.tick = -1
        """Number of the last tick run (-1: none yet)."""
        self.stats = TickStats()

    def register(self, sender: Sender, phase: int = SEND) -> None:
        """Call ``sender`` on every tick from the next one on, in ``phase`` (``SEND`` or ``RECEIVE``)."""
        if phase not in (SEND, RECEIVE):
            raise ValueError(f"phase must be SEND (0) or RECEIVE (1), got {phase!r}")
        self._senders[sender] = phase
        self._update()

    def unregister(self, sender: Sender) -> None:
        """Stop calling ``sender`` (no error if it was not registered)."""
        if self._senders.pop(sender, None) is not None:
            self._update()

    def _update(self) -> None:
        senders = self._senders
        self._snapshot = tuple(s for s in senders if senders[s] == SEND) + tuple(
            s for s in senders if senders[s] == RECEIVE
        )

    @property
    def clock(self) -> Clock:
        return self._clock

    def __len__(self) -> int:
        return len(self._senders)

    async def start(self) -> None:
        if self._task is None:
            if self.pacer is not None:
                self.pacer.start()  # blocks until its process is ready: tens of ms, once
            origin = self._clock.now()
            if self.pacer is not None:
                self.pacer.begin(time.monotonic())  # the same instant on the pacer's clock
            self._task = asyncio.create_task(self._run(origin), name="rtp-ticker")

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        if self.pacer is not None:
            self.pacer.stop()

    async def __aenter__(self) -> RtpTicker:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def _run(self, origin: float) -> None:
        clock, interval, stats, pacer = self._clock, self.interval, self.stats, self.pacer
        n = 0
        while True:
            deadline = origin + n * interval
            await clock.sleep_until(deadline)
            now = clock.now()
            behind = int((now - deadline) / interval + 1e-9)  # whole ticks overdue (float-safe)
            if behind > self.max_catch_up:
                log.warning("rtp ticker stalled %.0f ms: skipping %d ticks", (now - deadline) * 1000, behind)
                stats.skipped += behind
                n += behind
                deadline = origin + n * interval
            elif behind:
                stats.bursts += 1
            stats.record(now - deadline)
            self.tick = n
            started = time.perf_counter()
            for sender in self._snapshot:
                try:
                    sender(n, now)
                except Exception:
                    log.exception("rtp sender %r failed: unregistered", sender)
                    self.unregister(sender)
            if pacer is not None:
                pacer.flush()
            stats._work.append(time.perf_counter() - started)
            n += 1
