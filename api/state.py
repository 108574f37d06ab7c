"""What the app keeps for the control API's resources, and the key lookup over the store."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

from aiohttp import web

from ringline.api.http import Principal
from ringline.api.ledger import CallLedger
from ringline.api.store import ApiKey, CallJournal, Store, StoreError
from ringline.api.webhooks.targets import CallWebhooks
from ringline.config.settings import AgentConfig, Settings
from ringline.engine.clients import HttpClients
from ringline.engine.registry import CallRegistry
from ringline.engine.tools import ToolRegistry
from ringline.engine.transports.socket import Transferrer

log = logging.getLogger(__name__)

ToolsFactory = Callable[[str, AgentConfig], ToolRegistry]
"""The tools of a new call, given its agent's name and config (host applications add Python tools)."""

SETTINGS = web.AppKey("settings", Settings)
TOOLS = web.AppKey("tools", ToolsFactory)
CLIENTS = web.AppKey("clients", HttpClients)
"""The cloud providers' HTTP clients, shared by every call; opened and closed by ``_http_clients``."""


class CallControl(Protocol):
    """A provider's REST call control, as far as a live call needs it."""

    def transferrer(self, call_id: str) -> Transferrer:
        """What hands call ``call_id`` over to a destination."""
        ...


CONTROLS = web.AppKey("controls", dict[str, CallControl])
"""Call control per provider name (``twilio``, ...), for those configured."""

CALLS = web.AppKey("calls", CallRegistry)
"""The calls live in this process."""
STORE = web.AppKey("store", Store)
JOURNAL = web.AppKey("journal", CallJournal)
LEDGER = web.AppKey("ledger", CallLedger)
KEYS = web.AppKey("keys", "StoreKeys")
"""The API's key lookup: the API-keys resource tells it about revocations."""
WEBHOOKS = web.AppKey("webhooks", CallWebhooks)
"""Builds webhook outbox events and wakes the dispatcher (``api/webhooks``) when some were written."""


class StoreKeys:
    """``KeyLookup`` over the store's API keys, remembering each answer for ``ttl_s`` so a busy
    client costs no query per request. A key revoked through this process's API is forgotten at
    once (``forget``); revoked elsewhere, it stops working within ``ttl_s``. ``last_used_at`` is
    written at most once per ``ttl_s`` per key, off the request path."""

    def __init__(
        self, store: Callable[[], Store], *, ttl_s: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._store_of = store
        """The store, once the app has opened it (the API is mounted before)."""
        self._ttl = ttl_s
        self._clock = clock
        self._cache: dict[str, tuple[float, Principal | None]] = {}
        self._touching: set[asyncio.Task[None]] = set()

    async def find_key(self, key_hash: str) -> Principal | None:
        now = self._clock()
        cached = self._cache.get(key_hash)
        if cached is not None and now - cached[0] < self._ttl:
            return cached[1]
        row = await self._store_of().find_api_key(key_hash)
        principal = None if row is None or row.revoked_at is not None else principal_of(row)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[key_hash] = (now, principal)
        if principal is not None:
            self._touch(principal.id)
        return principal

    def forget(self, key_id: str) -> None:
        """Drop what is remembered about key ``key_id`` (revoked or deleted)."""
        self._cache = {h: v for h, v in self._cache.items() if v[1] is None or v[1].id != key_id}

    def _touch(self, key_id: str) -> None:
        async def touch() -> None:
            try:
                await self._store_of().touch_api_key(key_id)
            except StoreError as exc:
                log.warning("could not record the use of API key %s: %s", key_id, exc)

        task = asyncio.create_task(touch(), name=f"touch-{key_id}")
        self._touching.add(task)
        task.add_done_callback(self._touching.discard)


def principal_of(row: ApiKey) -> Principal:
    return Principal(row.id, row.name, frozenset(row.scopes))
