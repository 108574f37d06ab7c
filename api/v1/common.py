"""What the resource modules share: the store, JSON merge patches, masked secrets, field errors."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from pydantic import Field, ValidationError

from ringline.api.http import ApiRequest
from ringline.api.state import STORE
from ringline.api.store import Store


def store_of(req: ApiRequest[Any, Any]) -> Store:
    return req.app[STORE]


def is_mask(value: Any) -> bool:
    """A secret as a response shows it (``****``...), never a real value."""
    return isinstance(value, str) and len(value) >= 4 and set(value) == {"*"}


def merge_patch(
    target: dict[str, Any], patch: dict[str, Any], *, replaces: Callable[[str, dict, dict], bool] | None = None
) -> dict[str, Any]:
    """RFC 7396 merge of ``patch`` into ``target`` (neither is changed): objects merge, ``null``
    removes, anything else replaces. ``replaces(key, current, new)`` may say that a top-level
    object is replaced whole rather than merged (a provider table naming another provider)."""
    out = dict(target)
    for key, value in patch.items():
        current = out.get(key)
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(current, dict):
            whole = replaces is not None and replaces(key, current, value)
            out[key] = copy.deepcopy(value) if whole else merge_patch(current, value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def omitted(**kwargs: Any) -> Any:
    """A PATCH field that may be left out but not sent as ``null``: declare it
    ``T | SkipJsonSchema[None] = omitted()``; its schema says ``T`` and no ``null`` default."""
    return Field(None, json_schema_extra=_no_default, **kwargs)


def _no_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


def field_error(field: str, value: Any, message: str) -> ValidationError:
    """A validation error of one field, raised from a model validator (whose own errors have no field)."""
    ctx = {"error": ValueError(message)}
    return ValidationError.from_exception_data(
        "body", [{"type": "value_error", "loc": (field,), "input": value, "ctx": ctx}]
    )
