"""Usage: calls and minutes per agent and per UTC day, for a time range (by when calls were created).

Minutes are talk time (answered to ended); calls never answered count as calls of 0 minutes.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from typing import Self

from pydantic import BaseModel, Field, model_validator

from ringline.api.http import ApiModel, ApiRequest, ApiRoutes, Scope
from ringline.api.state import STORE
from ringline.api.store import utcnow
from ringline.api.v1.common import field_error

routes = ApiRoutes(tag="usage")

DEFAULT_DAYS = 30
MAX_DAYS = 366


class UsageQuery(ApiModel):
    since: datetime | None = Field(
        None,
        alias="from",
        description=f"Start, inclusive (ISO 8601; UTC if no offset). Default: `to` less {DEFAULT_DAYS} days.",
    )
    until: datetime | None = Field(None, alias="to", description="End, exclusive. Default: now.")
    agent_id: str | None = Field(None, min_length=1, max_length=100, description="Only this agent's calls.")

    @model_validator(mode="after")
    def _range(self) -> Self:
        try:
            until = _utc(self.until) if self.until is not None else utcnow()
        except OverflowError:
            raise field_error("to", self.until, "out of range") from None
        try:
            since = _utc(self.since) if self.since is not None else until - timedelta(days=DEFAULT_DAYS)
        except OverflowError:
            raise field_error("from", self.since, "out of range") from None
        if since >= until:
            raise field_error("from", self.since, "must be before `to`")
        if until - since > timedelta(days=MAX_DAYS):
            raise field_error("from", self.since, f"at most {MAX_DAYS} days before `to`")
        self.since, self.until = since, until
        return self


def _utc(when: datetime) -> datetime:
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


class UsageDay(BaseModel):
    day: date = Field(description="UTC date the calls were created.")
    agent_id: str | None = Field(description="None for calls with no agent.")
    calls: int
    minutes: float


class AgentUsage(BaseModel):
    agent_id: str | None
    calls: int
    minutes: float


class Usage(BaseModel):
    since: datetime = Field(serialization_alias="from")
    until: datetime = Field(serialization_alias="to")
    calls: int = Field(description="All calls in the range.")
    minutes: float
    agents: list[AgentUsage] = Field(description="Per agent, most minutes first.")
    days: list[UsageDay] = Field(description="Per day and agent, oldest first.")


@routes.get("/usage", query=UsageQuery, response=Usage, scopes={Scope.CALLS_READ})
async def get_usage(req: ApiRequest[None, UsageQuery]) -> Usage:
    """Get call counts and minutes for a time range."""
    q = req.query
    assert q.since is not None and q.until is not None  # filled by the query's validator
    rows = await req.app[STORE].usage(q.since, q.until, agent_id=q.agent_id)
    per_agent: dict[str | None, list[float]] = defaultdict(lambda: [0, 0.0])
    for row in rows:
        totals = per_agent[row.agent_id]
        totals[0] += row.calls
        totals[1] += row.minutes
    agents = [AgentUsage(agent_id=a, calls=int(c), minutes=round(m, 3)) for a, (c, m) in per_agent.items()]
    agents.sort(key=lambda a: (-a.minutes, -a.calls, a.agent_id or ""))
    return Usage(
        since=q.since,
        until=q.until,
        calls=sum(r.calls for r in rows),
        minutes=round(sum(r.minutes for r in rows), 3),
        agents=agents,
        days=[UsageDay(day=r.day, agent_id=r.agent_id, calls=r.calls, minutes=round(r.minutes, 3)) for r in rows],
    )
