"""Analysis templates: what a post-call analysis asks for, named once and used by many agents.

A template holds the parts of an analysis plan (``AnalysisPlan``): ``summary`` and its
``summary_prompt``, the ``structured_schema`` of values to extract (each a ``name``, a ``type`` of
``string``, ``number`` or ``bool``, and a ``description``), the ``success_rubric`` and ``sentiment``.
A part left null takes the default (summary and sentiment on, no schema, no rubric). An agent uses a
template by naming it (or its id) in its ``analysis.template``; the parts the agent's own ``analysis``
sets win over the template's. The template is read when each call ends (see ``ringline.api.analysis``).

``PATCH`` sets the fields it sends; ``null`` resets a part to its default. A template an API agent
uses cannot be deleted, nor renamed while an agent names it (409).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, Field, ValidationError, field_validator
from pydantic.json_schema import SkipJsonSchema

from ringline.api.http import ApiModel, ApiRequest, ApiRoutes, Conflict, ListQuery, NotFound, Page, Scope
from ringline.api.http.errors import ValidationFailed
from ringline.api.http.validation import details
from ringline.api.store import Conflict as StoreConflict
from ringline.api.store import NotFound as StoreNotFound
from ringline.api.store import Store
from ringline.api.store.analysis import AnalysisTemplate as TemplateRow
from ringline.api.v1.common import omitted, store_of
from ringline.config.settings import AnalysisField, AnalysisPlan

routes = ApiRoutes(tag="analysis-templates")

NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"
ID_PREFIX = "atpl_"
_PARTS = tuple(AnalysisPlan.model_fields)
"""The plan's fields: what a template stores besides its description."""


class AnalysisTemplateCreate(AnalysisPlan):
    """An analysis template: the parts of an analysis plan, under a unique name."""

    name: str = Field(
        pattern=NAME,
        description="Unique; what agents put in `analysis.template`. Letters, digits, `_`, `.` and `-`.",
        examples=["lead-qualification"],
    )
    description: str = Field("", max_length=2000, description="What the template is for.")

    @field_validator("name")
    @classmethod
    def _not_an_id(cls, name: str) -> str:
        if name.startswith(ID_PREFIX):
            raise ValueError(f"may not start with {ID_PREFIX!r} (template ids do)")
        return name


class AnalysisTemplateUpdate(ApiModel):
    """The fields to change; `null` resets a part to its default."""

    name: Annotated[str, Field(pattern=NAME)] | SkipJsonSchema[None] = omitted()
    description: str | None = Field(None, max_length=2000)
    summary: bool | None = None
    summary_prompt: str | None = Field(None, min_length=1, max_length=10_000)
    structured_schema: list[AnalysisField] | None = Field(None, max_length=50)
    success_rubric: str | None = Field(None, min_length=1, max_length=10_000)
    sentiment: bool | None = None


class AnalysisTemplateQuery(ListQuery):
    pass


class AnalysisTemplate(BaseModel):
    id: str
    name: str
    description: str
    summary: bool | None = Field(description="Write a summary; null: the default (on).")
    summary_prompt: str | None = Field(description="How to summarize; null: the default prompt.")
    structured_schema: list[AnalysisField] | None = Field(description="Values to extract; null: none.")
    success_rubric: str | None = Field(description="What makes a call a success; null: not judged.")
    sentiment: bool | None = Field(description="Judge the caller's sentiment; null: the default (on).")
    created_at: datetime
    updated_at: datetime


def template_plan(config: dict[str, Any]) -> AnalysisPlan:
    """A stored template's plan (what the post-call analysis reads)."""
    return AnalysisPlan.model_validate({k: v for k, v in config.items() if k in _PARTS})


