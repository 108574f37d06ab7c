"""Turn-taking: who has the floor, as an explicit state machine. Sans-IO.

Inputs are VAD speech edges, STT transcripts and playout progress, all stamped with media time
(seconds of inbound audio), plus ``tick(now)`` once per inbound frame. Each input returns the
actions the call must carry out, in order.

    LISTENING --speech--> USER_SPEAKING --silence long enough + final--> THINKING
    THINKING --first reply audio--> AGENT_SPEAKING --reply heard--> LISTENING
    THINKING --caller speaks (min_speech)--> USER_SPEAKING       (reply abandoned unheard)
    AGENT_SPEAKING --caller speaks (min_speech[, min_words])--> INTERRUPTED  (audio stopped)
    INTERRUPTED --words--> USER_SPEAKING                          (reply truncated to what was heard)
    INTERRUPTED --no words after the speech--> AGENT_SPEAKING    (false interruption: resume)
    any --sign_off--> CLOSING                                     (last words: the caller cannot take the floor)
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass

from ringline.config.settings import InterruptionConfig, TurnConfig
from ringline.engine.vad.endpoint import required_silence

log = logging.getLogger(__name__)

_EPSILON = 1e-6
"""Media times are multiples of 20 ms in floating point: compare durations with this slack."""


class TurnState(enum.Enum):
    LISTENING = "listening"
    USER_SPEAKING = "user_speaking"
    THINKING = "thinking"
    AGENT_SPEAKING = "agent_speaking"
    INTERRUPTED = "interrupted"
    CLOSING = "closing"
    """The agent is saying its last words (a limit's goodbye): nothing the caller does changes
    the state, and the call ends once they are heard."""


# -- actions -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Finalize:
    """Ask the STT for a final transcript of the audio so far (the caller paused)."""


@dataclass(frozen=True, slots=True)
class Respond:
    """The caller's turn is over: commit ``text`` as their message and start a reply."""

    text: str


@dataclass(frozen=True, slots=True)
class StopAudio:
    """Barge-in: stop the agent's audio now (clear the provider buffer), keep the reply."""


@dataclass(frozen=True, slots=True)
class ResumeAudio:
    """False interruption: carry on speaking from where the caller stopped hearing."""


@dataclass(frozen=True, slots=True)
class AbandonReply:
    """The caller took the floor: cancel the reply and keep only what they heard of it."""


@dataclass(frozen=True, slots=True)
class Prepare:
    """Preemptive generation: the caller's text is final and they are silent, but the turn has
    not ended yet. Start a reply to ``text`` and hold its audio; a ``Respond`` with the same text
    releases it, ``DropPrepared`` throws it away."""

    text: str


@dataclass(frozen=True, slots=True)
class DropPrepared:
    """The caller went on (or the text changed): the prepared reply is not the answer."""


Action = Finalize | Respond | StopAudio | ResumeAudio | AbandonReply | Prepare | DropPrepared


class TurnTaker:
    def __init__(self, turn: TurnConfig, interruption: InterruptionConfig) -> None:
        self._turn = turn
        self._barge = interruption
        self.state = TurnState.LISTENING
        self._finals: list[str] = []
        self._interim = ""
        self._speaking_since: float | None = None
        """Media time the caller's current speech started; None while they are silent."""
        self._silent_since: float | None = None
        """Media time the caller's last speech ended, while a turn is pending."""
        self._voiced_until = 0.0
        """Media time the caller's last voiced frame ended."""
        self._finals_due = 0
        """Finals asked for (``Finalize``) and not yet received."""
        self._heard_words = False
        """Words were transcribed since the caller started talking over the agent."""
        self._prepared: str | None = None
        """Text a reply is being prepared for (preemptive generation)."""

    def _set_state(self, new: TurnState) -> None:
        log.debug("turn %s -> %s", self.state.value, new.value)
        self.state = new

    @property
    def text(self) -> str:
        """The caller's pending turn so far: finals, then the latest interim."""
        parts = [*self._finals, self._interim] if self._interim else self._finals
        return " ".join(p for p in parts if p)

    # -- inputs -------------------------------------------------------------------------------

    def speech_started(self, at: float) -> list[Action]:
        self._speaking_since = at
        self._silent_since = None
        if self.state is TurnState.LISTENING:
            self._set_state(TurnState.USER_SPEAKING)
        elif self.state is TurnState.INTERRUPTED:
            self._heard_words = False
        return self._drop_prepared()

    def _drop_prepared(self) -> list[Action]:
        if self._prepared is None:
            return []
        self._prepared = None
        return [DropPrepared()]

    def speech_stopped(self, at: float) -> list[Action]:
        self._speaking_since = None
        if self.state in (TurnState.THINKING, TurnState.AGENT_SPEAKING, TurnState.CLOSING):
            # Too short to take the floor ("mm-hm", a cough): not a turn, forget it.
            self._finals.clear()
            self._interim = ""
            return []
        self._silent_since = at
        self._finals_due += 1
        return [Finalize()]

    def transcript(self, text: str, *, final: bool, now: float) -> list[Action]:
        text = text.strip()
        if final:
            self._finals_due = max(0, self._finals_due - 1)
        if self.state is TurnState.CLOSING:
            return []
        if self.state in (TurnState.THINKING, TurnState.AGENT_SPEAKING) and self._speaking_since is None:
            # The late final of a committed turn, or the tail of a sound that did not take the
            # floor: neither belongs to the caller's next turn.
            return []
        if final:
            self._interim = ""
            if text:
                self._finals.append(text)
        else:
            self._interim = text
        if self.state in (TurnState.AGENT_SPEAKING, TurnState.INTERRUPTED) and self._has_words(text):
            self._heard_words = True
        return self.tick(now)

    def tick(self, now: float, voiced_until: float | None = None) -> list[Action]:
        """Called once per inbound frame (and after each transcript) with the media time.

        ``voiced_until`` is where the caller's last voiced frame ended: speech counts toward
        ``min_speech_ms`` only as far as it is voiced, not through the VAD's stop hysteresis.
        Without it, all of the current speech so far counts as voiced.
        """
        if voiced_until is not None:
            self._voiced_until = voiced_until
        elif self._speaking_since is not None:
            self._voiced_until = now
        state = self.state
        if state is TurnState.USER_SPEAKING:
            return self._maybe_end_turn(now)
        if state is TurnState.THINKING:
            if self._barge.enabled and self._speaking_for() >= self._barge.min_speech_ms / 1000:
                self._set_state(TurnState.USER_SPEAKING)
                return [AbandonReply()]
            return []
        if state is TurnState.AGENT_SPEAKING:
            return self._maybe_interrupt(now)
        if state is TurnState.INTERRUPTED:
            return self._settle_interruption(now)
        return []

    def reply_audio_started(self) -> list[Action]:
        if self.state is TurnState.THINKING:
            self._set_state(TurnState.AGENT_SPEAKING)
        return []

    def reply_finished(self) -> list[Action]:
        """The caller has heard the whole reply (or it had nothing to say)."""
        if self.state in (TurnState.THINKING, TurnState.AGENT_SPEAKING):
            self._set_state(TurnState.USER_SPEAKING if self._speaking_since is not None else TurnState.LISTENING)
        return []

    def agent_speaks(self) -> list[Action]:
        """The agent takes the floor on its own (first message, a reply to injected context)."""
        if self.state is TurnState.LISTENING:
            self._set_state(TurnState.THINKING)
        return []

    def interject(self, now: float) -> list[Action]:
        """The agent takes the floor whatever the state (an operator's ``say``, ``end-call`` or
        ``transfer`` message). The caller's unfinished turn is dropped; if they are talking, their
        speech counts toward a barge-in from ``now``, like speech starting over any reply."""
        self._finals.clear()
        self._interim = ""
        self._silent_since = None
        self._finals_due = 0
        self._heard_words = False
        if self._speaking_since is not None:
            self._speaking_since = self._voiced_until = now
        actions = self._drop_prepared()
        if self.state not in (TurnState.THINKING, TurnState.CLOSING):
            self._set_state(TurnState.THINKING)
        return actions

    def sign_off(self, now: float) -> list[Action]:
        """The agent takes the floor for good (a limit's goodbye): like ``interject``, but the
        caller's speech no longer interrupts, and no turn of theirs is taken from here on."""
        actions = self.interject(now)
        self._set_state(TurnState.CLOSING)
        return actions

    # -- decisions ----------------------------------------------------------------------------

    def _speaking_for(self) -> float:
        """Voiced length of the caller's current speech (0 while they are silent)."""
        if self._speaking_since is None:
            return 0.0
        return self._voiced_until - self._speaking_since + _EPSILON

    def _maybe_end_turn(self, now: float) -> list[Action]:
        if self._silent_since is None:
            return []
        silence = now - self._silent_since + _EPSILON
        text = self.text
        if self._finals_due and silence < required_silence(text, self._turn) + self._turn.final_timeout_ms / 1000:
            return []
        if silence < required_silence(text, self._turn):
            if self._turn.preemptive_generation and text and not self._finals_due and self._prepared != text:
                actions = self._drop_prepared()
                self._prepared = text
                return [*actions, Prepare(text)]
            return []
        self._prepared = None  # a prepared reply to this text is the answer (the call checks)
        self._finals.clear()
        self._interim = ""
        self._silent_since = None
        self._finals_due = 0  # finals still in flight belong to this turn: dropped on arrival
        if not text:  # speech without words: noise, not a turn
            self._set_state(TurnState.LISTENING)
            return []
        self._set_state(TurnState.THINKING)
        return [Respond(text)]

    def _maybe_interrupt(self, now: float) -> list[Action]:
        barge = self._barge
        if not barge.enabled or self._speaking_for() < barge.min_speech_ms / 1000:
            return []
        if barge.min_words and len(self._words(self.text)) < barge.min_words:
            return []
        self._heard_words = self._has_words(self.text)
        self._set_state(TurnState.INTERRUPTED)
        return [StopAudio()]

    def _words(self, text: str) -> list[str]:
        """The words of ``text`` that are not backchannels ("mm-hm", "yeah")."""
        ignore = self._barge.backchannel_words
        return [w for w in (w.strip(".,?!;:\"'").lower() for w in text.split()) if w and w not in ignore]

    def _has_words(self, text: str) -> bool:
        return bool(self._words(text))

    def _settle_interruption(self, now: float) -> list[Action]:
        if self._heard_words:
            self._set_state(TurnState.USER_SPEAKING)
            return [AbandonReply(), *self._maybe_end_turn(now)]
        if self._silent_since is None:
            return []
        silence = now - self._silent_since + _EPSILON
        if self._finals_due and silence < self._barge.false_interruption_timeout_ms / 1000:
            return []
        # The speech ended and its final came back empty, only backchannels, or never came:
        # it was noise or an acknowledgement, not a bid for the floor.
        self._finals.clear()
        self._interim = ""
        self._silent_since = None
        self._set_state(TurnState.AGENT_SPEAKING)
        return [ResumeAudio()]
