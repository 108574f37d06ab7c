"""Webhooks: signed, durable, in order per call. The receivers are real aiohttp servers on 127.0.0.1 that
verify every signature; calls are real Twilio media sockets placed by the caller simulator; the outbox is
the real store (SQLite, and PostgreSQL where it matters). Backoffs are tiny so retries take milliseconds."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Self

import pytest
from aiohttp import web

from ringline.api.state import CALLS, STORE, WEBHOOKS
from ringline.api.store import (
    CallStatus,
    Direction,
    OutboxEvent,
    OutboxStatus,
    Store,
    open_store,
)
from ringline.api.webhooks import EVENT_TYPES, CallWebhooks, WebhookDispatcher, outbox_event, webhook_url
from ringline.api.webhooks.dispatcher import backoff_s
from ringline.api.webhooks.signing import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SEQ_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    SignatureError,
    sign,
    signature,
    verify,
)
from ringline.benchmarks.caller import CallerScript, clip_script, run_call
from ringline.benchmarks.vendors.twilio_rest import FakeTwilioRest
from ringline.config.settings import Settings, WebhookConfig, load_settings
from ringline.engine.call import CallStatus as LiveStatus
from ringline.engine.errors import ConfigError
from tests.api_fixtures import API, ApiServer, running

pytestmark = pytest.mark.timeout(60)

SECRET = "whsec-test-secret"
FAST = {"backoff_base_s": 0.01, "backoff_cap_s": 0.05, "timeout_s": 2.0}
STATUS_ONLY = ["status-update"]
"""What these tests' receivers get by default (a real call also sends an ``end-of-call-report``, and
``assistant-request`` is asked synchronously: both are other modules' business)."""


# -- a receiver that verifies ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hit:
    delivery: int
    event: str
    seq: int | None
    body: dict[str, Any]
    at: float


class Receiver:
    """A webhook receiver on 127.0.0.1: verifies each signature (401 when it does not), answers 500 to
    the first ``fail_first`` tries of each delivery, and with ``hang`` holds every request until closed."""

    def __init__(self, *, fail_first: int = 0, hang: bool = False, delay_s: float = 0.0, secret: str = SECRET) -> None:
        self.fail_first = fail_first
        self.hang = hang
        self.delay_s = delay_s
        self.secret = secret
        self.accepted: list[Hit] = []
        self.tries: Counter[int] = Counter()
        self.first_try: dict[int, float] = {}
        self.bad_signatures: list[str] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._changed = asyncio.Event()
        self._release = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/hook"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._release.set()
        assert self._runner is not None
        await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            verify(self.secret, request.headers, body, time.time())
        except SignatureError as exc:
            self.bad_signatures.append(str(exc))
            self._changed.set()
            return web.Response(status=401, text=str(exc))
        delivery = int(request.headers[DELIVERY_HEADER])
        self.tries[delivery] += 1
        self.first_try.setdefault(delivery, time.time())
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self._changed.set()
        try:
            if self.hang:
                await self._release.wait()
            elif self.delay_s:
                await asyncio.sleep(self.delay_s)  # a slow receiver's work
            if self.tries[delivery] <= self.fail_first:
                return web.Response(status=500, text="try again later")
            seq = request.headers.get(SEQ_HEADER)
            hit = Hit(
                delivery, request.headers[EVENT_HEADER], int(seq) if seq else None, await request.json(), time.time()
            )
            self.accepted.append(hit)
            return web.Response(status=204)
        finally:
            self.in_flight -= 1
            self._changed.set()

    async def wait(self, done: Callable[[], bool]) -> None:
        async with asyncio.timeout(15):
            while not done():
                self._changed.clear()
                await self._changed.wait()

    def of_call(self, call_id: str) -> list[Hit]:
        return [h for h in self.accepted if h.body.get("call_id") == call_id]


def bench(url: str | None, *, agents: dict[str, dict[str, Any]] | None = None, **webhooks: Any) -> Settings:
    data = load_settings("config/bench.toml").model_dump()
    data["webhooks"] = {"default_url": url, "secret": SECRET, "events": STATUS_ONLY, **FAST, **webhooks}
    for name, extra in (agents or {}).items():
        data["agents"][name] = {**data["agents"]["default"], **extra}
    return Settings.model_validate(data)


