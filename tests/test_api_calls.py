"""Call history and the live-events socket, on the real server with a real HTTP client.

Real calls go through the Twilio media socket with config/bench.toml's fake providers. A few tests
drive a stand-in live call (``FakeCall``: an id, an ``EventLog``, a status and a record, which is all
the ledger and the events socket use of a call) so that events can be emitted exactly when wanted.
The replay/live seam itself is also tested on ``EventFeed`` with an in-memory store.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ringline.api.app import CALLS
from ringline.api.http import EventTokenSigner, hash_key
from ringline.api.state import JOURNAL, LEDGER
from ringline.api.store import CallEvent, CallMessage, CallStatus, Direction, Role
from ringline.api.v1.events import QUEUE_LIMIT, EventFeed
from ringline.benchmarks.caller import clip_script, run_call
from ringline.config.settings import AgentConfig, Settings, load_settings
from ringline.engine.call import CallStatus as LiveStatus
from ringline.engine.events import EventLog, EventType
from ringline.engine.record import CallRecord, EndReason
from tests.api_fixtures import API, ApiServer, running

pytestmark = pytest.mark.timeout(60)

SECRET = "t" * 32


def bench(*, recording: bool = False, **api: object) -> Settings:
    data = load_settings("config/bench.toml").model_dump()
    data["api"].update(api)
    data["agents"]["default"]["recording"] = recording
    return Settings.model_validate(data)


async def ended(server: ApiServer, call_id: str):
    """The call's row once the ledger has ended it."""
    for _ in range(250):
        row = await server.store.get_call(call_id)
        if row.status is CallStatus.ENDED:
            return row
        await asyncio.sleep(0.02)
    raise AssertionError(f"call {call_id} never ended in the store")


async def fetch(server: ApiServer, method: str, path: str, key: str | None = None, **kw: Any) -> tuple[int, Any]:
    async with server.request(method, API + path, key=key, **kw) as resp:
        return resp.status, await resp.json()


def ws_url(server: ApiServer, call_id: str) -> str:
    return f"{server.ws_url}{API}/calls/{call_id}/events"


async def read_stream(ws: aiohttp.ClientWebSocketResponse) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The events up to ``stream_end``, and ``stream_end``; then the server's normal close."""
    events = []
    while True:
        msg = await ws.receive(timeout=30)
        assert msg.type is aiohttp.WSMsgType.TEXT, (msg.type, msg.data, msg.extra)
        message = msg.json()
        if message["type"] == "stream_end":
            break
        events.append(message)
    closing = await ws.receive(timeout=10)
    assert closing.type is aiohttp.WSMsgType.CLOSE and ws.close_code == 1000, (closing, ws.close_code)
    return events, message


def stored_shape(events: list[CallEvent]) -> list[tuple[int, str, dict[str, Any]]]:
    return [(e.seq, e.type, e.payload) for e in events]


def sent_shape(events: list[dict[str, Any]]) -> list[tuple[int, str, dict[str, Any]]]:
    assert all(set(e) == {"seq", "type", "at", "data"} for e in events)
    return [(e["seq"], e["type"], e["data"]) for e in events]


class FakeCall:
    """What the ledger and the events socket use of a live call."""

    def __init__(self, call_id: str) -> None:
        self.call_id = call_id
        self.events = EventLog(call_id)
        self.status = LiveStatus.ACTIVE
        self.recorder = None
        self.record = CallRecord(call_id, "default", started_at=time.time())
        self.agent = AgentConfig()

    def say(self, role: str, content: str) -> None:
        if role == "user":
            self.events.emit(EventType.TRANSCRIPT, role="user", text=content, final=True)
        self.events.emit(
            EventType.MESSAGE, role=role, content=content, interrupted=False, tool_calls=[], tool_call_id=None
        )

    def end(self) -> None:
        self.record.end_reason = EndReason.API_ENDED
        self.status = LiveStatus.ENDED
        self.events.emit(EventType.STATUS, status="ended")


@asynccontextmanager
async def fake_live_call(server: ApiServer, call_id: str) -> AsyncIterator[FakeCall]:
    """A stand-in call, recorded by the ledger and live in the registry; ended on exit."""
    call = FakeCall(call_id)
    await server.app[LEDGER].opened(call, agent_id="default", from_number="+14155550100")  # type: ignore[arg-type]
    server.app[CALLS].add(call)  # type: ignore[arg-type]
    call.events.emit(EventType.STATUS, status="active")
    try:
        yield call
    finally:
        if call.status is not LiveStatus.ENDED:
            call.end()
        server.app[CALLS].finish(call)  # type: ignore[arg-type]
        await ended(server, call_id)


