"""Agents: the configurations the engine answers calls with, kept in the store.

The body of ``POST /agents`` is an agent's configuration, exactly the fields of a config file's
``[agents.NAME]`` table (``AgentConfig``), plus ``enabled``. What is stored is the document the client
sent, not the validated model: a provider key left out is taken from the environment when a call
starts (as for a config file's agents) and must never be written to the database.

Responses carry the effective configuration (defaults filled) without any provider ``api_key`` (the
schema marks them ``writeOnly``), so a configuration read, edited and sent back keeps its keys.

``PATCH`` is a JSON merge patch (RFC 7396) of that document: objects merge, ``null`` resets a field
to its default, arrays and scalars replace; a provider table (``stt``, ``llm``, ``llm_fallback``,
``tts``) whose ``provider`` changes replaces the old table instead of merging into it. So a table sent
without ``api_key`` keeps its key and ``"api_key": null`` drops it (the environment's then applies);
as ``tts_fallbacks`` is an array, a fallback sent without its key keeps the key of the fallback at the
same position if that is the same provider. A masked key (``****``) is taken as not sent.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator
from datetime import datetime
from typing import Any, get_args

from pydantic import (
    BaseModel,
    Field,
    PrivateAttr,
    SerializerFunctionWrapHandler,
    ValidationError,
    create_model,
    field_serializer,
    field_validator,
    model_validator,
)

from ringline.api.http import ApiModel, ApiRequest, ApiRoutes, Conflict, ListQuery, NotFound, Page, Scope
from ringline.api.http.errors import ValidationFailed
from ringline.api.http.validation import details
from ringline.api.store import Agent as AgentRow
from ringline.api.store import CallFilter, CallStatus, Store
from ringline.api.store import NotFound as StoreNotFound
from ringline.api.v1.common import is_mask, merge_patch, store_of
from ringline.config.providers import PROVIDER_TAGS, LlmConfig, SttConfig, TtsConfig
from ringline.config.settings import AgentConfig
from ringline.config.templates import placeholders, render

log = logging.getLogger(__name__)

routes = ApiRoutes(tag="agents")

_ROLES = {"stt": SttConfig, "llm": LlmConfig, "llm_fallback": LlmConfig, "tts": TtsConfig, "tts_fallbacks": TtsConfig}
"""The agent's provider tables and the union each is one of."""

LIVE = tuple(s for s in CallStatus if s is not CallStatus.ENDED)


def _keyed(union: Any) -> frozenset[str]:
    """The providers of ``union`` that take an ``api_key``."""
    members = get_args(get_args(union)[0])
    return frozenset(get_args(m)[1].tag for m in members if "api_key" in get_args(m)[0].model_fields)


_KEYED = {field: _keyed(union) for field, union in _ROLES.items()}


def _provider_tables(doc: dict[str, Any]) -> Iterator[tuple[tuple[str | int, ...], dict[str, Any]]]:
    """Each provider table of an agent document, with its path (the post-call analysis LLM too)."""
    for field in _ROLES:
        value = doc.get(field)
        if field == "tts_fallbacks" and isinstance(value, list):
            yield from (((field, i), t) for i, t in enumerate(value) if isinstance(t, dict))
        elif isinstance(value, dict):
            yield (field,), value
    analysis = doc.get("analysis")
    if isinstance(analysis, dict) and isinstance(analysis.get("llm"), dict):
        yield ("analysis", "llm"), analysis["llm"]


def _at(doc: Any, path: tuple[str | int, ...]) -> Any:
    for part in path:
        if isinstance(part, int):
            doc = doc[part] if isinstance(doc, list) and part < len(doc) else None
        else:
            doc = doc.get(part) if isinstance(doc, dict) else None
    return doc