async def fresh_store(tmp_path: Any, name: str = "hooks.db") -> Store:
    return await open_store(f"sqlite:///{tmp_path / name}")


async def three_events(store: Store, webhooks: CallWebhooks, n: int, *, agent: Any = None) -> list[str]:
    """``n`` calls, each ringing, in progress and ended: three status-updates each, in the outbox."""
    ids = []
    for i in range(n):
        outbox = webhooks.status_update(agent)
        row = await store.create_call(
            Direction.INBOUND, status=CallStatus.RINGING, from_number=f"+1415555{i:04d}", outbox=outbox
        )
        await store.update_call_status(row.id, CallStatus.IN_PROGRESS, outbox=outbox)
        await store.end_call(row.id, "caller_hangup", outbox=outbox)
        ids.append(row.id)
    webhooks.notify()
    return ids


async def settled(store: Store, n: int, **where: Any) -> Any:
    """The deliveries matching ``where`` once ``n`` of them are recorded delivered (the receiver has
    an event a moment before its outcome is written)."""
    async with asyncio.timeout(10):
        while (page := await store.list_deliveries(status=OutboxStatus.DELIVERED, **where)).total < n:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    return page


def statuses(hits: Sequence[Hit]) -> list[str]:
    return [h.body["status"] for h in hits]


# -- signing -----------------------------------------------------------------------------------------


def test_verify_accepts_a_signed_body_and_says_why_it_rejects_others() -> None:
    body, now = b'{"type":"status-update","status":"ended"}', 1_718_000_000.0
    headers = sign(SECRET, body, now)
    assert headers[SIGNATURE_HEADER] == f"v1={signature(SECRET, 1_718_000_000, body)}"
    assert verify(SECRET, headers, body, now + 299) == 1_718_000_000
    lowered = {k.lower(): v for k, v in headers.items()}
    assert verify(["old-secret", SECRET], lowered, body, now) == 1_718_000_000  # rotation, any case

    def why(secret: Any, hdrs: dict[str, str], data: bytes, at: float) -> str:
        with pytest.raises(SignatureError) as err:
            verify(secret, hdrs, data, at)
        return str(err.value)

    assert why(SECRET, headers, body.replace(b"ended", b"ENDED"), now) == "signature does not match"
    assert why("another secret", headers, body, now) == "signature does not match"
    assert why(SECRET, headers, body, now + 301) == "timestamp 1718000000 is more than 300 s from now (1718000301)"
    assert why(SECRET, headers, body, now - 301) == "timestamp 1718000000 is more than 300 s from now (1717999699)"
    replayed = {**headers, TIMESTAMP_HEADER: str(int(now) + 60)}  # a fresh timestamp on an old signature
    assert why(SECRET, replayed, body, now + 60) == "signature does not match"
    assert why(SECRET, {SIGNATURE_HEADER: "v1=00"}, body, now) == "missing X-Ringline-Timestamp header"
    assert why(SECRET, {TIMESTAMP_HEADER: "1"}, body, now) == "missing X-Ringline-Signature header"
    bad_ts = {**headers, TIMESTAMP_HEADER: "-5"}
    assert why(SECRET, bad_ts, body, now) == "malformed X-Ringline-Timestamp header: want Unix seconds"
    other_scheme = {**headers, SIGNATURE_HEADER: "v0=abc"}
    assert why(SECRET, other_scheme, body, now) == "no v1= signature in X-Ringline-Signature header"
    assert why(SECRET, {**headers, SIGNATURE_HEADER: "v1=é"}, body, now) == "signature does not match"


def test_backoff_is_exponential_with_full_jitter_and_a_cap() -> None:
    top = [backoff_s(n, 1.0, 60.0, rand=lambda: 1.0) for n in range(1, 9)]
    assert top == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]
    assert backoff_s(3, 1.0, 60.0, rand=lambda: 0.5) == 2.0
    assert backoff_s(10_000, 1.0, 60.0, rand=lambda: 1.0) == 60.0  # no overflow


# -- where events go ---------------------------------------------------------------------------------


