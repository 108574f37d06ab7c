"""What happens on a call, as it happens.

A call emits ``CallEvent``s to its observers: the live-events socket, the journal that writes the
transcript to the database as the call goes, webhooks. Events are per turn, never per frame, so
emitting is cheap; observers must not block or raise (an observer that raises is logged and the
call goes on).

Event types and their ``data``:

- ``status``: ``{"status"}``, one of ``CallStatus`` values.
- ``transcript``: ``{"role": "user", "text", "final"}``, every STT result (interim and final).
- ``message``: a settled conversation message, in the order they settled: ``{"role", "content",
  "interrupted", "tool_calls", "tool_call_id"}``. A caller's turn settles when it is committed,
  an agent's reply once it has been heard out or cut short (``content`` is what was heard).
- ``speech``: ``{"state": "started" | "stopped", "interrupted"}``, the agent's audio.
- ``tool_call``: ``{"id", "name", "arguments"}``; ``tool_result``: ``{"id", "name", "result"}``.
- ``latency``: ``{"turn", ...}`` the turn's per-stage breakdown in ms after the caller stopped.
- ``dtmf``: ``{"digit"}`` a key the caller pressed, or ``{"sent"}`` keys the agent pressed (``send_dtmf``);
  ``fault``: ``{"stage", "detail"}``; ``control``: ``{"command", ...}``.
- ``transfer_failed``: ``{"destination", "detail"}`` the provider refused a transfer; the call goes on
  (a ``fault`` with stage ``transfer`` comes with it).
- ``voicemail``: ``{"stage", "reason", "at_s"}`` answering-machine detection on an outbound call:
  stage ``human``, ``unknown`` or ``machine`` (the verdict), then for a machine ``greeting_ended``
  (``reason`` ``beep``, ``silence`` or ``timeout``); ``at_s`` is seconds of the callee's audio.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger(__name__)


class EventType(enum.StrEnum):
    STATUS = "status"
    TRANSCRIPT = "transcript"
    MESSAGE = "message"
    SPEECH = "speech"
    TOOL_CALL = "tool_call"
    TOOL_RESULT = "tool_result"
    LATENCY = "latency"
    DTMF = "dtmf"
    FAULT = "fault"
    CONTROL = "control"
    TRANSFER_FAILED = "transfer_failed"
    VOICEMAIL = "voicemail"


@dataclass(frozen=True, slots=True)
class CallEvent:
    call_id: str
    seq: int
    """1, 2, ... per call: the order observers must keep."""
    type: EventType
    at: float
    """Wall-clock time (seconds since the epoch)."""
    data: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "call_id": self.call_id,
            "seq": self.seq,
            "type": self.type.value,
            "at": self.at,
            "data": dict(self.data),
        }


class CallObserver(Protocol):
    def on_event(self, event: CallEvent) -> None:
        """Called on the event loop, in order; must return at once (queue work, don't do it)."""
        ...


class EventLog:
    """A call's event numbering and its observers."""

    def __init__(self, call_id: str) -> None:
        self._call_id = call_id
        self._seq = 0
        self._observers: list[CallObserver] = []

    def observe(self, observer: CallObserver) -> None:
        self._observers.append(observer)

    def unobserve(self, observer: CallObserver) -> None:
        if observer in self._observers:
            self._observers.remove(observer)

    def emit(self, type: EventType, **data: Any) -> CallEvent:
        self._seq += 1
        event = CallEvent(self._call_id, self._seq, type, time.time(), data)
        for observer in tuple(self._observers):
            try:
                observer.on_event(event)
            except Exception:
                log.exception("call observer %r failed on %s", observer, type.value, extra={"call_id": self._call_id})
        return event
