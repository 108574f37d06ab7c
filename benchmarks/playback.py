"""Twilio's side of the agent's audio: a playback buffer played out at 8000 samples a second.

Sans-IO: every method takes ``now`` (seconds on any monotonic clock). Audio pushed while the
buffer is idle starts playing at once; audio pushed while it plays is queued behind it. A mark
is due when playback reaches the point where it was placed (at once on an idle buffer); ``clear``
drops the unplayed audio and makes every pending mark due immediately, as Twilio does.

``segments`` records what was played when: runs of contiguous playback, each a start time and a
sample count (cut short by ``clear``), optionally with the audio itself for recordings.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

RATE = 8000  # mu-law samples (bytes) per second


@dataclass(slots=True)
class Segment:
    """A run of uninterrupted playback: ``samples`` samples starting at ``start``."""

    start: float
    samples: int = 0
    audio: bytearray | None = None  # kept only when the buffer keeps audio

    @property
    def end(self) -> float:
        return self.start + self.samples / RATE


@dataclass(slots=True)
class PlaybackBuffer:
    keep_audio: bool = False
    segments: list[Segment] = field(default_factory=list)
    received_samples: int = 0  # everything pushed
    cleared_samples: int = 0  # dropped unplayed by clear()
    _marks: deque[tuple[float, str]] = field(default_factory=deque)  # (due time, name), due order

    @property
    def end_time(self) -> float:
        """When the queued audio finishes playing (idle at any ``now >= end_time``)."""
        return self.segments[-1].end if self.segments else float("-inf")

    def idle(self, now: float) -> bool:
        return self.end_time <= now

    def buffered(self, now: float) -> float:
        """Seconds of audio queued but not yet played."""
        return max(0.0, self.end_time - now)

    def played_samples(self, now: float) -> int:
        """Samples played out up to ``now``."""
        unplayed = round(self.buffered(now) * RATE)
        return self.received_samples - self.cleared_samples - unplayed

    def push(self, payload: bytes, now: float) -> float:
        """Queue agent audio; returns the time it starts playing (``now`` if the buffer was idle)."""
        n = len(payload)
        self.received_samples += n
        if self.segments and self.end_time > now:
            seg = self.segments[-1]
        else:
            seg = Segment(now, audio=bytearray() if self.keep_audio else None)
            self.segments.append(seg)
        start = seg.end
        seg.samples += n
        if seg.audio is not None:
            seg.audio += payload
        return start

    def mark(self, name: str, now: float) -> list[str]:
        """Place a mark after the queued audio; returns the marks due now (this one if idle)."""
        self._marks.append((max(now, self.end_time), name))
        return self.due_marks(now)

    def due_marks(self, now: float) -> list[str]:
        """Pop the marks whose playback point has been reached, in order."""
        due: list[str] = []
        while self._marks and self._marks[0][0] <= now:
            due.append(self._marks.popleft()[1])
        return due

    def next_mark_due(self) -> float | None:
        return self._marks[0][0] if self._marks else None

    def clear(self, now: float) -> list[str]:
        """Drop the unplayed audio; returns every pending mark (all echoed at once)."""
        if self.segments and self.end_time > now:
            seg = self.segments[-1]
            # whole samples played by now: floor, with slack for float error in the times, so the
            # cut end is ``now`` to the sample but may land a hair (~1e-13 s) after it
            played = min(seg.samples, max(0, math.floor((now - seg.start) * RATE + 1e-9)))
            self.cleared_samples += seg.samples - played
            seg.samples = played
            if seg.audio is not None:
                del seg.audio[played:]
        names = [name for _, name in self._marks]
        self._marks.clear()
        return names
