"""The store's view of live calls: each call's row, transcript and events, written as the call goes.

``CallLedger.opened`` creates (or, for an outbound call the API queued, takes over) the call's row
before the call starts, then observes the call's events: settled messages go to the journal's
transcript, every event to its event log, status changes and the end to the call's row. The call
never waits on the database: journal appends are in-memory, row updates run as tasks the ledger
owns, and a database that fails is logged and the call goes on.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Coroutine, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ringline.api.store import CallJournal, CallStatus, Direction, NotFound, Role, Store, StoreError
from ringline.api.store.records import OutboxArg
from ringline.api.webhooks.targets import CallWebhooks
from ringline.engine.call import Call
from ringline.engine.call import CallStatus as LiveStatus
from ringline.engine.events import CallEvent, EventType

if TYPE_CHECKING:
    from ringline.api.analysis import PostCall

log = logging.getLogger(__name__)

STATUS = {
    LiveStatus.ACTIVE: CallStatus.IN_PROGRESS,
    LiveStatus.TRANSFERRING: CallStatus.FORWARDING,
}
"""Live statuses the call's row records (ending and ended are recorded by ``end_call``)."""


class CallLedger:
    """One per process: the bridge from live calls to the store."""

    def __init__(
        self,
        store: Store,
        journal: CallJournal,
        recordings: Path,
        *,
        webhooks: CallWebhooks | None = None,
        post_call: PostCall | None = None,
    ) -> None:
        self._store = store
        self._post_call = post_call
        """Each ended call's analysis and end-of-call report, in the background."""
        self._webhooks = webhooks
        """Status changes enqueue ``status-update`` webhooks in their transaction."""
        self._journal = journal
        self._recordings = recordings
        self._tasks: set[asyncio.Task[Any]] = set()
        self._locks: dict[str, asyncio.Lock] = {}
        """Per live call: row updates run one at a time, in the order the call made them."""

    def recording_path(self, call_id: str) -> Path:
        return self._recordings / f"{call_id}.wav"

    async def opened(
        self,
        call: Call,
        *,
        agent_id: str | None,
        direction: Direction = Direction.INBOUND,
        from_number: str = "",
        to_number: str = "",
        metadata: Mapping[str, Any] | None = None,
        variables: Mapping[str, str] | None = None,
    ) -> None:
        """Record a call that is about to start and follow it until it ends. Waits for the row
        (one insert) so the first transcript lines have somewhere to go; a failing database is
        logged and the call goes on unrecorded."""
        try:
            await self._create_row(call, agent_id, direction, from_number, to_number, metadata, variables)
        except StoreError as exc:
            log.error("call %s is not recorded: %s", call.call_id, exc, extra={"call_id": call.call_id})
            return
        self._locks[call.call_id] = asyncio.Lock()
        if call.recorder is not None:  # streamed to disk as the call goes; closed in ``_ended``
            call.recorder.open(self.recording_path(call.call_id))
        call.events.observe(_Follower(functools.partial(self.record_event, call)))

    async def _create_row(
        self,
        call: Call,
        agent_id: str | None,
        direction: Direction,
        from_number: str,
        to_number: str,
        metadata: Mapping[str, Any] | None,
        variables: Mapping[str, str] | None,
    ) -> None:
        call_id = call.call_id
        try:
            row = await self._store.get_call(call_id)
        except NotFound:
            await self._store.create_call(
                direction,
                id=call_id,
                agent_id=agent_id,
                status=CallStatus.RINGING,
                from_number=from_number,
                to_number=to_number,
                metadata=dict(metadata or {}),
                variables=dict(variables or {}),
                outbox=self._status_outbox(call),
            )
            self._notify()
            return
        if row.status is CallStatus.ENDED:
            raise StoreError(f"call {call_id} already ended")

    def _spawn(self, call_id: str, what: str, work: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        lock = self._locks[call_id]

        async def run() -> None:
            async with lock:
                try:
                    await work()
                except (StoreError, OSError) as exc:
                    log.error("recording %s of call %s failed: %s", what, call_id, exc, extra={"call_id": call_id})

        task = asyncio.create_task(run(), name="call-ledger")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def record_event(self, call: Call, event: CallEvent) -> None:
        """Journal ``event``; schedule the row update it calls for. Never blocks."""
        call_id = call.call_id
        data = dict(event.data)
        at = datetime.fromtimestamp(event.at, UTC)
        self._journal.event(call_id, event.type.value, data, at=at)
        if event.type is EventType.MESSAGE:
            extra = {k: data[k] for k in ("tool_calls", "tool_call_id") if data.get(k)}
            role, content, interrupted = Role(data["role"]), data["content"], data["interrupted"]
            self._journal.message(call_id, role, content, interrupted=interrupted, extra=extra or None, at=at)
        elif event.type is EventType.STATUS:
            status = LiveStatus(data["status"])
            if (stored := STATUS.get(status)) is not None:
                self._spawn(call_id, "its status", functools.partial(self._status, call, stored))
            elif status is LiveStatus.ENDED:
                self._spawn(call_id, "its end", functools.partial(self._ended, call))

    def _status_outbox(self, call: Call) -> OutboxArg:
        return self._webhooks.status_update(call.agent) if self._webhooks is not None else ()

    def _notify(self) -> None:
        if self._webhooks is not None:
            self._webhooks.notify()

    async def _status(self, call: Call, status: CallStatus) -> None:
        await self._store.update_call_status(call.call_id, status, outbox=self._status_outbox(call))
        self._notify()

    async def _ended(self, call: Call) -> None:
        call_id, record = call.call_id, call.record
        try:
            recording = await call.recorder.aclose() if call.recorder is not None else None
            latency = [t.breakdown_ms() for t in record.turns]
            await self._store.update_call(
                call_id, latency=latency, recording_path=str(recording) if recording else None
            )
            reason = record.end_reason.value if record.end_reason is not None else "error"
            await self._journal.flush()  # an ended row has its whole transcript
            await self._store.end_call(call_id, reason, outbox=self._status_outbox(call))
            self._notify()
            if self._post_call is not None:
                self._post_call.start(call_id, call.agent)
        finally:
            self._journal.release(call_id)
            del self._locks[call_id]

    async def aclose(self) -> None:
        """Wait for the row updates in flight (after every call has ended), then the post-call work."""
        while self._tasks:
            await asyncio.gather(*tuple(self._tasks), return_exceptions=True)
        if self._post_call is not None:
            await self._post_call.aclose()


class _Follower:
    """A ``CallObserver`` that hands each event to a function."""

    __slots__ = ("on_event",)

    def __init__(self, on_event: Callable[[CallEvent], None]) -> None:
        self.on_event = on_event