async def seed_calls(server: ApiServer):
    """Three calls, oldest first: ended inbound, in-progress outbound, queued inbound from a withheld id."""
    store = server.store
    a = await store.create_call(
        Direction.INBOUND, id="CA_a", agent_id="sales", from_number="+14155550100", to_number="+14155550199"
    )
    await asyncio.sleep(0.002)  # distinct creation times
    b = await store.create_call(
        Direction.OUTBOUND,
        id="CA_b",
        agent_id="support",
        from_number="+14155550199",
        to_number="+442071838750",
        metadata={"crm_id": 7},
    )
    await asyncio.sleep(0.002)
    c = await store.create_call(Direction.INBOUND, id="CA_c", agent_id="sales", from_number="anonymous")
    await store.update_call_status("CA_a", CallStatus.IN_PROGRESS)
    a = await store.end_call("CA_a", "caller_hangup")
    b = await store.update_call_status("CA_b", CallStatus.IN_PROGRESS)
    return a, b, c


# ---- listing --------------------------------------------------------------------------------


async def test_list_filters_paginates_newest_first(api: ApiServer) -> None:
    a, b, c = await seed_calls(api)
    key = await api.key("calls:read")

    async def ids(query: str | dict[str, str]) -> list[str]:
        if isinstance(query, str):
            status, body = await fetch(api, "GET", "/calls" + query, key)
        else:
            status, body = await fetch(api, "GET", "/calls", key, params=query)
        assert status == 200, body
        return [item["id"] for item in body["data"]]

    status, body = await fetch(api, "GET", "/calls", key)
    assert status == 200
    assert [item["id"] for item in body["data"]] == ["CA_c", "CA_b", "CA_a"]
    assert body["meta"]["pagination"] == {"limit": 50, "offset": 0, "total": 3, "has_more": False}
    first = body["data"][2]
    assert first == {
        "id": "CA_a",
        "agent_id": "sales",
        "status": "ended",
        "direction": "inbound",
        "from_number": "+14155550100",
        "to_number": "+14155550199",
        "live": False,
        "created_at": first["created_at"],
        "updated_at": first["updated_at"],
        "started_at": first["started_at"],
        "ended_at": first["ended_at"],
        "duration_s": a.duration_s,
        "end_reason": "caller_hangup",
        "metadata": {},
        "variables": {},
        "latency": [],
        "analysis": None,
        "recording_available": False,
        "recording_url": None,
    }
    assert datetime.fromisoformat(first["created_at"]) == a.created_at
    assert body["data"][1]["metadata"] == {"crm_id": 7}

    status, body = await fetch(api, "GET", "/calls?limit=2", key)
    assert [i["id"] for i in body["data"]] == ["CA_c", "CA_b"]
    assert body["meta"]["pagination"] == {"limit": 2, "offset": 0, "total": 3, "has_more": True}
    status, body = await fetch(api, "GET", "/calls?limit=2&offset=2", key)
    assert [i["id"] for i in body["data"]] == ["CA_a"]
    assert body["meta"]["pagination"]["has_more"] is False

    assert await ids({"agent_id": "sales"}) == ["CA_c", "CA_a"]
    assert await ids({"status": "in_progress"}) == ["CA_b"]
    assert await ids({"status": "queued"}) == ["CA_c"]
    assert await ids({"direction": "outbound"}) == ["CA_b"]
    assert await ids({"agent_id": "sales", "status": "ended"}) == ["CA_a"]
    assert await ids({"number": "+14155550100"}) == ["CA_a"]  # from
    assert await ids({"number": "+44 20 7183 8750"}) == ["CA_b"]  # to, normalized to E.164
    assert await ids({"number": "+1 (415) 555-0199"}) == ["CA_b", "CA_a"]  # either end
    assert await ids({"number": "anonymous"}) == ["CA_c"]
    assert await ids("?number=+14155550100") == ["CA_a"]  # an unencoded + arrives as a space
    assert await ids({"created_from": b.created_at.isoformat()}) == ["CA_c", "CA_b"]  # inclusive
    assert await ids({"created_to": b.created_at.isoformat()}) == ["CA_a"]  # exclusive
    naive = b.created_at.astimezone(UTC).replace(tzinfo=None).isoformat()
    assert await ids({"created_from": naive}) == ["CA_c", "CA_b"]  # no offset: UTC
    shifted = b.created_at.astimezone(timezone(timedelta(hours=2)))  # another offset, the same instant
    assert await ids({"created_to": shifted.isoformat()}) == ["CA_a"]
    assert await ids({"agent_id": "nobody"}) == []


