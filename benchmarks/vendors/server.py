"""The lifecycle every vendor fake shares: an aiohttp app on 127.0.0.1, port chosen by the OS.

A fake subclasses ``LoopbackServer``, adds its endpoints in ``add_routes`` and says in
``URL_TEMPLATE`` what a client configures as its ``base_url``::

    class FakeThing(LoopbackServer):
        URL_TEMPLATE = "http://127.0.0.1:{port}/v1"

        def add_routes(self, router: web.UrlDispatcher) -> None:
            router.add_post("/v1/thing", self._thing)

    async with FakeThing() as server:      # or: await server.start() ... await server.close()
        client = Client(base_url=server.url)

``closing`` is set as ``close`` begins: handlers that hang on purpose (a fault) wait on it and
return, so closing never waits for them. Handlers still running after ``SHUTDOWN_TIMEOUT_S`` are
cancelled.
"""

from __future__ import annotations

import asyncio
from typing import ClassVar, Self

from aiohttp import web


class LoopbackServer:
    URL_TEMPLATE: ClassVar[str] = "http://127.0.0.1:{port}"
    """``url``: where a client points (``{port}`` is filled in once started)."""
    SHUTDOWN_TIMEOUT_S: ClassVar[float] = 0.5
    """On close, how long handlers still running may take before they are cancelled."""

    def __init__(self) -> None:
        self.closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._port = 0

    def add_routes(self, router: web.UrlDispatcher) -> None:
        raise NotImplementedError

    async def start(self, port: int = 0) -> Self:
        """Listen on 127.0.0.1 (``port`` 0: one the OS picks)."""
        if self._runner is not None:
            raise RuntimeError(f"{type(self).__name__} is already started")
        app = web.Application()
        self.add_routes(app.router)
        self._runner = web.AppRunner(
            app, handler_cancellation=True, access_log=None, shutdown_timeout=self.SHUTDOWN_TIMEOUT_S
        )
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self._port = self._runner.addresses[0][1]
        self.closing.clear()
        return self

    async def close(self) -> None:
        """Stop listening and end every handler (idempotent). The port stays in ``url``: a client
        pointed there now finds nothing listening."""
        self.closing.set()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def port(self) -> int:
        if not self._port:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return self._port

    @property
    def url(self) -> str:
        return self.URL_TEMPLATE.format(port=self.port)