def without_unset_keys(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` (copied) without ``api_key``s that are null or masked: none was given."""
    doc = copy.deepcopy(doc)
    for _, table in _provider_tables(doc):
        if "api_key" in table and (table["api_key"] is None or is_mask(table["api_key"])):
            del table["api_key"]
    return doc


def keys_kept(patch: dict[str, Any], stored: dict[str, Any]) -> dict[str, Any]:
    """``patch`` (copied) ready to merge into ``stored``: a masked key is not sent (the merge keeps the
    stored one); a fallback without its key takes the stored fallback's at the same position, if that
    is the same provider; a fallback's null key is removed (tables merge, so theirs is left for the
    merge to remove)."""
    patch = copy.deepcopy(patch)
    for path, table in _provider_tables(patch):
        key = table.get("api_key")
        if path[0] != "tts_fallbacks":
            if is_mask(key):
                del table["api_key"]
            continue
        if "api_key" in table and not is_mask(key):
            if key is None:
                del table["api_key"]
            continue
        table.pop("api_key", None)
        before = _at(stored, path)
        if isinstance(before, dict) and before.get("provider") == table.get("provider") and "api_key" in before:
            table["api_key"] = before["api_key"]
    return patch


def _untagged(loc: tuple[str | int, ...]) -> tuple[str | int, ...]:
    """A field's path without the provider tags pydantic adds for tagged unions (``tts.speed``, not
    ``tts.elevenlabs.speed``), as the client wrote it and as the config loader reports it."""
    return tuple(
        part
        for i, part in enumerate(loc)
        if not (i and part in PROVIDER_TAGS and (loc[i - 1] in _ROLES or isinstance(loc[i - 1], int)))
    )


class AgentCreate(AgentConfig):
    """An agent: every field of a config file's ``[agents.NAME]`` table, plus ``enabled``.

    ``system_prompt`` and ``first_message`` take ``{{variable}}`` placeholders, filled per call. A
    cloud provider's ``api_key`` may be left out: the provider's environment variable on the server
    is then used when a call starts."""

    name: str = Field(min_length=1, max_length=200, description="Shown in lists and call records.")
    enabled: bool = Field(True, description="Whether the agent takes calls.")
    _document: dict[str, Any] = PrivateAttr(default_factory=dict)

    @model_validator(mode="wrap")
    @classmethod
    def _keep_document(cls, data: Any, handler: Any) -> Any:
        if isinstance(data, dict):
            data = without_unset_keys(data)
        try:
            agent = handler(data)
        except ValidationError as exc:
            errors = [{**e, "loc": _untagged(e["loc"])} for e in exc.errors()]
            raise ValidationError.from_exception_data(exc.title, errors) from None
        if isinstance(data, dict):
            agent._document = {k: v for k, v in data.items() if k != "enabled"}
        return agent

    @field_validator("system_prompt", "first_message")
    @classmethod
    def _placeholders_well_formed(cls, text: str) -> str:
        rest = render(text, dict.fromkeys(placeholders(text), ""))
        if (at := rest.find("{{")) >= 0:
            raise ValueError(
                f"malformed placeholder at {rest[at : at + 40]!r}: write {{{{name}}}}, the name made of "
                "letters, digits and underscores, not starting with a digit"
            )
        return text

    @property
    def document(self) -> dict[str, Any]:
        """What the client sent (less unset keys), without ``enabled``: what the store keeps."""
        return self._document


def _patch_fields() -> dict[str, Any]:
    """``AgentUpdate``'s fields: each of ``AgentCreate``'s, optional; objects as free-form objects to
    merge (their fields are checked once merged)."""
    properties = AgentCreate.model_json_schema()["properties"]
    fields: dict[str, Any] = {}
    for name, info in AgentCreate.model_fields.items():
        kind = properties[name].get("type")
        if kind in ("string", "boolean", "integer", "number"):
            annotation: Any = info.annotation
        elif kind == "array":
            annotation = list[Any]
        else:
            annotation = dict[str, Any]
        fields[name] = (annotation | None, Field(None, description=info.description))
    return fields


AgentUpdate = create_model(
    "AgentUpdate",
    __base__=ApiModel,
    __doc__="A JSON merge patch of an agent: objects merge, `null` resets a field to its default, arrays "
    "replace. A provider table whose `provider` changes is replaced, not merged.",
    **_patch_fields(),
)


class AgentQuery(ListQuery):
    enabled: bool | None = Field(None, description="Only agents that are (or are not) enabled.")


class Agent(BaseModel):
    id: str
    name: str
    enabled: bool
    config: AgentConfig = Field(description="The effective configuration: defaults filled, no provider keys.")
    variables_used: list[str] = Field(
        description="The `{{placeholders}}` of `system_prompt` and `first_message`, filled per call."
    )
    created_at: datetime
    updated_at: datetime

    @field_serializer("config", mode="wrap")
    def _without_keys(self, config: AgentConfig, handler: SerializerFunctionWrapHandler):
        # No return annotation: the document keeps AgentConfig's schema, whose keys are writeOnly.
        out = handler(config)
        for _, table in _provider_tables(out):
            table.pop("api_key", None)
        return out


def _masked_config(doc: dict[str, Any]) -> AgentConfig:
    """The stored document as a configuration, every provider key a placeholder: the real key never
    enters a response, and one left to the environment needs no environment to be shown (the
    response drops the placeholders too)."""
    doc = copy.deepcopy(doc)
    for path, table in _provider_tables(doc):
        role = "llm" if path[0] == "analysis" else str(path[0])
        if table.get("provider") in _KEYED[role]:
            table["api_key"] = "****"
    return AgentConfig.model_validate(doc)


def agent_out(row: AgentRow) -> Agent:
    config = _masked_config(row.config)
    used = sorted(placeholders(config.system_prompt) | placeholders(config.first_message))
    return Agent(
        id=row.id,
        name=row.name,
        enabled=row.enabled,
        config=config,
        variables_used=used,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _switches_provider(key: str, current: dict[str, Any], new: dict[str, Any]) -> bool:
    """A provider table naming another provider replaces the old one (its options do not carry over)."""
    return key in _ROLES and new.get("provider", current.get("provider")) != current.get("provider")


async def _check_tools(store: Store, names: tuple[str, ...]) -> None:
    """422 unless every one of ``names`` is a tool template, and none is named twice."""
    problems: dict[str, str] = {}
    for i, name in enumerate(names):
        if name in names[:i]:
            problems[f"tools.{i}"] = f"tool {name!r} is listed twice"
        elif await store.find_tool(name) is None:
            problems[f"tools.{i}"] = f"no tool template named {name!r}"
    if problems:
        raise ValidationFailed("unknown tools", details=problems)


@routes.post("/agents", body=AgentCreate, response=Agent, scopes={Scope.AGENTS_WRITE}, status=201)
async def create_agent(req: ApiRequest[AgentCreate, None]) -> Agent:
    """Create an agent."""
    body = req.body
    await _check_tools(store_of(req), body.tools)
    row = await store_of(req).create_agent(body.name, body.document, enabled=body.enabled)
    return agent_out(row)


@routes.get("/agents", query=AgentQuery, response=Agent, many=True, scopes={Scope.AGENTS_READ})
async def list_agents(req: ApiRequest[None, AgentQuery]) -> Page[Agent]:
    """List agents, newest first."""
    q = req.query
    page = await store_of(req).list_agents(enabled=q.enabled, limit=q.limit, offset=q.offset)
    return Page([agent_out(row) for row in page.items], page.total)


@routes.get("/agents/{agent_id}", response=Agent, scopes={Scope.AGENTS_READ})
async def get_agent(req: ApiRequest[None, None]) -> Agent:
    """Get an agent."""
    return agent_out(await store_of(req).get_agent(req.params["agent_id"]))


@routes.patch("/agents/{agent_id}", body=AgentUpdate, response=Agent, scopes={Scope.AGENTS_WRITE})
async def update_agent(req: ApiRequest[Any, None]) -> Agent:
    """Update an agent.

    A JSON merge patch of its configuration: only the fields sent change."""
    store, agent_id = store_of(req), req.params["agent_id"]
    row = await store.get_agent(agent_id)
    patch = req.body.model_dump(include=req.body.model_fields_set)
    enabled = patch.pop("enabled", None)
    doc = merge_patch(row.config, keys_kept(patch, row.config), replaces=_switches_provider)
    try:
        config = AgentCreate.model_validate(doc)
    except ValidationError as exc:
        raise ValidationFailed("invalid agent configuration", details=details(exc)) from None
    await _check_tools(store, config.tools)
    try:
        row = await store.update_agent(
            agent_id, name=config.name, config=config.document, **({} if enabled is None else {"enabled": enabled})
        )
    except StoreNotFound as exc:  # deleted meanwhile
        raise NotFound(str(exc)) from None
    return agent_out(row)


@routes.delete("/agents/{agent_id}", scopes={Scope.AGENTS_WRITE}, errors={409})
async def delete_agent(req: ApiRequest[None, None]) -> None:
    """Delete an agent.

    Refused (409) while a phone number is assigned to it or a call of it is live or queued."""
    store, agent_id = store_of(req), req.params["agent_id"]
    await store.get_agent(agent_id)
    live = 0
    for status in LIVE:
        live += (await store.list_calls(CallFilter(agent_id=agent_id, status=status), limit=1)).total
    if live:
        raise Conflict(f"agent {agent_id} has {live} live or queued call{'s' * (live > 1)}: end them first")
    await store.delete_agent(agent_id)