def test_precedence_is_tool_then_agent_then_account_and_filters_apply() -> None:
    settings = bench(
        "https://account.example/hook",
        agents={
            "own": {"webhook": {"url": "https://agent.example/hook", "events": ["status-update"]}},
            "picky": {"webhook": {"events": ["end-of-call-report"]}},
        },
        events=["status-update", "tool-calls"],
    )
    own, picky, default = settings.agents["own"], settings.agents["picky"], settings.agents["default"]
    assert webhook_url(settings, own, "status-update") == "https://agent.example/hook"
    assert webhook_url(settings, own, "end-of-call-report") is None
    assert webhook_url(settings, own, "tool-calls", "https://tool.example/run") == "https://tool.example/run"
    assert webhook_url(settings, picky, "end-of-call-report") == "https://account.example/hook"
    assert webhook_url(settings, picky, "status-update") is None
    assert webhook_url(settings, default, "status-update") == "https://account.example/hook"
    assert webhook_url(settings, default, "end-of-call-report") is None  # the account's filter
    assert webhook_url(settings, None, "tool-calls") == "https://account.example/hook"
    assert webhook_url(bench(None), default, "status-update") is None
    with pytest.raises(ValueError, match="unknown webhook event 'call-started'"):
        webhook_url(settings, own, "call-started")
    assert outbox_event(settings, own, "c1", "end-of-call-report", {}) is None
    event = outbox_event(settings, own, "c1", "status-update", {"status": "ended"})
    assert event == OutboxEvent(
        "status-update", {"type": "status-update", "status": "ended"}, "https://agent.example/hook", "c1"
    )
    assert set(EVENT_TYPES) == {"assistant-request", "tool-calls", "status-update", "end-of-call-report"}


def test_the_secret_comes_from_the_environment_and_is_required_with_a_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RINGLINE_WEBHOOK_SECRET", raising=False)
    with pytest.raises(ConfigError, match="webhooks.secret is missing: set it here or in the environment"):
        load_settings(data={"webhooks": {"default_url": "https://example.com/hook"}})
    with pytest.raises(ConfigError, match="webhooks.secret is missing"):
        load_settings(data={"agents": {"default": {"webhook": {"url": "https://example.com/hook"}}}})
    with pytest.raises(ConfigError, match="webhooks.default_url: String should match pattern"):
        load_settings(data={"webhooks": {"default_url": "ftp://example.com", "secret": "s"}})
    assert load_settings(data={}).webhooks.secret is None  # no URL, no secret needed
    monkeypatch.setenv("RINGLINE_WEBHOOK_SECRET", "from-env")
    settings = load_settings(data={"webhooks": {"default_url": "https://example.com/hook"}})
    assert settings.webhooks.secret is not None and settings.webhooks.secret.get_secret_value() == "from-env"


# -- status-updates of real calls ---------------------------------------------------------------------


async def test_every_status_of_a_real_call_arrives_signed_in_order() -> None:
    async with Receiver() as receiver, running(bench(receiver.url)) as server:
        params = {"from": "+14155550100", "to": "+14155550199"}
        result = await run_call(f"{server.ws_url}/media/twilio", clip_script(0, 2, custom_parameters=params))
        assert result.error is None and result.answered == 2
        await receiver.wait(lambda: len(receiver.of_call(result.call_sid)) == 3)
        hits = receiver.of_call(result.call_sid)
        assert statuses(hits) == ["ringing", "in_progress", "ended"]
        assert [h.seq for h in hits] == [1, 2, 3] and {h.event for h in hits} == {"status-update"}
        assert receiver.bad_signatures == []
        for hit in hits:
            body = hit.body
            assert set(body) >= {"type", "call_id", "status", "timestamp", "agent_id", "direction", "metadata"}
            assert (body["type"], body["agent_id"], body["direction"]) == ("status-update", "default", "inbound")
            assert (body["from_number"], body["to_number"], body["metadata"]) == ("+14155550100", "+14155550199", {})
            assert datetime.fromisoformat(body["timestamp"]).tzinfo is not None
        assert (hits[2].body["end_reason"], hits[2].body["duration_s"] > 1) == ("caller_hangup", True)
        assert "end_reason" not in hits[0].body
        stamps = [datetime.fromisoformat(h.body["timestamp"]) for h in hits]
        assert stamps == sorted(stamps)
        page = await settled(server.store, 3, call_id=result.call_sid)
        assert sorted(d.id for d in page.items) == [h.delivery for h in hits]


