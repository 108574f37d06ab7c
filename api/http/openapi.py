"""The OpenAPI 3.1 document, built from the declared operations (never written by hand).

Schemas come from the pydantic models (request models in validation mode, responses in
serialization mode, so a documented response is exactly what ``model_dump(mode="json")`` gives),
generated together so shared and nested models land once in ``components/schemas``. Every
operation documents its envelope, its error responses, the headers every response carries and
its security: both key schemes with the scopes it needs, or none when public.
"""

from __future__ import annotations

from collections.abc import Iterable
from http import HTTPStatus
from typing import Any

import orjson
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from ringline.api.http.envelope import ListMeta, Meta
from ringline.api.http.errors import ERROR_DESCRIPTIONS
from ringline.api.http.routes import Operation

REF = "#/components/schemas/{model}"
_KEY_SCHEMES = ("bearerAuth", "apiKeyHeader")

_HEADERS: dict[str, dict[str, Any]] = {
    "X-Request-ID": {"description": "This request's id (the client's `X-Request-ID` if sane).", "type": "string"},
    "X-RateLimit-Limit": {"description": "Requests allowed per window for this key (or address).", "type": "integer"},
    "X-RateLimit-Remaining": {"description": "Requests that may be made right now.", "type": "integer"},
    "X-RateLimit-Reset": {"description": "Seconds until the full limit is available again.", "type": "integer"},
    "Retry-After": {"description": "Seconds to wait before retrying.", "type": "integer"},
    "WWW-Authenticate": {"description": "The authentication scheme: Bearer.", "type": "string"},
}


def _header_ref(name: str, required: bool = True) -> dict[str, Any]:
    # A $ref may not carry `required`, so optional headers are written out inline.
    if required:
        return {"$ref": f"#/components/headers/{name}"}
    spec = _HEADERS[name]
    return {"description": spec["description"], "schema": {"type": spec["type"]}}


def _response_headers(status: int) -> dict[str, Any]:
    # A 500 may come before the rate limiter ran (the key store failed), so only the id is promised.
    limited = status != 500
    headers = {"X-Request-ID": _header_ref("X-Request-ID")}
    for name in ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"):
        headers[name] = _header_ref(name, required=limited)
    if status == 429:
        headers["Retry-After"] = _header_ref("Retry-After")
    if status == 401:
        headers["WWW-Authenticate"] = _header_ref("WWW-Authenticate")
    return headers


def _error_response_name(status: int) -> str:
    return "".join(word.capitalize() for word in HTTPStatus(status).phrase.replace("-", " ").split())


def _schemas(operations: list[Operation]) -> tuple[dict[tuple[type[BaseModel], str], Any], dict[str, Any]]:
    wanted: dict[tuple[type[BaseModel], JsonSchemaMode], None] = {(Meta, "serialization"): None}
    wanted[(ListMeta, "serialization")] = None
    for op in operations:
        for model, mode in ((op.body, "validation"), (op.query, "validation"), (op.response, "serialization")):
            if model is not None:
                wanted[(model, mode)] = None
    refs, top = models_json_schema(list(wanted), ref_template=REF)
    return refs, top.get("$defs", {})


def _name(ref: dict[str, Any]) -> str:
    return ref["$ref"].rsplit("/", 1)[1]