@pytest.mark.parametrize(
    ("query", "details"),
    [
        (
            "status=done",
            {"query.status": "Input should be 'queued', 'ringing', 'in_progress', 'forwarding' or 'ended'"},
        ),
        ("direction=sideways", {"query.direction": "Input should be 'inbound' or 'outbound'"}),
        ("limit=0", {"query.limit": "Input should be greater than or equal to 1"}),
        ("limit=101", {"query.limit": "Input should be less than or equal to 100"}),
        ("offset=-1", {"query.offset": "Input should be greater than or equal to 0"}),
        ("agent_id=", {"query.agent_id": "String should have at least 1 character"}),
        ("colour=red", {"query.colour": "unknown field"}),
        ("status=ended&status=queued", {"query.status": "given more than once"}),
        (
            "created_from=2025-02-01T00:00:00Z&created_to=2025-01-01T00:00:00Z",
            {"query": "created_from must be before created_to"},
        ),
    ],
)
async def test_list_refuses_bad_filters(api: ApiServer, query: str, details: dict[str, str]) -> None:
    status, body = await fetch(api, "GET", "/calls?" + query, await api.key("calls:read"))
    assert status == 422
    assert body["code"] == "validation_error" and body["details"] == details


async def test_list_refuses_a_date_that_is_not_one(api: ApiServer) -> None:
    status, body = await fetch(api, "GET", "/calls?created_from=yesterday", await api.key("calls:read"))
    assert status == 422 and list(body["details"]) == ["query.created_from"]


# ---- auth and missing calls -----------------------------------------------------------------


async def test_keys_scopes_and_unknown_calls(api: ApiServer) -> None:
    await seed_calls(api)
    reader = await api.key("calls:read")
    agents_only = await api.key("agents:read")
    reads = ["/calls", "/calls/CA_a", "/calls/CA_a/transcript", "/calls/CA_a/recording"]
    for path in reads:
        status, body = await fetch(api, "GET", path)
        assert (status, body["code"]) == (401, "unauthorized"), path
        status, body = await fetch(api, "GET", path, agents_only)
        assert (status, body["error"]) == (403, "this API key lacks the scope calls:read"), path
    status, body = await fetch(api, "POST", "/calls/CA_a/events/token", agents_only)
    assert status == 403
    status, body = await fetch(api, "DELETE", "/calls/CA_a", reader)
    assert (status, body["error"]) == (403, "this API key lacks the scope calls:write")
    for method, path in [
        ("GET", "/calls/CA_zz"),
        ("GET", "/calls/CA_zz/transcript"),
        ("GET", "/calls/CA_zz/recording"),
        ("POST", "/calls/CA_zz/events/token"),
        ("DELETE", "/calls/CA_zz"),
    ]:
        status, body = await fetch(api, method, path, await api.key("admin"))
        assert (status, body["code"], body["error"]) == (404, "not_found", "no call CA_zz"), path


# ---- detail, transcript -----------------------------------------------------------------------


async def test_transcript_with_tools_interruptions_and_text(api: ApiServer) -> None:
    await seed_calls(api)
    at = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    lines = [
        CallMessage("CA_a", 1, Role.USER, "Book a table\nfor two", at),
        CallMessage(
            "CA_a",
            2,
            Role.ASSISTANT,
            "",
            at,
            extra={"tool_calls": [{"id": "t1", "name": "book", "arguments": {"people": 2}}]},
        ),
        CallMessage("CA_a", 3, Role.TOOL, "booked for 8pm", at, extra={"tool_call_id": "t1"}),
        CallMessage("CA_a", 4, Role.ASSISTANT, "You're booked for", at, interrupted=True),
        CallMessage("CA_a", 5, Role.USER, "Thanks", at),
    ]
    await api.store.append_journal(lines, [])
    key = await api.key("calls:read")
    status, body = await fetch(api, "GET", "/calls/CA_a/transcript", key)
    assert status == 200
    data = body["data"]
    assert (data["call_id"], data["live"], data["text"]) == ("CA_a", False, None)
    assert [(m["seq"], m["role"], m["interrupted"]) for m in data["messages"]] == [
        (1, "user", False),
        (2, "assistant", False),
        (3, "tool", False),
        (4, "assistant", True),
        (5, "user", False),
    ]
    assert data["messages"][1]["tool_calls"] == [{"id": "t1", "name": "book", "arguments": {"people": 2}}]
    assert data["messages"][2]["tool_call_id"] == "t1" and data["messages"][0]["tool_calls"] == []
    assert datetime.fromisoformat(data["messages"][0]["at"]) == at
    status, body = await fetch(api, "GET", "/calls/CA_a/transcript?format=text", key)
    assert body["data"]["text"] == (
        "caller: Book a table for two\nagent: You're booked for [interrupted]\ncaller: Thanks"
    )
    status, body = await fetch(api, "GET", "/calls/CA_a/transcript?format=pdf", key)
    assert status == 422 and body["details"] == {"query.format": "Input should be 'json' or 'text'"}
    status, body = await fetch(api, "GET", "/calls/CA_a", key)
    assert [m["content"] for m in body["data"]["messages"]][0] == "Book a table\nfor two"


