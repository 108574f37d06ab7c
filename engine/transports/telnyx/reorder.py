"""Numbered chunks back in order, sans-IO: Telnyx does not guarantee the order of media messages.

``ChunkReorder.push(number, data)`` returns what it can release in order. A chunk that arrives
early is held until the ones before it come, for at most ``window`` held chunks; then the missing
ones count as lost and the held ones come out. Memory is bounded by the window.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

REORDER_WINDOW = 3
"""Chunks that may arrive after one that is missing before it counts as lost (60 ms of audio)."""
RESYNC_GAP = 100
"""A chunk this far behind the expected one is no reordering but renumbering: follow it."""


class ChunkReorder:
    """Puts numbered chunks back in order, waiting at most ``window`` later chunks for a missing one.

    ``push(number, data)`` returns the chunks it releases, in order (often just ``[data]``).
    Duplicates and chunks older than ones already released are dropped (``late``); numbers given
    up on count in ``lost``. A chunk ``resync_gap`` or more behind means the numbering restarted:
    what is held comes out, then the stream follows the new numbers.
    """

    def __init__(self, window: int = REORDER_WINDOW, resync_gap: int = RESYNC_GAP) -> None:
        self.window = window
        self.resync_gap = resync_gap
        self.expected: int | None = None
        self.held: dict[int, bytes] = {}
        self.lost = 0
        self.late = 0

    def push(self, number: int, data: bytes) -> list[bytes]:
        expected = self.expected
        if expected is None or (number == expected and not self.held):
            self.expected = number + 1  # the hot path: in order, nothing held
            return [data]
        if number <= expected - self.resync_gap:
            log.debug("chunks renumbered: %d after %d", number, expected - 1)
            released = [self.held[n] for n in sorted(self.held)] + [data]
            self.held.clear()
            self.expected = number + 1
            return released
        if number < expected or number in self.held:
            self.late += 1
            return []
        self.held[number] = data
        released, expected = self._release(expected)
        while len(self.held) > self.window:  # waited long enough: skip to the oldest held chunk
            oldest = min(self.held)
            self.lost += oldest - expected
            log.debug("chunks %d..%d lost", expected, oldest - 1)
            more, expected = self._release(oldest)
            released += more
        self.expected = expected
        return released

    def _release(self, number: int) -> tuple[list[bytes], int]:
        """The held run from ``number`` on, and the number after it."""
        out: list[bytes] = []
        held = self.held
        while number in held:
            out.append(held.pop(number))
            number += 1
        return out, number
