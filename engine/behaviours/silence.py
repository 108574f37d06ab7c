"""Caller silence: re-engage after a quiet spell, then give up. Sans-IO.

The call polls ``SilenceWatch.poll(now, listening)`` on every inbound frame, ``listening`` being
whether the agent is waiting for the caller (its reply heard out, nobody talking, nothing under
way). Silence is counted only over an unbroken run of such polls, so time spent while the agent
thinks or speaks, or while the caller talks, never counts.

    IDLE --listening--> WAITING --reengage_after_s of it--> IDLE      (Reengage: the next message)
                        WAITING --... after max_attempts--> GAVE_UP   (GiveUp: the goodbye)
    WAITING --not listening--> IDLE                         caller_spoke(): attempts start over
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass

from ringline.config.behaviours import SilenceConfig

log = logging.getLogger(__name__)


class SilenceState(enum.Enum):
    IDLE = "idle"
    """The agent is not waiting for the caller (it has the floor, or the caller is talking)."""
    WAITING = "waiting"
    """The agent is waiting for the caller: their silence is being timed."""
    GAVE_UP = "gave_up"
    """The goodbye was due: nothing more to do."""


@dataclass(frozen=True, slots=True)
class Reengage:
    """Say ``text`` to a quiet caller (attempt number ``attempt``, from 1)."""

    text: str
    attempt: int


@dataclass(frozen=True, slots=True)
class GiveUp:
    """Say ``text`` and hang up: the caller stayed silent through every attempt."""

    text: str


class SilenceWatch:
    def __init__(self, config: SilenceConfig) -> None:
        self._config = config
        self._after = config.reengage_after_s
        self.state = SilenceState.IDLE
        self._since = 0.0
        self.attempts = 0
        """Re-engagements since the caller last said something."""

    def _set_state(self, new: SilenceState) -> None:
        log.debug("silence %s -> %s", self.state.value, new.value)
        self.state = new

    def poll(self, now: float, listening: bool) -> Reengage | GiveUp | None:
        state = self.state
        if state is SilenceState.GAVE_UP or not self._config.enabled:
            return None
        if not listening:
            if state is SilenceState.WAITING:
                self._set_state(SilenceState.IDLE)
            return None
        if state is SilenceState.IDLE:
            self._since = now
            self._set_state(SilenceState.WAITING)
            return None
        if now - self._since < self._after - 1e-6:
            return None
        config = self._config
        if self.attempts < config.max_attempts:
            self.attempts += 1
            self._set_state(SilenceState.IDLE)
            messages = config.messages
            return Reengage(messages[(self.attempts - 1) % len(messages)], self.attempts)
        self._set_state(SilenceState.GAVE_UP)
        return GiveUp(config.goodbye)

    def caller_spoke(self) -> None:
        """The caller took a turn with words: the attempts start over."""
        self.attempts = 0
