"""The store, the same tests on SQLite and on a real PostgreSQL server (see tests/store_fixtures.py)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta

import pytest

from ringline.api.store import (
    UNSET,
    CallEvent,
    CallFilter,
    CallJournal,
    CallMessage,
    CallStatus,
    Conflict,
    DeliveryAttempt,
    Direction,
    NotFound,
    NumberProvider,
    OutboxEvent,
    OutboxStatus,
    Role,
    Scope,
    Store,
    StoreError,
    ToolKind,
    open_store,
    sqlite_path,
)
from ringline.api.store.migrations import load
from ringline.engine.audio.clock import FakeClock

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
URL = "https://hooks.example.test/ringline"


# -- migrations


async def test_schema_is_at_the_latest_version_and_reopening_applies_nothing(store: Store, store_url: str) -> None:
    versions = [m.version for m in load("sqlite")]
    assert versions == [m.version for m in load("postgres")] and versions[0] == 1
    latest = versions[-1]
    assert await store.schema_version() == latest
    agent = await store.create_agent("kept", {"prompt": "hi"})

    again = await open_store(store_url)
    try:
        assert await again.schema_version() == latest
        assert (await again.get_agent(agent.id)).config == {"prompt": "hi"}  # nothing was recreated
    finally:
        await again.close()


def test_store_urls() -> None:
    assert sqlite_path("sqlite:///data/ringline.db") == "data/ringline.db"
    assert sqlite_path("sqlite:////var/lib/ringline/ringline.db") == "/var/lib/ringline/ringline.db"
    assert sqlite_path("/srv/ringline.db") == "/srv/ringline.db"
    assert sqlite_path("sqlite://") == ":memory:"
    assert sqlite_path("postgresql://u@h/db") is None
    with pytest.raises(ValueError, match="sqlite:///relative/path"):
        sqlite_path("sqlite://data.db")


async def test_sqlite_in_memory() -> None:
    store = await open_store("sqlite://")
    try:
        agent = await store.create_agent("a", {})
        assert (await store.list_agents()).items == (agent,)
    finally:
        await store.close()


async def test_unknown_url_scheme_is_refused() -> None:
    with pytest.raises(ValueError, match="unsupported database URL scheme 'mysql'"):
        await open_store("mysql://localhost/ringline")


# -- configuration resources


async def test_agent_crud(store: Store) -> None:
    first = await store.create_agent("Support", {"system_prompt": "Be kind.", "voice": {"id": "joe"}})
    second = await store.create_agent("Sales", {"system_prompt": "Sell."}, enabled=False)
    assert first.id.startswith("agt_") and first.enabled and first.created_at == first.updated_at
    assert (await store.get_agent(first.id)) == first

    page = await store.list_agents()
    assert [a.id for a in page.items] == [second.id, first.id] and page.total == 2
    assert [a.id for a in (await store.list_agents(enabled=False)).items] == [second.id]
    assert (await store.list_agents(limit=1, offset=1)).items == (first,)

    updated = await store.update_agent(first.id, enabled=False, config={"system_prompt": "Be brief."})
    assert (updated.name, updated.enabled, updated.config) == ("Support", False, {"system_prompt": "Be brief."})
    assert updated.created_at == first.created_at and updated.updated_at > first.updated_at
    assert await store.update_agent(first.id) == updated  # nothing to change

    await store.delete_agent(first.id)
    with pytest.raises(NotFound, match=f"no agent {first.id}"):
        await store.get_agent(first.id)
    with pytest.raises(NotFound):
        await store.update_agent(first.id, name="x")
    with pytest.raises(NotFound):
        await store.delete_agent(first.id)


async def test_list_limits_are_checked(store: Store) -> None:
    with pytest.raises(ValueError, match="limit must be 1..1000, not 0"):
        await store.list_agents(limit=0)
    with pytest.raises(ValueError, match="offset must be >= 0, not -1"):
        await store.list_calls(offset=-1)


async def test_phone_numbers_trunks_and_their_conflicts(store: Store) -> None:
    agent = await store.create_agent("Front desk", {})
    trunk = await store.create_sip_trunk("carrier", {"host": "sip.example.test", "port": 5061, "transport": "tls"})
    number = await store.create_number(
        "+15550100", NumberProvider.TWILIO, inbound_agent_id=agent.id, sip_trunk_id=trunk.id, label="main"
    )
    assert (number.provider, number.inbound_agent_id, number.outbound_agent_id) == ("twilio", agent.id, None)
    assert await store.find_number("+15550100") == number
    assert await store.find_number("+15550199") is None
    assert (await store.list_numbers(agent_id=agent.id)).items == (number,)

    with pytest.raises(Conflict, match=r"phone number \+15550100 already exists") as dup:
        await store.create_number("+15550100", NumberProvider.TELNYX)
    assert dup.value.reason == "unique"
    with pytest.raises(Conflict) as missing:
        await store.create_number("+15550101", NumberProvider.SIP, outbound_agent_id="agt_missing")
    assert missing.value.reason == "foreign_key"
    with pytest.raises(Conflict, match=f"agent {agent.id} is still assigned to a phone number"):
        await store.delete_agent(agent.id)
    with pytest.raises(Conflict, match=f"SIP trunk {trunk.id} is still used by a phone number"):
        await store.delete_sip_trunk(trunk.id)
    assert (await store.get_agent(agent.id)).id == agent.id  # the refused delete changed nothing

    other = await store.create_number("+15550102", NumberProvider.VONAGE)
    with pytest.raises(Conflict, match="already exists"):
        await store.update_number(other.id, number="+15550100")
    moved = await store.update_number(number.id, inbound_agent_id=None, sip_trunk_id=None, label=UNSET)
    assert (moved.inbound_agent_id, moved.sip_trunk_id, moved.label) == (None, None, "main")
    await store.delete_agent(agent.id)
    await store.delete_sip_trunk(trunk.id)
    assert (await store.list_numbers()).total == 2
    await store.delete_number(other.id)
    with pytest.raises(NotFound, match=f"no phone number {other.id}"):
        await store.get_number(other.id)


async def test_sip_trunk_crud(store: Store) -> None:
    trunk = await store.create_sip_trunk("a", {"host": "h", "username": "u"})
    updated = await store.update_sip_trunk(trunk.id, config={"host": "h2"})
    assert (updated.name, updated.config) == ("a", {"host": "h2"})
    assert (await store.list_sip_trunks()).items == (updated,)
    await store.delete_sip_trunk(trunk.id)
    with pytest.raises(NotFound, match="no SIP trunk"):
        await store.get_sip_trunk(trunk.id)


async def test_tool_templates(store: Store) -> None:
    params = {"type": "object", "properties": {"date": {"type": "string"}}, "required": ["date"]}
    config = {"description": "Book a table", "parameters": params, "url": "https://x.test/book", "method": "POST"}
    tool = await store.create_tool("book_table", ToolKind.FUNCTION, config)
    assert (tool.kind, tool.config) == (ToolKind.FUNCTION, config)
    assert await store.find_tool("book_table") == tool
    with pytest.raises(Conflict, match="a tool named 'book_table' already exists"):
        await store.create_tool("book_table", ToolKind.END_CALL, {})
    hangup = await store.create_tool("hang_up", ToolKind.END_CALL, {})
    with pytest.raises(Conflict, match="already exists"):
        await store.update_tool(hangup.id, name="book_table")
    renamed = await store.update_tool(hangup.id, name="bye", kind=ToolKind.TRANSFER_CALL)
    assert (renamed.name, renamed.kind) == ("bye", ToolKind.TRANSFER_CALL)
    assert (await store.list_tools()).total == 2
    await store.delete_tool(tool.id)
    assert await store.find_tool("book_table") is None


async def test_api_keys(store: Store) -> None:
    secret = "rl_" + "x" * 40
    digest = hashlib.sha256(secret.encode()).hexdigest()
    key = await store.create_api_key("ci", secret[:8], digest, [Scope.CALLS_READ, "agents:write"])
    assert key.scopes == frozenset({"calls:read", "agents:write"}) and key.last_used_at is None
    assert await store.find_api_key(digest) == key
    assert await store.find_api_key("0" * 64) is None
    with pytest.raises(ValueError, match="'calls:delete' is not a valid Scope"):
        await store.create_api_key("bad", "rl_", "1" * 64, ["calls:delete"])
    with pytest.raises(Conflict, match="already exists"):
        await store.create_api_key("twin", "rl_", digest, [])

    used = T0 + timedelta(minutes=5)
    await store.touch_api_key(key.id, used)
    assert (await store.get_api_key(key.id)).last_used_at == used
    revoked = await store.revoke_api_key(key.id, T0 + timedelta(hours=1))
    assert (await store.revoke_api_key(key.id, T0 + timedelta(hours=2))).revoked_at == revoked.revoked_at
    assert (await store.find_api_key(digest)).revoked_at == T0 + timedelta(hours=1)  # the API refuses it
    assert (await store.list_api_keys()).total == 1
    await store.delete_api_key(key.id)
    with pytest.raises(NotFound):
        await store.touch_api_key(key.id)


# -- calls


async def test_call_lifecycle(store: Store) -> None:
    call = await store.create_call(
        Direction.INBOUND, id="CA123", agent_id="agt_1", from_number="+15550001", to_number="+15550100",
        metadata={"provider": "twilio"}, variables={"name": "Ada"},
    )  # fmt: skip
    assert (call.status, call.started_at, call.duration_s) == (CallStatus.QUEUED, None, 0.0)
    with pytest.raises(Conflict, match="call CA123 already exists"):
        await store.create_call(Direction.INBOUND, id="CA123")

    assert (await store.update_call_status("CA123", CallStatus.RINGING)).status == CallStatus.RINGING
    answered = await store.update_call_status("CA123", CallStatus.IN_PROGRESS, at=T0)
    assert answered.started_at == T0
    forwarding = await store.update_call_status("CA123", CallStatus.FORWARDING, at=T0 + timedelta(seconds=30))
    assert forwarding.started_at == T0  # answered once

    ended = await store.end_call("CA123", "caller_hangup", at=T0 + timedelta(seconds=90.5))
    assert (ended.status, ended.end_reason, ended.ended_at) == ("ended", "caller_hangup", T0 + timedelta(seconds=90.5))
    assert ended.duration_s == pytest.approx(90.5)
    assert (ended.metadata, ended.variables) == ({"provider": "twilio"}, {"name": "Ada"})
    assert await store.get_call("CA123") == ended
    with pytest.raises(Conflict, match="call CA123 has already ended"):
        await store.end_call("CA123", "agent_hangup")
    with pytest.raises(Conflict, match="has already ended"):
        await store.update_call_status("CA123", CallStatus.IN_PROGRESS)
    with pytest.raises(ValueError, match="end_call"):
        await store.update_call_status("CA123", CallStatus.ENDED)
    with pytest.raises(NotFound, match="no call CA404"):
        await store.end_call("CA404", "x")
    with pytest.raises(NotFound, match="no call CA404"):
        await store.update_call_status("CA404", CallStatus.RINGING)


async def test_unanswered_call_has_no_duration(store: Store) -> None:
    call = await store.create_call(Direction.OUTBOUND, status=CallStatus.RINGING)
    ended = await store.end_call(call.id, "no_answer")
    assert (ended.started_at, ended.duration_s) == (None, 0.0)


async def test_after_call_data(store: Store) -> None:
    call = await store.create_call(Direction.OUTBOUND)
    latency = [{"turn": 1, "stt_ms": 120, "llm_ttft_ms": 300, "tts_ttfb_ms": 180}]
    updated = await store.update_call(
        call.id, latency=latency, analysis={"summary": "booked", "success": True}, recording_path="rec/a.wav"
    )
    assert (updated.latency, updated.analysis, updated.recording_path) == (
        latency,
        {"summary": "booked", "success": True},
        "rec/a.wav",
    )
    cleared = await store.update_call(call.id, analysis=None, metadata={"k": "v"})
    assert (cleared.analysis, cleared.metadata, cleared.latency) == (None, {"k": "v"}, latency)
    with pytest.raises(NotFound):
        await store.update_call("nope", metadata={})


async def test_list_calls_filters_pagination_and_total(store: Store) -> None:
    made = []
    for i in range(7):
        call = await store.create_call(
            Direction.INBOUND if i % 2 == 0 else Direction.OUTBOUND,
            agent_id="agt_a" if i < 4 else "agt_b",
            from_number="+1000" if i % 3 == 0 else "+2000",
            to_number="+3000" if i != 5 else "+1000",
        )
        made.append(call)
    await store.end_call(made[6].id, "done")
    newest_first = [c.id for c in reversed(made)]

    everything = await store.list_calls()
    assert [c.id for c in everything.items] == newest_first and everything.total == 7
    page = await store.list_calls(limit=3, offset=3)
    assert [c.id for c in page.items] == newest_first[3:6] and page.total == 7
    assert (await store.list_calls(limit=3, offset=9)).items == ()

    def ids(page: object) -> list[str]:
        return [c.id for c in page.items]  # type: ignore[attr-defined]

    assert ids(await store.list_calls(CallFilter(agent_id="agt_b"))) == newest_first[:3]
    assert ids(await store.list_calls(CallFilter(status=CallStatus.ENDED))) == [made[6].id]
    outbound = await store.list_calls(CallFilter(direction=Direction.OUTBOUND, agent_id="agt_a"))
    assert ids(outbound) == [made[3].id, made[1].id] and outbound.total == 2
    # +1000 calls from 0, 3, 6 and is called by 5
    assert ids(await store.list_calls(CallFilter(number="+1000"))) == [made[6].id, made[5].id, made[3].id, made[0].id]
    window = CallFilter(created_from=made[2].created_at, created_to=made[5].created_at)
    in_window = await store.list_calls(window, limit=2)
    assert ids(in_window) == [made[4].id, made[3].id] and in_window.total == 3


async def test_usage_per_agent_per_utc_day(store: Store) -> None:
    async def call(agent: str, start: datetime, seconds: float) -> None:
        made = await store.create_call(Direction.INBOUND, agent_id=agent)
        await store.update_call_status(made.id, CallStatus.IN_PROGRESS, at=start)
        await store.end_call(made.id, "done", at=start + timedelta(seconds=seconds))

    # the stepping clock stamps every call created on 2025-03-01 (UTC)
    await call("agt_a", T0, 90)
    await call("agt_a", T0, 30)
    await call("agt_b", T0, 60)
    rows = await store.usage(datetime(2025, 3, 1, tzinfo=UTC), datetime(2025, 3, 2, tzinfo=UTC))
    assert [(u.agent_id, u.day, u.calls, u.minutes) for u in rows] == [
        ("agt_a", date(2025, 3, 1), 2, pytest.approx(2.0)),
        ("agt_b", date(2025, 3, 1), 1, pytest.approx(1.0)),
    ]
    assert [
        u.agent_id for u in await store.usage(T0 - timedelta(days=1), T0 + timedelta(days=1), agent_id="agt_b")
    ] == ["agt_b"]
    assert await store.usage(datetime(2025, 3, 2, tzinfo=UTC), datetime(2025, 3, 3, tzinfo=UTC)) == []


async def test_restart_marks_live_calls_ended(store: Store) -> None:
    live = [
        await store.create_call(Direction.INBOUND, status=CallStatus.QUEUED, node="n1"),
        await store.create_call(Direction.INBOUND, status=CallStatus.IN_PROGRESS, node="n1"),
        await store.create_call(Direction.OUTBOUND, status=CallStatus.FORWARDING, node="n1"),
    ]
    other_node = await store.create_call(Direction.INBOUND, status=CallStatus.IN_PROGRESS, node="n2")
    done = await store.end_call((await store.create_call(Direction.INBOUND, node="n1")).id, "caller_hangup")

    def ended_event(call: object) -> Sequence[OutboxEvent]:
        return [OutboxEvent("call.ended", {"call_id": call.id, "reason": call.end_reason}, URL)]  # type: ignore[attr-defined]

    assert await store.mark_live_calls_ended(node="n1", outbox=ended_event) == 3
    for call in live:
        after = await store.get_call(call.id)
        assert (after.status, after.end_reason) == (CallStatus.ENDED, "engine_restart") and after.ended_at is not None
    assert (await store.get_call(live[1].id)).duration_s > 0
    assert (await store.get_call(other_node.id)).status == CallStatus.IN_PROGRESS
    assert await store.get_call(done.id) == done
    queued = (await store.list_deliveries(status=OutboxStatus.PENDING)).items
    assert sorted((d.call_id, d.payload["reason"]) for d in queued) == sorted((c.id, "engine_restart") for c in live)

    assert await store.mark_live_calls_ended() == 1  # every node: the n2 call
    assert await store.mark_live_calls_ended() == 0


async def test_delete_call_removes_its_journal(store: Store) -> None:
    call = await store.create_call(Direction.INBOUND)
    await store.append_journal([CallMessage(call.id, 1, Role.USER, "hi", T0)], [CallEvent(call.id, 1, "x", {}, T0)])
    await store.delete_call(call.id)
    assert await store.list_messages(call.id) == [] and await store.list_events(call.id) == []
    with pytest.raises(NotFound):
        await store.delete_call(call.id)


# -- outbox


async def test_outbox_event_is_written_with_the_status_change(store: Store) -> None:
    call = await store.create_call(
        Direction.INBOUND, outbox=[OutboxEvent("call.created", {"n": 1}, URL, call_id="ignored")]
    )
    ended = await store.end_call(
        call.id, "agent_hangup", outbox=lambda c: [OutboxEvent("call.ended", {"status": c.status.value}, URL)]
    )
    deliveries = (await store.list_deliveries(call_id=call.id)).items
    assert [(d.type, d.seq, d.call_id, d.payload, d.status) for d in reversed(deliveries)] == [
        ("call.created", 1, call.id, {"n": 1}, OutboxStatus.PENDING),
        ("call.ended", 2, call.id, {"status": "ended"}, OutboxStatus.PENDING),
    ]
    assert deliveries[0].created_at == ended.ended_at  # one transaction, one moment


async def test_failed_outbox_rolls_the_status_change_back(store: Store) -> None:
    call = await store.create_call(Direction.INBOUND, status=CallStatus.IN_PROGRESS)

    def broken(c: object) -> list[OutboxEvent]:
        raise RuntimeError("payload builder failed")

    with pytest.raises(RuntimeError, match="payload builder failed"):
        await store.end_call(call.id, "agent_hangup", outbox=broken)
    with pytest.raises(StoreError):  # NOT NULL url: the database refuses the event
        await store.end_call(call.id, "agent_hangup", outbox=[OutboxEvent("call.ended", {}, None)])  # type: ignore[arg-type]
    assert (await store.get_call(call.id)).status == CallStatus.IN_PROGRESS
    assert (await store.list_deliveries()).total == 0
    # and the call's outbox numbering was rolled back too
    await store.end_call(call.id, "agent_hangup", outbox=[OutboxEvent("call.ended", {}, URL)])
    assert [d.seq for d in (await store.list_deliveries()).items] == [1]


async def test_concurrent_changes_number_a_calls_events_without_gaps(store: Store) -> None:
    call = await store.create_call(Direction.INBOUND)
    await asyncio.gather(
        *(
            store.update_call(call.id, metadata={"i": i}, outbox=[OutboxEvent("call.updated", {"i": i}, URL)])
            for i in range(10)
        )
    )
    assert sorted(d.seq for d in (await store.list_deliveries(call_id=call.id)).items) == list(range(1, 11))


async def test_claim_due_keeps_each_calls_order(store: Store) -> None:
    C = T0 + timedelta(minutes=1)  # after the stepping clock stamped the events
    a = await store.create_call(Direction.INBOUND, id="A")
    b = await store.create_call(Direction.INBOUND, id="B")
    await store.enqueue([OutboxEvent(f"a{i}", {"i": i}, URL, call_id=a.id) for i in (1, 2, 3)])
    await store.enqueue([OutboxEvent("b1", {}, URL, call_id=b.id), OutboxEvent("account", {}, URL)])
    await store.enqueue([OutboxEvent("later", {}, URL, next_attempt_at=T0 + timedelta(hours=1))])

    claimed = await store.claim_due(C, 10, lease_s=60)
    assert [c.type for c in claimed] == ["a1", "b1", "account"]  # one per call, the oldest; "later" is not due
    assert [c.attempts for c in claimed] == [1, 1, 1]
    assert await store.claim_due(C + timedelta(seconds=30), 10) == []  # leased

    a1, b1, account = claimed
    done = await store.mark_delivered(a1.id, DeliveryAttempt(C + timedelta(seconds=1), 200, duration_ms=12.5))
    assert (done.status, done.delivered_at) == (OutboxStatus.DELIVERED, C + timedelta(seconds=1))
    await store.mark_delivered(account.id, DeliveryAttempt(C, 204))
    a2 = (await store.claim_due(C + timedelta(seconds=2), 10))[0]
    assert a2.type == "a2"

    retry_at = C + timedelta(seconds=20)
    await store.mark_retry(a2.id, DeliveryAttempt(C + timedelta(seconds=3), 503), retry_at)
    assert await store.claim_due(C + timedelta(seconds=10), 10) == []  # a3 waits behind a2; b1 still leased
    again = await store.claim_due(retry_at, 10)
    assert [(c.type, c.attempts, c.last_error) for c in again] == [("a2", 2, "HTTP 503")]
    failed = await store.mark_failed(a2.id, DeliveryAttempt(retry_at, None, "connection refused"))
    assert (failed.status, failed.last_error) == (OutboxStatus.FAILED, "connection refused")
    # b1's lease ran out (its worker died): it comes back, with a3 now that a2 is given up
    after_lease = await store.claim_due(C + timedelta(seconds=61), 10)
    assert [(c.type, c.attempts) for c in after_lease] == [("a3", 1), ("b1", 2)]

    assert [(x.status_code, x.error) for x in await store.list_attempts(a2.id)] == [
        (503, None),
        (None, "connection refused"),
    ]
    assert (await store.list_attempts(a1.id))[0].duration_ms == 12.5
    assert [d.type for d in (await store.list_deliveries(status=OutboxStatus.DELIVERED)).items] == ["account", "a1"]
    with pytest.raises(Conflict, match="is no longer pending"):
        await store.mark_delivered(a1.id, DeliveryAttempt(C))
    with pytest.raises(NotFound, match="no delivery 9999"):
        await store.mark_retry(9999, DeliveryAttempt(C), C)
    assert (await store.get_delivery(b1.id)).attempts == 2
    with pytest.raises(NotFound, match="no call nope"):
        await store.enqueue([OutboxEvent("x", {}, URL, call_id="nope")])


# -- the journal


class FlakySink:
    """The real store behind a switch: while ``failures`` > 0 each write fails, before or after committing."""

    def __init__(self, store: Store, *, failures: int = 0, after_commit: bool = False) -> None:
        self.store = store
        self.failures = failures
        self.after_commit = after_commit
        self.writes = 0
        self.written = asyncio.Event()

    async def append_journal(self, messages: Sequence[CallMessage], events: Sequence[CallEvent]) -> None:
        self.writes += 1
        if self.failures > 0:
            self.failures -= 1
            if self.after_commit:
                await self.store.append_journal(messages, events)
            raise StoreError("connection lost", retryable=True)
        await self.store.append_journal(messages, events)
        self.written.set()


async def test_journal_writes_in_batches_and_on_close(store: Store) -> None:
    call = await store.create_call(Direction.INBOUND, status=CallStatus.IN_PROGRESS)
    sink = FlakySink(store)
    journal = CallJournal(sink, clock=FakeClock())  # the fake clock never moves: only flush/aclose write
    await journal.start()
    assert journal.message(call.id, Role.ASSISTANT, "Hello, how can I help?", at=T0) == 1
    assert journal.message(call.id, "user", "Book a table", at=T0 + timedelta(seconds=2)) == 2
    assert journal.event(call.id, "turn.committed", {"turn": 1}) == 1
    assert await store.list_messages(call.id) == []  # nothing waited on the database

    await journal.flush()
    assert sink.writes == 1  # three records, one transaction
    messages = await store.list_messages(call.id)
    assert [(m.seq, m.role, m.content, m.at) for m in messages] == [
        (1, Role.ASSISTANT, "Hello, how can I help?", T0),
        (2, Role.USER, "Book a table", T0 + timedelta(seconds=2)),
    ]
    journal.message(
        call.id, Role.ASSISTANT, "For how", interrupted=True, extra={"tool_calls": [{"name": "book", "args": {}}]}
    )
    journal.event(call.id, "call.interrupted", {"heard_ms": 640})
    await journal.aclose()
    last = (await store.list_messages(call.id))[-1]
    assert (last.seq, last.interrupted, last.extra) == (3, True, {"tool_calls": [{"name": "book", "args": {}}]})
    assert [(e.seq, e.type, e.payload) for e in await store.list_events(call.id)] == [
        (1, "turn.committed", {"turn": 1}),
        (2, "call.interrupted", {"heard_ms": 640}),
    ]
    assert [e.seq for e in await store.list_events(call.id, after_seq=1)] == [2]
    assert journal.stats.written == 5 and journal.stats.pending == 0


async def test_journal_writes_every_interval_in_the_background(store: Store) -> None:
    call = await store.create_call(Direction.INBOUND)
    clock = FakeClock()
    sink = FlakySink(store, failures=1)
    async with CallJournal(sink, interval_s=0.25, clock=clock) as journal:
        journal.message(call.id, Role.USER, "hello")
        await clock.advance(0.25)  # the first write fails: kept for the next tick
        assert journal.stats.failed_writes == 1 and journal.stats.pending == 1
        await clock.advance(0.25)
        await asyncio.wait_for(sink.written.wait(), timeout=10)
        assert [m.content for m in await store.list_messages(call.id)] == ["hello"]
        assert journal.stats.pending == 0


async def test_journal_survives_a_failed_write_without_losing_or_duplicating(store: Store) -> None:
    call = await store.create_call(Direction.INBOUND)
    sink = FlakySink(store, failures=2, after_commit=True)  # the commit happened, the answer was lost
    journal = CallJournal(sink, clock=FakeClock())
    for i in range(5):
        journal.message(call.id, Role.USER, f"line {i}")
    with pytest.raises(StoreError, match="connection lost"):
        await journal.flush()
    journal.event(call.id, "late", {})
    with pytest.raises(StoreError):
        await journal.flush()
    assert journal.stats.pending == 6
    await journal.flush()
    assert [m.seq for m in await store.list_messages(call.id)] == [1, 2, 3, 4, 5]
    assert [e.type for e in await store.list_events(call.id)] == ["late"]


async def test_journal_is_bounded_and_drops_malformed_records(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    call = await store.create_call(Direction.INBOUND)
    journal = CallJournal(store, max_pending=3, clock=FakeClock())
    journal.message(call.id, Role.USER, "one")
    journal.event(call.id, "bad", {"not json": object()})
    journal.message(call.id, Role.USER, "two")
    with caplog.at_level(logging.ERROR, logger="ringline.api.store.journal"):
        assert journal.message(call.id, Role.USER, "three") == 3  # over the bound: dropped, its seq a gap
    assert "call journal full (3 records)" in caplog.text
    await journal.flush()
    assert [(m.seq, m.content) for m in await store.list_messages(call.id)] == [(1, "one"), (2, "two")]
    assert await store.list_events(call.id) == []
    assert (journal.stats.dropped, journal.stats.written) == (2, 2)
    with pytest.raises(ValueError, match="'robot' is not a valid Role"):
        journal.message(call.id, "robot", "x")


async def test_a_write_cancelled_at_any_point_leaves_sqlite_usable(tmp_path) -> None:
    """A task cancelled while its transaction begins, runs or commits (a stopping dispatcher, a
    timed-out request) must not leave a transaction open for the next writer."""
    store = await open_store(f"sqlite:///{tmp_path / 'cancel.db'}")
    try:
        for yields in range(12):
            task = asyncio.create_task(store.create_agent(f"cancelled {yields}", {}))
            for _ in range(yields):
                await asyncio.sleep(0)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            assert (await store.create_agent(f"after {yields}", {})).name == f"after {yields}"
    finally:
        await store.close()
