"""The simulated caller without I/O: what the provider sends when, and what it makes of the replies.

The provider's protocol is a ``CallerWire`` (``wire``: Twilio by default; ``protocols`` has them
all): the session decides what happens when, the wire what it looks like. Messages are ``str``
(text frames) or ``bytes`` (binary frames).

``CallerSession`` is driven by an adapter (``caller.run_call``) with explicit times:

- ``open(now)`` -> the first messages (``connected``, ``start``); ``now`` becomes time 0.
- ``poll(now)`` -> messages due: every media frame whose slot (k * 20 ms) has come, marks whose
  playback point was reached, dtmf, stop. Frames are due on an absolute clock: if the adapter
  polls late, all overdue frames come out at once and count as ``late_frames``.
- ``next_deadline()`` -> when to poll next (next frame slot or next mark due).
- ``receive(message, now)`` -> feed one server message; True if messages are waiting for ``poll``.
- ``closed(now, code)`` / ``failed(now, error)`` -> the socket ended.

The caller's mouth is a small state machine (``Phase``); agent audio is attributed to the reply
of the latest turn whose speech has ended (the greeting before that).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Sequence

from ringline.benchmarks.playback import RATE, PlaybackBuffer
from ringline.benchmarks.recording import build_recording
from ringline.benchmarks.script import CallerScript, CallResult, EndReason, MarkEcho, Turn
from ringline.benchmarks.wire import (
    SILENCE,
    CallerWire,
    Frame,
    Message,
    ServerClear,
    ServerMark,
    ServerMedia,
    TwilioWire,
    WireError,
    split_frames,
)

log = logging.getLogger(__name__)

FRAME_S = 0.020
# Frames, mark echoes and script steps within this much of their time happen now: loop timers
# fire up to ~1 ms early, the adapter serves calls due within EARLY_S / 2 in one wake-up, a
# wake-up that finds nothing due costs as much as a frame, and float sums of times must not push
# a step to the next frame. (Twilio's own timing jitters by far more.)
EARLY_S = 0.002
MAX_PROTOCOL_ERRORS_KEPT = 10


class Phase(enum.Enum):
    WAITING = "waiting"  # before the first utterance
    SPEAKING = "speaking"
    LISTENING = "listening"  # after an utterance: awaiting or hearing its reply, or pausing
    ENDED = "ended"


class CallerSession:
    def __init__(
        self, script: CallerScript, *, url: str = "", record: bool = False, wire: CallerWire | None = None
    ) -> None:
        """``wire``: the provider protocol for this call (default Twilio, with ``script.call_sid``)."""
        self.script = script
        self._utterances = tuple(script.utterances)
        self.wire = wire if wire is not None else TwilioWire.new(script.call_sid)
        self.result = CallResult(url=url, stream_sid=self.wire.stream_id, call_sid=self.wire.call_id)
        self.buffer = PlaybackBuffer(keep_audio=record)
        self._record = record
        self._sent_frames: list[bytes] = []
        self._phase = Phase.WAITING
        self._t0 = 0.0
        self._opened = False
        self._k = 0  # next media frame index
        self._outbox: list[Message] = []
        self._pending_marks: list[MarkEcho] = []  # in buffer order, not yet echoed
        self._next_utt = 0  # index of the next utterance to speak
        self._frames: Sequence[Frame] = ()  # wire frames of the utterance being spoken
        self._frame_audio: tuple[bytes, ...] = ()  # the same frames raw, for the recording
        self._pos = 0  # next frame of it (dtmf digits first)
        self._turn: Turn | None = None  # the turn being spoken
        self._reply = self.result.greeting  # the reply agent audio is attributed to
        self._reply_turn: Turn | None = None  # the turn that reply answers (None: greeting)
        self._listen_since = 0.0  # speech end of the reply's turn (0 for the greeting)
        self._talked_over: Turn | None = None  # a talked-over turn whose agent_stop_ms is pending
        self._end_s = script.reply_end_silence_ms / 1000.0

    # -- state ---------------------------------------------------------------------------------

    @property
    def phase(self) -> Phase:
        return self._phase

    @property
    def done(self) -> bool:
        return self._phase is Phase.ENDED

    def _set_phase(self, phase: Phase) -> None:
        log.debug("caller %s: %s -> %s", self.result.call_sid, self._phase.value, phase.value)
        self._phase = phase

    # -- driving -------------------------------------------------------------------------------

    def open(self, now: float) -> list[Message]:
        self._t0 = now
        self._opened = True
        return list(self.wire.open(self.script.custom_parameters))

    def next_deadline(self) -> float:
        deadline = self._k * FRAME_S
        mark_due = self.buffer.next_mark_due()
        if mark_due is not None and mark_due < deadline:
            deadline = mark_due
        return self._t0 + deadline

    def poll(self, now: float) -> list[Message]:
        t = now - self._t0
        out = self._outbox
        self._outbox = []
        if self._phase is Phase.ENDED:
            return out
        self._echo(self.buffer.due_marks(t + EARLY_S), t, out)
        self._check_agent_stopped(t)
        self._check_reply_over(t)
        while self._k * FRAME_S <= t + EARLY_S:
            self._advance_script(t, out)
            if self._phase is Phase.ENDED:
                break
            self._send_frame(t, out)
        return out

    def receive(self, message: Message, now: float) -> bool:
        if self._phase is Phase.ENDED:
            return False
        t = now - self._t0
        try:
            event = self.wire.parse(message)
        except WireError as exc:
            self.protocol_error(str(exc))
            return False
        if isinstance(event, ServerMedia):
            self._count("media")
            self._on_media(event.payload, t)
        elif isinstance(event, ServerMark):
            self._count("mark")
            self._reply.marks += 1
            self._pending_marks.append(MarkEcho(event.name, t, max(t, self.buffer.end_time)))
            self._echo(self.buffer.mark(event.name, t), t, self._outbox)
        elif isinstance(event, ServerClear):
            self._count("clear")
            self.result.clears += 1
            self._reply.cleared = True
            cuts = not self.buffer.idle(t)  # else the audio had already played out
            pending = self.buffer.clear(t)
            if self.wire.marks_echoed_on_clear:
                self._echo(pending, t, self._outbox)
            else:  # never acknowledged: recorded without echoed_at
                self.result.marks.extend(self._pending_marks[: len(pending)])
                del self._pending_marks[: len(pending)]
            self._outbox.extend(self.wire.cleared())
            self._check_agent_stopped(t, cleared=cuts)
        return bool(self._outbox)

    def closed(self, now: float, code: int | None) -> None:
        """The socket closed (by the server, unless we hung up first)."""
        self.result.close_code = code
        if self.result.ended_by is None:
            self.result.ended_by = EndReason.SERVER_CLOSED
        self._finish(now - self._t0)

    def failed(self, now: float, error: str) -> None:
        self.result.error = error
        if self.result.ended_by is None:
            self.result.ended_by = EndReason.ERROR
        self._finish(now - self._t0 if self._opened else 0.0)

    def finish(self) -> CallResult:
        """The result; builds the recording if asked for. Call once the call is over."""
        if self._pending_marks:  # placed but never echoed (the call ended first)
            self.result.marks.extend(self._pending_marks)
            self._pending_marks = []
        if self._record and self.result.recording is None:
            agent = [(s.start, s.audio) for s in self.buffer.segments if s.audio is not None]
            self.result.recording = build_recording(self._sent_frames, agent)
        return self.result

    # -- inbound -------------------------------------------------------------------------------

    def _count(self, event: str) -> None:
        events = self.result.events
        events[event] = events.get(event, 0) + 1

    def protocol_error(self, message: str) -> None:
        """Record a malformed server message (the call goes on)."""
        self.result.protocol_error_count += 1
        if len(self.result.protocol_errors) < MAX_PROTOCOL_ERRORS_KEPT:
            self.result.protocol_errors.append(message)

    def _on_media(self, payload: bytes, t: float) -> None:
        reply = self._reply
        buffer = self.buffer
        self._check_agent_stopped(t)
        if reply.last_at is None:
            reply.first_at = t
            turn = self._reply_turn
            if turn is not None:
                turn.answered = t - self._listen_since <= self.script.reply_timeout_s
        else:
            gap = t - reply.last_at
            if gap * 1000.0 > reply.max_gap_ms:
                reply.max_gap_ms = gap * 1000.0
            if gap > 0.060:
                reply.gaps_over_60ms += 1
            if not reply.cleared and buffer.end_time < t:
                dry = (t - buffer.end_time) * 1000.0
                reply.underrun_ms += dry
                reply.max_underrun_ms = max(reply.max_underrun_ms, dry)
        reply.ended_at = None  # more audio: the reply goes on
        buffer.push(payload, t)
        duration = len(payload) / RATE
        reply.last_at = t
        reply.last_duration_s = duration
        reply.audio_s += duration
        reply.messages += 1

    def _echo(self, names: list[str], t: float, out: list[Message]) -> None:
        for name in names:
            out.extend(self.wire.mark_played(name))
            record = self._pending_marks.pop(0)
            record.echoed_at = t
            self.result.marks.append(record)

    def _check_agent_stopped(self, t: float, *, cleared: bool = False) -> None:
        """Settle the pending talked-over turn once the agent audio it talked over has stopped.

        The stop is when playback ended (``buffer.end_time``): for a clear that cut audio
        (``cleared``), its arrival to the sample; otherwise the moment the buffer ran dry, however
        much later that is noticed. A cut is settled without asking ``idle``: the cut end is
        rounded to whole samples and can land a float's hair after ``t``.
        """
        turn = self._talked_over
        if turn is not None and (cleared or self.buffer.idle(t)):
            stopped_at = min(self.buffer.end_time, t)
            turn.agent_stop_ms = max(0.0, stopped_at - turn.speech_start) * 1000.0
            turn.agent_cleared = cleared
            self._talked_over = None

    def _check_reply_over(self, t: float) -> None:
        reply = self._reply
        due = t + EARLY_S
        if reply.last_at is None or reply.ended_at is not None or not self.buffer.idle(due):
            return
        quiet_from = reply.last_at + self._end_s
        if due >= quiet_from:
            reply.played_until = self.buffer.end_time
            reply.ended_at = max(reply.played_until, quiet_from)

    # -- outbound ------------------------------------------------------------------------------

    def _advance_script(self, t: float, out: list[Message]) -> None:
        """Start the next utterance or hang up, if it is time (between frames)."""
        due = t + EARLY_S
        if due >= self.script.max_call_s:
            self._hang_up(t, EndReason.MAX_DURATION, out)
        elif self._phase is Phase.SPEAKING:
            return
        elif self._next_utt < len(self._utterances):
            start = self._next_start()
            if start is not None and due >= start:
                self._begin_utterance(t)
        else:
            self._maybe_hang_up(t, due, out)

    def _next_start(self) -> float | None:
        """When the next utterance is due, if that is known yet."""
        script = self.script
        utt = self._utterances[self._next_utt]
        reply = self._reply
        if self._next_utt == 0 and not script.wait_for_greeting:
            return script.pause_ms / 1000.0
        if utt.barge_in_after_ms is not None and reply.first_at is not None:
            return reply.first_at + utt.barge_in_after_ms / 1000.0
        if reply.ended_at is not None:
            assert reply.played_until is not None
            return max(reply.ended_at, reply.played_until + script.pause_ms / 1000.0)
        if reply.first_at is None:
            return self._listen_since + script.reply_timeout_s
        return None

    def _maybe_hang_up(self, t: float, due: float, out: list[Message]) -> None:
        script = self.script
        reply = self._reply
        if script.hangup_mid_reply_ms is not None and reply.first_at is not None:
            if due >= reply.first_at + script.hangup_mid_reply_ms / 1000.0:
                self._hang_up(t, EndReason.HANGUP_MID_REPLY, out)
            return
        if reply.ended_at is not None:
            done_at = reply.ended_at
        elif reply.first_at is None:
            done_at = self._listen_since + script.reply_timeout_s
        else:
            return
        if script.hangup_after_last_reply:
            if due >= done_at:
                self._hang_up(t, EndReason.HANGUP, out)
        elif due >= done_at + script.reply_timeout_s:
            self._hang_up(t, EndReason.HANGUP, out)

    def _begin_utterance(self, t: float) -> None:
        utt = self._utterances[self._next_utt]
        talked_over = not self.buffer.idle(t)
        turn = Turn(index=self._next_utt, text=utt.text, speech_start=t, talked_over=talked_over)
        self.result.turns.append(turn)
        if talked_over:
            self._talked_over = turn
        self._turn = turn
        self._frames = self.wire.frames(utt.audio)
        self._frame_audio = split_frames(utt.audio) if self._record else ()
        self._pos = -len(utt.dtmf)
        self._next_utt += 1
        self._set_phase(Phase.SPEAKING)

    def _send_frame(self, t: float, out: list[Message]) -> None:
        k = self._k
        lag = t - k * FRAME_S
        if lag >= FRAME_S:
            self.result.late_frames += 1
        if lag * 1000.0 > self.result.max_send_lag_ms:
            self.result.max_send_lag_ms = lag * 1000.0
        wire = self.wire
        payload, audio = wire.silence, SILENCE
        if self._phase is Phase.SPEAKING:
            pos = self._pos
            if pos < 0:
                utt = self._utterances[self._next_utt - 1]
                out.extend(wire.dtmf(utt.dtmf[len(utt.dtmf) + pos]))
            elif pos < len(self._frames):
                payload = self._frames[pos]
                if self._record:
                    audio = self._frame_audio[pos]
            self._pos = pos + 1
        out.extend(wire.media(k, payload))
        if self._record:
            self._sent_frames.append(audio)
        self._k = k + 1
        self.result.frames_sent += 1
        if self._phase is Phase.SPEAKING and self._pos >= len(self._frames):
            self._end_utterance(t)

    def _end_utterance(self, t: float) -> None:
        turn = self._turn
        assert turn is not None
        turn.speech_end = t
        self._reply = turn.reply
        self._reply_turn = turn
        self._listen_since = t
        self._turn = None
        self._set_phase(Phase.LISTENING)

    def _hang_up(self, t: float, reason: EndReason, out: list[Message]) -> None:
        self.result.ended_by = reason
        out.extend(self.wire.stop())
        self._finish(t)

    def _finish(self, t: float) -> None:
        if self._phase is Phase.ENDED:
            return
        self.result.duration_s = t
        self._set_phase(Phase.ENDED)