async def test_a_transfer_sends_forwarding_then_ended() -> None:
    async with FakeTwilioRest() as twilio, Receiver() as receiver:
        settings = bench(receiver.url)
        data = settings.model_dump()
        data["telephony"] = {
            "public_url": "https://voice.example.com",
            "twilio": {"account_sid": twilio.account_sid, "auth_token": twilio.auth_token, "api_base_url": twilio.url},
        }
        data["webhooks"]["secret"] = SECRET
        async with running(Settings.model_validate(data)) as server:
            sid = "CA" + "ab" * 16
            twilio.add_call(sid, to="+14155550100", from_="+14155550199")
            task = asyncio.create_task(
                run_call(f"{server.ws_url}/media/twilio", CallerScript((), reply_timeout_s=6, call_sid=sid))
            )
            call = await asyncio.wait_for(server.app[CALLS].wait_live(sid), 10)
            await receiver.wait(lambda: call.status is LiveStatus.ACTIVE and len(receiver.of_call(sid)) >= 2)
            key = await server.key("calls:write")
            command = {"type": "transfer", "destination": "+14155550111"}
            async with server.post(f"{API}/calls/{sid}/control", key=key, json=command) as resp:
                assert resp.status == 200, await resp.text()
            await asyncio.wait_for(task, 30)
            await receiver.wait(lambda: len(receiver.of_call(sid)) == 4)
            hits = receiver.of_call(sid)
            assert statuses(hits) == ["ringing", "in_progress", "forwarding", "ended"]
            assert hits[-1].body["end_reason"] == "transferred"


async def test_calls_left_live_by_a_crash_get_their_ended_event_at_the_next_start() -> None:
    async with Receiver() as receiver:
        settings = bench(receiver.url)
        store = await open_store(settings.api.database)
        try:
            row = await store.create_call(Direction.INBOUND, agent_id="default", status=CallStatus.IN_PROGRESS)
        finally:
            await store.close()
        async with running(settings):
            await receiver.wait(lambda: len(receiver.of_call(row.id)) == 1)
        (hit,) = receiver.of_call(row.id)
        assert (hit.body["status"], hit.body["end_reason"], hit.seq) == ("ended", "engine_restart", 1)


# -- delivery: retries, order, restarts ----------------------------------------------------------------


@pytest.mark.parametrize("store_backend", ["sqlite", "postgres"])
async def test_500_three_times_then_200_delivers_each_event_once_in_order_per_call(store_url: str) -> None:
    async with Receiver(fail_first=3) as receiver:
        settings = bench(receiver.url)
        webhooks = CallWebhooks(settings)
        store = await open_store(store_url)
        try:
            async with WebhookDispatcher(store, settings.webhooks, webhooks=webhooks) as dispatcher:
                calls = await three_events(store, webhooks, 3)
                await receiver.wait(lambda: len(receiver.accepted) == 9)
            assert dispatcher.delivered == 9
            assert len({h.delivery for h in receiver.accepted}) == 9  # each accepted once
            assert set(receiver.tries.values()) == {4}
            for call_id in calls:
                hits = receiver.of_call(call_id)
                assert [h.seq for h in hits] == [1, 2, 3]
                assert statuses(hits) == ["ringing", "in_progress", "ended"]
                for before, after in zip(hits, hits[1:], strict=False):  # N+1 not even tried before N was through
                    assert receiver.first_try[after.delivery] >= before.at
            for item in (await store.list_deliveries()).items:
                attempts = await store.list_attempts(item.id)
                assert item.status is OutboxStatus.DELIVERED and item.attempts == len(attempts)
                # What the receiver answered, in order. An attempt that never reached it (a pooled
                # connection the server had just closed: seen once in CI) is recorded too, with its
                # error and no status, and is retried like any other failure.
                answered = [a for a in attempts if a.status_code is not None]
                assert [a.status_code for a in answered] == [500, 500, 500, 204]
                assert all(a.error for a in attempts if a.status_code is None)
                assert attempts[-1] is answered[-1] and attempts[-1].error is None
                assert answered[0].error == "HTTP 500: try again later"
        finally:
            await store.close()


