"""The webhook outbox: events written in the transaction of the change that caused them, then claimed,
delivered and retried by a worker. Deliveries of one call go out in order: only the oldest pending event of
a call can be claimed, and a claim holds it for a lease so a crashed worker's claims come back."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from ringline.api.store.db import Row, Tx, Where, dumps, loads, ts, ts_required
from ringline.api.store.errors import Conflict, NotFound
from ringline.api.store.records import DeliveryAttempt, OutboxEvent, OutboxItem, OutboxStatus, Page
from ringline.api.store.sqlbase import SqlBase


def outbox_record(row: Row) -> OutboxItem:
    return OutboxItem(
        id=int(row["id"]),
        call_id=row["call_id"],
        seq=int(row["seq"]),
        type=row["type"],
        payload=loads(row["payload"]),
        url=row["url"],
        status=OutboxStatus(row["status"]),
        attempts=int(row["attempts"]),
        next_attempt_at=ts_required(row["next_attempt_at"]),
        last_error=row["last_error"],
        created_at=ts_required(row["created_at"]),
        delivered_at=ts(row["delivered_at"]),
    )


async def insert_outbox(tx: Tx, events: Sequence[OutboxEvent], now: datetime) -> list[OutboxItem]:
    """Insert ``events`` inside ``tx``, numbering each call's events after its last ones.

    The numbering bumps the call's ``outbox_seq``, which also locks the call's row until the commit, so two
    transactions never hand out the same number."""
    items = []
    for event in events:
        seq = 0
        if event.call_id is not None:
            row = await tx.fetchrow(
                "UPDATE calls SET outbox_seq = outbox_seq + 1 WHERE id = $1 RETURNING outbox_seq", event.call_id
            )
            if row is None:
                raise NotFound("call", event.call_id)
            seq = int(row["outbox_seq"])
        row = await tx.fetchrow(
            "INSERT INTO outbox (call_id, seq, type, payload, url, status, attempts, next_attempt_at, created_at) "
            "VALUES ($1, $2, $3, $4, $5, 'pending', 0, $6, $7) RETURNING *",
            event.call_id,
            seq,
            event.type,
            dumps(event.payload),
            event.url,
            event.next_attempt_at or now,
            now,
        )
        assert row is not None
        items.append(outbox_record(row))
    return items


class OutboxTables(SqlBase):
    async def enqueue(self, events: Sequence[OutboxEvent]) -> list[OutboxItem]:
        """Events that go with no other change (for a call's change, pass them to that call's method)."""
        async with self._db.transaction() as tx:
            return await insert_outbox(tx, events, self._now())

    async def claim_due(self, now: datetime, limit: int = 50, *, lease_s: float = 60.0) -> list[OutboxItem]:
        """Up to ``limit`` events due at ``now``, at most one per call (its oldest pending), oldest due first.

        Each claim counts as an attempt and moves ``next_attempt_at`` to the end of the lease: finish it with
        ``mark_delivered``, ``mark_retry`` or ``mark_failed`` before then, or it will be claimed again."""
        skip_locked = self._db.dialect.skip_locked
        async with self._db.transaction() as tx:
            rows = await tx.fetch(
                "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = $2 WHERE id IN ("
                " SELECT o.id FROM outbox o WHERE o.status = 'pending' AND o.next_attempt_at <= $1"
                " AND NOT EXISTS (SELECT 1 FROM outbox p"
                "  WHERE p.call_id = o.call_id AND p.status = 'pending' AND p.seq < o.seq)"
                f" ORDER BY o.next_attempt_at, o.id LIMIT $3 {skip_locked}"
                ") RETURNING *",
                now,
                now + timedelta(seconds=lease_s),
                limit,
            )
        return sorted((outbox_record(row) for row in rows), key=lambda item: item.id)

    async def mark_delivered(self, id: int, attempt: DeliveryAttempt) -> OutboxItem:
        return await self._finish(id, attempt, "status = 'delivered', delivered_at = $2, last_error = NULL", attempt.at)

    async def mark_retry(self, id: int, attempt: DeliveryAttempt, next_attempt_at: datetime) -> OutboxItem:
        sets = "next_attempt_at = $2, last_error = $3"
        return await self._finish(id, attempt, sets, next_attempt_at, _error(attempt))

    async def mark_failed(self, id: int, attempt: DeliveryAttempt) -> OutboxItem:
        """Give up on the event (after the last retry); the call's later events can then go."""
        return await self._finish(id, attempt, "status = 'failed', last_error = $2", _error(attempt))

    async def get_delivery(self, id: int) -> OutboxItem:
        row = await self._db.fetchrow("SELECT * FROM outbox WHERE id = $1", id)
        if row is None:
            raise NotFound("delivery", id)
        return outbox_record(row)

    async def list_deliveries(
        self,
        *,
        call_id: str | None = None,
        status: OutboxStatus | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> Page[OutboxItem]:
        """Newest first."""
        where = Where()
        if call_id is not None:
            where.add(f"call_id = {where.arg(call_id)}")
        if status is not None:
            where.add(f"status = {where.arg(OutboxStatus(status).value)}")
        return await self._page("outbox", outbox_record, where=where, limit=limit, offset=offset)

    async def list_attempts(self, outbox_id: int) -> list[DeliveryAttempt]:
        rows = await self._db.fetch(
            "SELECT at, status_code, error, duration_ms FROM delivery_attempts WHERE outbox_id = $1 ORDER BY id",
            outbox_id,
        )
        return [DeliveryAttempt(ts_required(r["at"]), r["status_code"], r["error"], r["duration_ms"]) for r in rows]

    async def _finish(self, id: int, attempt: DeliveryAttempt, sets: str, *args: object) -> OutboxItem:
        """Apply ``sets`` to a pending event and record the attempt, in one transaction."""
        async with self._db.transaction() as tx:
            row = await tx.fetchrow(
                f"UPDATE outbox SET {sets} WHERE id = $1 AND status = 'pending' RETURNING *", id, *args
            )
            if row is None:
                if await tx.fetchrow("SELECT 1 AS found FROM outbox WHERE id = $1", id) is None:
                    raise NotFound("delivery", id)
                raise Conflict(f"delivery {id} is no longer pending")
            await tx.execute(
                "INSERT INTO delivery_attempts (outbox_id, at, status_code, error, duration_ms) "
                "VALUES ($1, $2, $3, $4, $5)",
                id,
                attempt.at,
                attempt.status_code,
                attempt.error,
                attempt.duration_ms,
            )
        return outbox_record(row)


def _error(attempt: DeliveryAttempt) -> str:
    if attempt.error:
        return attempt.error
    return "no response" if attempt.status_code is None else f"HTTP {attempt.status_code}"
