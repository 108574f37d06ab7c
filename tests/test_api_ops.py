"""The operators' endpoints on the real server: liveness, readiness (ready, database gone, before
start-up), Prometheus metrics moved by a real call through the Twilio socket, and the control API's
docs at the root."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from dataclasses import dataclass, field

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ringline.api.app import CALLS, make_app
from ringline.api.ops import OPS, REPLY_LATENCY_BUCKETS, LoopWatch, Metrics, readiness, watch_call
from ringline.api.state import STORE
from ringline.benchmarks.caller import clip_script, run_call
from ringline.config.settings import Settings, load_settings
from ringline.engine.events import EventLog, EventType
from ringline.engine.record import CallRecord, EndReason
from ringline.engine.registry import CallRegistry
from tests.api_fixtures import API, ApiServer, running

pytestmark = pytest.mark.timeout(60)


def bench(*, llm_fail_first: int = 0, **api: object) -> Settings:
    data = load_settings("config/bench.toml").model_dump()
    data["api"].update(api)
    data["agents"]["default"]["llm"]["fail_first"] = llm_fail_first
    return Settings.model_validate(data)


async def scrape(server: ApiServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``/metrics`` as {(sample name, sorted labels): value}."""
    async with server.get("/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=")
        text = await resp.text()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def http(route: str, status: str, method: str = "GET") -> tuple[str, tuple[tuple[str, str], ...]]:
    """The key of one ``ringline_http_responses_total`` series in ``scrape``'s answer."""
    return "ringline_http_responses_total", (("method", method), ("route", route), ("status", status))


async def test_health_is_liveness_with_the_live_call_count(api: ApiServer) -> None:
    async with api.get("/health") as resp:
        assert resp.status == 200
        assert await resp.json() == {"status": "ok", "calls": 0}


async def test_ready_once_the_database_answers_and_the_models_are_warm(api: ApiServer) -> None:
    async with api.get("/ready") as resp:
        assert resp.status == 200
        assert resp.headers["Cache-Control"] == "no-store"
        assert await resp.json() == {"status": "ready", "checks": {"database": "ok", "models": "ok"}}


async def test_not_ready_when_the_database_is_gone(api: ApiServer, caplog: pytest.LogCaptureFixture) -> None:
    async with api.get("/ready") as resp:
        assert resp.status == 200
    await api.store.close()
    with caplog.at_level(logging.WARNING, logger="ringline.api.ops"):
        for _ in range(2):  # the change is logged once, not on every probe
            async with api.get("/ready") as resp:
                assert resp.status == 503
                assert await resp.json() == {
                    "status": "not_ready",
                    "checks": {"database": "unavailable", "models": "ok"},
                }
    changes = [r.getMessage() for r in caplog.records if r.name == "ringline.api.ops"]
    assert len(changes) == 1 and changes[0].startswith("readiness: database ok -> unavailable: StoreError: ")
    async with api.get("/health") as resp:  # still alive: a restart would not bring the database back
        assert resp.status == 200


class HangingStore:
    """A database that never answers."""

    async def schema_version(self) -> int:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_before_start_up_nothing_is_ready_and_a_silent_database_times_out() -> None:
    app = make_app(load_settings(data={}))
    assert await readiness(app) == {"database": "not_open", "models": "loading"}
    app[STORE] = HangingStore()  # type: ignore[assignment]
    app[OPS].database_timeout_s = 0.05
    assert await readiness(app) == {"database": "timeout", "models": "loading"}


async def test_a_call_moves_the_metrics() -> None:
    async with running(bench(llm_fail_first=1)) as server:
        before = await scrape(server)
        assert before[("ringline_active_calls", ())] == 0
        assert before[("ringline_calls_started_total", ())] == 0
        assert before[("ringline_calls_ended_total", (("reason", "caller_hangup"),))] == 0  # every reason, at 0
        assert before[("ringline_reply_latency_seconds_count", ())] == 0

        call = asyncio.create_task(run_call(f"{server.ws_url}/media/twilio", clip_script(0, 2)))
        for _ in range(500):  # the gauge is read from the registry at scrape time
            if (await scrape(server))[("ringline_active_calls", ())] == 1:
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("the live call never showed in ringline_active_calls")
        result = await call
        assert result.error is None and result.answered == 2
        await server.app[CALLS].wait_finished(result.call_sid)

        after = await scrape(server)
        assert after[("ringline_active_calls", ())] == 0
        assert after[("ringline_calls_started_total", ())] == 1
        assert after[("ringline_calls_ended_total", (("reason", "caller_hangup"),))] == 1
        assert after[("ringline_calls_ended_total", (("reason", "error"),))] == 0
        assert after[("ringline_turns_total", ())] == 2
        assert after[("ringline_provider_errors_total", (("stage", "llm"),))] == 1  # the failed first try
        assert after[("ringline_reply_latency_seconds_count", ())] == 2
        latency = after[("ringline_reply_latency_seconds_sum", ())] / 2
        assert 0.1 < latency < 3.0  # the 200 ms end-of-turn silence, plus the engine
        buckets = [after[("ringline_reply_latency_seconds_bucket", (("le", str(b)),))] for b in REPLY_LATENCY_BUCKETS]
        assert buckets == sorted(buckets) and buckets[-1] == 2
        route = (("method", "GET"), ("route", "/media/{provider}"), ("status", "101"))
        upgrades = ("ringline_http_responses_total", route)
        assert after[upgrades] == 1
        assert (
            after[("ringline_http_responses_total", (("method", "GET"), ("route", "/metrics"), ("status", "200")))] >= 2
        )


