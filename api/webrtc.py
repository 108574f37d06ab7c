"""Browser calls over WebRTC, and the playground page that makes them.

``POST /api/v1/webrtc/offer`` takes a browser's SDP offer (non-trickle: its candidates inside),
answers it (Opus or G.711; ``engine/transports/webrtc``), and starts a call with the chosen agent
once the connection is up. It answers with the call's id and a five-minute token for the call's
live-events socket (``/api/v1/calls/{call_id}/events?token=``), so a page never needs more than the
key it made the call with. ``GET /api/v1/webrtc/agents`` lists the agents a caller may pick.

Both need an API key with ``calls:write`` and ``calls:read``: a browser call spends the agent's
provider budget like a phone call, so there is no key-less mode (a loopback-only exemption would
open up to everything behind a local reverse proxy). The playground at ``/playground`` is static
(``[webrtc] playground``, default on): the operator pastes a key into it, and the page keeps it in
the browser's session storage. Host candidates default to 127.0.0.1 (``[webrtc] host_addresses``):
out of the box, browsers on the server's own machine only.

Each call's session runs as a task owned by ``BrowserCalls``; server shutdown cancels them, which
ends their calls with ``server_shutdown``.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from aiohttp import web
from pydantic import BaseModel, Field

from ringline.api.http import EVENT_TOKENS, ApiModel, ApiRequest, ApiRoutes, Scope, ValidationFailed
from ringline.api.media import close_call, open_call
from ringline.api.state import SETTINGS, STORE
from ringline.config.settings import WebRtcConfig
from ringline.engine.audio.clock import LoopClock
from ringline.engine.call import Call
from ringline.engine.errors import ConfigError
from ringline.engine.transports.events import CallStarted
from ringline.engine.transports.webrtc.ice import use_host_addresses
from ringline.engine.transports.webrtc.sdp import MAX_SDP_BYTES, SdpError
from ringline.engine.transports.webrtc.session import WebRtcOptions, WebRtcSession

log = logging.getLogger(__name__)

routes = ApiRoutes(tag="webrtc")

PLAYGROUND = Path(__file__).parent / "playground"
"""The playground's static files: index.html, playground.js, playground.css, favicon.svg."""


def options_of(config: WebRtcConfig) -> WebRtcOptions:
    return WebRtcOptions(
        host_addresses=config.host_addresses,
        ice_servers=config.ice_servers,
        codecs=config.codecs,
        connect_timeout_s=config.connect_timeout_s,
    )


