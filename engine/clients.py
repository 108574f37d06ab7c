"""The process's HTTP clients, shared by every call: ``HttpClients``.

A cloud adapter asks the ``HttpClients`` it was given for the one client of its configuration
(vendor, base URL, key, timeout, ...), made on first use: every call with that configuration
shares its connection pool, so connections stay warm across turns and calls, and the verifying
TLS context, whose CA bundle takes 40-80 ms of CPU to load, is built once for the process.

Ownership: whoever creates an ``HttpClients`` closes it, and it is only used on the event loop it
was first used on (aiohttp sessions and httpx pools are bound to their loop, and tests run a loop
per test: so there is no module-level cache). The server creates one in a ``cleanup_ctx``
(``ringline.api.app``, ``app[CLIENTS]``) and closes it after every call has ended; an adapter
given none makes a private one and closes it itself (``borrow``). An adapter's ``aclose`` never
closes a shared client.

This module knows no vendor: each adapter says how to make and close its client. Keys hold API
keys, so an ``HttpClients`` never shows its keys (``repr`` counts clients).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from typing import Any, Self, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
Closer = Callable[[], Awaitable[object]]

POOL_KEEPALIVE = 100
"""Idle connections a shared HTTP pool keeps (httpx ``max_keepalive_connections``). Shared pools
set no limit on connections in use (``max_connections=None``): a call's request never waits for a
connection another call holds; the number of calls bounds them."""
POOL_KEEPALIVE_EXPIRY_S = 60.0
"""Keep a connection between a call's turns (httpx's default, 5 s, is shorter than most turns): no
new TCP and TLS handshake before each reply. A connection the server closed meanwhile is noticed
and replaced before it is reused."""


class HttpClients:
    def __init__(self) -> None:
        self._clients: dict[Hashable, tuple[Any, Closer]] = {}
        self._tls: ssl.SSLContext | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self._clients)} clients"
        return f"<HttpClients {state}>"

    @property
    def count(self) -> int:
        """Clients made so far (and not closed)."""
        return len(self._clients)

    def tls_context(self) -> ssl.SSLContext:
        """The one verifying TLS context: ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` when set, else
        certifi's bundle (what httpx does). ``ssl.SSLContext`` is safe to share between clients."""
        if self._tls is None:
            if cafile := os.environ.get("SSL_CERT_FILE"):
                self._tls = ssl.create_default_context(cafile=cafile)
            elif capath := os.environ.get("SSL_CERT_DIR"):
                self._tls = ssl.create_default_context(capath=capath)
            else:
                try:
                    import certifi  # what httpx verifies with; installed with it
                except ImportError:
                    self._tls = ssl.create_default_context()
                else:
                    self._tls = ssl.create_default_context(cafile=certifi.where())
        return self._tls

    def get(self, key: tuple[Hashable, ...], make: Callable[[], tuple[T, Closer]]) -> T:
        """The client for ``key`` (whose first item names the vendor), made by ``make`` on first
        use. ``make`` returns the client and how to close it. Call it on the event loop."""
        if self._closed:
            raise RuntimeError("HttpClients is closed")
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif loop is not self._loop:
            raise RuntimeError("HttpClients is bound to another event loop")
        entry = self._clients.get(key)
        if entry is None:
            entry = self._clients[key] = make()
            log.debug("new shared %s client (%d in all)", key[0], len(self._clients))
        return entry[0]

    async def aclose(self) -> None:
        """Close every client (idempotent). Failures are logged: one does not keep the rest open."""
        if self._closed:
            return
        self._closed = True
        clients, self._clients = list(self._clients.items()), {}
        results = await asyncio.gather(*(close() for _, (_, close) in clients), return_exceptions=True)
        for (key, _), result in zip(clients, results, strict=True):
            if isinstance(result, Exception):
                log.warning("closing the shared %s client failed", key[0], exc_info=result)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


@contextlib.asynccontextmanager
async def borrow(clients: HttpClients | None) -> AsyncIterator[HttpClients]:
    """``clients`` when given (its owner closes it); else a private one, closed on exit."""
    if clients is not None:
        yield clients
        return
    async with HttpClients() as own:
        yield own
