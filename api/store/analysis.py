"""Analysis templates: what a post-call analysis asks for, named once and referenced by agents."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ringline.api.store.db import Row, dumps, loads, ts_required
from ringline.api.store.errors import Conflict
from ringline.api.store.records import UNSET, Json, Page, Unset, new_id
from ringline.api.store.sqlbase import SqlBase, changed


@dataclass(frozen=True, slots=True)
class AnalysisTemplate:
    id: str
    name: str
    """Unique."""
    config: Json
    """The plan as validated by the API (summary prompt, structured schema, rubric, ...); the store only keeps it."""
    created_at: datetime
    updated_at: datetime


def analysis_template_record(row: Row) -> AnalysisTemplate:
    return AnalysisTemplate(
        id=row["id"],
        name=row["name"],
        config=loads(row["config"]),
        created_at=ts_required(row["created_at"]),
        updated_at=ts_required(row["updated_at"]),
    )


def _name_taken(error: Conflict, name: str | Unset) -> Conflict:
    return Conflict(f"an analysis template named {name!r} already exists", reason=error.reason)


class AnalysisTables(SqlBase):
    async def create_analysis_template(self, name: str, config: Json, *, id: str | None = None) -> AnalysisTemplate:
        now = self._now()
        values = {
            "id": id or new_id("atpl"),
            "name": name,
            "config": dumps(config),
            "created_at": now,
            "updated_at": now,
        }
        try:
            return await self._insert("analysis_templates", values, analysis_template_record)
        except Conflict as e:
            raise _name_taken(e, name) from e

    async def get_analysis_template(self, id: str) -> AnalysisTemplate:
        return await self._get("analysis_templates", "analysis template", id, analysis_template_record)

    async def find_analysis_template(self, name: str) -> AnalysisTemplate | None:
        row = await self._db.fetchrow("SELECT * FROM analysis_templates WHERE name = $1", name)
        return None if row is None else analysis_template_record(row)

    async def list_analysis_templates(self, *, limit: int = 100, offset: int = 0) -> Page[AnalysisTemplate]:
        return await self._page("analysis_templates", analysis_template_record, limit=limit, offset=offset)

    async def update_analysis_template(
        self, id: str, *, name: str | Unset = UNSET, config: Json | Unset = UNSET
    ) -> AnalysisTemplate:
        changes = changed(name=name, config=config if config is UNSET else dumps(config))
        try:
            return await self._update("analysis_templates", "analysis template", id, changes, analysis_template_record)
        except Conflict as e:
            raise _name_taken(e, name) from e

    async def delete_analysis_template(self, id: str) -> None:
        await self._delete("analysis_templates", "analysis template", id)
