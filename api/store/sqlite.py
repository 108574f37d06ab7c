"""SQLite through aiosqlite: the default, a file under the data directory, nothing to set up.

WAL mode, so readers never wait for the writer; ``synchronous=NORMAL`` (a power cut may lose the last
commits, never corrupts); foreign keys on; a busy timeout for other processes on the same file. One writer
connection serializes transactions (``BEGIN IMMEDIATE`` under a lock); a second connection serves reads."""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager, suppress
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, cast

import aiosqlite

from ringline.api.store.db import SQLITE, Row
from ringline.api.store.errors import Conflict, StoreError
from ringline.api.store.records import utcnow
from ringline.api.store.sqlstore import SqlStore

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 5000
_PRAGMAS = (
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = NORMAL",
    "PRAGMA foreign_keys = ON",
    f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}",
)


@lru_cache(maxsize=512)
def _numbered(sql: str) -> str:
    """PostgreSQL's ``$1`` as SQLite's ``?1`` (the store's SQL holds no ``$`` in literals)."""
    return re.sub(r"\$(\d+)", r"?\1", sql)


def _value(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: the store keeps UTC")
        return value.astimezone(UTC).isoformat(timespec="microseconds")  # fixed width: sorts as it compares
    return value


def _values(args: Sequence[Any]) -> tuple[Any, ...]:
    return tuple(_value(a) for a in args)


@contextmanager
def _mapped() -> Iterator[None]:
    try:
        yield
    except sqlite3.IntegrityError as e:
        text = str(e)
        if text.startswith("UNIQUE") or text.startswith("PRIMARY KEY"):
            raise Conflict(f"duplicate {text.split(':', 1)[-1].strip()}", reason="unique") from e
        if text.startswith("FOREIGN KEY"):
            raise Conflict("a referenced row is missing, or the row is still referenced", reason="foreign_key") from e
        raise StoreError(f"sqlite: {text}") from e
    except sqlite3.OperationalError as e:  # locked, busy, disk full, I/O
        raise StoreError(f"sqlite: {e}", retryable=True) from e
    except sqlite3.Error as e:
        raise StoreError(f"sqlite: {e}") from e
    except ValueError as e:  # aiosqlite: "no active connection"
        raise StoreError(f"sqlite: {e}") from e


class _SqliteTx:
    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        params = _values(args)
        with _mapped():
            rows = await self._conn.execute_fetchall(_numbered(sql), params)
        return cast(list[Row], list(rows))  # sqlite3.Row reads by column name like a mapping

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        rows = await self.fetch(sql, *args)
        return rows[0] if rows else None

    async def execute(self, sql: str, *args: Any) -> int:
        params = _values(args)
        with _mapped():
            async with self._conn.execute(_numbered(sql), params) as cursor:
                return cursor.rowcount

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        params = [_values(r) for r in rows]
        with _mapped():
            await self._conn.executemany(_numbered(sql), params)

    async def script(self, sql: str) -> None:
        """Statement by statement: ``executescript`` would commit the open transaction first."""
        statement = ""
        for line in sql.splitlines(keepends=True):
            statement += line
            if sqlite3.complete_statement(statement):
                await self.execute(statement)
                statement = ""
        leftover = [line for line in statement.splitlines() if line.strip() and not line.strip().startswith("--")]
        if leftover:
            raise StoreError(f"incomplete SQL statement in migration: {leftover[0].strip()!r}")


class SqliteDb:
    dialect = SQLITE

    def __init__(self, writer: aiosqlite.Connection, reader: aiosqlite.Connection | None) -> None:
        self._writer = writer
        self._reader = reader
        self._write_lock = asyncio.Lock()
        self._reads = _SqliteTx(reader or writer)

    @classmethod
    async def connect(cls, path: str) -> SqliteDb:
        memory = path == ":memory:"
        if not memory:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        writer = await _connect(path)
        reader = None if memory else await _connect(path)
        return cls(writer, reader)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        if self._reader is None:  # in memory: the writer's lock keeps reads out of open transactions
            async with self._write_lock:
                return await self._reads.fetch(sql, *args)
        return await self._reads.fetch(sql, *args)

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        rows = await self.fetch(sql, *args)
        return rows[0] if rows else None

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_SqliteTx]:
        async with self._write_lock:
            await self._control("BEGIN IMMEDIATE")
            try:
                yield _SqliteTx(self._writer)
            except BaseException:
                await self._control("ROLLBACK", quiet=True)
                raise
            try:
                await self._control("COMMIT")
            except BaseException:
                await self._control("ROLLBACK", quiet=True)  # a failed COMMIT leaves the transaction open
                raise

    async def _control(self, sql: str, *, quiet: bool = False) -> None:
        """BEGIN, COMMIT or ROLLBACK, seen through even when the caller is cancelled meanwhile: the
        statement runs on the connection's thread regardless, and a BEGIN left open would make every
        later transaction fail ("cannot start a transaction within a transaction")."""
        done = asyncio.ensure_future(self._writer.execute(sql))
        try:
            with _mapped():
                await asyncio.shield(done)
        except asyncio.CancelledError:
            with suppress(sqlite3.Error, ValueError):
                await done
            if sql.startswith("BEGIN") and not done.cancelled() and done.exception() is None:
                await self._control("ROLLBACK", quiet=True)
            raise
        except (StoreError, sqlite3.Error, ValueError):
            if not quiet:
                raise

    async def close(self) -> None:
        for conn in (self._reader, self._writer):
            if conn is not None:
                with suppress(sqlite3.Error, ValueError):
                    await conn.close()


async def _connect(path: str) -> aiosqlite.Connection:
    with _mapped():
        conn = await aiosqlite.connect(path, isolation_level=None)  # we BEGIN and COMMIT ourselves
        conn.row_factory = sqlite3.Row
        for pragma in _PRAGMAS:
            await conn.execute(pragma)
    return conn


async def open_sqlite(path: str, *, now: Callable[[], datetime] = utcnow) -> SqlStore:
    """A store on the SQLite file at ``path`` (created with its directory if missing), migrated."""
    store = SqlStore(await SqliteDb.connect(path), now=now)
    try:
        await store.open()
    except BaseException:
        await store.close()
        raise
    return store
