"""The store interface the API and the engine program against. ``SqlStore`` implements it on SQLite and on
PostgreSQL; a test may implement what it needs of it.

Conventions: ids are strings the store makes (``agt_...``) unless given; ``get_*`` raises ``NotFound``,
``find_*`` returns ``None``; ``update_*`` takes only the fields to change (``UNSET`` leaves one as it is) and
returns the row as it now is; lists are newest first and return a ``Page`` with the total; unique and
foreign-key violations raise ``Conflict``; any other database failure raises ``StoreError``. Methods that change
a call take ``outbox=``: webhook events written in the same transaction as the change."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any, Protocol

from ringline.api.store.analysis import AnalysisTemplate
from ringline.api.store.records import (
    UNSET,
    Agent,
    ApiKey,
    Call,
    CallEvent,
    CallFilter,
    CallMessage,
    CallStatus,
    DeliveryAttempt,
    Direction,
    Json,
    NumberProvider,
    OutboxArg,
    OutboxEvent,
    OutboxItem,
    OutboxStatus,
    Page,
    PhoneNumber,
    Scope,
    SipTrunk,
    ToolKind,
    ToolTemplate,
    Unset,
    Usage,
)


class JournalSink(Protocol):
    """Where a ``CallJournal`` writes its batches."""

    async def append_journal(self, messages: Sequence[CallMessage], events: Sequence[CallEvent]) -> None:
        """One transaction; a line already written (same call and seq) is skipped, so a retry never duplicates."""
        ...


class KeyStore(Protocol):
    async def create_api_key(
        self, name: str, prefix: str, key_hash: str, scopes: Iterable[Scope | str], *, id: str | None = None
    ) -> ApiKey: ...
    async def get_api_key(self, id: str) -> ApiKey: ...
    async def find_api_key(self, key_hash: str) -> ApiKey | None:
        """By the SHA-256 of the secret, revoked or not (one indexed query)."""
        ...

    async def list_api_keys(self, *, limit: int = 100, offset: int = 0) -> Page[ApiKey]: ...
    async def touch_api_key(self, id: str, at: datetime | None = None) -> None: ...
    async def revoke_api_key(self, id: str, at: datetime | None = None) -> ApiKey: ...
    async def delete_api_key(self, id: str) -> None: ...


class ResourceStore(Protocol):
    async def create_agent(self, name: str, config: Json, *, enabled: bool = True, id: str | None = None) -> Agent: ...
    async def get_agent(self, id: str) -> Agent: ...
    async def list_agents(self, *, enabled: bool | None = None, limit: int = 100, offset: int = 0) -> Page[Agent]: ...
    async def update_agent(
        self, id: str, *, name: str | Unset = UNSET, enabled: bool | Unset = UNSET, config: Json | Unset = UNSET
    ) -> Agent: ...
    async def delete_agent(self, id: str) -> None:
        """``Conflict`` while a phone number points at the agent."""
        ...

    async def create_sip_trunk(self, name: str, config: Json, *, id: str | None = None) -> SipTrunk: ...
    async def get_sip_trunk(self, id: str) -> SipTrunk: ...
    async def list_sip_trunks(self, *, limit: int = 100, offset: int = 0) -> Page[SipTrunk]: ...
    async def update_sip_trunk(
        self, id: str, *, name: str | Unset = UNSET, config: Json | Unset = UNSET
    ) -> SipTrunk: ...
    async def delete_sip_trunk(self, id: str) -> None: ...

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
        """``Conflict`` if the number exists or a referenced agent or trunk does not."""
        ...

    async def get_number(self, id: str) -> PhoneNumber: ...
    async def find_number(self, number: str) -> PhoneNumber | None:
        """By the E.164 number itself (routing an inbound call)."""
        ...

    async def list_numbers(
        self, *, agent_id: str | None = None, limit: int = 100, offset: int = 0
    ) -> Page[PhoneNumber]: ...
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
    ) -> PhoneNumber: ...
    async def delete_number(self, id: str) -> None: ...

    async def create_tool(self, name: str, kind: ToolKind, config: Json, *, id: str | None = None) -> ToolTemplate: ...
    async def get_tool(self, id: str) -> ToolTemplate: ...
    async def find_tool(self, name: str) -> ToolTemplate | None: ...
    async def list_tools(self, *, limit: int = 100, offset: int = 0) -> Page[ToolTemplate]: ...
    async def update_tool(
        self, id: str, *, name: str | Unset = UNSET, kind: ToolKind | Unset = UNSET, config: Json | Unset = UNSET
    ) -> ToolTemplate: ...
    async def delete_tool(self, id: str) -> None: ...


class CallStore(JournalSink, Protocol):
    async def create_call(
        self,
        direction: Direction,
        *,
        id: str | None = None,
        agent_id: str | None = None,
        status: CallStatus = CallStatus.QUEUED,
        from_number: str = "",
        to_number: str = "",
        node: str | None = None,
        metadata: Json | None = None,
        variables: Json | None = None,
        outbox: OutboxArg = (),
    ) -> Call: ...
    async def get_call(self, id: str) -> Call: ...
    async def list_calls(
        self, filter: CallFilter | None = None, *, limit: int = 100, offset: int = 0
    ) -> Page[Call]: ...
    async def update_call_status(
        self, id: str, status: CallStatus, *, at: datetime | None = None, outbox: OutboxArg = ()
    ) -> Call:
        """To a live status; the first ``in_progress`` sets ``started_at``; ``Conflict`` once ended."""
        ...

    async def end_call(self, id: str, reason: str, *, at: datetime | None = None, outbox: OutboxArg = ()) -> Call:
        """Sets ``ended_at``, ``end_reason``, ``duration_s``; ``Conflict`` if already ended."""
        ...

    async def update_call(
        self,
        id: str,
        *,
        agent_id: str | None | Unset = UNSET,
        metadata: Json | Unset = UNSET,
        variables: Json | Unset = UNSET,
        latency: list[Any] | Unset = UNSET,
        analysis: Json | None | Unset = UNSET,
        recording_path: str | None | Unset = UNSET,
        outbox: OutboxArg = (),
    ) -> Call: ...
    async def delete_call(self, id: str) -> None: ...
    async def mark_live_calls_ended(
        self,
        reason: str = "engine_restart",
        *,
        node: str | None = None,
        outbox: Callable[[Call], Sequence[OutboxEvent]] | None = None,
    ) -> int:
        """Start-up recovery: end every call not ended (of ``node``, if given); how many were."""
        ...

    async def list_messages(self, call_id: str) -> list[CallMessage]: ...
    async def list_events(self, call_id: str, *, after_seq: int = 0, limit: int = 1000) -> list[CallEvent]: ...
    async def usage(self, since: datetime, until: datetime, *, agent_id: str | None = None) -> list[Usage]:
        """Calls and minutes per agent per UTC day of creation, for calls created in ``[since, until)``."""
        ...


class OutboxStore(Protocol):
    async def enqueue(self, events: Sequence[OutboxEvent]) -> list[OutboxItem]: ...
    async def claim_due(self, now: datetime, limit: int = 50, *, lease_s: float = 60.0) -> list[OutboxItem]:
        """Due events, only the oldest pending of each call; each is leased until ``now + lease_s``."""
        ...

    async def mark_delivered(self, id: int, attempt: DeliveryAttempt) -> OutboxItem: ...
    async def mark_retry(self, id: int, attempt: DeliveryAttempt, next_attempt_at: datetime) -> OutboxItem: ...
    async def mark_failed(self, id: int, attempt: DeliveryAttempt) -> OutboxItem: ...
    async def get_delivery(self, id: int) -> OutboxItem: ...
    async def list_deliveries(
        self, *, call_id: str | None = None, status: OutboxStatus | None = None, limit: int = 100, offset: int = 0
    ) -> Page[OutboxItem]: ...
    async def list_attempts(self, outbox_id: int) -> list[DeliveryAttempt]: ...


class AnalysisTemplateStore(Protocol):
    async def create_analysis_template(self, name: str, config: Json, *, id: str | None = None) -> AnalysisTemplate:
        """``Conflict`` if a template of that name exists."""
        ...

    async def get_analysis_template(self, id: str) -> AnalysisTemplate: ...
    async def find_analysis_template(self, name: str) -> AnalysisTemplate | None: ...
    async def list_analysis_templates(self, *, limit: int = 100, offset: int = 0) -> Page[AnalysisTemplate]: ...
    async def update_analysis_template(
        self, id: str, *, name: str | Unset = UNSET, config: Json | Unset = UNSET
    ) -> AnalysisTemplate: ...
    async def delete_analysis_template(self, id: str) -> None: ...


class Store(KeyStore, ResourceStore, CallStore, OutboxStore, AnalysisTemplateStore, Protocol):
    """Everything the control API keeps."""

    @property
    def dialect(self) -> str: ...
    async def open(self) -> None:
        """Apply missing migrations (``open_store`` does this)."""
        ...

    async def schema_version(self) -> int: ...
    async def close(self) -> None: ...
