"""What the local fakes of the telephony providers' REST APIs share: every request recorded whole,
queued faults, and the provider's side of a call once it is answered (webhooks to the app, the
media socket opened with the caller simulator).

``route`` maps the public URLs the app hands the provider (``https://voice.example.com/...``) to
the local server; ``opener`` is what "answers" a call: it opens the media socket the provider was
told of and plays the callee.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from ringline.benchmarks.caller import CallResult
from ringline.benchmarks.vendors.server import LoopbackServer

Opener = Callable[[str, str, Mapping[str, str]], Awaitable[CallResult]]
"""(media socket URL as the provider was given it, provider call id, stream parameters) -> the call."""


@dataclass(slots=True)
class Recorded:
    method: str
    path: str
    headers: Mapping[str, str]
    body: Any
    """The JSON body, or the form as a dict (None for neither)."""
    authorized: bool
    received_at: float = field(default_factory=time.monotonic)
    status: int | None = None


@dataclass(frozen=True, slots=True)
class Fault:
    status: int
    body: Any
    hang: bool = False


class FakeProvider(LoopbackServer):
    def __init__(self) -> None:
        super().__init__()
        self.requests: list[Recorded] = []
        self.webhooks: list[tuple[str, int]] = []
        """(URL, the app's status) of every webhook the fake sent."""
        self.route: Callable[[str], str] = lambda url: url
        self.opener: Opener | None = None
        self.streams: dict[str, asyncio.Task[CallResult]] = {}
        """The media sockets opened, by provider call id."""
        self._faults: deque[Fault] = deque()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._session: aiohttp.ClientSession | None = None

    def fault(self, status: int, body: Any = None, *, hang: bool = False, times: int = 1) -> None:
        """The next ``times`` REST requests answer ``status`` with ``body`` (or never, ``hang``)."""
        self._faults.extend([Fault(status, body, hang)] * times)

    def paths(self) -> list[str]:
        return [r.path for r in self.requests]

    async def close(self) -> None:
        for task in list(self._tasks) + list(self.streams.values()):
            task.cancel()
        await asyncio.gather(*self._tasks, *self.streams.values(), return_exceptions=True)
        if self._session is not None:
            await self._session.close()
        await super().close()

    # -- serving -------------------------------------------------------------------------------------

    async def record(self, request: web.Request, authorized: bool) -> Recorded:
        if request.content_type == "application/json":
            body: Any = await request.json()
        elif request.method == "POST":
            body = {k: str(v) for k, v in (await request.post()).items()}
        else:
            body = None
        recorded = Recorded(request.method, request.path, dict(request.headers), body, authorized)
        self.requests.append(recorded)
        return recorded

    async def take_fault(self) -> web.Response | None:
        """The queued fault's answer, if one is queued."""
        if not self._faults:
            return None
        fault = self._faults.popleft()
        if fault.hang:
            await self.closing.wait()
            raise web.HTTPServiceUnavailable()
        return web.json_response(fault.body, status=fault.status)

    # -- the provider's side of a call ---------------------------------------------------------------

    def spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def open_stream(self, url: str, call_id: str, parameters: Mapping[str, str]) -> None:
        """Open the media socket ``url`` for call ``call_id`` through ``opener``."""
        if self.opener is None:
            raise RuntimeError("no opener: the fake cannot answer calls")
        self.streams[call_id] = asyncio.ensure_future(self.opener(self.route(url), call_id, dict(parameters)))

    async def post_webhook(self, url: str, headers: Mapping[str, str], **body: Any) -> int:
        """POST a webhook to the app (``json=`` or ``data=``); the app's status."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
        async with self._session.post(self.route(url), headers=dict(headers), **body) as resp:
            await resp.read()
            self.webhooks.append((url, resp.status))
            return resp.status

    async def get_webhook(self, url: str, headers: Mapping[str, str]) -> tuple[int, Any]:
        """GET a webhook (Vonage's answer URL): the app's status and JSON answer."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
        async with self._session.get(self.route(url), headers=dict(headers)) as resp:
            self.webhooks.append((url, resp.status))
            body = await resp.json() if resp.content_type == "application/json" else await resp.text()
            return resp.status, body
