"""API keys: only a hash of the secret is kept, found by one indexed query per request."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from ringline.api.store.db import Row, dumps, loads, ts, ts_required
from ringline.api.store.errors import Conflict, NotFound
from ringline.api.store.records import ApiKey, Page, Scope, new_id
from ringline.api.store.sqlbase import SqlBase


def key_record(row: Row) -> ApiKey:
    return ApiKey(
        id=row["id"],
        name=row["name"],
        prefix=row["prefix"],
        key_hash=row["key_hash"],
        scopes=frozenset(loads(row["scopes"])),
        created_at=ts_required(row["created_at"]),
        last_used_at=ts(row["last_used_at"]),
        revoked_at=ts(row["revoked_at"]),
    )


class KeyTables(SqlBase):
    async def create_api_key(
        self, name: str, prefix: str, key_hash: str, scopes: Iterable[Scope | str], *, id: str | None = None
    ) -> ApiKey:
        values = {
            "id": id or new_id("key"),
            "name": name,
            "prefix": prefix,
            "key_hash": key_hash,
            "scopes": dumps(sorted(Scope(s).value for s in scopes)),
            "created_at": self._now(),
        }
        try:
            return await self._insert("api_keys", values, key_record)
        except Conflict as e:
            raise Conflict("an API key with that hash already exists", reason=e.reason) from e

    async def get_api_key(self, id: str) -> ApiKey:
        return await self._get("api_keys", "API key", id, key_record)

    async def find_api_key(self, key_hash: str) -> ApiKey | None:
        row = await self._db.fetchrow("SELECT * FROM api_keys WHERE key_hash = $1", key_hash)
        return None if row is None else key_record(row)

    async def list_api_keys(self, *, limit: int = 100, offset: int = 0) -> Page[ApiKey]:
        return await self._page("api_keys", key_record, limit=limit, offset=offset)

    async def touch_api_key(self, id: str, at: datetime | None = None) -> None:
        async with self._db.transaction() as tx:
            if await tx.execute("UPDATE api_keys SET last_used_at = $2 WHERE id = $1", id, at or self._now()) == 0:
                raise NotFound("API key", id)

    async def revoke_api_key(self, id: str, at: datetime | None = None) -> ApiKey:
        """Revoke once: revoking again keeps the first time."""
        async with self._db.transaction() as tx:
            row = await tx.fetchrow(
                "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1 RETURNING *",
                id,
                at or self._now(),
            )
        if row is None:
            raise NotFound("API key", id)
        return key_record(row)

    async def delete_api_key(self, id: str) -> None:
        await self._delete("api_keys", "API key", id)
