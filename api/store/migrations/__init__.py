"""Versioned schema migrations: ``NNNN_name.<dialect>.sql`` (``sqlite``, ``postgres``), applied in order at
``open()``. Both dialects have every version.

Each migration runs in its own transaction together with its ``schema_version`` row, under a lock
(SQLite's write lock, a PostgreSQL advisory lock), so several processes starting at once apply it once, and
a restart applies nothing twice. Released migrations are never edited: change the schema with a new file."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from importlib import resources

from ringline.api.store.db import Db
from ringline.api.store.errors import StoreError

log = logging.getLogger(__name__)

_NAME = re.compile(r"^(\d{4})_(\w+)\.(sqlite|postgres)\.sql$")

_VERSION_TABLE = {
    "sqlite": "CREATE TABLE IF NOT EXISTS schema_version "
    "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)",
    "postgres": "CREATE TABLE IF NOT EXISTS schema_version "
    "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL)",
}
_LOCK = {"sqlite": "", "postgres": "SELECT pg_advisory_xact_lock(727465)"}  # any constant, the same everywhere


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def load(dialect: str) -> list[Migration]:
    """The migrations shipped for ``dialect``, in version order."""
    found = []
    for entry in resources.files(__name__).iterdir():
        if (match := _NAME.match(entry.name)) is not None and match[3] == dialect:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration versions for {dialect}: {versions}")
    return found


async def migrate(db: Db, now: Callable[[], datetime]) -> int:
    """Apply what is missing; return the schema version now in force."""
    dialect = db.dialect.name
    version = 0
    for migration in load(dialect):
        async with db.transaction() as tx:
            if _LOCK[dialect]:
                await tx.fetch(_LOCK[dialect])
            await tx.execute(_VERSION_TABLE[dialect])
            row = await tx.fetchrow("SELECT 1 AS done FROM schema_version WHERE version = $1", migration.version)
            if row is None:
                log.info("applying %s migration %04d_%s", dialect, migration.version, migration.name)
                await tx.script(migration.sql)
                await tx.execute(
                    "INSERT INTO schema_version (version, name, applied_at) VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    now(),
                )
        version = migration.version
    if (found := await current_version(db)) > version:
        raise StoreError(f"the database has schema version {found}, newer than this Ringline's {version}")
    return version


async def current_version(db: Db) -> int:
    row = await db.fetchrow("SELECT max(version) AS version FROM schema_version")
    return 0 if row is None or row["version"] is None else int(row["version"])
