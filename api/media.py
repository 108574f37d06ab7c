"""Where calls come in: every transport (provider media WebSockets, SIP, WebRTC) turns a started
stream into a ``Call`` through ``open_call``, which picks the agent, builds its providers and tools,
and enters the call in the registry, the ledger and the metrics.

Provider media sockets share one route, ``/media/{provider}``; ``CODECS`` names the providers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from aiohttp import web

from ringline.api import ops
from ringline.api.routing import agent_for_call
from ringline.api.state import CALLS, CLIENTS, CONTROLS, LEDGER, SETTINGS, STORE, TOOLS
from ringline.api.store import Direction
from ringline.api.webhooks.assistant import Choice, choose_assistant
from ringline.api.webhooks.tools import add_agent_tools
from ringline.config.templates import for_call
from ringline.engine.audio.clock import Clock, LoopClock
from ringline.engine.call import Call
from ringline.engine.http_tools import CallDetails
from ringline.engine.providers import build_providers
from ringline.engine.transports.base import MediaTransport
from ringline.engine.transports.events import CallStarted
from ringline.engine.transports.exotel.codec import ExotelStream
from ringline.engine.transports.plivo.codec import PlivoStream
from ringline.engine.transports.socket import MediaCodec, SocketTransport, serve_media_socket
from ringline.engine.transports.telnyx.codec import TelnyxStream
from ringline.engine.transports.twilio.codec import TwilioStream
from ringline.engine.transports.vonage.codec import VonageStream

log = logging.getLogger(__name__)

CODECS: dict[str, Callable[[], MediaCodec]] = {
    "twilio": TwilioStream,
    "telnyx": TelnyxStream,
    "plivo": PlivoStream,
    "vonage": VonageStream,
    "exotel": ExotelStream,
}
"""The provider media-stream protocols served at ``/media/{provider}``."""


async def open_call(app: web.Application, started: CallStarted, transport: MediaTransport, clock: Clock) -> Call:
    """Make the call a transport has just started (not started itself yet), entered in the
    registry, ledger and metrics. The transport's adapter must ``close_call`` it when it ends.

    ``started.parameters`` carry ``agent`` (a config or API agent), ``from``, ``to``,
    ``direction`` (``outbound`` for calls we placed) and ``var_*`` variables. Raises
    ``RinglineError`` (e.g. ``ConfigError`` for an unknown agent) to refuse the call.
    """
    settings, store, clients = app[SETTINGS], app[STORE], app[CLIENTS]
    params = started.parameters
    agent_id, agent = await agent_for_call(settings, store, params)
    variables = {k.removeprefix("var_"): v for k, v in params.items() if k.startswith("var_")}
    direction = Direction.OUTBOUND if params.get("direction") == "outbound" else Direction.INBOUND
    faults: list[tuple[str, str]] = []
    if direction is Direction.INBOUND:  # the assistant-request webhook may choose another agent
        choice = await choose_assistant(settings, store, clients, started, Choice(agent_id, agent, variables))
        agent_id, agent, variables = choice.agent_id, choice.agent, choice.variables
        faults += [("assistant-request", choice.fault)] if choice.fault else []
    agent = for_call(agent, variables)
    providers = build_providers(agent, clock, clients)
    tools = app[TOOLS](agent_id, agent)
    caller, called = params.get("from", ""), params.get("to", "")
    details = CallDetails(started.call_id, agent_id, direction.value, caller, called, variables=variables)
    problems = await add_agent_tools(tools, settings, store, clients, agent, details)
    faults += [("tools", problem) for problem in problems]
    outbound = direction is Direction.OUTBOUND
    call = Call(started.call_id, agent_id, agent, transport, providers, clock, registry=tools, outbound=outbound)
    await app[LEDGER].opened(
        call, agent_id=agent_id, direction=direction, from_number=caller, to_number=called, variables=variables
    )
    for stage, detail in faults:  # now that the ledger records them
        call.fault(stage, detail)
    app[CALLS].add(call)
    ops.watch_call(app, call)
    return call


def close_call(app: web.Application, call: Call) -> None:
    """The call has ended: out of the registry of live calls."""
    app[CALLS].finish(call)


async def media_socket(request: web.Request) -> web.StreamResponse:
    """``/media/{provider}``: a provider's media WebSocket, one call."""
    provider = request.match_info["provider"]
    if (make_codec := CODECS.get(provider)) is None:
        raise web.HTTPNotFound(text=f"no media protocol {provider!r}; known: {', '.join(sorted(CODECS))}")
    app = request.app
    server = app[SETTINGS].server
    ws = web.WebSocketResponse(
        max_msg_size=server.max_message_bytes,
        timeout=server.close_timeout_s,
        compress=False,  # audio does not deflate; don't spend CPU trying
    )
    await ws.prepare(request)
    clock = LoopClock()
    created: list[Call] = []

    async def make_call(started: CallStarted, transport: SocketTransport) -> Call:
        if (control := app[CONTROLS].get(provider)) is not None:
            transport.transferrer = control.transferrer(started.call_id)
        call = await open_call(app, started, transport, clock)
        created.append(call)
        return call

    try:
        await serve_media_socket(
            ws,
            make_codec(),
            make_call,
            max_errors=server.max_protocol_errors,
            start_timeout=server.media_idle_timeout_s,
        )
    finally:
        for call in created:
            close_call(app, call)
    return ws
