"""What a media transport reports about the call, whatever the provider."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class CallStarted:
    call_id: str
    stream_id: str
    parameters: dict[str, str] = field(default_factory=dict)
    """Provider-passed custom parameters (agent, variables, ...)."""


@dataclass(frozen=True, slots=True)
class AudioReceived:
    payload: bytes
    """Audio in the transport's wire format (e.g. 160 bytes of mu-law 8 kHz)."""


@dataclass(frozen=True, slots=True)
class DtmfReceived:
    digit: str


@dataclass(frozen=True, slots=True)
class MarkPlayed:
    """The provider has played all audio sent before the mark of this name."""

    name: str


@dataclass(frozen=True, slots=True)
class CallStopped:
    """The provider ended the stream (the caller hung up or the call was redirected)."""


InboundEvent = CallStarted | AudioReceived | DtmfReceived | MarkPlayed | CallStopped
