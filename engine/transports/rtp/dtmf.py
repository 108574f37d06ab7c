"""DTMF as RTP telephone-events (RFC 4733), sans-IO.

Sending: ``tone_payloads(digit, ...)`` gives the payloads of one key press, one per 20 ms packet,
all carrying the timestamp of the event's start: the first (sent with the marker bit) and the
updates hold the duration so far, the last three are the same end packet (E bit, final duration),
sent three times as RFC 4733 section 2.5.1.4 asks.

Receiving: ``DtmfReceiver.feed(timestamp, payload)`` returns the digit exactly once per event, on
the first packet seen of it, whichever that is: a lost start packet costs nothing, a retransmitted
end packet or a late update of an event already reported is ignored. A new event is one with a
new timestamp (a new key press, even of the same key); one whose timestamp is older than the
last reported event (a straggler) is ignored too.
"""

from __future__ import annotations

import struct

from .packet import RtpError

__all__ = ["DIGITS", "DtmfReceiver", "event_code", "tone_payloads"]

DIGITS = "0123456789*#ABCD"
"""Telephone-event codes 0-15, in order (RFC 4733 section 3.2)."""

_EVENT = struct.Struct("!BBH")
END_REPEATS = 3
DEFAULT_VOLUME = 10
"""Power level in -dBm0 (RFC 4733 section 2.3.4): 10 means -10 dBm0, a typical keypad level."""


def event_code(digit: str) -> int:
    code = DIGITS.find(digit.upper()) if len(digit) == 1 else -1
    if code < 0:
        raise ValueError(f"not a DTMF digit: {digit!r}")
    return code


def tone_payloads(
    digit: str, duration_ms: int = 100, *, volume: int = DEFAULT_VOLUME, samples_per_packet: int = 160
) -> list[bytes]:
    """Payloads of one key press of ``duration_ms``, one per packet interval (see module doc).

    The first payload is the start (send it with the marker bit), then updates every
    ``samples_per_packet``, then the end packet three times. Durations are in timestamp units
    (8 kHz for telephone-event/8000).
    """
    code = event_code(digit)
    if not 0 <= volume <= 63:
        raise ValueError(f"volume must be 0-63 (-dBm0), got {volume}")
    total = max(samples_per_packet, duration_ms * 8)
    if total > 0xFFFF:
        raise ValueError(f"a tone of {duration_ms} ms does not fit the 16-bit duration field")
    payloads = [_EVENT.pack(code, volume, elapsed) for elapsed in range(samples_per_packet, total, samples_per_packet)]
    end = _EVENT.pack(code, 0x80 | volume, total)
    return [*payloads, *([end] * END_REPEATS)]


class DtmfReceiver:
    """Turns incoming telephone-event packets into digits, each key press exactly once."""

    __slots__ = ("_last", "digits", "ignored")

    def __init__(self) -> None:
        self._last: int | None = None
        """Timestamp of the last event reported."""
        self.digits = 0
        self.ignored = 0
        """Events that are not keys (flash, tones of other event codes)."""

    def feed(self, timestamp: int, payload: bytes) -> str | None:
        """The digit if this packet is the first seen of a new key press, else None."""
        if len(payload) < 4:
            raise RtpError(f"telephone-event payload of {len(payload)} bytes, expected 4")
        last = self._last
        if last is not None:
            delta = (timestamp - last) & 0xFFFFFFFF
            if delta == 0 or delta >= 0x80000000:
                return None  # the same event, or an older one (a negative delta, modulo 2**32)
        self._last = timestamp
        code = payload[0]
        if code >= len(DIGITS):
            self.ignored += 1
            return None
        self.digits += 1
        return DIGITS[code]
