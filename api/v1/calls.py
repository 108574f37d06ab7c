"""Call history: list and read calls, their transcripts and recordings, and delete them.

Every call is in the store while it is live too: the ledger (``api/ledger.py``) writes its row,
transcript and events as the call goes, so a live call's row here is current. ``live`` says whether
this process is running the call now. The transcript holds settled messages only (a caller's turn
once committed, an agent's reply once heard out or cut short); what is being said right now is on
the events socket (``api/v1/events.py``).
"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Self
from urllib.parse import quote

from aiohttp import web
from pydantic import BaseModel, Field, field_validator, model_validator

from ringline.api.http import (
    API_STATE,
    ApiModel,
    ApiRequest,
    ApiRoutes,
    Conflict,
    ListQuery,
    NotFound,
    Page,
    PhoneNumberError,
    Scope,
    parse_phone,
)
from ringline.api.state import CALLS, STORE
from ringline.api.store import Call as CallRow
from ringline.api.store import CallFilter, CallMessage, CallStatus, Direction, Role
from ringline.api.store import NotFound as StoreNotFound
from ringline.engine.call import Call as LiveCall
from ringline.engine.registry import CallRegistry

routes = ApiRoutes(tag="calls")

SPEAKERS = {Role.USER: "caller", Role.ASSISTANT: "agent"}
"""Who says a line in the plain-text transcript (tool and system lines are left out)."""


# ---- models ---------------------------------------------------------------------------------


class CallQuery(ListQuery):
    agent_id: str | None = Field(None, min_length=1, max_length=200, description="Only this agent's calls.")
    status: CallStatus | None = Field(None, description="Only calls in this status.")
    direction: Direction | None = Field(None, description="Only inbound or only outbound calls.")
    number: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        description="Calls from or to this number: E.164 (`+14155550100`, separators allowed), or a caller id "
        "as the provider gave it.",
    )
    created_from: datetime | None = Field(
        None, description="Calls created at or after this time (ISO 8601; UTC when no offset is given)."
    )
    created_to: datetime | None = Field(
        None, description="Calls created before this time (ISO 8601; UTC when no offset is given)."
    )

    @field_validator("created_from", "created_to")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return value if value is None or value.tzinfo is not None else value.replace(tzinfo=UTC)

    @field_validator("number")
    @classmethod
    def _e164(cls, value: str | None) -> str | None:
        return None if value is None else normalize_number(value)

    @model_validator(mode="after")
    def _window(self) -> Self:
        if self.created_from is not None and self.created_to is not None and self.created_from >= self.created_to:
            raise ValueError("created_from must be before created_to")
        return self


class TranscriptQuery(ApiModel):
    format: Literal["json", "text"] = Field(
        "json", description="`text` also answers the transcript as plain `caller: ...` / `agent: ...` lines."
    )


class CallToolCall(BaseModel):
    id: str
    name: str
    arguments: dict[str, Any]


class CallMessageOut(BaseModel):
    seq: int = Field(description="1, 2, ... in the order the messages settled.")
    role: Role
    content: str = Field(description="For an interrupted agent reply: what the caller heard.")
    interrupted: bool = Field(description="The caller talked over this reply and it was cut short.")
    at: datetime
    tool_calls: list[CallToolCall] = Field(description="Tools the agent called in this message.")
    tool_call_id: str | None = Field(description="On a tool result: the call it answers.")


class Call(BaseModel):
    id: str
    agent_id: str | None
    status: CallStatus
    direction: Direction
    from_number: str = Field(description="The caller's number (E.164), or the caller id the provider gave.")
    to_number: str = Field(description="The number called.")
    live: bool = Field(description="This server is running the call now.")
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = Field(description="When the call was answered.")
    ended_at: datetime | None
    duration_s: float = Field(description="Answered to ended; while live, answered to now (0 until answered).")
    end_reason: str | None = Field(description="`caller_hangup`, `agent_hangup`, `api_ended`, `transferred`, ...")
    metadata: dict[str, Any]
    variables: dict[str, Any] = Field(description="The `{{variables}}` the agent's prompts were filled with.")
    latency: list[dict[str, Any]] = Field(
        description="Per turn: each stage's time in ms after the caller stopped speaking (written when the call ends)."
    )
    analysis: dict[str, Any] | None
    recording_available: bool = Field(description="A recording was written for this call.")
    recording_url: str | None = Field(description="Where to fetch it (`GET`, with a key that can read calls).")


class CallDetail(Call):
    messages: list[CallMessageOut] = Field(description="The transcript so far.")


class Transcript(BaseModel):
    call_id: str
    live: bool
    messages: list[CallMessageOut]
    text: str | None = Field(description="With `format=text`: one `caller: ...` or `agent: ...` line per message.")


# ---- helpers shared with the events resource -------------------------------------------------


def normalize_number(value: str) -> str:
    """E.164 when ``value`` reads as a phone number, else ``value`` stripped (a SIP URI, ``anonymous``).
    A ``+`` left unencoded in a query string arrives as a space; a leading space before digits is read
    as that ``+``."""
    text = value.strip()
    candidates = [text]
    if value.startswith(" ") and text[:1].isdigit():
        candidates.insert(0, "+" + text)
    for candidate in candidates:
        try:
            return parse_phone(candidate)
        except PhoneNumberError:
            continue
    return text


def registry(req: ApiRequest[Any, Any]) -> CallRegistry:
    return req.app[CALLS]


def live_call(req: ApiRequest[Any, Any], call_id: str) -> LiveCall | None:
    """The call if this process is running it."""
    return registry(req).get(call_id)


async def stored_call(req: ApiRequest[Any, Any], call_id: str) -> CallRow:
    try:
        return await req.app[STORE].get_call(call_id)
    except StoreNotFound:
        raise NotFound(f"no call {call_id}") from None


def path_of(req: ApiRequest[Any, Any], call_id: str, *parts: str) -> str:
    """The URL path of a call's sub-resource (``/api/v1/calls/ID/recording``)."""
    return "/".join((req.app[API_STATE].options.prefix, "calls", quote(call_id, safe=""), *parts))


