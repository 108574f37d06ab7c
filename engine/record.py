"""What is kept of a call once it is over."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from ringline.engine.metrics import TurnMetrics


class EndReason(enum.Enum):
    CALLER_HANGUP = "caller_hangup"
    """The provider said the stream stopped (the caller hung up)."""
    AGENT_HANGUP = "agent_hangup"
    """The agent ended the call (``end_call`` tool)."""
    TRANSPORT_CLOSED = "transport_closed"
    """The media socket closed without a stop (network drop, provider crash)."""
    PROTOCOL_ERROR = "protocol_error"
    """The provider kept sending malformed messages."""
    SERVER_SHUTDOWN = "server_shutdown"
    API_ENDED = "api_ended"
    """An ``end-call`` control command (or ``say`` with ``end_after``)."""
    TRANSFERRED = "transferred"
    """Handed over to another number or SIP URI (``transfer``); ``end_detail`` is the destination."""
    SILENCE_TIMEOUT = "silence_timeout"
    """The caller stayed silent through every re-engagement (``silence``): the agent said goodbye."""
    MAX_DURATION = "max_duration"
    """The call reached ``max_duration_s``: the agent said goodbye."""
    VOICEMAIL = "voicemail"
    """An answering machine answered (outbound call): the message was left, or the agent hung up;
    ``end_detail`` says which and why the call was judged a machine."""
    ERROR = "error"
    """A bug or an unrecoverable provider failure; see the log for the call id."""


@dataclass(slots=True)
class CallRecord:
    call_id: str
    agent: str
    started_at: float
    ended_at: float | None = None
    end_reason: EndReason | None = None
    end_detail: str = ""
    transcript: list[dict[str, Any]] = field(default_factory=list)
    turns: list[TurnMetrics] = field(default_factory=list)
    faults: list[dict[str, Any]] = field(default_factory=list)
    """Provider failures during the call: ``{"at", "stage", "detail"}``, in order."""
    preemptive: dict[str, int] = field(default_factory=lambda: {"started": 0, "used": 0, "discarded": 0})
    """Replies prepared before the end of the caller's turn, and what became of them."""
    protocol_errors: int = 0
    underruns: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: what the API returns and webhooks carry."""
        return {
            "call_id": self.call_id,
            "agent": self.agent,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "end_reason": None if self.end_reason is None else self.end_reason.value,
            "end_detail": self.end_detail,
            "transcript": list(self.transcript),
            "turns": [turn.breakdown_ms() for turn in self.turns],
            "faults": list(self.faults),
            "preemptive": dict(self.preemptive),
            "protocol_errors": self.protocol_errors,
            "underruns": self.underruns,
        }
