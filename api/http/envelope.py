"""The response envelope every endpoint answers with, and the request id that ties logs to it.

Success::

    {"success": true, "data": ..., "meta": {"request_id": "...", "timestamp": "...", "pagination": {...}}}

Error::

    {"success": false, "error": "message", "code": "not_found", "details": {"field.path": "reason"},
     "meta": {"request_id": "...", "timestamp": "..."}}

``pagination`` is present exactly on list endpoints. The models below are the OpenAPI schemas of
``meta``; the bodies themselves are built as plain dicts and serialized with orjson.
"""

from __future__ import annotations

import datetime
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import orjson
from aiohttp import web
from pydantic import BaseModel, Field

T = TypeVar("T", bound=BaseModel)

REQUEST_ID_HEADER = "X-Request-ID"
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


def request_id_from(incoming: str | None) -> str:
    """The client's ``X-Request-ID`` when it is sane (1-128 of ``A-Z a-z 0-9 . _ : -``, starting
    alphanumeric), else a new one (``req_`` + 24 hex digits)."""
    if incoming and _SANE_REQUEST_ID.fullmatch(incoming):
        return incoming
    return "req_" + secrets.token_hex(12)


def timestamp(unix: float) -> str:
    """RFC 3339 UTC with milliseconds: ``2025-01-31T12:00:00.000Z``."""
    when = datetime.datetime.fromtimestamp(unix, datetime.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


class Pagination(BaseModel):
    limit: int = Field(description="Page size that was applied.")
    offset: int = Field(description="Items skipped before this page.")
    total: int = Field(description="Items matching the filters, across all pages.")
    has_more: bool = Field(description="Whether items follow this page (`offset + limit < total`).")


class Meta(BaseModel):
    request_id: str = Field(description="Echoed in the `X-Request-ID` header; quote it when reporting a problem.")
    timestamp: datetime.datetime = Field(description="When the server answered (UTC).")


class ListMeta(Meta):
    pagination: Pagination


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """What a list handler returns: one page of items and the total matching the filters."""

    items: Sequence[T]
    total: int


def meta(request_id: str, now: float, pagination: Pagination | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"request_id": request_id, "timestamp": timestamp(now)}
    if pagination is not None:
        out["pagination"] = pagination.model_dump()
    return out


def pagination(limit: int, offset: int, total: int) -> Pagination:
    return Pagination(limit=limit, offset=offset, total=total, has_more=offset + limit < total)


def json_response(body: Mapping[str, Any], status: int, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, headers=headers, content_type="application/json")


def success(data: Any, meta_: dict[str, Any], status: int = 200) -> web.Response:
    """``data`` is already JSON-ready (a dumped model, a list of them, or None)."""
    return json_response({"success": True, "data": data, "meta": meta_}, status)


def failure(
    message: str,
    code: str,
    status: int,
    meta_: dict[str, Any],
    details: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    body = {"success": False, "error": message, "code": code, "details": dict(details or {}), "meta": meta_}
    return json_response(body, status, headers)
