"""What every table's code shares: the database, the wall clock, and get/list/update/delete by id."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, TypeVar

from ringline.api.store.db import Db, Row, Where, assignments
from ringline.api.store.errors import NotFound
from ringline.api.store.records import UNSET, Page

T = TypeVar("T")

MAX_LIMIT = 1000
"""The most rows one list call returns, whatever limit it asks for."""


def check_page(limit: int, offset: int) -> None:
    if not 0 < limit <= MAX_LIMIT:
        raise ValueError(f"limit must be 1..{MAX_LIMIT}, not {limit}")
    if offset < 0:
        raise ValueError(f"offset must be >= 0, not {offset}")


def changed(**fields: Any) -> dict[str, Any]:
    """The update arguments that were given (not ``UNSET``)."""
    return {name: value for name, value in fields.items() if value is not UNSET}


class SqlBase:
    """Holds the driver adapter and the clock; the table mixins build on these helpers."""

    def __init__(self, db: Db, *, now: Callable[[], datetime]) -> None:
        self._db = db
        self._now = now

    async def _get(self, table: str, kind: str, id: str, record: Callable[[Row], T]) -> T:
        row = await self._db.fetchrow(f"SELECT * FROM {table} WHERE id = $1", id)
        if row is None:
            raise NotFound(kind, id)
        return record(row)

    async def _page(
        self,
        table: str,
        record: Callable[[Row], T],
        *,
        where: Where | None = None,
        order: str = "created_at DESC, id DESC",
        limit: int,
        offset: int,
    ) -> Page[T]:
        check_page(limit, offset)
        where = where or Where()
        args = where.args
        total = await self._db.fetchrow(f"SELECT count(*) AS n FROM {table} {where}", *args)
        n = len(args)
        rows = await self._db.fetch(
            f"SELECT * FROM {table} {where} ORDER BY {order} LIMIT ${n + 1} OFFSET ${n + 2}", *args, limit, offset
        )
        return Page(tuple(record(row) for row in rows), int(total["n"]) if total else 0)

    async def _insert(self, table: str, values: Mapping[str, Any], record: Callable[[Row], T]) -> T:
        columns = ", ".join(values)
        params = ", ".join(f"${i + 1}" for i in range(len(values)))
        async with self._db.transaction() as tx:
            row = await tx.fetchrow(f"INSERT INTO {table} ({columns}) VALUES ({params}) RETURNING *", *values.values())
        assert row is not None
        return record(row)

    async def _update(
        self, table: str, kind: str, id: str, changes: Mapping[str, Any], record: Callable[[Row], T]
    ) -> T:
        """Set ``changes`` (already in database form) and ``updated_at``; the row as it now is."""
        if not changes:
            return await self._get(table, kind, id, record)
        sets, args = assignments({**changes, "updated_at": self._now()}, first=2)
        async with self._db.transaction() as tx:
            row = await tx.fetchrow(f"UPDATE {table} SET {sets} WHERE id = $1 RETURNING *", id, *args)
        if row is None:
            raise NotFound(kind, id)
        return record(row)

    async def _delete(self, table: str, kind: str, id: str) -> None:
        async with self._db.transaction() as tx:
            if await tx.execute(f"DELETE FROM {table} WHERE id = $1", id) == 0:
                raise NotFound(kind, id)