def _component_schemas(operations: list[Operation], refs: dict[Any, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """``defs`` less the query models: they are documented as parameters, unless something refers to them."""
    out = dict(defs)
    query_keys = {(op.query, "validation") for op in operations if op.query is not None}
    used = {_name(ref) for key, ref in refs.items() if key not in query_keys}
    for name in {_name(refs[key]) for key in query_keys} - used:
        others = orjson.dumps({k: v for k, v in out.items() if k != name})
        if f'"{REF.format(model=name)}"'.encode() not in others:
            del out[name]
    return out


def _query_parameters(op: Operation, ref: dict[str, Any], defs: dict[str, Any]) -> list[dict[str, Any]]:
    schema = defs[_name(ref)]
    required = set(schema.get("required", ()))
    params = []
    for name, prop in schema.get("properties", {}).items():
        param: dict[str, Any] = {"name": name, "in": "query", "required": name in required, "schema": prop}
        if "description" in prop:
            param["description"] = prop["description"]
        params.append(param)
    return params


def _success(op: Operation, refs: dict[Any, Any]) -> dict[str, Any]:
    if op.raw and op.media_type is not None:
        content = {op.media_type: {"schema": {"type": "string", "format": "binary"}}}
        return {
            "200": {"description": "The file.", "content": content},
            "206": {"description": "Partial Content: the byte range the `Range` header asked for.", "content": content},
        }
    if op.raw:
        return {"101": {"description": "Switching Protocols: the WebSocket is open."}}
    if op.response is None:
        data: dict[str, Any] = {"type": "null"}
    elif op.many:
        data = {"type": "array", "items": refs[(op.response, "serialization")]}
    else:
        data = refs[(op.response, "serialization")]
    meta = refs[(ListMeta if op.many else Meta, "serialization")]
    envelope = {
        "type": "object",
        "required": ["success", "data", "meta"],
        "additionalProperties": False,
        "properties": {"success": {"type": "boolean", "const": True}, "data": data, "meta": meta},
    }
    return {
        str(op.status): {
            "description": HTTPStatus(op.status).phrase,
            "headers": _response_headers(op.status),
            "content": {"application/json": {"schema": envelope}},
        }
    }


def _operation(op: Operation, refs: dict[Any, Any], defs: dict[str, Any], per_call: str) -> dict[str, Any]:
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}} for name in op.path_params
    ]
    if op.query is not None:
        params += _query_parameters(op, refs[(op.query, "validation")], defs)
    notes = [op.description] if op.description else []
    if not op.public:
        needs = ", ".join(f"`{s}`" for s in sorted(op.scopes)) or "any valid key"
        notes.append(f"Scopes: {needs} (`admin` implies all).")
    if op.call_limited:
        notes.append(per_call)
    spec: dict[str, Any] = {
        "operationId": op.operation_id,
        "summary": op.summary,
        "tags": [op.tag],
        "security": [] if op.public else [{scheme: sorted(op.scopes)} for scheme in _KEY_SCHEMES],
        "responses": _success(op, refs)
        | {str(s): {"$ref": f"#/components/responses/{_error_response_name(s)}"} for s in op.error_statuses()},
    }
    if notes:
        spec["description"] = "\n\n".join(notes)
    if params:
        spec["parameters"] = params
    if op.body is not None:
        spec["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": refs[(op.body, "validation")]}},
        }
    return spec


def _error_envelope(meta_ref: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["success", "error", "code", "details", "meta"],
        "additionalProperties": False,
        "properties": {
            "success": {"type": "boolean", "const": False},
            "error": {"type": "string", "description": "What went wrong, for people."},
            "code": {"type": "string", "description": "What went wrong, for programs (`not_found`, ...)."},
            "details": {
                "type": "object",
                "additionalProperties": {"type": "string"},
                "description": "Dotted field path -> reason, for validation errors.",
            },
            "meta": meta_ref,
        },
    }


def build_openapi(
    operations: Iterable[Operation],
    *,
    title: str,
    version: str,
    server_url: str,
    description: str = "",
    per_call_note: str = "Control commands are also rate limited per call.",
) -> dict[str, Any]:
    ops = list(operations)
    refs, defs = _schemas(ops)
    paths: dict[str, dict[str, Any]] = {}
    for op in ops:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op, refs, defs, per_call_note)
    error_responses = {
        _error_response_name(status): {
            "description": text,
            "headers": _response_headers(status),
            "content": {"application/json": {"schema": {"$ref": REF.format(model="ErrorEnvelope")}}},
        }
        for status, text in ERROR_DESCRIPTIONS.items()
    }
    key_help = "An API key (`rl_` and 43 more characters)."
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version, "description": description},
        "servers": [{"url": server_url}],
        "tags": [{"name": name} for name in sorted({op.tag for op in ops})],
        "security": [{scheme: []} for scheme in _KEY_SCHEMES],
        "paths": paths,
        "components": {
            "schemas": _component_schemas(ops, refs, defs)
            | {"ErrorEnvelope": _error_envelope(refs[(Meta, "serialization")])},
            "responses": error_responses,
            "headers": {
                name: {"description": spec["description"], "required": True, "schema": {"type": spec["type"]}}
                for name, spec in _HEADERS.items()
            },
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "description": key_help},
                "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key", "description": key_help},
            },
        },
    }
