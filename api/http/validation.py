"""Request bodies and query strings into pydantic models, and their errors into 400/422.

Bodies and queries are pydantic v2 models that forbid unknown fields (``ApiModel`` does; the route
layer refuses to register one that does not). A body that is not JSON answers 400; a body or query
that is JSON but wrong answers 422 with ``details`` mapping each dotted field path to its reason::

    {"voice.speed": "Input should be less than or equal to 2", "colour": "unknown field"}

Query errors are keyed ``query.NAME`` so they never collide with body fields. An error of the body
as a whole (not an object) is keyed ``body``.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Sequence
from types import UnionType
from typing import Any, TypeVar

import orjson
from multidict import MultiMapping
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ringline.api.http.errors import BadRequest, ValidationFailed

M = TypeVar("M", bound=BaseModel)

MAX_OFFSET = 1_000_000_000


class ApiModel(BaseModel):
    """Base of request bodies and queries: unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid")


class ListQuery(ApiModel):
    """Paging of every list endpoint; a resource's filter model subclasses it."""

    limit: int = Field(50, ge=1, le=100, description="Items per page.")
    offset: int = Field(0, ge=0, le=MAX_OFFSET, description="Items to skip.")


_REASONS = {"extra_forbidden": "unknown field", "missing": "required"}


def details(exc: ValidationError, prefix: str = "", root: str = "body") -> dict[str, str]:
    """``{"dotted.path": "reason"}`` for each error, the first reason per path."""
    out: dict[str, str] = {}
    for err in exc.errors(include_url=False):
        path = ".".join(str(p) for p in err["loc"] if not _is_union_tag(p))
        key = prefix + path if path else root
        if err["type"] == "value_error" and "error" in err.get("ctx", {}):
            reason = str(err["ctx"]["error"])  # our validators' own message, without "Value error, "
        else:
            reason = _REASONS.get(err["type"], err["msg"])
        out.setdefault(key, reason)
    return out


_UNION_TAG = re.compile(
    r"none|constrained-\w+|(?:function-(?:after|before|wrap|plain)|lax-or-strict|json-or-python|chain)\[.*\]"
)


def _is_union_tag(part: str | int) -> bool:
    """Pydantic names the union member an error came from in its path (``constrained-str``,
    ``function-after[...]``): not a field of the request."""
    return isinstance(part, str) and _UNION_TAG.fullmatch(part) is not None


def forbids_extra(model: type[BaseModel]) -> bool:
    return model.model_config.get("extra") == "forbid"


def parse_body(model: type[M], raw: bytes) -> M:
    if not raw.strip():
        raise BadRequest("a JSON request body is required")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"invalid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValidationFailed("the request body must be a JSON object", details={"body": "must be a JSON object"})
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ValidationFailed("invalid request body", details=details(exc)) from None


def _is_sequence(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, UnionType):
        return any(_is_sequence(a) for a in typing.get_args(annotation) if a is not type(None))
    if origin is typing.Annotated:
        return _is_sequence(typing.get_args(annotation)[0])
    return isinstance(origin, type) and issubclass(origin, Sequence | set | frozenset) and origin is not str


def query_list_fields(model: type[BaseModel]) -> frozenset[str]:
    """Fields given by repeating the parameter (``?status=queued&status=ended``)."""
    return frozenset(name for name, f in model.model_fields.items() if _is_sequence(f.annotation))


def parse_query(model: type[M], query: MultiMapping[str], list_fields: frozenset[str]) -> M:
    data: dict[str, Any] = {}
    repeated: dict[str, str] = {}
    for name in query:
        if name in data:
            continue
        values = query.getall(name)
        if name in list_fields:
            data[name] = values
        else:
            data[name] = values[-1]
            if len(values) > 1:
                repeated["query." + name] = "given more than once"
    if repeated:
        raise ValidationFailed("invalid query parameters", details=repeated)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ValidationFailed("invalid query parameters", details=details(exc, "query.", "query")) from None