async def test_http_responses_are_counted_by_route_template(api: ApiServer) -> None:
    for path in (f"{API}/openapi.json", f"{API}/calls/nobody", f"{API}/calls/someone", "/no/such/page"):
        async with api.get(path) as resp:
            await resp.read()
    metrics = await scrape(api)

    def count(route: str, status: str) -> float:
        return metrics.get(
            ("ringline_http_responses_total", (("method", "GET"), ("route", route), ("status", status))), 0
        )

    assert count(f"{API}/openapi.json", "200") == 1  # the API's routes too
    assert count(f"{API}/calls/{{call_id}}", "401") == 2  # one series per route, not per path (no key: 401)
    assert count("unmatched", "404") == 1


@dataclass
class FakeCall:
    """What ``watch_call`` reads of a call: its events and its record."""

    events: EventLog = field(default_factory=lambda: EventLog("c1"))
    record: CallRecord = field(default_factory=lambda: CallRecord("c1", "default", started_at=0.0))


async def test_a_turn_counts_its_latency_once_and_only_when_audio_was_sent(api: ApiServer) -> None:
    call = FakeCall()
    watch_call(api.app, call)  # type: ignore[arg-type]
    metrics = api.app[OPS].metrics
    call.events.emit(EventType.STATUS, status="active")
    call.events.emit(EventType.LATENCY, turn=1, first_audio_sent=None)  # no audio: nothing to observe
    call.events.emit(EventType.LATENCY, turn=2, first_audio_sent=450.0)
    call.events.emit(EventType.LATENCY, turn=2, first_audio_sent=450.0)  # a resumed reply reports again
    call.events.emit(EventType.MESSAGE, role="user", content="hello")
    call.events.emit(EventType.MESSAGE, role="assistant", content="hi")
    call.events.emit(EventType.FAULT, stage="tts", detail="tts 1: scripted failure")
    call.record.end_reason = EndReason.API_ENDED
    call.events.emit(EventType.STATUS, status="ended")
    values = {
        (s.name, tuple(s.labels.values())): s.value
        for collector in (metrics.turns, metrics.calls_started, metrics.calls_ended, metrics.provider_errors)
        for s in collector.collect()[0].samples
    } | {(s.name, ()): s.value for s in metrics.reply_latency.collect()[0].samples if not s.labels}
    assert values[("ringline_turns_total", ())] == 1  # only the caller's messages are turns
    assert values[("ringline_calls_started_total", ())] == 1
    assert values[("ringline_calls_ended_total", ("api_ended",))] == 1
    assert values[("ringline_provider_errors_total", ("tts",))] == 1
    assert values[("ringline_reply_latency_seconds_count", ())] == 1
    assert values[("ringline_reply_latency_seconds_sum", ())] == 0.45


async def test_two_apps_keep_their_own_metrics() -> None:
    first, second = make_app(load_settings(data={})), make_app(load_settings(data={}))
    assert first[OPS].metrics.registry is not second[OPS].metrics.registry
    first[OPS].metrics.turns.inc()
    assert [s.value for s in second[OPS].metrics.turns.collect()[0].samples if s.name.endswith("_total")] == [0]


async def test_the_api_document_and_docs_page_are_at_the_root_too(api: ApiServer) -> None:
    async with api.get("/openapi.json") as root, api.get(f"{API}/openapi.json") as mounted:
        assert root.status == mounted.status == 200
        assert root.content_type == "application/json"
        assert await root.read() == await mounted.read()
    async with api.get("/docs") as root, api.get(f"{API}/docs") as mounted:
        assert root.status == 200 and root.content_type == "text/html"
        assert await root.read() == await mounted.read()  # relative links: docs/... and openapi.json at the root
    for path in ("/docs/init.js", "/docs/swagger-ui-bundle.js"):
        async with api.get(path) as resp:
            assert resp.status == 200
    async with api.get("/docs/", allow_redirects=False) as resp:
        assert resp.status == 308 and resp.headers["Location"] == "../docs"


async def test_without_docs_neither_root_alias_exists() -> None:
    async with running(load_settings(data={"api": {"docs": False}})) as server:
        for path in ("/openapi.json", "/docs", f"{API}/openapi.json"):
            async with server.get(path) as resp:
                assert resp.status == 404, path


def _count(histogram_child: object) -> float:
    """A histogram (or one labelled child)'s observation count."""
    samples = histogram_child.collect()[0].samples  # type: ignore[attr-defined]
    return next(s.value for s in samples if s.name.endswith("_count"))


def _sum(histogram_child: object) -> float:
    samples = histogram_child.collect()[0].samples  # type: ignore[attr-defined]
    return next(s.value for s in samples if s.name.endswith("_sum"))


async def test_a_stalled_loop_shows_as_lag_and_a_collection_as_a_gc_pause() -> None:
    metrics = Metrics(CallRegistry())
    watch = LoopWatch(metrics, interval=0.005)
    watch.start()
    try:
        after_probe = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_later(0.01, after_probe.set_result, None)  # timers run in due order
        time.sleep(0.06)  # noqa: ASYNC251 - the stall being measured: the probe was due 5 ms in
        await after_probe
        assert _count(metrics.loop_lag) == 1
        assert _sum(metrics.loop_lag) >= 0.05
        before = _count(metrics.gc_pause.labels("2"))
        gc.collect()
        assert _count(metrics.gc_pause.labels("2")) == before + 1
    finally:
        watch.stop()
    gc.collect()
    assert _count(metrics.gc_pause.labels("2")) == before + 1  # stopped: no longer watching


async def test_the_loop_lag_and_gc_series_are_scraped(api: ApiServer) -> None:
    metrics = await scrape(api)
    assert ("ringline_event_loop_lag_seconds_count", ()) in metrics
    for generation in "012":
        assert ("ringline_gc_pause_seconds_count", (("generation", generation),)) in metrics
