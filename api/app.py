"""The aiohttp application: media sockets, health, and the control API under ``/api/v1`` over the store."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from ringline.api import ops, v1, webrtc
from ringline.api.analysis import PostCall
from ringline.api.http import ApiOptions, Conflict, EventTokenSigner, NotFound, setup_api
from ringline.api.ledger import CallLedger
from ringline.api.media import media_socket
from ringline.api.sip import sip_user_agent
from ringline.api.state import (
    CALLS,
    CLIENTS,
    CONTROLS,
    JOURNAL,
    KEYS,
    LEDGER,
    SETTINGS,
    STORE,
    TOOLS,
    WEBHOOKS,
    StoreKeys,
    ToolsFactory,
)
from ringline.api.store import CallJournal, open_store
from ringline.api.store import Conflict as StoreConflict
from ringline.api.store import NotFound as StoreNotFound
from ringline.api.telephony import TELEPHONY, inbound_webhook, open_controls
from ringline.api.telephony.status import EARLY_PROGRESS, EarlyProgress, status_webhook
from ringline.api.webhooks import CallWebhooks, WebhookDispatcher, restart_outbox
from ringline.config.settings import AgentConfig, Settings
from ringline.engine.audio.clock import LoopClock
from ringline.engine.clients import HttpClients
from ringline.engine.providers import warm_up
from ringline.engine.record import EndReason
from ringline.engine.registry import CallRegistry
from ringline.engine.tools import ToolRegistry, default_registry

log = logging.getLogger(__name__)

routes = web.RouteTableDef()


async def call_record(request: web.Request) -> web.Response:
    """A call's engine record (live so far, or finished): per-turn stage timings, preemptive
    generation counts, playout underruns. Unauthenticated: served only with ``server.debug_records``
    (benchmarks), never in production; the control API's ``/api/v1/calls`` is the real thing."""
    calls = request.app[CALLS]
    call_id = request.match_info["call_id"]
    if (live := calls.get(call_id)) is not None:
        record = live.record
        body = record.to_dict() | {"status": live.status.value, "transcript": live.transcript()}
        return web.json_response(body)
    if (record := calls.find_record(call_id)) is not None:
        return web.json_response(record.to_dict() | {"status": "ended"})
    return web.json_response({"error": {"code": "not_found", "message": f"no call {call_id}"}}, status=404)


def make_app(
    settings: Settings,
    *,
    tools: ToolsFactory | None = None,
    progress: Callable[[str], None] = log.info,
) -> web.Application:
    """The server. ``tools`` builds each call's tool registry (default: the built-in tools);
    ``progress`` hears about model loading at start-up."""
    app = web.Application()
    app[SETTINGS] = settings
    app[CALLS] = CallRegistry()
    app[TOOLS] = tools or _builtin_tools
    app[WEBHOOKS] = CallWebhooks(settings)
    app[CONTROLS] = {}
    app.add_routes(routes)
    app.router.add_get("/media/{provider}", media_socket)
    app.router.add_route("POST", "/telephony/{provider}/inbound", inbound_webhook)
    app.router.add_route("GET", "/telephony/{provider}/inbound", inbound_webhook)  # Vonage's default answer_method
    app.router.add_route("POST", "/telephony/{provider}/status", status_webhook)  # calls that never reach the socket
    app[EARLY_PROGRESS] = EarlyProgress()
    if settings.server.debug_records:
        app.router.add_get("/calls/{call_id}", call_record)
    api = settings.api
    secret = api.event_token_secret.get_secret_value() if api.event_token_secret else secrets.token_urlsafe(32)
    options = ApiOptions(
        requests_per_key=api.requests_per_key,
        requests_per_address=api.requests_per_address,
        commands_per_call=api.commands_per_call,
        docs=api.docs,
        max_concurrent=api.max_concurrent_requests,
    )
    app[KEYS] = keys = StoreKeys(lambda: app[STORE])
    tokens = EventTokenSigner(secret.encode())
    errors = {StoreNotFound: NotFound, StoreConflict: Conflict}  # the store's errors, as the API answers them
    api_app = setup_api(app, (*v1.ROUTES, webrtc.routes), keys, options=options, tokens=tokens, errors=errors)
    webrtc.setup_webrtc(app)  # browser calls' sessions and the /playground page
    ops.setup_ops(app, app[CALLS], api_app)  # /health, /ready, /metrics, root /openapi.json and /docs

    async def end_calls(app: web.Application) -> None:
        await app[CALLS].end_all(EndReason.SERVER_SHUTDOWN, settings.server.shutdown_timeout_s)

    async def load_models(app: web.Application) -> None:
        await warm_up(settings.agents.values(), progress=progress, clients=app[CLIENTS])
        ops.models_ready(app)

    app.on_startup.append(load_models)
    app.on_shutdown.append(end_calls)
    app.cleanup_ctx.append(_http_clients)  # first in, last out: after every call has ended
    app.cleanup_ctx.append(_telephony)
    app.cleanup_ctx.append(_store)
    app.cleanup_ctx.append(sip_user_agent)  # after the store: its calls are in the ledger
    app.cleanup_ctx.append(_webhook_dispatcher)  # stopped before the store closes
    app.cleanup_ctx.append(_idle_watchdog)
    return app


