"""What the store keeps: frozen, slotted records. Timestamps are timezone-aware UTC datetimes; JSON documents
are plain ``dict``/``list`` values that the store serializes and does not interpret."""

from __future__ import annotations

import enum
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Generic, TypeAlias, TypeVar

from ringline.api.scopes import Scope  # noqa: F401  (re-exported: the store keeps scopes)

T = TypeVar("T")
Json: TypeAlias = dict[str, Any]


class Unset(enum.Enum):
    """The default of update arguments: leave the field as it is (``None`` means set it to NULL)."""

    UNSET = "unset"


UNSET = Unset.UNSET


def utcnow() -> datetime:
    """The default wall clock of the store and the journal."""
    return datetime.now(UTC)


def new_id(prefix: str) -> str:
    """A random id such as ``agt_3f2a...`` (the prefix tells what it names)."""
    return f"{prefix}_{secrets.token_hex(12)}"


class NumberProvider(enum.StrEnum):
    TWILIO = "twilio"
    TELNYX = "telnyx"
    PLIVO = "plivo"
    VONAGE = "vonage"
    EXOTEL = "exotel"
    SIP = "sip"


class ToolKind(enum.StrEnum):
    FUNCTION = "function"
    END_CALL = "end_call"
    TRANSFER_CALL = "transfer_call"
    SEND_DTMF = "send_dtmf"


class Direction(enum.StrEnum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"


class CallStatus(enum.StrEnum):
    QUEUED = "queued"
    RINGING = "ringing"
    IN_PROGRESS = "in_progress"
    FORWARDING = "forwarding"
    ENDED = "ended"


class Role(enum.StrEnum):
    USER = "user"
    ASSISTANT = "assistant"
    TOOL = "tool"
    SYSTEM = "system"


class OutboxStatus(enum.StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"
    """Given up on after the last retry."""


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    name: str
    prefix: str
    """The first characters of the secret, shown to users to tell keys apart."""
    key_hash: str
    """SHA-256 hex of the secret (random 32-byte tokens: a fast hash is right)."""
    scopes: frozenset[str]
    created_at: datetime
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Agent:
    id: str
    name: str
    enabled: bool
    config: Json
    """The agent's whole configuration as validated by the API; the store only keeps it."""
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class SipTrunk:
    id: str
    name: str
    config: Json
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class PhoneNumber:
    id: str
    number: str
    """E.164, unique."""
    provider: NumberProvider
    inbound_agent_id: str | None
    outbound_agent_id: str | None
    sip_trunk_id: str | None
    label: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class ToolTemplate:
    id: str
    name: str
    """Unique."""
    kind: ToolKind
    config: Json
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Call:
    id: str
    agent_id: str | None
    direction: Direction
    status: CallStatus
    from_number: str
    to_number: str
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    """When the call was answered (first entered ``in_progress``)."""
    ended_at: datetime | None = None
    end_reason: str | None = None
    duration_s: float = 0.0
    """Answered to ended; 0 for calls never answered."""
    node: str | None = None
    """The engine process that owns the call while it is live."""
    metadata: Json = field(default_factory=dict)
    variables: Json = field(default_factory=dict)
    latency: list[Any] = field(default_factory=list)
    """Per-turn latency breakdowns."""
    analysis: Json | None = None
    recording_path: str | None = None


@dataclass(frozen=True, slots=True)
class CallMessage:
    """One transcript line."""

    call_id: str
    seq: int
    role: Role
    content: str
    at: datetime
    interrupted: bool = False
    extra: Json | None = None
    """Tool calls and results, and whatever else the line needs."""


@dataclass(frozen=True, slots=True)
class CallEvent:
    """One entry of a call's live event log."""

    call_id: str
    seq: int
    type: str
    payload: Json
    at: datetime


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    """A webhook to send, written in the same transaction as the change that caused it.

    Given to a call's method, ``call_id`` is that call's (whatever was set here)."""

    type: str
    payload: Json
    url: str
    call_id: str | None = None
    next_attempt_at: datetime | None = None
    """Not before (default: at once)."""


OutboxArg: TypeAlias = Sequence[OutboxEvent] | Callable[[Call], Sequence[OutboxEvent]]
"""Events to enqueue with a call's change: a list, or a function of the changed call (run inside the
transaction, so the payload can carry the new state; if it raises, nothing is written)."""


@dataclass(frozen=True, slots=True)
class OutboxItem:
    id: int
    call_id: str | None
    seq: int
    """1, 2, 3 ... per call (0 for events of no call): deliveries of one call go out in this order."""
    type: str
    payload: Json
    url: str
    status: OutboxStatus
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None


@dataclass(frozen=True, slots=True)
class DeliveryAttempt:
    at: datetime
    status_code: int | None = None
    """The HTTP status, or ``None`` when no response came."""
    error: str | None = None
    duration_ms: float | None = None


@dataclass(frozen=True, slots=True)
class CallFilter:
    agent_id: str | None = None
    status: CallStatus | None = None
    direction: Direction | None = None
    number: str | None = None
    """Matches either end of the call."""
    created_from: datetime | None = None
    """Inclusive."""
    created_to: datetime | None = None
    """Exclusive."""


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: tuple[T, ...]
    total: int
    """All rows that match, whatever the limit and offset."""


@dataclass(frozen=True, slots=True)
class Usage:
    agent_id: str | None
    day: date
    """UTC date the calls were created."""
    calls: int
    minutes: float