async def test_a_live_call_reads_as_live_and_cannot_be_deleted(api: ApiServer) -> None:
    key = await api.key("calls:read", "calls:write")
    async with fake_live_call(api, "CA_live") as call:
        call.say("user", "Hello there")
        await api.app[JOURNAL].flush()
        for _ in range(100):  # the status update is the ledger's task
            if (await api.store.get_call("CA_live")).status is CallStatus.IN_PROGRESS:
                break
            await asyncio.sleep(0.01)
        status, body = await fetch(api, "GET", "/calls/CA_live", key)
        assert status == 200
        data = body["data"]
        assert (data["live"], data["status"], data["from_number"]) == (True, "in_progress", "+14155550100")
        assert data["started_at"] is not None and data["duration_s"] >= 0 and data["ended_at"] is None
        assert [(m["role"], m["content"]) for m in data["messages"]] == [("user", "Hello there")]
        status, body = await fetch(api, "GET", "/calls?status=in_progress", key)
        assert [(c["id"], c["live"]) for c in body["data"]] == [("CA_live", True)]
        status, body = await fetch(api, "DELETE", "/calls/CA_live", key)
        assert (status, body["code"]) == (409, "conflict")
        assert body["error"] == "call CA_live is live (in_progress): end it before deleting it"
        status, body = await fetch(api, "GET", "/calls/CA_live/recording", key)
        assert (status, body["error"]) == (404, "call CA_live has no recording yet: it is written when the call ends")
    status, body = await fetch(api, "GET", "/calls/CA_live", key)
    assert (body["data"]["live"], body["data"]["status"], body["data"]["end_reason"]) == (False, "ended", "api_ended")
    assert (await fetch(api, "DELETE", "/calls/CA_live", key))[0] == 200


async def test_delete_refuses_a_call_not_ended_and_recording_404s(api: ApiServer, tmp_path: Path) -> None:
    await seed_calls(api)
    key = await api.key("calls:read", "calls:write")
    for call_id, status_name in (("CA_b", "in_progress"), ("CA_c", "queued")):
        status, body = await fetch(api, "DELETE", f"/calls/{call_id}", key)
        assert (status, body["error"]) == (409, f"call {call_id} is live ({status_name}): end it before deleting it")
    status, body = await fetch(api, "GET", "/calls/CA_a/recording", key)
    assert (status, body["error"]) == (404, "call CA_a was not recorded")
    await api.store.update_call("CA_a", recording_path=str(tmp_path / "gone.wav"))
    status, body = await fetch(api, "GET", "/calls/CA_a/recording", key)
    assert (status, body["error"]) == (404, "the recording of call CA_a is no longer on disk")
    status, body = await fetch(api, "DELETE", "/calls/CA_a", key)  # a missing file does not stop it
    assert (status, body["success"], body["data"]) == (200, True, None)
    assert (await fetch(api, "GET", "/calls/CA_a", key))[0] == 404
    assert (await fetch(api, "DELETE", "/calls/CA_a", key))[0] == 404


# ---- a real recorded call: detail, transcript, recording, replay, delete --------------------


