"""The call journal: transcript lines and live events written as the call goes, without the call ever
waiting on the database.

Appends are plain method calls that put a record in memory and return. One background task, owned by the
journal, writes what has gathered every ``interval_s`` (250 ms by default) in one transaction, so a crash loses
well under a second. A failed write is logged and retried at the next tick, the records kept in order; a
retried batch never duplicates lines (each has its call's ``seq``). The buffer is bounded: while the database
is away for long, appends past ``max_pending`` are dropped and counted, and their seq numbers are left as gaps.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeAlias

from ringline.api.store.base import JournalSink
from ringline.api.store.errors import StoreError
from ringline.api.store.records import CallEvent, CallMessage, Json, Role, utcnow
from ringline.engine.audio.clock import Clock, LoopClock

log = logging.getLogger(__name__)

Entry: TypeAlias = CallMessage | CallEvent


@dataclass(frozen=True, slots=True)
class JournalStats:
    pending: int
    written: int
    dropped: int
    """Records lost: appended while the buffer was full, or refused by the database as malformed."""
    failed_writes: int


class CallJournal:
    """One per process, shared by its calls. Use ``async with`` (or ``start()`` and ``aclose()``)."""

    def __init__(
        self,
        sink: JournalSink,
        *,
        interval_s: float = 0.25,
        max_pending: int = 50_000,
        max_batch: int = 1_000,
        clock: Clock | None = None,
        now: Callable[[], datetime] = utcnow,
    ) -> None:
        if interval_s <= 0 or max_pending < 1 or max_batch < 1:
            raise ValueError("interval_s, max_pending and max_batch must be positive")
        self._sink = sink
        self._interval = interval_s
        self._max_pending = max_pending
        self._max_batch = max_batch
        self._clock = clock or LoopClock()
        self._now = now
        self._pending: deque[Entry] = deque()
        self._seqs: dict[str, list[int]] = {}  # call id -> [last message seq, last event seq]
        self._write_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._written = self._dropped = self._failed_writes = 0
        self._overflowing = False

    # -- the hot path: never awaits

    def message(
        self,
        call_id: str,
        role: Role | str,
        content: str,
        *,
        interrupted: bool = False,
        extra: Json | None = None,
        at: datetime | None = None,
    ) -> int:
        """Append a transcript line (once it is final: an interrupted reply with what was heard); its seq."""
        seq = self._next(call_id, 0)
        self._append(CallMessage(call_id, seq, Role(role), content, at or self._now(), interrupted, extra))
        return seq

    def event(self, call_id: str, type: str, payload: Json | None = None, *, at: datetime | None = None) -> int:
        """Append a live event; its seq."""
        seq = self._next(call_id, 1)
        self._append(CallEvent(call_id, seq, type, payload or {}, at or self._now()))
        return seq

    def release(self, call_id: str) -> None:
        """Forget a finished call's counters (after its last append: a later one would reuse seq numbers
        and be skipped as already written)."""
        self._seqs.pop(call_id, None)

    @property
    def stats(self) -> JournalStats:
        return JournalStats(len(self._pending), self._written, self._dropped, self._failed_writes)

    def _next(self, call_id: str, kind: int) -> int:
        counters = self._seqs.setdefault(call_id, [0, 0])
        counters[kind] += 1
        return counters[kind]

    def _append(self, entry: Entry) -> None:
        if len(self._pending) >= self._max_pending:
            self._dropped += 1
            if not self._overflowing:
                self._overflowing = True
                log.error("call journal full (%d records): dropping new records", len(self._pending))
            return
        self._pending.append(entry)

    # -- lifecycle

    async def start(self) -> None:
        """Start the writer task; returns once it is waiting for its first tick."""
        if self._task is not None:
            raise RuntimeError("the journal is already started")
        running = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._run(running), name="call-journal")
        await running

    async def aclose(self) -> None:
        """Stop the writer task and write what is left (a failure is logged, with what it lost)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        try:
            await self.flush()
        except StoreError as e:
            log.error("call journal closing: %d records not written: %s", len(self._pending), e)

    async def __aenter__(self) -> CallJournal:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- writing

    async def flush(self) -> None:
        """Write everything appended so far. Raises ``StoreError`` if the database fails (nothing is lost:
        the records stay queued for the next try)."""
        async with self._write_lock:
            while self._pending:
                batch = [self._pending.popleft() for _ in range(min(len(self._pending), self._max_batch))]
                try:
                    await self._write(batch)
                except BaseException:
                    self._pending.extendleft(reversed(batch))
                    raise
            self._overflowing = False

    async def _run(self, running: asyncio.Future[None]) -> None:
        failing = 0
        running.set_result(None)
        while True:
            await self._clock.sleep_until(self._clock.now() + self._interval)
            if not self._pending:
                continue
            try:
                await self.flush()
            except Exception as e:  # the task's boundary: log, keep the records, try again next tick
                self._failed_writes += 1
                if not failing:
                    log.warning("call journal: write failed, retrying every %.2f s: %s", self._interval, e)
                failing += 1
            else:
                if failing:
                    log.info("call journal: writing again after %d failed attempts", failing)
                failing = 0

    async def _write(self, batch: list[Entry]) -> None:
        messages = [e for e in batch if isinstance(e, CallMessage)]
        events = [e for e in batch if isinstance(e, CallEvent)]
        try:
            await self._sink.append_journal(messages, events)
        except StoreError:
            raise
        except Exception:  # a malformed record (a payload JSON cannot hold): find it, drop it, keep the rest
            log.warning("call journal: batch refused, writing one record at a time", exc_info=True)
            await self._write_each(batch)
            return
        self._written += len(batch)

    async def _write_each(self, batch: list[Entry]) -> None:
        for entry in batch:
            single: tuple[list[Any], list[Any]] = ([entry], []) if isinstance(entry, CallMessage) else ([], [entry])
            try:
                await self._sink.append_journal(*single)
            except StoreError:
                raise  # the whole batch goes back in the queue; what was written is skipped next time
            except Exception:
                self._dropped += 1
                extra = {"call_id": entry.call_id}
                log.exception("call journal: dropped a malformed record (seq %d)", entry.seq, extra=extra)
            else:
                self._written += 1
