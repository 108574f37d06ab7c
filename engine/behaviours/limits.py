"""The call duration limit: a warning shortly before it, then the goodbye, then, should the goodbye
never finish, a hard stop. Sans-IO: the call polls it with its clock.

    RUNNING --warning due, floor free--> WARNED      (Warn; skipped once under half the warning time is left)
    RUNNING/WARNED --limit--> CLOSING    (SayGoodbye)
    CLOSING --limit + HARD_STOP_GRACE_S--> OVER   (Cut: end now, whatever is playing)
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)

HARD_STOP_GRACE_S = 30.0
"""How long the goodbye gets to be heard before the call is ended anyway."""


class LimitState(enum.Enum):
    RUNNING = "running"
    WARNED = "warned"
    CLOSING = "closing"
    """The goodbye is due or under way."""
    OVER = "over"


@dataclass(frozen=True, slots=True)
class Warn:
    """Tell the caller time is nearly up (the floor is free)."""

    text: str


@dataclass(frozen=True, slots=True)
class SayGoodbye:
    """The limit: take the floor, say ``text``, hang up once it is heard."""

    text: str


@dataclass(frozen=True, slots=True)
class Cut:
    """The goodbye never finished: end the call now."""


class DurationLimit:
    def __init__(
        self, started_at: float, limit_s: float, *, warning_s: float = 0.0, warning: str = "", goodbye: str = ""
    ) -> None:
        self._end = started_at + limit_s
        self._warn_at = started_at + limit_s - warning_s if warning_s > 0 else None
        self._warn_by = started_at + limit_s - warning_s / 2
        """After this a warning would be cut by the goodbye, or be pointless: it is skipped."""
        self._warning = warning
        self._goodbye = goodbye
        self.state = LimitState.RUNNING
        self.next_due = self._warn_at if self._warn_at is not None else self._end
        """Clock time before which ``poll`` has nothing to do (the call skips it until then)."""

    def _set_state(self, new: LimitState) -> None:
        log.debug("duration limit %s -> %s", self.state.value, new.value)
        self.state = new

    def poll(self, now: float, floor_free: bool) -> Warn | SayGoodbye | Cut | None:
        state = self.state
        if state in (LimitState.RUNNING, LimitState.WARNED):
            if now >= self._end:
                self._set_state(LimitState.CLOSING)
                self.next_due = self._end + HARD_STOP_GRACE_S
                return SayGoodbye(self._goodbye)
            if state is LimitState.RUNNING and self._warn_at is not None and now >= self._warn_at:
                if now >= self._warn_by:
                    log.info("too late for the duration warning: skipped")
                    self._set_state(LimitState.WARNED)
                    self.next_due = self._end
                    return None
                if not floor_free:
                    return None  # try again next frame
                self._set_state(LimitState.WARNED)
                self.next_due = self._end
                return Warn(self._warning)
            return None
        if state is LimitState.CLOSING and now >= self._end + HARD_STOP_GRACE_S:
            self._set_state(LimitState.OVER)
            self.next_due = float("inf")
            return Cut()
        return None