def call_out(req: ApiRequest[Any, Any], row: CallRow) -> Call:
    recorded = row.recording_path is not None
    live = live_call(req, row.id) is not None
    duration = row.duration_s
    if live and row.started_at is not None and row.ended_at is None:
        duration = max(0.0, round(req.app[API_STATE].wall() - row.started_at.timestamp(), 3))
    return Call(
        id=row.id,
        agent_id=row.agent_id,
        status=row.status,
        direction=row.direction,
        from_number=row.from_number,
        to_number=row.to_number,
        live=live,
        created_at=row.created_at,
        updated_at=row.updated_at,
        started_at=row.started_at,
        ended_at=row.ended_at,
        duration_s=duration,
        end_reason=row.end_reason,
        metadata=row.metadata,
        variables=row.variables,
        latency=row.latency,
        analysis=row.analysis,
        recording_available=recorded,
        recording_url=path_of(req, row.id, "recording") if recorded else None,
    )


def message_out(message: CallMessage) -> CallMessageOut:
    extra = message.extra or {}
    return CallMessageOut(
        seq=message.seq,
        role=message.role,
        content=message.content,
        interrupted=message.interrupted,
        at=message.at,
        tool_calls=[CallToolCall.model_validate(c) for c in extra.get("tool_calls") or ()],
        tool_call_id=extra.get("tool_call_id"),
    )


def transcript_text(messages: list[CallMessage]) -> str:
    """One line per caller or agent message; a reply the caller cut short ends ``[interrupted]``."""
    lines = []
    for m in messages:
        if (speaker := SPEAKERS.get(m.role)) is not None and m.content:
            line = f"{speaker}: {' '.join(m.content.split())}"
            lines.append(line + " [interrupted]" if m.interrupted else line)
    return "\n".join(lines)


# ---- endpoints ------------------------------------------------------------------------------