async def test_a_real_call_end_to_end(data_dir: Path) -> None:
    async with running(bench(recording=True)) as server:
        params = {"from": "+14155550100", "to": "+14155550199", "var_name": "Ada"}
        result = await run_call(f"{server.ws_url}/media/twilio", clip_script(0, 2, custom_parameters=params))
        assert result.error is None and result.answered == 2
        call_id = result.call_sid
        row = await ended(server, call_id)
        key = await server.key("calls:read", "calls:write")

        status, body = await fetch(server, "GET", f"/calls/{call_id}", key)
        assert status == 200
        data = body["data"]
        assert (data["status"], data["live"], data["direction"], data["end_reason"]) == (
            "ended",
            False,
            "inbound",
            "caller_hangup",
        )
        assert (data["from_number"], data["to_number"], data["variables"]) == (
            "+14155550100",
            "+14155550199",
            {"name": "Ada"},
        )
        assert data["duration_s"] == row.duration_s > 1 and data["started_at"] and data["ended_at"]
        assert len(data["latency"]) == 2 and all(t["first_audio_sent"] is not None for t in data["latency"])
        assert data["recording_available"] is True
        assert data["recording_url"] == f"/api/v1/calls/{call_id}/recording"
        assert [m["role"] for m in data["messages"]] == ["user", "assistant"] * 2
        assert all(m["content"] for m in data["messages"])

        status, body = await fetch(server, "GET", f"/calls/{call_id}/transcript?format=text", key)
        text_lines = body["data"]["text"].splitlines()
        assert [line.split(": ", 1)[0] for line in text_lines] == ["caller", "agent"] * 2
        assert text_lines[1] == "agent: " + data["messages"][1]["content"]

        # the recording, whole and in ranges
        wav = await asyncio.to_thread(Path(row.recording_path).read_bytes)
        async with server.get(data["recording_url"], key=key) as resp:
            assert resp.status == 200 and resp.content_type == "audio/wav"
            assert resp.headers["Accept-Ranges"] == "bytes" and resp.headers["X-Request-ID"]
            assert await resp.read() == wav
            modified = resp.headers["Last-Modified"]
            assert resp.headers["ETag"]
        assert wav[:4] == b"RIFF" and wav[8:12] == b"WAVE"
        async with server.get(data["recording_url"], key=key, headers={"Range": "bytes=0-43"}) as resp:
            assert resp.status == 206
            assert resp.headers["Content-Range"] == f"bytes 0-43/{len(wav)}"
            assert await resp.read() == wav[:44]
        async with server.get(data["recording_url"], key=key, headers={"Range": "bytes=-100"}) as resp:
            assert resp.status == 206 and await resp.read() == wav[-100:]
        for if_range, expected in ((modified, (206, wav[44:])), ("Mon, 01 Jan 2024 00:00:00 GMT", (200, wav))):
            async with server.get(
                data["recording_url"], key=key, headers={"Range": "bytes=44-", "If-Range": if_range}
            ) as r:
                assert (r.status, await r.read()) == expected  # the file changed since: all of it
        async with server.get(data["recording_url"], key=key, headers={"Range": f"bytes={len(wav)}-"}) as resp:
            assert resp.status == 416

        # the events, replayed after the call, and resumed
        stored = await server.store.list_events(call_id)
        async with server.session.ws_connect(ws_url(server, call_id), headers={"X-API-Key": key}) as ws:
            events, end = await read_stream(ws)
        assert sent_shape(events) == stored_shape(stored)
        assert [e["seq"] for e in events] == list(range(1, len(stored) + 1))
        assert events[-1]["type"] == "status" and events[-1]["data"] == {"status": "ended"}
        assert (end["seq"], end["data"]) == (None, {"reason": "call_ended", "last_seq": len(stored)})
        assert all(e["at"].endswith("Z") for e in events)
        url = ws_url(server, call_id)
        async with server.session.ws_connect(
            url, params={"after_seq": str(len(stored) - 3)}, headers={"X-API-Key": key}
        ) as ws:
            events, end = await read_stream(ws)
        assert [e["seq"] for e in events] == [len(stored) - 2, len(stored) - 1, len(stored)]

        # deleting it takes everything
        status, body = await fetch(server, "DELETE", f"/calls/{call_id}", key)
        assert (status, body["data"]) == (200, None)
        assert not await asyncio.to_thread(Path(row.recording_path).exists)
        assert await server.store.list_events(call_id) == [] and await server.store.list_messages(call_id) == []
        assert (await fetch(server, "GET", f"/calls/{call_id}/recording", key))[0] == 404


# ---- the live-events socket during a real call ----------------------------------------------


