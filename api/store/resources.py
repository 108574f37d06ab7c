"""Agents, SIP trunks, phone numbers and tool templates: configuration rows the API edits."""

from __future__ import annotations

from typing import Any

from ringline.api.store.db import Row, Where, dumps, loads, ts_required
from ringline.api.store.errors import Conflict
from ringline.api.store.records import (
    UNSET,
    Agent,
    Json,
    NumberProvider,
    Page,
    PhoneNumber,
    SipTrunk,
    ToolKind,
    ToolTemplate,
    Unset,
    new_id,
)
from ringline.api.store.sqlbase import SqlBase, changed


def agent_record(row: Row) -> Agent:
    return Agent(
        id=row["id"],
        name=row["name"],
        enabled=bool(row["enabled"]),
        config=loads(row["config"]),
        created_at=ts_required(row["created_at"]),
        updated_at=ts_required(row["updated_at"]),
    )


def trunk_record(row: Row) -> SipTrunk:
    return SipTrunk(
        id=row["id"],
        name=row["name"],
        config=loads(row["config"]),
        created_at=ts_required(row["created_at"]),
        updated_at=ts_required(row["updated_at"]),
    )


def number_record(row: Row) -> PhoneNumber:
    return PhoneNumber(
        id=row["id"],
        number=row["number"],
        provider=NumberProvider(row["provider"]),
        inbound_agent_id=row["inbound_agent_id"],
        outbound_agent_id=row["outbound_agent_id"],
        sip_trunk_id=row["sip_trunk_id"],
        label=row["label"],
        created_at=ts_required(row["created_at"]),
        updated_at=ts_required(row["updated_at"]),
    )


def tool_record(row: Row) -> ToolTemplate:
    return ToolTemplate(
        id=row["id"],
        name=row["name"],
        kind=ToolKind(row["kind"]),
        config=loads(row["config"]),
        created_at=ts_required(row["created_at"]),
        updated_at=ts_required(row["updated_at"]),
    )


def _in_json(changes: dict[str, Any], *columns: str) -> dict[str, Any]:
    return {k: dumps(v) if k in columns else v for k, v in changes.items()}


