"""The little the SQL store needs from a driver, and the conversions both drivers share.

Queries are written once, with PostgreSQL's numbered parameters (``$1``); the SQLite adapter rewrites them to
SQLite's ``?1``. Values cross the seam as Python values: JSON documents as ``str`` (TEXT in SQLite, JSONB in
PostgreSQL, both taken and returned as text), timestamps as aware datetimes (ISO-8601 TEXT in SQLite,
``timestamptz`` in PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, TypeAlias

import orjson

Row: TypeAlias = Mapping[str, Any]


class Tx(Protocol):
    """Statements inside one transaction."""

    async def fetch(self, sql: str, *args: Any) -> list[Row]: ...

    async def fetchrow(self, sql: str, *args: Any) -> Row | None: ...

    async def execute(self, sql: str, *args: Any) -> int:
        """Run a statement; return how many rows it changed."""
        ...

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None: ...

    async def script(self, sql: str) -> None:
        """Run several statements without parameters (a migration)."""
        ...


class Db(Protocol):
    """A connection (SQLite) or pool (PostgreSQL). Reads run on their own; writes go through
    ``transaction()``. Driver errors come out as ``StoreError``, ``Conflict`` or ``NotFound``."""

    dialect: Dialect

    async def fetch(self, sql: str, *args: Any) -> list[Row]: ...

    async def fetchrow(self, sql: str, *args: Any) -> Row | None: ...

    def transaction(self) -> AbstractAsyncContextManager[Tx]: ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Dialect:
    """The few places where the SQL differs."""

    name: str
    utc_day: str
    """An expression giving the UTC date of ``{col}`` as ``YYYY-MM-DD`` text."""
    for_update: str
    """Row lock for a read-then-write inside a transaction (SQLite: its one writer already excludes others)."""
    skip_locked: str
    """Row lock that lets concurrent claimers pass each other."""

    def day(self, column: str) -> str:
        return self.utc_day.format(col=column)


SQLITE = Dialect("sqlite", utc_day="substr({col}, 1, 10)", for_update="", skip_locked="")
POSTGRES = Dialect(
    "postgres",
    utc_day="to_char({col} AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
    for_update="FOR UPDATE",
    skip_locked="FOR UPDATE SKIP LOCKED",
)


def dumps(value: Any) -> str | None:
    """A JSON document as text (``None`` stays SQL NULL)."""
    return None if value is None else orjson.dumps(value).decode()


def loads(value: str | bytes | None) -> Any:
    return None if value is None else orjson.loads(value)


def ts(value: datetime | str | None) -> datetime | None:
    """A timestamp from either driver as an aware UTC datetime."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def ts_required(value: datetime | str) -> datetime:
    result = ts(value)
    assert result is not None
    return result


def rows_changed(status: str) -> int:
    """asyncpg's command tag (``UPDATE 3``) as a count."""
    tail = status.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0


class Where:
    """A WHERE clause built a condition at a time; ``arg`` numbers the parameters."""

    def __init__(self) -> None:
        self.args: list[Any] = []
        self._conditions: list[str] = []

    def arg(self, value: Any) -> str:
        self.args.append(value)
        return f"${len(self.args)}"

    def add(self, condition: str) -> None:
        self._conditions.append(condition)

    def __str__(self) -> str:
        return f"WHERE {' AND '.join(self._conditions)}" if self._conditions else ""


def assignments(changes: Mapping[str, Any], first: int) -> tuple[str, list[Any]]:
    """``col = $n, ...`` for an UPDATE, numbered from ``first``."""
    parts = [f"{column} = ${first + i}" for i, column in enumerate(changes)]
    return ", ".join(parts), list(changes.values())