async def test_the_events_socket_follows_a_live_call_to_its_end() -> None:
    async with running(bench()) as server:
        key = await server.key("calls:read")
        caller = asyncio.create_task(
            run_call(f"{server.ws_url}/media/twilio", clip_script(1, 3, custom_parameters={"from": "+14155550100"}))
        )
        try:
            for _ in range(500):  # the ledger writes the row before the call starts
                status, body = await fetch(server, "GET", "/calls", key)
                if body["data"]:
                    break
                await asyncio.sleep(0.01)
            [listed] = body["data"]
            call_id = listed["id"]
            await asyncio.wait_for(server.app[CALLS].wait_live(call_id), 5)  # added just after its row
            status, body = await fetch(server, "POST", f"/calls/{call_id}/events/token", key)
            assert status == 200
            token = body["data"]["token"]
            assert body["data"]["url"] == f"/api/v1/calls/{call_id}/events?token={token}"
            async with server.session.ws_connect(ws_url(server, call_id), params={"token": token}) as ws:
                assert server.app[CALLS].get(call_id) is not None and not caller.done()
                stored_at_connect = len(await server.store.list_events(call_id))
                events, end = await read_stream(ws)
            result = await caller
        finally:
            if not caller.done():
                caller.cancel()
            await asyncio.gather(caller, return_exceptions=True)
        assert result.error is None and result.answered == 3
        seqs = [e["seq"] for e in events]
        assert seqs == list(range(1, len(events) + 1))  # no duplicate, no gap across the seam
        assert len(events) > stored_at_connect + 6  # most of the call came live
        messages = [e["data"] for e in events if e["type"] == "message"]
        assert [m["role"] for m in messages] == ["user", "assistant"] * 3
        finals = [e["data"]["text"] for e in events if e["type"] == "transcript" and e["data"]["final"]]
        assert len(finals) >= 3
        for i, event in enumerate(events):  # each caller turn is heard (a final transcript) before it settles
            if event["type"] == "message" and event["data"]["role"] == "user":
                assert any(e["type"] == "transcript" and e["data"]["final"] for e in events[:i])
        statuses = [e["data"]["status"] for e in events if e["type"] == "status"]
        assert statuses[0] == "active" and statuses[-2:] == ["ending", "ended"]
        assert events[-1]["type"] == "status" and end["data"] == {"reason": "call_ended", "last_seq": len(events)}
        await ended(server, call_id)
        assert sent_shape(events) == stored_shape(await server.store.list_events(call_id))  # same as a replay


async def test_a_socket_that_falls_behind_is_closed_with_1013(api: ApiServer) -> None:
    key = await api.key("calls:read")
    headers = {"Authorization": f"Bearer {key}"}
    async with (
        fake_live_call(api, "CA_busy") as call,
        api.session.ws_connect(ws_url(api, "CA_busy"), headers=headers) as ws,
    ):
        for i in range(QUEUE_LIMIT + 10):  # all at once: the socket cannot take them as they come
            call.events.emit(EventType.DTMF, digit=str(i % 10))
        seqs = []
        while (msg := await ws.receive(timeout=10)).type is aiohttp.WSMsgType.TEXT:
            seqs.append(msg.json()["seq"])
        assert msg.type is aiohttp.WSMsgType.CLOSE
        assert ws.close_code == 1013
        assert msg.extra.startswith("too slow: over 1024 events behind; reconnect with after_seq")
        assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) < QUEUE_LIMIT + 10


async def test_a_socket_on_a_live_call_ends_when_the_call_does(api: ApiServer) -> None:
    key = await api.key("calls:read")
    async with fake_live_call(api, "CA_short") as call:
        call.say("user", "one")
        async with api.session.ws_connect(ws_url(api, "CA_short"), headers={"X-API-Key": key}) as ws:
            first = await ws.receive_json(timeout=10)  # replayed: the status, before the socket subscribed
            assert (first["seq"], first["type"], first["data"]) == (1, "status", {"status": "active"})
            call.say("assistant", "two")
            call.end()
            events, end = await read_stream(ws)
    assert [(e["seq"], e["type"]) for e in events] == [(2, "transcript"), (3, "message"), (4, "message"), (5, "status")]
    assert events[2]["data"]["content"] == "two" and end["data"] == {"reason": "call_ended", "last_seq": 5}


