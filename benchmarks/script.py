"""What a simulated caller says and does (the script), and what happened (the results).

All times in results are seconds since the caller sent its ``start`` message (frame 0 of the
caller's media clock), measured on the clock given to ``run_call``.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ringline.benchmarks.recording import Recording


@dataclass(frozen=True, slots=True)
class Utterance:
    audio: bytes  # mu-law 8 kHz; sent as 20 ms frames, the last one padded with silence
    text: str = ""
    # Speak this long after the previous reply's first audio arrived (talking over the agent),
    # instead of ``pause_ms`` after that reply finished playing.
    barge_in_after_ms: float | None = None
    dtmf: str = ""  # digits sent as dtmf events (one per 20 ms frame) before the audio


@dataclass(frozen=True, slots=True)
class CallerScript:
    utterances: tuple[Utterance, ...] | list[Utterance]
    pause_ms: float = 400.0  # end of a reply's playback -> next utterance
    wait_for_greeting: bool = False  # the agent speaks first: hear it out before utterance 0
    reply_timeout_s: float = 10.0  # last speech frame -> first reply audio, else unanswered
    reply_end_silence_ms: float = 300.0  # a reply is over once played out and this quiet
    custom_parameters: dict[str, str] = field(default_factory=dict)
    call_sid: str | None = None  # start.callSid (e.g. a call the API placed); None: a new random CA... sid
    # After the last reply: send stop and close. If False, wait up to reply_timeout_s for the
    # server to close the socket (the agent hangs up), then hang up anyway.
    hangup_after_last_reply: bool = True
    # Send stop this long after the last utterance's reply audio starts (hang up mid-reply).
    hangup_mid_reply_ms: float | None = None
    max_call_s: float = 300.0  # hard bound: hang up when the call has lasted this long


class EndReason(enum.StrEnum):
    HANGUP = "hangup"  # the caller sent stop after the script
    HANGUP_MID_REPLY = "hangup_mid_reply"
    MAX_DURATION = "max_duration"  # the caller sent stop at max_call_s
    SERVER_CLOSED = "server_closed"  # the server closed the socket first
    ERROR = "error"  # connecting or the socket failed; see CallResult.error


@dataclass(slots=True)
class Reply:
    """The agent audio attributed to one caller turn (or to the greeting)."""

    first_at: float | None = None  # arrival of the first media message
    last_at: float | None = None  # arrival of the last media message
    last_duration_s: float = 0.0  # audio in that last message
    audio_s: float = 0.0  # audio received (seconds at 8 kHz)
    messages: int = 0
    max_gap_ms: float = 0.0  # longest interval between consecutive media messages
    gaps_over_60ms: int = 0  # intervals between consecutive media messages over 60 ms
    underrun_ms: float = 0.0  # silence heard inside the reply: playback ran dry before more came
    max_underrun_ms: float = 0.0
    played_until: float | None = None  # when its playback ended (or was cleared)
    ended_at: float | None = None  # when it was judged over (played out + reply_end_silence_ms)
    cleared: bool = False  # a clear arrived while it was the reply being heard
    marks: int = 0  # marks the server placed in it

    @property
    def span_s(self) -> float | None:
        """First message arrival -> last message arrival + that message's audio."""
        if self.first_at is None or self.last_at is None:
            return None
        return self.last_at + self.last_duration_s - self.first_at


@dataclass(slots=True)
class Turn:
    index: int
    text: str
    speech_start: float  # send time of the first speech frame
    talked_over: bool  # agent audio was playing when the speech started
    speech_end: float | None = None  # send time of the last speech frame
    answered: bool = False  # reply audio arrived within reply_timeout_s of speech_end
    # talked_over turns: speech start -> the agent audio the caller hears stopped (a clear's
    # arrival, or the playback buffer running dry); None if neither happened before the call ended
    agent_stop_ms: float | None = None
    agent_cleared: bool = False  # talked_over turns: that stop was a clear cutting audio still queued
    reply: Reply = field(default_factory=Reply)

    @property
    def latency_ms(self) -> float | None:
        """Last speech frame sent -> first reply media received."""
        if self.speech_end is None or self.reply.first_at is None:
            return None
        return (self.reply.first_at - self.speech_end) * 1000.0


@dataclass(slots=True)
class MarkEcho:
    name: str
    received_at: float
    due_at: float  # playback point the mark was placed at (received_at if the buffer was idle)
    echoed_at: float | None = None  # None: the call ended before playback reached it


@dataclass(slots=True)
class CallResult:
    url: str
    stream_sid: str
    call_sid: str
    turns: list[Turn] = field(default_factory=list)
    greeting: Reply = field(default_factory=Reply)  # agent audio before the first turn ended
    events: dict[str, int] = field(default_factory=dict)  # server messages received, by event
    clears: int = 0
    marks: list[MarkEcho] = field(default_factory=list)
    frames_sent: int = 0
    late_frames: int = 0  # media frames sent a frame period (20 ms) or more after their slot
    max_send_lag_ms: float = 0.0  # worst lateness of a media frame against its slot
    ended_by: EndReason | None = None
    close_code: int | None = None
    error: str | None = None
    protocol_errors: list[str] = field(default_factory=list)  # first few malformed messages
    protocol_error_count: int = 0
    duration_s: float = 0.0  # start message -> end of the call
    recording: Recording | None = None

    @property
    def answered(self) -> int:
        return sum(t.answered for t in self.turns)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, without the recording; turns carry latency_ms."""
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "recording"}
        d["turns"] = [asdict(t) | {"latency_ms": t.latency_ms} for t in self.turns]
        d["greeting"] = asdict(self.greeting)
        d["marks"] = [asdict(m) for m in self.marks]
        d["events"] = dict(self.events)
        d["protocol_errors"] = list(self.protocol_errors)
        d["ended_by"] = None if self.ended_by is None else self.ended_by.value
        return d
