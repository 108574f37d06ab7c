"""The real server (``make_app``: media sockets, control API, store) on 127.0.0.1, for API tests.

    async def test_something(api: ApiServer) -> None:
        key = await api.key("calls:read")
        async with api.get("/api/v1/calls", key=key) as resp:
            ...

Each test gets a fresh SQLite store in its own data directory (conftest's ``data_dir``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from ringline.api.app import make_app
from ringline.api.http import generate_key, hash_key
from ringline.api.state import STORE
from ringline.api.store import Store
from ringline.config.settings import Settings, load_settings

API = "/api/v1"


class ApiServer:
    """A running server and an HTTP client session for it."""

    def __init__(self, app: web.Application, runner: web.AppRunner, session: aiohttp.ClientSession) -> None:
        self.app = app
        self.runner = runner
        self.session = session
        host, port = runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        self.ws_url = f"ws://{host}:{port}"

    @property
    def store(self) -> Store:
        return self.app[STORE]

    async def key(self, *scopes: str, name: str = "test") -> str:
        """A new API key with ``scopes`` (default: admin), made in the store as ``ringline keys create`` does."""
        key = generate_key()
        await self.store.create_api_key(name, key[:8], hash_key(key), scopes or ("admin",))
        return key

    def request(self, method: str, path: str, *, key: str | None = None, **kwargs: Any):
        headers = dict(kwargs.pop("headers", {}))
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        return self.session.request(method, self.url + path, headers=headers, **kwargs)

    def get(self, path: str, **kwargs: Any):
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any):
        return self.request("POST", path, **kwargs)

    def patch(self, path: str, **kwargs: Any):
        return self.request("PATCH", path, **kwargs)

    def delete(self, path: str, **kwargs: Any):
        return self.request("DELETE", path, **kwargs)


@asynccontextmanager
async def running(settings: Settings | None = None, **make_app_kwargs: Any) -> AsyncIterator[ApiServer]:
    """``make_app(settings)`` served on 127.0.0.1 with a client session; stopped on exit."""
    app = make_app(settings or load_settings(data={}), **make_app_kwargs)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        async with aiohttp.ClientSession() as session:
            yield ApiServer(app, runner, session)
    finally:
        await runner.cleanup()


@pytest.fixture
async def api() -> AsyncIterator[ApiServer]:
    async with running() as server:
        yield server