def _builtin_tools(agent_name: str, agent: AgentConfig) -> ToolRegistry:
    return default_registry()


async def _telephony(app: web.Application) -> AsyncIterator[None]:
    """The configured providers' call control (``app[TELEPHONY]``, and ``app[CONTROLS]`` for the
    media sockets' transfers)."""
    async with open_controls(app[SETTINGS].telephony, app[CLIENTS].tls_context()) as controls:
        app[TELEPHONY] = controls
        app[CONTROLS].update(controls)
        yield


async def _http_clients(app: web.Application) -> AsyncIterator[None]:
    async with HttpClients() as clients:
        app[CLIENTS] = clients
        yield


async def _store(app: web.Application) -> AsyncIterator[None]:
    """Open the database (migrating it), end the calls a previous run left live, and write call
    journals until every call has ended."""
    api = app[SETTINGS].api
    api.data_dir.mkdir(parents=True, exist_ok=True)
    store = await open_store(api.database)
    try:
        outbox = await restart_outbox(app[WEBHOOKS], store)
        if ended := await store.mark_live_calls_ended("engine_restart", outbox=outbox):
            log.warning("%d calls were live when the engine last stopped: marked ended (engine_restart)", ended)
        async with CallJournal(store) as journal:
            app[STORE], app[JOURNAL] = store, journal
            post_call = PostCall(
                store, app[WEBHOOKS], clients=app[CLIENTS], public_url=app[SETTINGS].telephony.public_url
            )
            app[LEDGER] = ledger = CallLedger(
                store, journal, api.data_dir / "recordings", webhooks=app[WEBHOOKS], post_call=post_call
            )
            yield
            await ledger.aclose()
    finally:
        await store.close()


async def _webhook_dispatcher(app: web.Application) -> AsyncIterator[None]:
    """Deliver the webhook outbox while the app runs (``api/webhooks/dispatcher.py``)."""
    settings = app[SETTINGS]
    config, tls = settings.webhooks, app[CLIENTS].tls_context()
    async with WebhookDispatcher(app[STORE], config, webhooks=app[WEBHOOKS], tls=tls) as dispatcher:
        yield
        await app[LEDGER].aclose()  # the calls' last status changes are in the outbox: send them if quick
        await dispatcher.drain(min(config.timeout_s, settings.server.shutdown_timeout_s))


async def _idle_watchdog(app: web.Application) -> AsyncIterator[None]:
    registry, timeout = app[CALLS], app[SETTINGS].server.media_idle_timeout_s
    task = asyncio.create_task(registry.watch_idle(LoopClock(), timeout), name="idle-watchdog")
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
