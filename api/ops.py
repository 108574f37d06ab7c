"""What operators and their tools ask of the server, outside the control API.

- ``GET /health``: liveness. ``{"status": "ok", "calls": N}`` while the process answers at all.
- ``GET /ready``: readiness. 200 ``{"status": "ready", "checks": {"database": "ok", "models": "ok"}}``
  once the database answers a trivial query and the models are warmed up; 503 with
  ``"status": "not_ready"`` and the failing check's state otherwise (``database``: ``not_open``,
  ``unavailable`` or ``timeout``; ``models``: ``loading``). Why the database failed is logged, not
  answered: the endpoint needs no key.
- ``GET /metrics``: Prometheus text (or OpenMetrics, if the scraper asks for it) from this app's own
  ``CollectorRegistry``: live calls, calls started and ended (by end reason), caller turns, reply
  latency, provider errors by stage, HTTP responses by method, route and status, and the process's
  health as a real-time server: how late the event loop runs a timer (``ringline_event_loop_lag_seconds``,
  sampled every ``LAG_PROBE_S``) and how long each garbage collection stops it
  (``ringline_gc_pause_seconds`` by generation). A loop lag over a few ms is heard: every call's
  frames wait behind it.
- ``GET /openapi.json`` and ``GET /docs``: the control API's document and Swagger UI page at the root
  too, served by the API's own ``add_docs_routes`` over the same document (when ``api.docs`` is on).

These routes are not in the control API's OpenAPI document: it describes ``/api/v1`` (its one server),
whose every answer has the envelope, the key schemes and the rate limits; these have none of them.

Call metrics come from each call's events (``watch_call``), which are per turn, never per frame: an
observer costs a dict lookup and a counter increment per event, and never blocks or raises.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder

from ringline.api.http import API_STATE
from ringline.api.http.docs import add_docs_routes
from ringline.api.state import STORE
from ringline.engine.call import Call
from ringline.engine.events import CallEvent, EventType
from ringline.engine.record import CallRecord, EndReason
from ringline.engine.registry import CallRegistry

log = logging.getLogger(__name__)

DATABASE_TIMEOUT_S = 2.0
"""How long ``/ready`` waits for the database's answer before calling it failed (``Ops.database_timeout_s``)."""

REPLY_LATENCY_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 5.0)
"""Seconds; replies are expected within 0.1-3 s of the caller's end of speech."""

LAG_PROBE_S = 0.1
"""How often the event loop's lag is sampled (one timer: negligible cost)."""

PAUSE_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)
"""Seconds; a frame is 20 ms, so anything past 0.005 is worth a look."""

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class Metrics:
    """The app's Prometheus metrics, in a registry of their own (tests and several apps in one
    process never share counters)."""

    def __init__(self, calls: CallRegistry) -> None:
        self.registry = registry = CollectorRegistry()
        active = Gauge("ringline_active_calls", "Calls live on this process now.", registry=registry)
        active.set_function(lambda: len(calls))
        self.calls_started = Counter("ringline_calls_started", "Calls that became active.", registry=registry)
        self.calls_ended = Counter("ringline_calls_ended", "Calls ended, by end reason.", ["reason"], registry=registry)
        for reason in EndReason:  # every reason is a series from the start, at 0
            self.calls_ended.labels(reason.value)
        self.turns = Counter("ringline_turns", "Caller turns committed (each starts a reply).", registry=registry)
        self.reply_latency = Histogram(
            "ringline_reply_latency_seconds",
            "From the end of the caller's speech to the first reply audio sent to the provider.",
            buckets=REPLY_LATENCY_BUCKETS,
            registry=registry,
        )
        self.provider_errors = Counter(
            "ringline_provider_errors",
            "Provider failures during calls, by stage (stt, llm, tts, reply, transfer).",
            ["stage"],
            registry=registry,
        )
        self.http_responses = Counter(
            "ringline_http_responses",
            "HTTP responses, by method, route template and status (WebSocket upgrades are 101).",
            ["method", "route", "status"],
            registry=registry,
        )
        self.loop_lag = Histogram(
            "ringline_event_loop_lag_seconds",
            "How late the event loop ran a timer due now (sampled every 0.1 s).",
            buckets=PAUSE_BUCKETS,
            registry=registry,
        )
        self.gc_pause = Histogram(
            "ringline_gc_pause_seconds",
            "How long each garbage collection ran, by generation.",
            ["generation"],
            buckets=PAUSE_BUCKETS,
            registry=registry,
        )


class LoopWatch:
    """Samples the event loop's lag and times garbage collections into ``metrics``, from ``start``
    (on the running loop) to ``stop``."""

    def __init__(self, metrics: Metrics, interval: float = LAG_PROBE_S) -> None:
        self._lag = metrics.loop_lag
        self._pauses = [metrics.gc_pause.labels(str(generation)) for generation in range(3)]
        self._interval = interval
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0
        self._gc_started = 0.0

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._due = time.monotonic() + self._interval
        self._handle = loop.call_later(self._interval, self._probe, loop)
        gc.callbacks.append(self._on_gc)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)

    def _probe(self, loop: asyncio.AbstractEventLoop) -> None:
        now = time.monotonic()
        self._lag.observe(max(0.0, now - self._due))
        self._due = now + self._interval
        self._handle = loop.call_later(self._interval, self._probe, loop)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            self._pauses[info["generation"]].observe(time.perf_counter() - self._gc_started)


