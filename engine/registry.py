"""Live calls by id, and the most recent finished ones.

In-process implementation; a Redis-backed one routes control commands across nodes (later).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from ringline.engine.audio.clock import Clock
from ringline.engine.call import Call
from ringline.engine.errors import RinglineError
from ringline.engine.record import CallRecord, EndReason

log = logging.getLogger(__name__)


class DuplicateCallError(RinglineError):
    """A provider started a stream for a call id that is already live."""


class CallRegistry:
    def __init__(self, keep_finished: int = 1000) -> None:
        self._live: dict[str, Call] = {}
        self.finished: deque[CallRecord] = deque(maxlen=keep_finished)
        self._waiters: dict[str, list[asyncio.Future[CallRecord]]] = {}
        self._live_waiters: dict[str, list[asyncio.Future[Call]]] = {}

    def __len__(self) -> int:
        return len(self._live)

    def add(self, call: Call) -> None:
        if call.call_id in self._live:
            raise DuplicateCallError(f"call {call.call_id} is already live")
        self._live[call.call_id] = call
        for waiter in self._live_waiters.pop(call.call_id, []):
            if not waiter.done():
                waiter.set_result(call)

    async def wait_live(self, call_id: str) -> Call:
        """The call ``call_id`` once it is live (at once if it is)."""
        if (call := self._live.get(call_id)) is not None:
            return call
        waiter: asyncio.Future[Call] = asyncio.get_running_loop().create_future()
        self._live_waiters.setdefault(call_id, []).append(waiter)
        return await waiter

    def get(self, call_id: str) -> Call | None:
        return self._live.get(call_id)

    def finish(self, call: Call) -> None:
        if self._live.pop(call.call_id, None) is not None:
            self.finished.append(call.record)
            for waiter in self._waiters.pop(call.call_id, []):
                if not waiter.done():
                    waiter.set_result(call.record)

    async def wait_finished(self, call_id: str) -> CallRecord:
        """The record of ``call_id`` once it has finished (at once if it already has)."""
        if call_id not in self._live and (record := self.find_record(call_id)) is not None:
            return record
        waiter: asyncio.Future[CallRecord] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(call_id, []).append(waiter)
        return await waiter

    def find_record(self, call_id: str) -> CallRecord | None:
        return next((r for r in reversed(self.finished) if r.call_id == call_id), None)

    async def watch_idle(self, clock: Clock, idle_after: float) -> None:
        """Forever: end calls whose provider has sent nothing for ``idle_after`` seconds (a dead
        socket that never closed). Checks a few times per timeout."""
        while True:
            await clock.sleep_until(clock.now() + idle_after / 4)
            now = clock.now()
            for call in [c for c in self._live.values() if now - c.last_heard > idle_after]:
                log.warning("no media for %.0f s: ending the call", idle_after, extra={"call_id": call.call_id})
                await call.end(EndReason.TRANSPORT_CLOSED, f"no message from the provider for {idle_after:g} s")

    async def end_all(self, reason: EndReason, grace: float) -> None:
        """End every live call (graceful shutdown), giving up after ``grace`` seconds."""
        calls = list(self._live.values())
        if not calls:
            return
        log.info("ending %d live calls: %s", len(calls), reason.value)
        results = asyncio.gather(*(c.end(reason) for c in calls), return_exceptions=True)
        try:
            await asyncio.wait_for(results, grace)
        except TimeoutError:
            log.error("%d calls did not end within %.1f s", len(self._live), grace)