async def test_a_call_not_running_here_replays_and_says_so(api: ApiServer) -> None:
    await seed_calls(api)
    at = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    await api.store.append_journal([], [CallEvent("CA_b", 1, "status", {"status": "active"}, at)])
    key = await api.key("calls:read")
    async with api.session.ws_connect(ws_url(api, "CA_b"), headers={"X-API-Key": key}) as ws:
        events, end = await read_stream(ws)
    assert events == [{"seq": 1, "type": "status", "at": "2025-03-01T12:00:00.000Z", "data": {"status": "active"}}]
    assert end["data"] == {"reason": "not_live", "last_seq": 1}
    async with api.session.ws_connect(ws_url(api, "CA_a"), headers={"X-API-Key": key}) as ws:
        events, end = await read_stream(ws)  # ended with no events stored (as after a restart)
    assert events == [] and end["data"] == {"reason": "call_ended", "last_seq": 0}


# ---- the events socket's auth ---------------------------------------------------------------


async def test_events_socket_auth() -> None:
    async with running(bench(event_token_secret=SECRET)) as server:
        await seed_calls(server)
        key = await server.key("calls:read")
        url = ws_url(server, "CA_a")

        status, body = await fetch(server, "POST", "/calls/CA_a/events/token", key)
        assert status == 200
        data = body["data"]
        assert data["call_id"] == "CA_a"
        expires = datetime.fromisoformat(data["expires_at"])
        assert abs((expires - datetime.now(UTC)).total_seconds() - 300) < 5
        async with server.session.ws_connect(url, params={"token": data["token"]}) as ws:
            events, end = await read_stream(ws)
            assert end["data"]["reason"] == "call_ended"

        async def refused(path: str, **kw: Any) -> tuple[int, str]:
            status, body = await fetch(server, "GET", path, **kw)
            return status, body["error"]

        assert await refused("/calls/CA_b/events", params={"token": data["token"]}) == (
            401,
            "token is for another call",
        )
        stale = EventTokenSigner(SECRET.encode(), now=lambda: time.time() - 301).issue("CA_a", "key_x").token
        assert await refused("/calls/CA_a/events", params={"token": stale}) == (401, "token expired")
        forged = EventTokenSigner(b"f" * 32).issue("CA_a", "key_x").token
        assert await refused("/calls/CA_a/events", params={"token": forged}) == (401, "bad token signature")
        assert await refused("/calls/CA_a/events") == (
            401,
            "missing credentials: send an API key ('Authorization: Bearer KEY' or 'X-API-Key: KEY') "
            "or ?token= from POST /calls/{call_id}/events/token",
        )
        assert await refused("/calls/CA_a/events", headers={"X-API-Key": "rl_nope"}) == (401, "malformed API key")
        agents_only = await server.key("agents:read")
        assert await refused("/calls/CA_a/events", key=agents_only) == (
            403,
            "this API key lacks the scope calls:read",
        )
        assert await refused("/calls/CA_zz/events", key=key) == (404, "no call CA_zz")
        assert await refused("/calls/CA_a/events", key=key) == (
            400,
            "this is a WebSocket: connect with 'Upgrade: websocket'",
        )
        status, body = await fetch(server, "GET", "/calls/CA_a/events?after_seq=-1", key=key)
        assert status == 422 and list(body["details"]) == ["query.after_seq"]

        # a token dies with the key that asked for it
        row = await server.store.find_api_key(hash_key(key))
        await server.store.revoke_api_key(row.id)
        assert await refused("/calls/CA_a/events", params={"token": data["token"]}) == (
            401,
            "the API key that issued this token is revoked",
        )


# ---- the seam, on EventFeed -----------------------------------------------------------------


class MemoryEvents:
    """The store's ``list_events`` over a list; ``during_read`` runs inside the first read (events
    emitted while the socket replays land both here, via the ledger, and in the feed's queue)."""

    def __init__(self, call: FakeCall) -> None:
        self.rows: list[CallEvent] = []
        self.during_read: list[Any] = []
        call.events.observe(self)  # the ledger: observes first

    def on_event(self, event: Any) -> None:
        self.rows.append(CallEvent(event.call_id, event.seq, event.type.value, dict(event.data), datetime.now(UTC)))

    async def list_events(self, call_id: str, *, after_seq: int = 0, limit: int = 1000) -> list[CallEvent]:
        while self.during_read:
            self.during_read.pop(0)()
        await asyncio.sleep(0)
        return [e for e in self.rows if e.seq > after_seq][:limit]


async def drain(feed: EventFeed) -> list[dict[str, Any]]:
    async with asyncio.timeout(5):
        return [m async for m in feed.messages()]


