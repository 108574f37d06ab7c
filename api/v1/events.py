"""A call's events over a WebSocket: what is stored, then, while the call is live, what happens.

``GET /calls/{call_id}/events`` upgrades to a WebSocket. Browsers cannot set headers on one, so
besides an API key it takes ``?token=`` from ``POST /calls/{call_id}/events/token`` (five minutes,
this call only, and only while the key that asked for it is not revoked). Every message is JSON::

    {"seq": 7, "type": "message", "at": "2025-01-31T12:00:03.250Z", "data": {"role": "user", ...}}

``seq`` counts the call's events 1, 2, ...; ``type`` and ``data`` are ``engine/events.py``'s. The
socket first replays the stored events after ``?after_seq=`` (0: all), then, if this process runs
the call, streams its new events as they happen, and ends with ``{"seq": null, "type": "stream_end",
"data": {"reason", "last_seq"}}`` and a normal close (1000) once the call has ended. A client that
falls more than ``QUEUE_LIMIT`` events behind is closed with 1013 and reconnects with ``after_seq``
set to the last ``seq`` it received.

The seam between replay and live (``EventFeed``). The ledger journals every event of a live call
under the call's own ``seq``: it observes the call's ``EventLog`` from before its first event, and
the journal numbers each event it is given, one by one, even one it later drops. So a stored
event's ``seq`` is the live event's ``seq``, and the feed keeps one high-water mark across both:

1. observe the live call first: from here on, every event lands in the feed's queue;
2. flush the journal: every event from before step 1 is now in the store;
3. replay the store after ``after_seq`` page by page, raising the mark; events that arrived in
   steps 2-3 may be both stored and queued;
4. take the queue, skipping each event at or below the mark (already replayed): no duplicate, and
   no gap, since step 2 stored what step 1 missed.

A queued duplicate whose type differs from the stored one would mean the two numberings diverged;
it is logged. Replayed and live events are sent in the same shape; ``at`` of a stored event is when
the journal took it (a few microseconds after the event's own time).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import WSCloseCode, web
from pydantic import BaseModel, Field

from ringline.api.http import (
    API_STATE,
    EVENT_TOKENS,
    ApiModel,
    ApiRequest,
    ApiRoutes,
    BadRequest,
    Forbidden,
    NotFound,
    Scope,
    Unauthorized,
)
from ringline.api.http.auth import authenticate
from ringline.api.http.envelope import timestamp
from ringline.api.state import JOURNAL, STORE
from ringline.api.store import CallEvent as StoredEvent
from ringline.api.store import CallStatus, Store, StoreError
from ringline.api.store import NotFound as StoreNotFound
from ringline.api.v1.calls import live_call, path_of
from ringline.engine.call import Call as LiveCall
from ringline.engine.call import CallStatus as LiveStatus
from ringline.engine.events import CallEvent as LiveEvent

log = logging.getLogger(__name__)

routes = ApiRoutes(tag="calls")

QUEUE_LIMIT = 1024
"""Live events a socket may fall behind by before it is closed (1013)."""
PAGE_SIZE = 500
"""Stored events read per query while replaying."""
HEARTBEAT_S = 20.0
"""A WebSocket ping this often; no pong within half of it closes the socket."""
CLOSE_TIMEOUT_S = 5.0
"""How long a closing handshake may take before the connection is dropped."""
MAX_INCOMING = 4096
"""Clients have nothing to say on this socket beyond control frames."""


def event_message(seq: int, type: str, at: float, data: Mapping[str, Any]) -> dict[str, Any]:
    """What a client receives for one event, replayed or live."""
    return {"seq": seq, "type": type, "at": timestamp(at), "data": dict(data)}


def stored_message(event: StoredEvent) -> dict[str, Any]:
    return event_message(event.seq, event.type, event.at.timestamp(), event.payload)


def live_message(event: LiveEvent) -> dict[str, Any]:
    return event_message(event.seq, event.type.value, event.at, event.data)


def _is_end(type: str, data: Mapping[str, Any]) -> bool:
    return type == "status" and data.get("status") == LiveStatus.ENDED.value


class EventFeed:
    """One socket's view of a call's events: those stored after ``after_seq``, then, for a live call,
    the new ones, each once and in order, ending with a ``stream_end`` message. See the module's
    docstring for the seam. A ``CallObserver`` of the live call between ``subscribe`` and ``close``."""

    def __init__(
        self,
        call_id: str,
        store: Store,
        *,
        after_seq: int = 0,
        call: LiveCall | None = None,
        row_ended: bool = False,
        queue_limit: int = QUEUE_LIMIT,
        page_size: int = PAGE_SIZE,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.call_id = call_id
        self._store = store
        self._call = call
        self._row_ended = row_ended
        self._queue: asyncio.Queue[LiveEvent] = asyncio.Queue(queue_limit)
        self.queue_limit = queue_limit
        self._page_size = page_size
        self._wall = wall
        self.last_seq = after_seq
        """The high-water mark: the last ``seq`` sent or skipped."""
        self.overflowed = asyncio.Event()
        """Set when the queue was full: events were lost, the socket must be closed."""
        self._ended = False
        self._recent: dict[int, str] = {}
        """Types of the last replayed events (as many as the queue holds), to check the seam."""
        self._observing = False
        self._extra = {"call_id": call_id}

    # -- CallObserver

    def on_event(self, event: LiveEvent) -> None:
        if self.overflowed.is_set():
            return
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            log.warning("events socket %d events behind: closing it", self.queue_limit, extra=self._extra)
            self.overflowed.set()

    def subscribe(self) -> None:
        """Step 1: observe the live call (if any). Call before flushing the journal."""
        if self._call is not None and not self._observing:
            self._call.events.observe(self)
            self._observing = True

    def close(self) -> None:
        if self._call is not None and self._observing:
            self._call.events.unobserve(self)
            self._observing = False

    # -- the messages

    async def messages(self) -> AsyncIterator[dict[str, Any]]:
        """Every message for the client, the final ``stream_end`` included. Raises ``StoreError``."""
        async for message in self._replay():
            yield message
        if self._call is not None:
            async for message in self._live(self._call):
                yield message
        yield self._final()

    async def _replay(self) -> AsyncIterator[dict[str, Any]]:
        while True:
            page = await self._store.list_events(self.call_id, after_seq=self.last_seq, limit=self._page_size)
            for event in page:
                self.last_seq = event.seq
                self._recent[event.seq] = event.type
                self._recent.pop(event.seq - self.queue_limit, None)
                self._ended = self._ended or _is_end(event.type, event.payload)
                yield stored_message(event)
            if len(page) < self._page_size:
                return

    async def _live(self, call: LiveCall) -> AsyncIterator[dict[str, Any]]:
        if self._ended:
            return
        if call.status is LiveStatus.ENDED and self._queue.empty():
            return  # it ended before we subscribed, and its last events were never stored
        while not self._ended:
            event = await self._queue.get()
            if event.seq <= self.last_seq:
                stored = self._recent.get(event.seq)
                if stored is not None and stored != event.type.value:
                    log.error(
                        "live event %d is %s but stored event %d is %s: the ledger's numbering diverged",
                        event.seq,
                        event.type.value,
                        event.seq,
                        stored,
                        extra=self._extra,
                    )
                continue
            if event.seq > self.last_seq + 1:
                log.info("events %d-%d were not stored", self.last_seq + 1, event.seq - 1, extra=self._extra)
            self.last_seq = event.seq
            self._ended = _is_end(event.type.value, event.data)
            yield live_message(event)

    @property
    def end_reason(self) -> str:
        """``call_ended``, or ``not_live``: the call has not ended but this process is not running it."""
        call = self._call
        ended = self._ended or self._row_ended or (call is not None and call.status is LiveStatus.ENDED)
        return "call_ended" if ended else "not_live"

    def _final(self) -> dict[str, Any]:
        data = {"reason": self.end_reason, "last_seq": self.last_seq}
        return {"seq": None, "type": "stream_end", "at": timestamp(self._wall()), "data": data}


# ---- endpoints ------------------------------------------------------------------------------


class EventsQuery(ApiModel):
    token: str | None = Field(
        None, max_length=2048, description="From `POST /calls/{call_id}/events/token`, instead of an API key."
    )
    after_seq: int = Field(0, ge=0, description="Replay only the events after this `seq` (to resume).")


class EventsToken(BaseModel):
    token: str
    call_id: str
    expires_at: datetime
    url: str = Field(description="The events socket's path with the token (connect with `ws://` or `wss://`).")


@routes.post("/calls/{call_id}/events/token", response=EventsToken, scopes={Scope.CALLS_READ})
async def create_call_events_token(req: ApiRequest[None, None]) -> EventsToken:
    """Get a token for a call's events socket.

    For browsers, which cannot send an API key on a WebSocket: pass it as `?token=`. It is valid for
    five minutes, for this call only, and only while the key that asked for it is not revoked.
    """
    call_id = req.params["call_id"]
    await _require_call(req, call_id)
    assert req.principal is not None  # not public
    issued = req.app[EVENT_TOKENS].issue(call_id, req.principal.id)
    return EventsToken(
        token=issued.token,
        call_id=call_id,
        expires_at=datetime.fromtimestamp(issued.expires_at, UTC),
        url=f"{path_of(req, call_id, 'events')}?token={issued.token}",
    )


@routes.get(
    "/calls/{call_id}/events", raw=True, public=True, query=EventsQuery, errors={400, 401, 403, 404}, tag="calls"
)
async def call_events(req: ApiRequest[None, EventsQuery]) -> web.StreamResponse:
    """A call's events, stored then live (WebSocket).

    Authenticate with an API key that can read calls (`Authorization` or `X-API-Key`), or with
    `?token=` from `POST /calls/{call_id}/events/token`. Each message is an event
    `{"seq", "type", "at", "data"}` (types: `status`, `transcript`, `message`, `speech`, `tool_call`,
    `tool_result`, `latency`, `dtmf`, `fault`, `control`): first the stored ones after `after_seq`, then,
    while the call is live, each as it happens. Last comes `{"seq": null, "type": "stream_end", "data":
    {"reason": "call_ended" | "not_live", "last_seq"}}` and a normal close. A client that falls too far
    behind is closed with 1013: reconnect with `after_seq` = the last `seq` received.
    """
    call_id = req.params["call_id"]
    await _authorize(req, call_id)
    row_ended, call = await _require_call(req, call_id)
    ws = web.WebSocketResponse(heartbeat=HEARTBEAT_S, timeout=CLOSE_TIMEOUT_S, max_msg_size=MAX_INCOMING)
    if not ws.can_prepare(req.http).ok:
        raise BadRequest("this is a WebSocket: connect with 'Upgrade: websocket'")
    feed = EventFeed(
        call_id,
        req.app[STORE],
        after_seq=req.query.after_seq,
        call=call,
        row_ended=row_ended,
        wall=req.app[API_STATE].wall,
    )
    feed.subscribe()
    try:
        if (journal := req.app.get(JOURNAL)) is not None:
            await journal.flush()  # the seam's step 2 (a failing database answers 500 before the upgrade)
        await ws.prepare(req.http)
        await _serve(req.http, ws, feed)
    finally:
        feed.close()
    return ws


async def _require_call(req: ApiRequest[Any, Any], call_id: str) -> tuple[bool, LiveCall | None]:
    """Whether the stored call has ended, and the live call; 404 when it is neither stored nor live."""
    call = live_call(req, call_id)
    try:
        row = await req.app[STORE].get_call(call_id)
    except StoreNotFound:
        if call is None:
            raise NotFound(f"no call {call_id}") from None
        return False, call  # live, but the ledger could not record it
    return row.status is CallStatus.ENDED, call


async def _authorize(req: ApiRequest[None, EventsQuery], call_id: str) -> None:
    if req.principal is not None:
        if missing := req.principal.missing(frozenset({Scope.CALLS_READ})):
            raise Forbidden(f"this API key lacks the scope {' and '.join(missing)}")
        return
    token = req.query.token
    if token is None:
        await authenticate(req.http, req.app[API_STATE].keys)  # raises the sent key's own error
        raise Unauthorized(
            "missing credentials: send an API key ('Authorization: Bearer KEY' or 'X-API-Key: KEY') "
            "or ?token= from POST /calls/{call_id}/events/token"
        )
    claims = req.app[EVENT_TOKENS].verify(token, call_id)
    try:
        key = await req.app[STORE].get_api_key(claims.key_id)
    except StoreNotFound:
        raise Unauthorized("the API key that issued this token no longer exists") from None
    if key.revoked_at is not None:
        raise Unauthorized("the API key that issued this token is revoked")
    if not (Scope.CALLS_READ in key.scopes or Scope.ADMIN in key.scopes):
        raise Forbidden("the API key that issued this token lacks the scope calls:read")


async def _serve(request: web.Request, ws: web.WebSocketResponse, feed: EventFeed) -> None:
    """Send the feed until it ends, the client leaves, or it falls too far behind; then close."""
    pump = asyncio.create_task(_pump(ws, feed), name=f"events-{feed.call_id}")
    reader = asyncio.create_task(_read_until_closed(ws), name=f"events-read-{feed.call_id}")
    overflow = asyncio.create_task(feed.overflowed.wait(), name=f"events-overflow-{feed.call_id}")
    tasks = (pump, reader, overflow)
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    if overflow in done:
        reason = f"too slow: over {feed.queue_limit} events behind; reconnect with after_seq = the last seq received"
        await _close(request, ws, WSCloseCode.TRY_AGAIN_LATER, reason)
    elif pump in done and not pump.cancelled():
        if (exc := pump.exception()) is None:
            await _close(request, ws, WSCloseCode.OK, feed.end_reason.replace("_", " "))
        elif isinstance(exc, StoreError):
            log.error("events socket: the store failed: %s", exc, extra={"call_id": feed.call_id})
            reason = "store unavailable; reconnect with after_seq = the last seq received"
            await _close(request, ws, WSCloseCode.INTERNAL_ERROR, reason)
        elif not isinstance(exc, ConnectionError):
            raise exc
    # else the client closed (the reader answered its close) or went away


async def _pump(ws: web.WebSocketResponse, feed: EventFeed) -> None:
    async for message in feed.messages():
        await ws.send_str(orjson.dumps(message, default=str).decode())


async def _read_until_closed(ws: web.WebSocketResponse) -> None:
    """Whatever a client sends is ignored; aiohttp answers pings and the closing handshake."""
    async for _ in ws:
        pass


async def _close(request: web.Request, ws: web.WebSocketResponse, code: int, reason: str) -> None:
    """Close with ``code``; a client that does not take the close frame in time is cut off."""
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            await ws.close(code=code, message=reason.encode()[:123])
    except TimeoutError:
        if (transport := request.transport) is not None:
            transport.abort()