@routes.get("/calls", query=CallQuery, response=Call, many=True, scopes={Scope.CALLS_READ})
async def list_calls(req: ApiRequest[None, CallQuery]) -> Page[Call]:
    """List calls, newest first."""
    q = req.query
    where = CallFilter(
        agent_id=q.agent_id,
        status=q.status,
        direction=q.direction,
        number=q.number,
        created_from=q.created_from,
        created_to=q.created_to,
    )
    page = await req.app[STORE].list_calls(where, limit=q.limit, offset=q.offset)
    return Page([call_out(req, row) for row in page.items], page.total)


@routes.get("/calls/{call_id}", response=CallDetail, scopes={Scope.CALLS_READ})
async def get_call(req: ApiRequest[None, None]) -> CallDetail:
    """Get a call with its transcript.

    A live call's row is current: its status, transcript and timestamps are written as the call goes.
    Per-turn latency, the recording and the end are written when it ends.
    """
    row = await stored_call(req, req.params["call_id"])
    messages = await req.app[STORE].list_messages(row.id)
    return CallDetail(**call_out(req, row).model_dump(), messages=[message_out(m) for m in messages])


@routes.get("/calls/{call_id}/transcript", query=TranscriptQuery, response=Transcript, scopes={Scope.CALLS_READ})
async def get_call_transcript(req: ApiRequest[None, TranscriptQuery]) -> Transcript:
    """Get a call's transcript.

    The settled messages in order: the caller's turns, the agent's replies (an interrupted one as far as
    the caller heard it), tool calls and their results.
    """
    row = await stored_call(req, req.params["call_id"])
    messages = await req.app[STORE].list_messages(row.id)
    return Transcript(
        call_id=row.id,
        live=live_call(req, row.id) is not None,
        messages=[message_out(m) for m in messages],
        text=transcript_text(messages) if req.query.format == "text" else None,
    )


_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]")


@routes.get("/calls/{call_id}/recording", raw=True, media_type="audio/wav", scopes={Scope.CALLS_READ})
async def get_call_recording(req: ApiRequest[None, None]) -> web.StreamResponse:
    """Download a call's recording.

    Answers `200` with `audio/wav` (not JSON, and not a WebSocket upgrade): a stereo WAV with the caller
    on the left channel and the agent on the right, on the caller's timeline. `Range` requests answer
    `206` with the bytes asked for (`If-Range`, `ETag` and `Last-Modified` are supported). `404` when the
    call was not recorded (the agent's `recording` option was off), is still live (the file is written
    when the call ends), or its file is gone.
    """
    call_id = req.params["call_id"]
    row = await stored_call(req, call_id)
    if row.recording_path is None:
        if live_call(req, call_id) is not None or row.status is not CallStatus.ENDED:
            raise NotFound(f"call {call_id} has no recording yet: it is written when the call ends")
        raise NotFound(f"call {call_id} was not recorded")
    path = Path(row.recording_path)
    if not await asyncio.to_thread(path.is_file):
        raise NotFound(f"the recording of call {call_id} is no longer on disk")
    name = _SAFE_NAME.sub("_", call_id) + ".wav"
    headers = {"Content-Type": "audio/wav", "Content-Disposition": f'inline; filename="{name}"'}
    return web.FileResponse(path, headers=headers)


@routes.delete("/calls/{call_id}", scopes={Scope.CALLS_WRITE}, errors={409})
async def delete_call(req: ApiRequest[None, None]) -> None:
    """Delete a call: its row, transcript, events and recording.

    A call that has not ended (live, ringing or queued) cannot be deleted (`409`): end it first.
    Webhook deliveries already made for it are kept.
    """
    call_id = req.params["call_id"]
    row = await stored_call(req, call_id)
    if live_call(req, call_id) is not None or row.status is not CallStatus.ENDED:
        raise Conflict(f"call {call_id} is live ({row.status.value}): end it before deleting it")
    if row.recording_path is not None:  # first: a failure leaves the row, so a retry finds the file again
        await asyncio.to_thread(Path(row.recording_path).unlink, missing_ok=True)
    try:
        await req.app[STORE].delete_call(call_id)
    except StoreNotFound:  # deleted meanwhile by another request
        raise NotFound(f"no call {call_id}") from None
