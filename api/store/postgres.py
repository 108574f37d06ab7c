"""PostgreSQL through asyncpg with a connection pool: for production and for several engine nodes sharing
one database. Nodes may start at once: migrations take an advisory lock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from datetime import datetime
from typing import Any

import asyncpg

from ringline.api.store.db import POSTGRES, Row, rows_changed
from ringline.api.store.errors import Conflict, StoreError
from ringline.api.store.records import utcnow
from ringline.api.store.sqlstore import SqlStore

_RETRYABLE = (
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.InterfaceError,
    asyncpg.SerializationError,
    asyncpg.DeadlockDetectedError,
    OSError,
    TimeoutError,
)


@contextmanager
def _mapped() -> Iterator[None]:
    try:
        yield
    except asyncpg.UniqueViolationError as e:
        raise Conflict(f"duplicate: {e.detail or e}", reason="unique") from e
    except asyncpg.ForeignKeyViolationError as e:
        raise Conflict(f"reference: {e.detail or e}", reason="foreign_key") from e
    except _RETRYABLE as e:
        raise StoreError(f"postgres: {e}", retryable=True) from e
    except asyncpg.PostgresError as e:
        raise StoreError(f"postgres: {e}") from e


class _PgTx:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        with _mapped():
            return await self._conn.fetch(sql, *args)

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        with _mapped():
            return await self._conn.fetchrow(sql, *args)

    async def execute(self, sql: str, *args: Any) -> int:
        with _mapped():
            return rows_changed(await self._conn.execute(sql, *args))

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        with _mapped():
            await self._conn.executemany(sql, list(rows))

    async def script(self, sql: str) -> None:
        with _mapped():
            await self._conn.execute(sql)  # no arguments: the simple protocol runs several statements


class PostgresDb:
    dialect = POSTGRES

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @classmethod
    async def connect(cls, url: str, *, min_size: int = 1, max_size: int = 10) -> PostgresDb:
        with _mapped():
            pool = await asyncpg.create_pool(url, min_size=min_size, max_size=max_size, timeout=10, command_timeout=30)
        return cls(pool)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        with _mapped():
            return await self._pool.fetch(sql, *args)

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        with _mapped():
            return await self._pool.fetchrow(sql, *args)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_PgTx]:
        with _mapped():
            async with self._pool.acquire() as conn, conn.transaction():
                yield _PgTx(conn)

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self._pool.close(), timeout=10)
        except TimeoutError:
            self._pool.terminate()


async def open_postgres(url: str, *, now: Callable[[], datetime] = utcnow, max_connections: int = 10) -> SqlStore:
    """A store on the PostgreSQL database at ``url`` (``postgresql://user:pass@host:port/db``), migrated."""
    store = SqlStore(await PostgresDb.connect(url, max_size=max_connections), now=now)
    try:
        await store.open()
    except BaseException:
        await store.close()
        raise
    return store
