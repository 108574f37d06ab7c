"""The SQL store: one implementation of ``Store`` over the small ``Db`` seam that SQLite and PostgreSQL
adapters provide. Each table's code lives in its own module; this puts them together."""

from __future__ import annotations

from ringline.api.store import migrations
from ringline.api.store.analysis import AnalysisTables
from ringline.api.store.calls import CallTables
from ringline.api.store.keys import KeyTables
from ringline.api.store.outbox import OutboxTables
from ringline.api.store.resources import ResourceTables


class SqlStore(ResourceTables, KeyTables, CallTables, OutboxTables, AnalysisTables):
    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgres``."""
        return self._db.dialect.name

    async def open(self) -> None:
        """Apply the migrations this database lacks (idempotent; safe from several processes at once)."""
        await migrations.migrate(self._db, self._now)

    async def schema_version(self) -> int:
        return await migrations.current_version(self._db)

    async def close(self) -> None:
        await self._db.close()
