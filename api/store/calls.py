"""Calls: their rows and state changes (each with its outbox events in one transaction), the transcript and
event journal, start-up recovery and usage."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from datetime import date, datetime
from typing import Any

from ringline.api.store.db import Row, Tx, Where, assignments, dumps, loads, ts, ts_required
from ringline.api.store.errors import Conflict, NotFound
from ringline.api.store.outbox import insert_outbox
from ringline.api.store.records import (
    UNSET,
    Call,
    CallEvent,
    CallFilter,
    CallMessage,
    CallStatus,
    Direction,
    Json,
    OutboxArg,
    OutboxEvent,
    Page,
    Role,
    Unset,
    Usage,
    new_id,
)
from ringline.api.store.sqlbase import SqlBase, changed


def call_record(row: Row) -> Call:
    return Call(
        id=row["id"],
        agent_id=row["agent_id"],
        direction=Direction(row["direction"]),
        status=CallStatus(row["status"]),
        from_number=row["from_number"],
        to_number=row["to_number"],
        created_at=ts_required(row["created_at"]),
        updated_at=ts_required(row["updated_at"]),
        started_at=ts(row["started_at"]),
        ended_at=ts(row["ended_at"]),
        end_reason=row["end_reason"],
        duration_s=float(row["duration_s"]),
        node=row["node"],
        metadata=loads(row["metadata"]),
        variables=loads(row["variables"]),
        latency=loads(row["latency"]),
        analysis=loads(row["analysis"]),
        recording_path=row["recording_path"],
    )


async def _with_outbox(tx: Tx, row: Row | None, outbox: OutboxArg, now: datetime) -> Call:
    """The changed call, after enqueueing its events (bound to it) in the same transaction."""
    assert row is not None
    call = call_record(row)
    events = outbox(call) if callable(outbox) else outbox
    await insert_outbox(tx, [dataclasses.replace(e, call_id=call.id) for e in events], now)
    return call


class CallTables(SqlBase):
    async def create_call(
        self,
        direction: Direction,
        *,
        id: str | None = None,
        agent_id: str | None = None,
        status: CallStatus = CallStatus.QUEUED,
        from_number: str = "",
        to_number: str = "",
        node: str | None = None,
        metadata: Json | None = None,
        variables: Json | None = None,
        outbox: OutboxArg = (),
    ) -> Call:
        if CallStatus(status) is CallStatus.ENDED:
            raise ValueError("a call cannot be created ended")
        now = self._now()
        started_at = now if status is CallStatus.IN_PROGRESS else None
        values: dict[str, Any] = {
            "id": id or new_id("call"),
            "agent_id": agent_id,
            "direction": Direction(direction).value,
            "status": CallStatus(status).value,
            "from_number": from_number,
            "to_number": to_number,
            "node": node,
            "created_at": now,
            "updated_at": now,
            "started_at": started_at,
            "metadata": dumps(metadata or {}),
            "variables": dumps(variables or {}),
        }
        params = ", ".join(f"${i + 1}" for i in range(len(values)))
        try:
            async with self._db.transaction() as tx:
                row = await tx.fetchrow(
                    f"INSERT INTO calls ({', '.join(values)}) VALUES ({params}) RETURNING *", *values.values()
                )
                return await _with_outbox(tx, row, outbox, now)
        except Conflict as e:
            raise Conflict(f"call {values['id']} already exists", reason=e.reason) from e

    async def get_call(self, id: str) -> Call:
        return await self._get("calls", "call", id, call_record)

    async def list_calls(self, filter: CallFilter | None = None, *, limit: int = 100, offset: int = 0) -> Page[Call]:
        """Newest first."""
        filter = filter or CallFilter()
        where = Where()
        if filter.agent_id is not None:
            where.add(f"agent_id = {where.arg(filter.agent_id)}")
        if filter.status is not None:
            where.add(f"status = {where.arg(CallStatus(filter.status).value)}")
        if filter.direction is not None:
            where.add(f"direction = {where.arg(Direction(filter.direction).value)}")
        if filter.number is not None:
            number = where.arg(filter.number)
            where.add(f"(from_number = {number} OR to_number = {number})")
        if filter.created_from is not None:
            where.add(f"created_at >= {where.arg(filter.created_from)}")
        if filter.created_to is not None:
            where.add(f"created_at < {where.arg(filter.created_to)}")
        return await self._page("calls", call_record, where=where, limit=limit, offset=offset)

    async def update_call_status(
        self, id: str, status: CallStatus, *, at: datetime | None = None, outbox: OutboxArg = ()
    ) -> Call:
        """Move a live call to another live status (``end_call`` ends it). The first ``in_progress`` sets
        ``started_at``. Raises ``Conflict`` if the call has ended."""
        status = CallStatus(status)
        if status is CallStatus.ENDED:
            raise ValueError("end a call with end_call()")
        now = at or self._now()
        started_at = now if status is CallStatus.IN_PROGRESS else None
        async with self._db.transaction() as tx:
            row = await tx.fetchrow(
                "UPDATE calls SET status = $2, updated_at = $3, started_at = COALESCE(started_at, $4) "
                "WHERE id = $1 AND status <> 'ended' RETURNING *",
                id,
                status.value,
                now,
                started_at,
            )
            if row is None:
                await self._require_live(tx, id)
            return await _with_outbox(tx, row, outbox, now)

    async def end_call(self, id: str, reason: str, *, at: datetime | None = None, outbox: OutboxArg = ()) -> Call:
        """End a live call once: ``Conflict`` if it has already ended, so its "ended" events go out once."""
        now = at or self._now()
        async with self._db.transaction() as tx:
            live = await self._require_live(tx, id)
            return await self._end(tx, live, reason, now, outbox)

    async def update_call(
        self,
        id: str,
        *,
        agent_id: str | None | Unset = UNSET,
        metadata: Json | Unset = UNSET,
        variables: Json | Unset = UNSET,
        latency: list[Any] | Unset = UNSET,
        analysis: Json | None | Unset = UNSET,
        recording_path: str | None | Unset = UNSET,
        outbox: OutboxArg = (),
    ) -> Call:
        """Set what a call learns along the way or after it ends (latency, analysis, recording ...)."""
        documents = changed(metadata=metadata, variables=variables, latency=latency, analysis=analysis)
        changes = {k: dumps(v) for k, v in documents.items()}
        changes |= changed(agent_id=agent_id, recording_path=recording_path)
        now = self._now()
        sets, args = assignments({**changes, "updated_at": now}, first=2)
        async with self._db.transaction() as tx:
            row = await tx.fetchrow(f"UPDATE calls SET {sets} WHERE id = $1 RETURNING *", id, *args)
            if row is None:
                raise NotFound("call", id)
            return await _with_outbox(tx, row, outbox, now)

    async def delete_call(self, id: str) -> None:
        """Delete a call with its transcript and events (its outbox rows stay, without the call)."""
        async with self._db.transaction() as tx:
            await tx.execute("DELETE FROM call_messages WHERE call_id = $1", id)
            await tx.execute("DELETE FROM call_events WHERE call_id = $1", id)
            if await tx.execute("DELETE FROM calls WHERE id = $1", id) == 0:
                raise NotFound("call", id)

    async def mark_live_calls_ended(
        self,
        reason: str = "engine_restart",
        *,
        node: str | None = None,
        outbox: Callable[[Call], Sequence[OutboxEvent]] | None = None,
    ) -> int:
        """At start-up: end the calls a previous run left live (of ``node`` only, if given); how many."""
        now = self._now()
        lock = self._db.dialect.for_update
        async with self._db.transaction() as tx:
            of_node, args = ("", []) if node is None else (" AND node = $1", [node])
            rows = await tx.fetch(f"SELECT id, started_at FROM calls WHERE status <> 'ended'{of_node} {lock}", *args)
            for row in rows:
                await self._end(tx, row, reason, now, outbox or ())
        return len(rows)

    async def _require_live(self, tx: Tx, id: str) -> Row:
        lock = self._db.dialect.for_update
        row = await tx.fetchrow(f"SELECT id, status, started_at FROM calls WHERE id = $1 {lock}", id)
        if row is None:
            raise NotFound("call", id)
        if row["status"] == CallStatus.ENDED:
            raise Conflict(f"call {id} has already ended")
        return row

    async def _end(self, tx: Tx, live: Row, reason: str, now: datetime, outbox: OutboxArg) -> Call:
        started = ts(live["started_at"])
        duration = 0.0 if started is None else max(0.0, (now - started).total_seconds())
        row = await tx.fetchrow(
            "UPDATE calls SET status = 'ended', ended_at = $2, updated_at = $2, end_reason = $3, duration_s = $4 "
            "WHERE id = $1 RETURNING *",
            live["id"],
            now,
            reason,
            duration,
        )
        return await _with_outbox(tx, row, outbox, now)

    # -- the journal

    async def append_journal(self, messages: Sequence[CallMessage], events: Sequence[CallEvent]) -> None:
        """Write a batch of transcript lines and events in one transaction. A line already written (same
        call and seq, from a retried batch) is skipped, so retrying a batch never duplicates it."""
        async with self._db.transaction() as tx:
            if messages:
                await tx.executemany(
                    "INSERT INTO call_messages (call_id, seq, role, content, interrupted, at, extra) "
                    "VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (call_id, seq) DO NOTHING",
                    [
                        (m.call_id, m.seq, Role(m.role).value, m.content, m.interrupted, m.at, dumps(m.extra))
                        for m in messages
                    ],
                )
            if events:
                await tx.executemany(
                    "INSERT INTO call_events (call_id, seq, type, payload, at) "
                    "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (call_id, seq) DO NOTHING",
                    [(e.call_id, e.seq, e.type, dumps(e.payload), e.at) for e in events],
                )

    async def list_messages(self, call_id: str) -> list[CallMessage]:
        rows = await self._db.fetch("SELECT * FROM call_messages WHERE call_id = $1 ORDER BY seq", call_id)
        return [
            CallMessage(
                call_id=r["call_id"],
                seq=int(r["seq"]),
                role=Role(r["role"]),
                content=r["content"],
                at=ts_required(r["at"]),
                interrupted=bool(r["interrupted"]),
                extra=loads(r["extra"]),
            )
            for r in rows
        ]

    async def list_events(self, call_id: str, *, after_seq: int = 0, limit: int = 1000) -> list[CallEvent]:
        rows = await self._db.fetch(
            "SELECT * FROM call_events WHERE call_id = $1 AND seq > $2 ORDER BY seq LIMIT $3", call_id, after_seq, limit
        )
        return [
            CallEvent(r["call_id"], int(r["seq"]), r["type"], loads(r["payload"]), ts_required(r["at"])) for r in rows
        ]

    # -- usage

    async def usage(self, since: datetime, until: datetime, *, agent_id: str | None = None) -> list[Usage]:
        """Calls and minutes per agent per UTC day, for calls created in ``[since, until)``."""
        day = self._db.dialect.day("created_at")
        where = Where()
        where.add(f"created_at >= {where.arg(since)}")
        where.add(f"created_at < {where.arg(until)}")
        if agent_id is not None:
            where.add(f"agent_id = {where.arg(agent_id)}")
        rows = await self._db.fetch(
            f"SELECT agent_id, {day} AS utc_day, count(*) AS calls, COALESCE(sum(duration_s), 0) AS seconds "
            f"FROM calls {where} GROUP BY agent_id, utc_day ORDER BY utc_day, agent_id",
            *where.args,
        )
        return [
            Usage(r["agent_id"], date.fromisoformat(r["utc_day"]), int(r["calls"]), float(r["seconds"]) / 60.0)
            for r in rows
        ]
