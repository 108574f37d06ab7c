"""Clocks. Everything that schedules or timestamps takes a ``Clock`` so tests can drive time."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from typing import Protocol


class Timer(Protocol):
    """A callback scheduled with ``Clock.call_at`` (``asyncio.TimerHandle`` is one)."""

    def when(self) -> float: ...

    def cancel(self) -> None: ...


class Clock(Protocol):
    def now(self) -> float:
        """Monotonic seconds."""
        ...

    async def sleep_until(self, deadline: float) -> None:
        """Return once ``now() >= deadline`` (at once if it already is)."""
        ...

    def call_at(self, deadline: float, callback: Callable[[], object]) -> Timer:
        """Call ``callback`` on the event loop once ``now() >= deadline``, unless cancelled first:
        a deadline without a task waiting for it."""
        ...


class LoopClock:
    """The running event loop's monotonic clock (``loop.time()``), bound on first use."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def now(self) -> float:
        self.now = self.loop.time  # type: ignore[method-assign]  # read on every frame: bind once
        return self.now()

    async def sleep_until(self, deadline: float) -> None:
        delay = deadline - self.loop.time()
        if delay > 0:
            await asyncio.sleep(delay)

    def call_at(self, deadline: float, callback: Callable[[], object]) -> asyncio.TimerHandle:
        return self.loop.call_at(deadline, callback)


class _FakeTimer:
    def __init__(self, deadline: float, callback: Callable[[], object]) -> None:
        self._deadline = deadline
        self.callback: Callable[[], object] | None = callback

    def when(self) -> float:
        return self._deadline

    def cancel(self) -> None:
        self.callback = None


class FakeClock:
    """A clock that only moves when told to. ``advance`` wakes sleepers and fires timers in deadline
    order."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._timers: list[tuple[float, int, _FakeTimer]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    def call_at(self, deadline: float, callback: Callable[[], object]) -> _FakeTimer:
        timer = _FakeTimer(deadline, callback)
        heapq.heappush(self._timers, (deadline, next(self._seq), timer))
        return timer

    async def sleep_until(self, deadline: float) -> None:
        if deadline <= self._now:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.call_at(deadline, lambda: fut.done() or fut.set_result(None))
        await fut

    async def advance(self, seconds: float) -> None:
        """Move time forward, firing each timer (and waking each sleeper) at its deadline and
        letting what it woke run."""
        target = self._now + seconds
        while self._timers and self._timers[0][0] <= target:
            deadline, _, timer = heapq.heappop(self._timers)
            self._now = max(self._now, deadline)
            if timer.callback is not None:
                timer.callback()
            for _ in range(5):  # let the woken task and what it awaits run
                await asyncio.sleep(0)
        self._now = target
        await asyncio.sleep(0)
