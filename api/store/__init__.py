"""Persistence for the control API: SQLite by default, PostgreSQL by URL, one ``Store`` interface.

store = await open_store("sqlite:///data/ringline.db")   # or a plain path, or postgresql://...
async with CallJournal(store) as journal:                  # transcript and events, written in batches
    ...
await store.close()
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from ringline.api.store.base import JournalSink, Store
from ringline.api.store.errors import Conflict, NotFound, StoreError
from ringline.api.store.journal import CallJournal, JournalStats
from ringline.api.store.records import (
    UNSET,
    Agent,
    ApiKey,
    Call,
    CallEvent,
    CallFilter,
    CallMessage,
    CallStatus,
    DeliveryAttempt,
    Direction,
    NumberProvider,
    OutboxEvent,
    OutboxItem,
    OutboxStatus,
    Page,
    PhoneNumber,
    Role,
    Scope,
    SipTrunk,
    ToolKind,
    ToolTemplate,
    Unset,
    Usage,
    utcnow,
)

__all__ = [
    "UNSET",
    "Agent",
    "ApiKey",
    "Call",
    "CallEvent",
    "CallFilter",
    "CallJournal",
    "CallMessage",
    "CallStatus",
    "Conflict",
    "DeliveryAttempt",
    "Direction",
    "JournalSink",
    "JournalStats",
    "NotFound",
    "NumberProvider",
    "OutboxEvent",
    "OutboxItem",
    "OutboxStatus",
    "Page",
    "PhoneNumber",
    "Role",
    "Scope",
    "SipTrunk",
    "Store",
    "StoreError",
    "ToolKind",
    "ToolTemplate",
    "Unset",
    "Usage",
    "open_store",
    "sqlite_path",
    "utcnow",
]


def sqlite_path(url: str) -> str | None:
    """The file an SQLite URL or plain path names (``:memory:`` for memory), or ``None`` for another scheme.

    ``sqlite:///data/ringline.db`` is relative, ``sqlite:////var/lib/ringline.db`` absolute (as SQLAlchemy
    reads them); a string without a scheme is a path."""
    if url.startswith("sqlite:"):
        rest = url.removeprefix("sqlite:")
        if rest in ("", "//", "///:memory:", ":memory:"):
            return ":memory:"
        if not rest.startswith("///"):
            raise ValueError(f"an SQLite URL is sqlite:///relative/path or sqlite:////absolute/path, not {url!r}")
        return rest.removeprefix("///")
    if "://" in url:
        return None
    return url


async def open_store(url: str, *, now: Callable[[], datetime] = utcnow) -> Store:
    """Connect to the database ``url`` names and bring its schema up to date.

    ``now`` is the wall clock the store stamps rows with (tests pass a fake). Each driver is imported only
    when its database is used."""
    if (path := sqlite_path(url)) is not None:
        from ringline.api.store.sqlite import open_sqlite

        return await open_sqlite(path, now=now)
    if url.startswith(("postgresql://", "postgres://")):
        from ringline.api.store.postgres import open_postgres

        return await open_postgres(url, now=now)
    scheme = url.split("://", 1)[0]
    raise ValueError(f"unsupported database URL scheme {scheme!r}: use sqlite:///path or postgresql://...")