async def test_a_stopped_app_mid_retry_leaves_the_rest_to_the_next_one_on_the_same_database() -> None:
    async with Receiver(fail_first=1_000_000) as receiver:
        settings = bench(receiver.url, timeout_s=1.0)
        async with running(settings) as server:
            calls = await three_events(server.store, server.app[WEBHOOKS], 2)
            await receiver.wait(lambda: len(receiver.tries) == 2 and min(receiver.tries.values()) >= 3)
        assert receiver.accepted == []
        store = await open_store(settings.api.database)
        try:
            pending = (await store.list_deliveries(status=OutboxStatus.PENDING)).items
            assert len(pending) == 6
            assert all(p.attempts >= 3 for p in pending if p.seq == 1)
            assert all(p.attempts == 0 for p in pending if p.seq > 1)  # never tried: their call's first is not through
        finally:
            await store.close()
        receiver.fail_first = 0
        async with running(settings) as server:
            await receiver.wait(lambda: len(receiver.accepted) == 6)
            for call_id in calls:
                assert [h.seq for h in receiver.of_call(call_id)] == [1, 2, 3]
            assert len({h.delivery for h in receiver.accepted}) == 6
            await settled(server.store, 6)


async def test_events_claimed_by_a_crashed_worker_are_sent_once_its_lease_ends(tmp_path: Any) -> None:
    async with Receiver() as receiver:
        settings = bench(receiver.url)
        webhooks = CallWebhooks(settings)
        store = await fresh_store(tmp_path)
        try:
            (call_id,) = await three_events(store, webhooks, 1)
            claimed_at = time.time()
            (crashed,) = await store.claim_due(datetime.now(UTC), 10, lease_s=0.5)  # and never finished
            async with WebhookDispatcher(store, settings.webhooks, webhooks=webhooks):
                await receiver.wait(lambda: len(receiver.accepted) == 3)
            hits = receiver.of_call(call_id)
            assert [h.seq for h in hits] == [1, 2, 3]
            assert hits[0].delivery == crashed.id and hits[0].at >= claimed_at + 0.5
            assert (await store.get_delivery(crashed.id)).attempts == 2
        finally:
            await store.close()


async def test_events_waiting_in_a_slow_lane_past_their_lease_are_sent_once(tmp_path: Any) -> None:
    async with Receiver(delay_s=0.1) as slow:  # one at a time: 30 events take 3 s, the lease is 1.8 s
        settings = bench(slow.url, timeout_s=0.3, max_in_flight_per_url=1)
        webhooks = CallWebhooks(settings)
        store = await fresh_store(tmp_path)
        try:
            async with WebhookDispatcher(store, settings.webhooks, webhooks=webhooks):
                calls = await three_events(store, webhooks, 30)
                firsts = {(await store.list_deliveries(call_id=c)).items[-1].id for c in calls}
                await slow.wait(lambda: firsts <= {h.delivery for h in slow.accepted})
                assert slow.max_in_flight == 1
            assert set(slow.tries.values()) == {1}  # claimed again while waiting, never sent twice
            reclaimed = [(await store.get_delivery(i)).attempts for i in firsts]
            assert max(reclaimed) >= 2  # the last of them did outlive a lease
        finally:
            await store.close()


async def test_a_hung_receiver_holds_only_its_own_lane(tmp_path: Any) -> None:
    async with Receiver(hang=True) as hung, Receiver() as good:
        settings = bench(good.url, agents={"slow": {"webhook": {"url": hung.url}}}, max_in_flight_per_url=4)
        webhooks = CallWebhooks(settings)
        store = await fresh_store(tmp_path)
        try:
            async with WebhookDispatcher(store, settings.webhooks, webhooks=webhooks):
                slow = await three_events(store, webhooks, 10, agent=settings.agents["slow"])
                fine = await three_events(store, webhooks, 4, agent=settings.agents["default"])
                await good.wait(lambda: len(good.accepted) == 12)
                await hung.wait(lambda: hung.in_flight == 4)
                assert hung.max_in_flight == 4 and len(hung.tries) == 4
            for call_id in fine:
                assert [h.seq for h in good.of_call(call_id)] == [1, 2, 3]
            firsts = [(await store.list_deliveries(call_id=c)).items[-1] for c in slow]
            assert {f.status for f in firsts} == {OutboxStatus.PENDING}
            errors = {f.last_error for f in firsts if f.attempts}
            assert errors == {"interrupted: the webhook dispatcher stopped"}  # handed back at the stop
            assert all(f.next_attempt_at <= datetime.now(UTC) for f in firsts if f.attempts)
        finally:
            await store.close()


