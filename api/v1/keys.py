"""API keys: made, listed and revoked by an admin key (or ``ringline keys`` on the server).

The secret is answered once, by the create call; the store keeps only its SHA-256 and its first
characters (``prefix``) so people can tell keys apart. Revoking a key stops it at once in this process
(the key lookup forgets it) and within the lookup's cache time in others. A revoked key is kept for the
record; deleting removes it altogether.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from pydantic import BaseModel, Field, field_validator

from ringline.api.http import ApiModel, ApiRequest, ApiRoutes, ListQuery, Page, Scope, generate_key, hash_key
from ringline.api.state import KEYS
from ringline.api.store import ApiKey as KeyRow
from ringline.api.store import Store
from ringline.api.v1.common import store_of

routes = ApiRoutes(tag="api-keys")

PREFIX_CHARS = 8
"""``rl_`` and the secret's first five characters."""


async def create_key(store: Store, name: str, scopes: Iterable[str]) -> tuple[str, KeyRow]:
    """A new key: its secret (show it once, never store it) and its row."""
    secret = generate_key()
    row = await store.create_api_key(name, secret[:PREFIX_CHARS], hash_key(secret), sorted(set(scopes)))
    return secret, row


class ApiKeyCreate(ApiModel):
    name: str = Field(min_length=1, max_length=200, description="What the key is for.")
    scopes: list[Scope] = Field(
        min_length=1,
        max_length=len(Scope),
        description="What the key may do; `admin` implies every scope.",
        json_schema_extra={"uniqueItems": True},
    )

    @field_validator("scopes")
    @classmethod
    def _once_each(cls, value: list[Scope]) -> list[Scope]:
        if len(set(value)) != len(value):
            raise ValueError("each scope once")
        return value


class ApiKey(BaseModel):
    id: str
    name: str
    prefix: str = Field(description="The key's first characters, to tell keys apart.")
    scopes: list[Scope]
    created_at: datetime
    last_used_at: datetime | None = Field(description="Recorded at most every few seconds.")
    revoked_at: datetime | None


class ApiKeyCreated(ApiKey):
    key: str = Field(description="The secret. Shown this once: store it now.")


class ApiKeyQuery(ListQuery):
    pass


def key_out(row: KeyRow) -> ApiKey:
    return ApiKey(
        id=row.id,
        name=row.name,
        prefix=row.prefix,
        scopes=sorted(Scope(s) for s in row.scopes),
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
    )


@routes.post("/api-keys", body=ApiKeyCreate, response=ApiKeyCreated, scopes={Scope.ADMIN}, status=201)
async def create_api_key(req: ApiRequest[ApiKeyCreate, None]) -> ApiKeyCreated:
    """Create an API key.

    The response carries the secret (`key`), the only time it is shown."""
    secret, row = await create_key(store_of(req), req.body.name, req.body.scopes)
    return ApiKeyCreated(**key_out(row).model_dump(), key=secret)


@routes.get("/api-keys", query=ApiKeyQuery, response=ApiKey, many=True, scopes={Scope.ADMIN})
async def list_api_keys(req: ApiRequest[None, ApiKeyQuery]) -> Page[ApiKey]:
    """List API keys, newest first, revoked ones included."""
    page = await store_of(req).list_api_keys(limit=req.query.limit, offset=req.query.offset)
    return Page([key_out(row) for row in page.items], page.total)


@routes.get("/api-keys/{key_id}", response=ApiKey, scopes={Scope.ADMIN})
async def get_api_key(req: ApiRequest[None, None]) -> ApiKey:
    """Get an API key (never its secret)."""
    return key_out(await store_of(req).get_api_key(req.params["key_id"]))


@routes.post("/api-keys/{key_id}/revoke", response=ApiKey, scopes={Scope.ADMIN})
async def revoke_api_key(req: ApiRequest[None, None]) -> ApiKey:
    """Revoke an API key.

    It stops working at once; it stays listed, with `revoked_at`. Revoking it again changes nothing."""
    key_id = req.params["key_id"]
    row = await store_of(req).revoke_api_key(key_id)
    req.app[KEYS].forget(key_id)
    return key_out(row)


@routes.delete("/api-keys/{key_id}", scopes={Scope.ADMIN})
async def delete_api_key(req: ApiRequest[None, None]) -> None:
    """Delete an API key.

    It stops working at once and is no longer listed."""
    key_id = req.params["key_id"]
    await store_of(req).delete_api_key(key_id)
    req.app[KEYS].forget(key_id)