class ResourceTables(SqlBase):
    # -- agents

    async def create_agent(self, name: str, config: Json, *, enabled: bool = True, id: str | None = None) -> Agent:
        now = self._now()
        values = {"id": id or new_id("agt"), "name": name, "enabled": enabled, "config": dumps(config)}
        return await self._insert("agents", values | {"created_at": now, "updated_at": now}, agent_record)

    async def get_agent(self, id: str) -> Agent:
        return await self._get("agents", "agent", id, agent_record)

    async def list_agents(self, *, enabled: bool | None = None, limit: int = 100, offset: int = 0) -> Page[Agent]:
        where = Where()
        if enabled is not None:
            where.add(f"enabled = {where.arg(enabled)}")
        return await self._page("agents", agent_record, where=where, limit=limit, offset=offset)

    async def update_agent(
        self,
        id: str,
        *,
        name: str | Unset = UNSET,
        enabled: bool | Unset = UNSET,
        config: Json | Unset = UNSET,
    ) -> Agent:
        changes = _in_json(changed(name=name, enabled=enabled, config=config), "config")
        return await self._update("agents", "agent", id, changes, agent_record)

    async def delete_agent(self, id: str) -> None:
        try:
            await self._delete("agents", "agent", id)
        except Conflict as e:
            raise Conflict(f"agent {id} is still assigned to a phone number", reason=e.reason) from e

    # -- SIP trunks

    async def create_sip_trunk(self, name: str, config: Json, *, id: str | None = None) -> SipTrunk:
        now = self._now()
        values = {"id": id or new_id("trk"), "name": name, "config": dumps(config)}
        return await self._insert("sip_trunks", values | {"created_at": now, "updated_at": now}, trunk_record)

    async def get_sip_trunk(self, id: str) -> SipTrunk:
        return await self._get("sip_trunks", "SIP trunk", id, trunk_record)

    async def list_sip_trunks(self, *, limit: int = 100, offset: int = 0) -> Page[SipTrunk]:
        return await self._page("sip_trunks", trunk_record, limit=limit, offset=offset)

    async def update_sip_trunk(self, id: str, *, name: str | Unset = UNSET, config: Json | Unset = UNSET) -> SipTrunk:
        changes = _in_json(changed(name=name, config=config), "config")
        return await self._update("sip_trunks", "SIP trunk", id, changes, trunk_record)

    async def delete_sip_trunk(self, id: str) -> None:
        try:
            await self._delete("sip_trunks", "SIP trunk", id)
        except Conflict as e:
            raise Conflict(f"SIP trunk {id} is still used by a phone number", reason=e.reason) from e

    # -- phone numbers

    async def create_number(
        self,
        number: str,
        provider: NumberProvider,
        *,
        inbound_agent_id: str | None = None,
        outbound_agent_id: str | None = None,
        sip_trunk_id: str | None = None,
        label: str = "",
        id: str | None = None,
    ) -> PhoneNumber:
        now = self._now()
        values = {
            "id": id or new_id("num"),
            "number": number,
            "provider": NumberProvider(provider).value,
            "inbound_agent_id": inbound_agent_id,
            "outbound_agent_id": outbound_agent_id,
            "sip_trunk_id": sip_trunk_id,
            "label": label,
            "created_at": now,
            "updated_at": now,
        }
        try:
            return await self._insert("phone_numbers", values, number_record)
        except Conflict as e:
            raise _number_conflict(e, number) from e

    async def get_number(self, id: str) -> PhoneNumber:
        return await self._get("phone_numbers", "phone number", id, number_record)

    async def find_number(self, number: str) -> PhoneNumber | None:
        row = await self._db.fetchrow("SELECT * FROM phone_numbers WHERE number = $1", number)
        return None if row is None else number_record(row)

    async def list_numbers(
        self, *, agent_id: str | None = None, limit: int = 100, offset: int = 0
    ) -> Page[PhoneNumber]:
        where = Where()
        if agent_id is not None:
            arg = where.arg(agent_id)
            where.add(f"(inbound_agent_id = {arg} OR outbound_agent_id = {arg})")
        return await self._page("phone_numbers", number_record, where=where, limit=limit, offset=offset)

    async def update_number(
        self,
        id: str,
        *,
        number: str | Unset = UNSET,
        provider: NumberProvider | Unset = UNSET,
        inbound_agent_id: str | None | Unset = UNSET,
        outbound_agent_id: str | None | Unset = UNSET,
        sip_trunk_id: str | None | Unset = UNSET,
        label: str | Unset = UNSET,
    ) -> PhoneNumber:
        changes = changed(
            number=number,
            provider=provider if provider is UNSET else NumberProvider(provider).value,
            inbound_agent_id=inbound_agent_id,
            outbound_agent_id=outbound_agent_id,
            sip_trunk_id=sip_trunk_id,
            label=label,
        )
        try:
            return await self._update("phone_numbers", "phone number", id, changes, number_record)
        except Conflict as e:
            raise _number_conflict(e, number if isinstance(number, str) else "") from e

    async def delete_number(self, id: str) -> None:
        await self._delete("phone_numbers", "phone number", id)

    # -- tool templates

    async def create_tool(self, name: str, kind: ToolKind, config: Json, *, id: str | None = None) -> ToolTemplate:
        now = self._now()
        values = {"id": id or new_id("tool"), "name": name, "kind": ToolKind(kind).value, "config": dumps(config)}
        try:
            return await self._insert("tool_templates", values | {"created_at": now, "updated_at": now}, tool_record)
        except Conflict as e:
            raise Conflict(f"a tool named {name!r} already exists", reason=e.reason) from e

    async def get_tool(self, id: str) -> ToolTemplate:
        return await self._get("tool_templates", "tool", id, tool_record)

    async def find_tool(self, name: str) -> ToolTemplate | None:
        row = await self._db.fetchrow("SELECT * FROM tool_templates WHERE name = $1", name)
        return None if row is None else tool_record(row)

    async def list_tools(self, *, limit: int = 100, offset: int = 0) -> Page[ToolTemplate]:
        return await self._page("tool_templates", tool_record, limit=limit, offset=offset)

    async def update_tool(
        self, id: str, *, name: str | Unset = UNSET, kind: ToolKind | Unset = UNSET, config: Json | Unset = UNSET
    ) -> ToolTemplate:
        changes = changed(name=name, kind=kind if kind is UNSET else ToolKind(kind).value, config=config)
        try:
            return await self._update("tool_templates", "tool", id, _in_json(changes, "config"), tool_record)
        except Conflict as e:
            raise Conflict(f"a tool named {name!r} already exists", reason=e.reason) from e

    async def delete_tool(self, id: str) -> None:
        await self._delete("tool_templates", "tool", id)


def _number_conflict(error: Conflict, number: str) -> Conflict:
    if error.reason == "unique":
        return Conflict(f"phone number {number} already exists", reason="unique")
    return Conflict("inbound_agent_id, outbound_agent_id or sip_trunk_id names no such row", reason=error.reason)