async def test_a_hung_receiver_does_not_slow_the_calls_or_other_receivers() -> None:
    latencies: dict[str, list[float]] = {}
    params = {"from": "+14155550100", "to": "+14155550199"}
    for name, hang in (("without webhooks", None), ("with a hung receiver", True)):
        async with Receiver(hang=True) as hung, Receiver() as good:
            settings = bench(
                good.url if hang else None, agents={"slow": {"webhook": {"url": hung.url}}} if hang else None
            )
            async with running(settings) as server:
                url = f"{server.ws_url}/media/twilio"
                other = asyncio.create_task(run_call(url, clip_script(1, 1, custom_parameters=params)))
                slow_params = {**params, "agent": "slow"} if hang else params
                result = await run_call(url, clip_script(0, 2, custom_parameters=slow_params))
                assert result.error is None and result.answered == 2
                latencies[name] = [t.latency_ms for t in result.turns if t.latency_ms is not None]
                other_sid = (await other).call_sid
                if hang:
                    await good.wait(lambda sid=other_sid: len(good.of_call(sid)) == 3)
                    assert hung.in_flight >= 1 and good.of_call(result.call_sid) == []
    base, hung_ms = (statistics.median(latencies[k]) for k in ("without webhooks", "with a hung receiver"))
    print(f"median reply latency: {base:.1f} ms without webhooks, {hung_ms:.1f} ms with a hung receiver")
    assert hung_ms < base + 250  # a call waiting on its webhooks would wait seconds (timeout_s)


async def test_events_older_than_max_age_are_given_up(tmp_path: Any) -> None:
    async with Receiver(fail_first=1_000_000) as receiver:
        settings = bench(receiver.url, max_age_h=0.0001, backoff_base_s=1.0)  # 0.36 s to live; retries wait 1 s
        webhooks = CallWebhooks(settings)
        store = await fresh_store(tmp_path)
        try:
            async with WebhookDispatcher(store, settings.webhooks, webhooks=webhooks, rand=lambda: 1.0) as dispatcher:
                (call_id,) = await three_events(store, webhooks, 1)
                await receiver.wait(lambda: len(receiver.tries) == 3)
            assert dispatcher.failed == 3
            items = sorted((await store.list_deliveries(call_id=call_id)).items, key=lambda i: i.seq)
            assert [i.status for i in items] == [OutboxStatus.FAILED] * 3  # each tried once, then the next one
            assert [i.last_error for i in items] == ["HTTP 500: try again later"] * 3
        finally:
            await store.close()