async def test_feed_skips_what_it_replayed_and_misses_nothing() -> None:
    call = FakeCall("CA_seam")
    store = MemoryEvents(call)
    call.events.emit(EventType.STATUS, status="active")  # 1
    call.say("user", "hi")  # 2, 3: stored before the socket came
    feed = EventFeed("CA_seam", store, call=call, page_size=2)  # type: ignore[arg-type]
    feed.subscribe()
    store.during_read.append(lambda: call.say("user", "hello"))  # 4, 5: stored and queued
    messages = asyncio.create_task(drain(feed))
    await asyncio.sleep(0.01)
    call.events.emit(EventType.DTMF, digit="5")  # 6: live only
    call.end()  # 7
    out = await messages
    feed.close()
    assert [(m["seq"], m["type"]) for m in out] == [
        (1, "status"),
        (2, "transcript"),
        (3, "message"),
        (4, "transcript"),
        (5, "message"),
        (6, "dtmf"),
        (7, "status"),
        (None, "stream_end"),
    ]
    assert out[-1]["data"] == {"reason": "call_ended", "last_seq": 7}
    assert len(call.events._observers) == 1  # unsubscribed: only the "ledger" is left


async def test_feed_resumes_after_seq_and_stops_for_a_call_that_already_ended() -> None:
    call = FakeCall("CA_done")
    store = MemoryEvents(call)
    call.say("user", "hi")
    call.end()
    feed = EventFeed("CA_done", store, call=call, after_seq=2)  # type: ignore[arg-type]
    feed.subscribe()
    out = await drain(feed)
    assert [(m["seq"], m["type"]) for m in out] == [(3, "status"), (None, "stream_end")]
    store.rows.pop()  # its end was never stored (the database failed): the call's status still ends it
    feed = EventFeed("CA_done", store, call=call)  # type: ignore[arg-type]
    feed.subscribe()
    out = await drain(feed)
    assert [m["seq"] for m in out] == [1, 2, None] and out[-1]["data"]["reason"] == "call_ended"


async def test_feed_logs_a_numbering_that_diverged_and_flags_overflow(caplog: pytest.LogCaptureFixture) -> None:
    call = FakeCall("CA_odd")
    store = MemoryEvents(call)
    feed = EventFeed("CA_odd", store, call=call, queue_limit=3)  # type: ignore[arg-type]
    feed.subscribe()
    call.events.emit(EventType.DTMF, digit="1")  # 1, stored and queued ...
    store.rows[0] = CallEvent("CA_odd", 1, "fault", {}, datetime.now(UTC))  # ... but stored as something else
    with caplog.at_level(logging.ERROR, logger="ringline.api.v1.events"):
        messages = asyncio.create_task(drain(feed))
        await asyncio.sleep(0.01)
        call.end()
        out = await messages
    assert [m["seq"] for m in out] == [1, 2, None]
    assert [r.getMessage() for r in caplog.records] == [
        "live event 1 is dtmf but stored event 1 is fault: the ledger's numbering diverged"
    ]
    feed.close()

    call = FakeCall("CA_flood")
    feed = EventFeed("CA_flood", MemoryEvents(call), call=call, queue_limit=3)  # type: ignore[arg-type]
    feed.subscribe()
    for digit in "123":
        call.events.emit(EventType.DTMF, digit=digit)
    assert not feed.overflowed.is_set()
    call.events.emit(EventType.DTMF, digit="4")
    assert feed.overflowed.is_set()
    feed.close()


# ---- documentation --------------------------------------------------------------------------


async def test_the_endpoints_are_documented(api: ApiServer) -> None:
    status, doc = await fetch(api, "GET", "/openapi.json")
    assert status == 200
    ops = {(m.upper(), p): op for p, item in doc["paths"].items() for m, op in item.items() if p.startswith("/calls")}
    assert {
        ("GET", "/calls"),
        ("GET", "/calls/{call_id}"),
        ("DELETE", "/calls/{call_id}"),
        ("GET", "/calls/{call_id}/transcript"),
        ("GET", "/calls/{call_id}/recording"),
        ("POST", "/calls/{call_id}/events/token"),
        ("GET", "/calls/{call_id}/events"),
    } <= set(ops)
    params = {p["name"] for p in ops[("GET", "/calls")]["parameters"]}
    assert params == {"limit", "offset", "agent_id", "status", "direction", "number", "created_from", "created_to"}
    assert "audio/wav" in ops[("GET", "/calls/{call_id}/recording")]["description"]
    assert ops[("GET", "/calls/{call_id}/events")]["security"] == []
    assert "409" in ops[("DELETE", "/calls/{call_id}")]["responses"]