class BrowserCalls:
    """The sessions of this process's browser calls: one task each, cancelled at shutdown."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def __len__(self) -> int:
        return len(self._tasks)

    def run(self, session: WebRtcSession, call: Call) -> None:
        """Run ``call`` over ``session`` until it ends, then take it out of the live calls."""
        call_id = call.call_id
        task = asyncio.create_task(self._run(session, call), name=f"webrtc-{call_id}")
        self._tasks[call_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(call_id, None))

    async def _run(self, session: WebRtcSession, call: Call) -> None:
        try:
            await session.run(call)
        finally:
            close_call(self.app, call)

    async def aclose(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


BROWSER_CALLS = web.AppKey("browser_calls", BrowserCalls)


# ---- models ---------------------------------------------------------------------------------


class Offer(ApiModel):
    sdp: str = Field(
        min_length=1, max_length=MAX_SDP_BYTES, description="The browser's SDP offer, its candidates included."
    )
    type: Literal["offer"] = "offer"
    agent: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="A config agent's name or an API agent's id (default: the default one).",
    )
    variables: dict[str, str] = Field(
        default_factory=dict, max_length=50, description="Template variables of the call (`{{name}}` in its prompts)."
    )


class Answer(BaseModel):
    sdp: str = Field(description="The answer, with the server's candidates.")
    type: Literal["answer"] = "answer"
    call_id: str
    codec: str = Field(description="The codec the call speaks: `opus`, `PCMU` or `PCMA`.")
    events_token: str = Field(description="For the call's events socket, as `?token=`; valid five minutes.")
    events_url: str = Field(description="The events socket's path with the token (connect with `ws://` or `wss://`).")
    expires_at: datetime = Field(description="When the events token expires.")


class AgentChoice(BaseModel):
    id: str = Field(description="What to send as the offer's `agent`.")
    name: str
    source: Literal["config", "api"] = Field(description="A config file's agent, or one made through the API.")


class AgentChoices(BaseModel):
    default: str = Field(description="The agent that answers when the offer names none.")
    agents: list[AgentChoice]


# ---- endpoints ------------------------------------------------------------------------------


@routes.post("/webrtc/offer", body=Offer, response=Answer, scopes={Scope.CALLS_WRITE, Scope.CALLS_READ})
async def create_webrtc_call(req: ApiRequest[Offer, None]) -> Answer:
    """Start a browser call: answer a WebRTC offer.

    The call starts with the agent once the connection is up, and ends when the browser closes it
    (`caller_hangup`), when the connection fails or never comes up (`transport_closed`), or as any
    call does. The answer carries the call's id and a token for its events socket. A malformed
    offer, one without audio or codec in common (Ringline speaks Opus, PCMU and PCMA), or an unknown
    agent answers 422.
    """
    body = req.body
    owner = req.app[BROWSER_CALLS]
    call_id = f"wrtc_{secrets.token_hex(16)}"
    clock = LoopClock()
    session = WebRtcSession(options_of(req.app[SETTINGS].webrtc), clock, call_id=call_id)
    try:
        answer = await session.answer(body.sdp)
        parameters = {"from": "webrtc", "to": "", **{f"var_{k}": v for k, v in body.variables.items()}}
        if body.agent is not None:
            parameters["agent"] = body.agent
        assert session.transport is not None
        call = await open_call(owner.app, CallStarted(call_id, call_id, parameters), session.transport, clock)
    except SdpError as exc:
        await session.close()
        raise ValidationFailed(str(exc), details={"sdp": str(exc)}) from None
    except ConfigError as exc:
        await session.close()
        raise ValidationFailed(str(exc), details={"agent": str(exc)}) from None
    except BaseException:
        await session.close()
        raise
    owner.run(session, call)
    assert req.principal is not None
    issued = req.app[EVENT_TOKENS].issue(call_id, req.principal.id)
    prefix = req.http.path.removesuffix("/webrtc/offer")
    return Answer(
        sdp=answer,
        call_id=call_id,
        codec=session.codec,
        events_token=issued.token,
        events_url=f"{prefix}/calls/{call_id}/events?token={issued.token}",
        expires_at=datetime.fromtimestamp(issued.expires_at, UTC),
    )


@routes.get("/webrtc/agents", response=AgentChoices, scopes={Scope.CALLS_WRITE})
async def list_webrtc_agents(req: ApiRequest[None, None]) -> AgentChoices:
    """The agents a browser call may talk to: the config file's, then the enabled API agents."""
    settings = req.app[SETTINGS]
    agents = [AgentChoice(id=name, name=name, source="config") for name in settings.agents]
    page = await req.app[STORE].list_agents(enabled=True, limit=100)
    agents += [AgentChoice(id=row.id, name=row.name, source="api") for row in page.items]
    return AgentChoices(default=settings.default_agent, agents=agents)


# ---- the playground page --------------------------------------------------------------------

_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}


async def playground(request: web.Request) -> web.StreamResponse:
    """``/playground`` and its files; nothing else under it."""
    name = request.match_info.get("file") or "index.html"
    path = PLAYGROUND / name
    if "/" in name or path.suffix not in _TYPES or not path.is_file():
        raise web.HTTPNotFound(text=f"no playground file {name!r}")
    headers = {"Cache-Control": "no-cache", "Content-Security-Policy": "default-src 'self'"}
    return web.FileResponse(path, headers=headers | {"Content-Type": f"{_TYPES[path.suffix]}; charset=utf-8"})


def setup_webrtc(app: web.Application) -> None:
    """Browser calls on ``app`` (the API routes are mounted with the control API's): the owner of
    their sessions, the host addresses ICE offers, and the playground page when enabled."""
    config = app[SETTINGS].webrtc
    app[BROWSER_CALLS] = BrowserCalls(app)
    if config.playground:
        app.router.add_get("/playground", playground)
        app.router.add_get("/playground/{file}", playground)

    async def browser_calls(app: web.Application) -> AsyncIterator[None]:
        use_host_addresses(config.host_addresses)
        yield
        use_host_addresses(())

    async def end_sessions(app: web.Application) -> None:
        await app[BROWSER_CALLS].aclose()

    app.cleanup_ctx.append(browser_calls)
    app.on_shutdown.insert(0, end_sessions)  # before the registry ends what is left