async def test_without_a_secret_nothing_is_sent_and_the_reason_is_recorded(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RINGLINE_WEBHOOK_SECRET", raising=False)
    async with Receiver() as receiver:
        store = await fresh_store(tmp_path)
        try:
            (item,) = await store.enqueue([OutboxEvent("status-update", {"status": "ended"}, receiver.url)])
            config = WebhookConfig(default_url=receiver.url, **FAST)
            async with WebhookDispatcher(store, config) as dispatcher:
                assert await dispatcher.drain(5.0)
            got = await store.get_delivery(item.id)
            assert got.status is OutboxStatus.FAILED and got.last_error is not None
            assert got.last_error.startswith("not sent: no webhook secret")
            assert receiver.tries == Counter()
        finally:
            await store.close()


async def test_an_event_queued_longer_ago_than_max_age_fails_without_a_try(tmp_path: Any) -> None:
    async with Receiver() as receiver:
        two_days_ago = datetime.now(UTC) - timedelta(days=2)
        store = await open_store(f"sqlite:///{tmp_path / 'old.db'}", now=lambda: two_days_ago)
        try:
            (item,) = await store.enqueue([OutboxEvent("status-update", {}, receiver.url)])
        finally:
            await store.close()
        store = await fresh_store(tmp_path, "old.db")
        try:
            async with WebhookDispatcher(store, bench(receiver.url).webhooks) as dispatcher:
                assert await dispatcher.drain(5.0)
            got = await store.get_delivery(item.id)
            assert (got.status, got.last_error) == (OutboxStatus.FAILED, "gave up: not delivered within 24 h")
            assert receiver.tries == Counter()
        finally:
            await store.close()


# -- the deliveries API ------------------------------------------------------------------------------


async def api_get(server: ApiServer, key: str, path: str) -> tuple[int, dict[str, Any]]:
    async with server.get(f"{API}{path}", key=key) as resp:
        return resp.status, await resp.json()


async def test_deliveries_are_listed_filtered_read_and_redelivered() -> None:
    async with (
        Receiver() as good,
        Receiver(fail_first=1_000_000) as failing,
        running(bench(good.url, events=["status-update", "end-of-call-report"])) as server,
    ):
        store, webhooks = server.app[STORE], server.app[WEBHOOKS]
        (call_id,) = await three_events(store, webhooks, 1)
        report = webhooks.event(None, call_id, "end-of-call-report", {"summary": "Booked."})
        assert report is not None
        await store.enqueue([report])
        (stuck,) = await store.enqueue([OutboxEvent("status-update", {"status": "x"}, failing.url)])
        webhooks.notify()
        await good.wait(lambda: len(good.accepted) == 4)
        await failing.wait(lambda: failing.tries[stuck.id] >= 2)
        reader = await server.key("calls:read")

        status, body = await api_get(server, reader, "/webhook-deliveries")
        assert status == 200 and body["meta"]["pagination"]["total"] == 5
        status, body = await api_get(server, reader, f"/webhook-deliveries?call_id={call_id}&status=delivered")
        assert [d["seq"] for d in body["data"]] == [4, 3, 2, 1]  # newest first
        assert {d["attempt_count"] for d in body["data"]} == {1}
        assert {d["last_status_code"] for d in body["data"]} == {204}
        status, body = await api_get(server, reader, "/webhook-deliveries?event=end-of-call-report")
        assert [d["event"] for d in body["data"]] == ["end-of-call-report"]
        assert body["meta"]["pagination"]["total"] == 1
        status, body = await api_get(server, reader, "/webhook-deliveries?status=pending")
        (pending,) = body["data"]
        assert (pending["id"], pending["call_id"], pending["last_status_code"]) == (stuck.id, None, 500)
        assert pending["attempt_count"] >= 2 and pending["last_error"] == "HTTP 500: try again later"
        assert pending["next_attempt_at"] is not None
        status, body = await api_get(server, reader, "/webhook-deliveries?event=call-started")
        assert status == 422 and "query.event" in body["details"]

        first = good.of_call(call_id)[0].delivery
        status, body = await api_get(server, reader, f"/webhook-deliveries/{first}")
        assert status == 200
        detail = body["data"]
        assert (detail["status"], detail["payload"]["status"], detail["url"]) == ("delivered", "ringing", good.url)
        assert [a["status_code"] for a in detail["attempts"]] == [204]
        assert detail["attempts"][0]["duration_ms"] >= 0 and detail["next_attempt_at"] is None
        for missing in ("999999", "abc"):
            status, body = await api_get(server, reader, f"/webhook-deliveries/{missing}")
            assert (status, body["error"]) == (404, f"no delivery {missing}")

        path = f"{API}/webhook-deliveries/{first}/redeliver"
        async with server.post(path, key=reader) as resp:
            assert resp.status == 403
        writer = await server.key("calls:write")
        async with server.post(path, key=writer) as resp:
            assert resp.status == 201
            copy = (await resp.json())["data"]
        assert copy["id"] != first and (copy["seq"], copy["status"]) == (5, "pending")
        assert copy["payload"] == detail["payload"]
        await good.wait(lambda: len(good.accepted) == 5)
        again = good.accepted[-1]
        assert (again.delivery, again.body, again.seq) == (copy["id"], detail["payload"], 5)
        async with server.post(f"{API}/webhook-deliveries/{stuck.id}/redeliver", key=writer) as resp:
            assert resp.status == 409
            assert (await resp.json())[
                "error"
            ] == f"delivery {stuck.id} is still pending: it will be retried on its own"