def template_out(row: TemplateRow) -> AnalysisTemplate:
    plan = template_plan(row.config)
    return AnalysisTemplate(
        id=row.id,
        name=row.name,
        description=row.config.get("description", ""),
        **plan.model_dump(),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _stored(body: AnalysisTemplateCreate) -> dict[str, Any]:
    return body.model_dump(mode="json", exclude={"name"}, exclude_none=True)


async def _agents_naming(store: Store, *names: str) -> list[str]:
    """The API agents whose ``analysis.template`` is one of ``names``."""
    found, offset = [], 0
    while True:
        page = await store.list_agents(limit=1000, offset=offset)
        for agent in page.items:
            analysis = agent.config.get("analysis")
            if isinstance(analysis, dict) and analysis.get("template") in names:
                found.append(agent.id)
        offset += len(page.items)
        if not page.items or offset >= page.total:
            return found


@routes.post(
    "/analysis-templates",
    body=AnalysisTemplateCreate,
    response=AnalysisTemplate,
    scopes={Scope.AGENTS_WRITE},
    status=201,
    errors={409},
)
async def create_analysis_template(req: ApiRequest[AnalysisTemplateCreate, None]) -> AnalysisTemplate:
    """Create an analysis template.

    409 when a template of that name exists."""
    row = await store_of(req).create_analysis_template(req.body.name, _stored(req.body))
    return template_out(row)


@routes.get(
    "/analysis-templates",
    query=AnalysisTemplateQuery,
    response=AnalysisTemplate,
    many=True,
    scopes={Scope.AGENTS_READ},
)
async def list_analysis_templates(req: ApiRequest[None, AnalysisTemplateQuery]) -> Page[AnalysisTemplate]:
    """List analysis templates, newest first."""
    page = await store_of(req).list_analysis_templates(limit=req.query.limit, offset=req.query.offset)
    return Page([template_out(row) for row in page.items], page.total)


@routes.get("/analysis-templates/{template_id}", response=AnalysisTemplate, scopes={Scope.AGENTS_READ})
async def get_analysis_template(req: ApiRequest[None, None]) -> AnalysisTemplate:
    """Get an analysis template."""
    return template_out(await store_of(req).get_analysis_template(req.params["template_id"]))


@routes.patch(
    "/analysis-templates/{template_id}",
    body=AnalysisTemplateUpdate,
    response=AnalysisTemplate,
    scopes={Scope.AGENTS_WRITE},
    errors={409},
)
async def update_analysis_template(req: ApiRequest[AnalysisTemplateUpdate, None]) -> AnalysisTemplate:
    """Update an analysis template.

    409 when another template has the new name, or an agent names this one by its old name."""
    store, template_id, body = store_of(req), req.params["template_id"], req.body
    row = await store.get_analysis_template(template_id)
    sent = body.model_dump(mode="json", include=body.model_fields_set)
    if "name" in sent and sent["name"] is None:
        raise ValidationFailed("invalid request body", details={"name": "may not be null"})
    doc = {"name": row.name, **row.config}
    for field, value in sent.items():
        if value is None:
            doc.pop(field, None)
        else:
            doc[field] = value
    try:
        merged = AnalysisTemplateCreate.model_validate(doc)
    except ValidationError as exc:
        raise ValidationFailed("invalid analysis template", details=details(exc)) from None
    if merged.name != row.name and (users := await _agents_naming(store, row.name)):
        raise Conflict(f"agents {', '.join(users)} name analysis template {row.name!r}: rename it there first")
    try:
        row = await store.update_analysis_template(template_id, name=merged.name, config=_stored(merged))
    except StoreNotFound as exc:  # deleted meanwhile
        raise NotFound(str(exc)) from None
    except StoreConflict as exc:
        raise Conflict(str(exc)) from None
    return template_out(row)


@routes.delete("/analysis-templates/{template_id}", scopes={Scope.AGENTS_WRITE}, errors={409})
async def delete_analysis_template(req: ApiRequest[None, None]) -> None:
    """Delete an analysis template.

    Refused (409) while an API agent uses it (by name or id)."""
    store = store_of(req)
    row = await store.get_analysis_template(req.params["template_id"])
    if users := await _agents_naming(store, row.name, row.id):
        raise Conflict(f"analysis template {row.name!r} is used by agents {', '.join(users)}")
    await store.delete_analysis_template(row.id)