class _CallMetrics:
    """One call's observer: its events move the app's metrics."""

    __slots__ = ("_metrics", "_record", "_last_turn")

    def __init__(self, metrics: Metrics, record: CallRecord) -> None:
        self._metrics = metrics
        self._record = record
        self._last_turn = 0
        """The last turn whose latency was observed (a resumed reply reports its turn again)."""

    def on_event(self, event: CallEvent) -> None:
        data = event.data
        match event.type:
            case EventType.MESSAGE if data.get("role") == "user":
                self._metrics.turns.inc()
            case EventType.LATENCY:
                self._on_latency(data)
            case EventType.FAULT:
                self._metrics.provider_errors.labels(str(data.get("stage", "unknown"))).inc()
            case EventType.STATUS if data.get("status") == "active":
                self._metrics.calls_started.inc()
            case EventType.STATUS if data.get("status") == "ended":
                reason = self._record.end_reason
                self._metrics.calls_ended.labels("unknown" if reason is None else reason.value).inc()

    def _on_latency(self, data: Mapping[str, Any]) -> None:
        turn, sent_ms = data.get("turn"), data.get("first_audio_sent")
        if not isinstance(turn, int) or turn <= self._last_turn or not isinstance(sent_ms, int | float):
            return
        self._last_turn = turn
        self._metrics.reply_latency.observe(max(sent_ms, 0) / 1000)


@dataclass(slots=True)
class Ops:
    """What the ops routes keep."""

    calls: CallRegistry
    metrics: Metrics
    models_ready: bool = False
    """Set once the models are warmed up (``models_ready``)."""
    database_timeout_s: float = DATABASE_TIMEOUT_S
    database: str = "unknown"
    """The database check's last state, so only its changes are logged."""


OPS = web.AppKey("ops", Ops)

routes = web.RouteTableDef()


def setup_ops(app: web.Application, calls: CallRegistry, api: web.Application) -> None:
    """``/health``, ``/ready`` and ``/metrics`` on ``app``, the API's docs at its root too (``api`` is
    the mounted control API), and every HTTP response counted."""
    app[OPS] = ops = Ops(calls, Metrics(calls))
    app.add_routes(routes)
    state = api[API_STATE]
    if state.options.docs:
        add_docs_routes(app, state.document, state.options.title)
    counter = ops.metrics.http_responses

    async def count_response(request: web.Request, response: web.StreamResponse) -> None:
        resource = request.match_info.route.resource  # the API's routes too: the root app hears them
        route = resource.canonical if resource is not None else "unmatched"
        method = request.method if request.method in _METHODS else "other"
        counter.labels(method, route, str(response.status)).inc()

    app.on_response_prepare.append(count_response)
    app.cleanup_ctx.append(_watch_loop)


async def _watch_loop(app: web.Application) -> AsyncIterator[None]:
    watch = LoopWatch(app[OPS].metrics)
    watch.start()
    yield
    watch.stop()


def watch_call(app: web.Application, call: Call) -> None:
    """Count ``call`` in the app's metrics (call it when the call is made, before it starts)."""
    call.events.observe(_CallMetrics(app[OPS].metrics, call.record))


def models_ready(app: web.Application) -> None:
    """The models are warmed up: ``/ready`` may say so."""
    app[OPS].models_ready = True


@routes.get("/health")
async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "calls": len(request.app[OPS].calls)})


@routes.get("/ready")
async def ready(request: web.Request) -> web.Response:
    checks = await readiness(request.app)
    ok = all(state == "ok" for state in checks.values())
    body = {"status": "ready" if ok else "not_ready", "checks": checks}
    return web.json_response(body, status=200 if ok else 503, headers={"Cache-Control": "no-store"})


async def readiness(app: web.Application) -> dict[str, str]:
    """Each check's state: ``ok``, or why not."""
    ops = app[OPS]
    database, why = await _database_state(app)
    if database != ops.database:
        if database == "ok":
            log.info("readiness: database %s -> ok", ops.database)
        else:
            log.warning("readiness: database %s -> %s: %s", ops.database, database, why)
        ops.database = database
    return {"database": database, "models": "ok" if ops.models_ready else "loading"}


async def _database_state(app: web.Application) -> tuple[str, str]:
    """The database check's state and, when it failed, why."""
    store, timeout = app.get(STORE), app[OPS].database_timeout_s
    if store is None:
        return "not_open", "the store is not open yet"
    try:
        await asyncio.wait_for(store.schema_version(), timeout)
    except TimeoutError:
        return "timeout", f"no answer within {timeout:g} s"
    except Exception as exc:  # whatever the driver raised: the probe answers, the log says what
        return "unavailable", f"{type(exc).__name__}: {exc}"
    return "ok", ""


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    body = encode(request.app[OPS].metrics.registry)
    return web.Response(body=body, headers={"Content-Type": content_type, "Cache-Control": "no-store"})
