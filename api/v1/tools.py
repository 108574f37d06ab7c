"""Tool templates: tools an agent's LLM may call, named once and shared by agents.

A template is a ``name`` (what the LLM calls it; unique) and a ``config`` whose ``kind`` says what it
is: ``function`` (an HTTP endpoint the engine calls with the arguments the LLM gives, described by a
JSON schema of ``parameters``), or one of the built-in call actions ``end_call``, ``transfer_call``
(to one of the allowed ``destinations``) and ``send_dtmf``.

Header values that look like credentials (``Authorization``, ``X-API-Key``, anything with token,
secret, key, auth, password, cookie or session in its name) are answered as ``****``; sending
``****`` back keeps the value there is.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal, Self

import orjson
from jsonschema import Draft202012Validator, SchemaError
from pydantic import BaseModel, Field, TypeAdapter, ValidationError, field_validator, model_validator
from pydantic.json_schema import SkipJsonSchema
from yarl import URL

from ringline.api.http import (
    ApiModel,
    ApiRequest,
    ApiRoutes,
    ListQuery,
    Page,
    PhoneNumberError,
    Scope,
    ValidationFailed,
    parse_phone,
)
from ringline.api.http.validation import details
from ringline.api.store import ToolKind
from ringline.api.store import ToolTemplate as ToolRow
from ringline.api.v1.common import field_error, is_mask, merge_patch, omitted, store_of

routes = ApiRoutes(tag="tools")

TOOL_NAME = r"^[a-zA-Z0-9_-]{1,64}$"
MAX_SCHEMA_BYTES = 32 * 1024
MASK = "****"
_SECRET_WORDS = ("auth", "token", "secret", "key", "password", "cookie", "session", "signature")
_HEADER_NAME = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,100}$"
_SIP_URI = re.compile(
    r"sips?:(?:[^@\s;?:]{1,128}(?::[^@\s;?]{0,128})?@)?(?:[A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])"
    r"(?::[0-9]{1,5})?(?:;[^\s;]{1,100}){0,10}",
    re.IGNORECASE,
)
_KINDS = frozenset(k.value for k in ToolKind)


def is_secret_header(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in _SECRET_WORDS)


class ToolMessages(ApiModel):
    """What the agent says while a function tool runs."""

    start: str | None = Field(None, min_length=1, max_length=500, description="Said when the tool starts.")
    slow: str | None = Field(None, min_length=1, max_length=500, description="Said if it runs `slow_after_s`.")
    slow_after_s: float = Field(3.0, gt=0, le=60)
    failed: str | None = Field(None, min_length=1, max_length=500, description="Said when it fails or times out.")


class FunctionTool(ApiModel):
    """An HTTP endpoint: the engine sends the LLM's arguments (a signed JSON body, or the query of a
    GET) and gives the LLM the answer (`{"result": ...}`; `{"error": ...}` is a failure)."""

    kind: Literal["function"]
    description: str = Field(min_length=1, max_length=2000, description="What it does; the LLM reads this.")
    url: str | None = Field(
        None,
        min_length=1,
        max_length=2000,
        examples=["https://example.com/tools/lookup"],
        description="Default: the agent's webhook URL, else the account's (its `tool-calls` events).",
    )
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    headers: dict[Annotated[str, Field(pattern=_HEADER_NAME)], Annotated[str, Field(max_length=4000)]] = Field(
        default_factory=dict, max_length=50, description="Sent with each request; credentials are masked in responses."
    )
    timeout_s: float = Field(10.0, gt=0, le=60, description="The whole request; then the LLM hears it failed.")
    parameters: dict[str, Any] = Field(
        default_factory=lambda: {"type": "object", "properties": {}},
        description="A JSON Schema (draft 2020-12) of type object: the arguments the LLM passes.",
    )
    messages: ToolMessages = Field(default_factory=ToolMessages, description="Said while it runs; default: nothing.")

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            url = URL(value)
        except (ValueError, TypeError):
            raise ValueError("not a URL") from None
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError("must be an absolute http:// or https:// URL")
        if url.user is not None or url.password is not None:
            raise ValueError("no credentials in the URL: send them in headers")
        return value

    @field_validator("headers")
    @classmethod
    def _header_values(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if "\r" in text or "\n" in text:
                raise ValueError(f"header {name} has a line break")
        return value

    @field_validator("parameters")
    @classmethod
    def _json_schema(cls, schema: dict[str, Any]) -> dict[str, Any]:
        if len(orjson.dumps(schema)) > MAX_SCHEMA_BYTES:
            raise ValueError(f"larger than {MAX_SCHEMA_BYTES} bytes")
        try:
            Draft202012Validator.check_schema(schema)
        except SchemaError as exc:
            where = "/".join(str(p) for p in exc.path)
            raise ValueError(f"not a JSON schema: {exc.message}" + (f" (at {where})" if where else "")) from None
        except RecursionError:
            raise ValueError("nested too deeply") from None
        if schema.get("type") != "object":
            raise ValueError('must be a JSON schema of "type": "object"')
        return schema


class EndCallTool(ApiModel):
    """Hang up once the current reply has been spoken."""

    kind: Literal["end_call"]
    description: str = Field("End the phone call. Say goodbye first, in the same reply.", min_length=1, max_length=2000)


class TransferDestination(ApiModel):
    destination: str = Field(
        min_length=1, max_length=300, description="E.164 number or `sip:` URI.", examples=["+14155552671"]
    )
    description: str = Field("", max_length=500, description="When to transfer here; the LLM reads this.")
    message: str | None = Field(None, max_length=1000, description="Said to the caller before transferring.")
    warm: bool = Field(
        False,
        description="A warm transfer: the agent calls the destination, briefs whoever answers with the summary "
        "the LLM writes, then connects the caller (native SIP calls only).",
    )

    @field_validator("destination")
    @classmethod
    def _number_or_uri(cls, value: str) -> str:
        if value[:4].lower() == "sip:" or value[:5].lower() == "sips:":
            if not _SIP_URI.fullmatch(value):
                raise ValueError("not a SIP URI (sip:user@host[:port][;params])")
            return value
        try:
            return parse_phone(value)
        except PhoneNumberError as exc:
            raise ValueError(f"not an E.164 number or sip: URI: {exc}") from None


class TransferCallTool(ApiModel):
    """Transfer the caller to one of ``destinations``."""

    kind: Literal["transfer_call"]
    description: str = Field("Transfer the caller to a person or another line.", min_length=1, max_length=2000)
    destinations: list[TransferDestination] = Field(min_length=1, max_length=50)


class SendDtmfTool(ApiModel):
    """Press phone keypad keys (digits, ``*`` and ``#``), e.g. to get through a phone menu."""

    kind: Literal["send_dtmf"]
    description: str = Field(
        "Press keys on the phone keypad (digits, * and #), e.g. to navigate a phone menu.",
        min_length=1,
        max_length=2000,
    )


ToolConfig = Annotated[FunctionTool | EndCallTool | TransferCallTool | SendDtmfTool, Field(discriminator="kind")]
_CONFIG: TypeAdapter[Any] = TypeAdapter(ToolConfig)


def _untagged(error: Any) -> Any:
    """A config error's path without the ``kind`` pydantic puts in (``config.url``, not ``config.function.url``)."""
    loc = error["loc"]
    return {**error, "loc": tuple(p for i, p in enumerate(loc) if not (p in _KINDS and loc[:i] in ((), ("config",))))}


def stored_config(row: ToolRow) -> FunctionTool | EndCallTool | TransferCallTool | SendDtmfTool:
    """A stored tool's configuration (secrets unmasked: for the engine, never for a response)."""
    return _CONFIG.validate_python({**row.config, "kind": row.kind.value})


def _validate_config(doc: Any) -> Any:
    try:
        return _CONFIG.validate_python(doc)
    except ValidationError as exc:
        raise ValidationError.from_exception_data(exc.title, [_untagged(e) for e in exc.errors()]) from None


class ToolTemplateCreate(ApiModel):
    name: str = Field(pattern=TOOL_NAME, description="What the LLM calls it: letters, digits, `_` and `-`; unique.")
    config: ToolConfig

    @model_validator(mode="wrap")
    @classmethod
    def _untag_errors(cls, data: Any, handler: Any) -> Any:
        try:
            return handler(data)
        except ValidationError as exc:
            raise ValidationError.from_exception_data(exc.title, [_untagged(e) for e in exc.errors()]) from None


class ToolTemplateUpdate(ApiModel):
    """`config` is a JSON merge patch; one naming another `kind` replaces the config."""

    name: Annotated[str, Field(pattern=TOOL_NAME)] | SkipJsonSchema[None] = omitted()
    config: dict[str, Any] | SkipJsonSchema[None] = omitted()

    @model_validator(mode="after")
    def _not_null(self) -> Self:
        for name in ("name", "config"):
            if name in self.model_fields_set and getattr(self, name) is None:
                raise field_error(name, None, "may not be null")
        return self


class ToolQuery(ListQuery):
    pass


class ToolTemplate(BaseModel):
    id: str
    name: str
    kind: ToolKind
    config: ToolConfig
    created_at: datetime
    updated_at: datetime


def _masked(doc: dict[str, Any]) -> dict[str, Any]:
    headers = doc.get("headers")
    if not isinstance(headers, dict):
        return doc
    return doc | {"headers": {k: MASK if is_secret_header(k) else v for k, v in headers.items()}}


def tool_out(row: ToolRow) -> ToolTemplate:
    config = _CONFIG.validate_python(_masked({**row.config, "kind": row.kind.value}))
    return ToolTemplate(
        id=row.id, name=row.name, kind=row.kind, config=config, created_at=row.created_at, updated_at=row.updated_at
    )


def _unmasked_headers(doc: dict[str, Any], previous: dict[str, Any]) -> dict[str, Any]:
    """Masked header values of ``doc`` replaced by ``previous``'s (422 where it has none)."""
    headers = doc.get("headers")
    if not isinstance(headers, dict):
        return doc
    before = {k.lower(): v for k, v in (previous.get("headers") or {}).items()}
    out, problems = {}, {}
    for name, value in headers.items():
        if is_mask(value):
            if name.lower() not in before:
                problems[f"config.headers.{name}"] = "a masked value: send the real one"
            value = before.get(name.lower())
        out[name] = value
    if problems:
        raise ValidationFailed("invalid tool configuration", details=problems)
    return doc | {"headers": out}


def _stored(config: Any) -> tuple[ToolKind, dict[str, Any]]:
    doc = config.model_dump(mode="json")
    return ToolKind(doc.pop("kind")), doc


@routes.post(
    "/tools", body=ToolTemplateCreate, response=ToolTemplate, scopes={Scope.TOOLS_WRITE}, status=201, errors={409}
)
async def create_tool(req: ApiRequest[ToolTemplateCreate, None]) -> ToolTemplate:
    """Create a tool template.

    409 when a tool of that name exists."""
    _unmasked_headers(req.body.config.model_dump(), {})
    kind, config = _stored(req.body.config)
    row = await store_of(req).create_tool(req.body.name, kind, config)
    return tool_out(row)


@routes.get("/tools", query=ToolQuery, response=ToolTemplate, many=True, scopes={Scope.TOOLS_READ})
async def list_tools(req: ApiRequest[None, ToolQuery]) -> Page[ToolTemplate]:
    """List tool templates, newest first."""
    page = await store_of(req).list_tools(limit=req.query.limit, offset=req.query.offset)
    return Page([tool_out(row) for row in page.items], page.total)


@routes.get("/tools/{tool_id}", response=ToolTemplate, scopes={Scope.TOOLS_READ})
async def get_tool(req: ApiRequest[None, None]) -> ToolTemplate:
    """Get a tool template."""
    return tool_out(await store_of(req).get_tool(req.params["tool_id"]))


@routes.patch(
    "/tools/{tool_id}", body=ToolTemplateUpdate, response=ToolTemplate, scopes={Scope.TOOLS_WRITE}, errors={409}
)
async def update_tool(req: ApiRequest[ToolTemplateUpdate, None]) -> ToolTemplate:
    """Update a tool template.

    409 when another tool has the new name."""
    store, tool_id, body = store_of(req), req.params["tool_id"], req.body
    row = await store.get_tool(tool_id)
    if "name" in body.model_fields_set and body.name is None:
        raise ValidationFailed("invalid request body", details={"name": "may not be null"})
    changes: dict[str, Any] = {"name": body.name} if body.name is not None else {}
    if body.config is not None:
        current = {**row.config, "kind": row.kind.value}
        kind = body.config.get("kind", row.kind.value)
        doc = dict(body.config) if kind != row.kind.value else merge_patch(current, body.config)
        doc = _unmasked_headers(doc, current)
        try:
            config = _validate_config(doc)
        except ValidationError as exc:
            raise ValidationFailed("invalid tool configuration", details=details(exc, "config.")) from None
        changes["kind"], changes["config"] = _stored(config)
    row = await store.update_tool(tool_id, **changes)
    return tool_out(row)


@routes.delete("/tools/{tool_id}", scopes={Scope.TOOLS_WRITE})
async def delete_tool(req: ApiRequest[None, None]) -> None:
    """Delete a tool template."""
    await store_of(req).delete_tool(req.params["tool_id"])
