"""DTMF: the caller's key presses, by the agent's rules, and the tones of keys the agent sends. Sans-IO.

``DtmfRules`` turns keys (``key``) and the passing of media time (``tick``, once per inbound
frame) into what the call must do, in order:

- ``EntryStarted``: the first key of an entry; the agent stops talking (a key press interrupts).
- ``Deliver``: an entry is complete (``collect.digits`` keys, the terminator, or ``timeout_s``
  without a key): ``text`` goes into the conversation as the caller's message.
- ``KeyAction``: a key of ``actions`` pressed as the first key of an entry (mid-entry it is just
  a digit, so "0" in an account number never transfers the call).

Keys arrive from the provider's events (Twilio's ``dtmf`` message, later RFC 4733 on RTP), never
decoded from the audio.

``tones`` renders keys as in-band audio (ITU-T Q.23 frequency pairs) for transports that cannot
signal them: 100 ms of tone and 100 ms of silence a key, ``w``/``W`` half a second of silence.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from ringline.config.settings import DtmfActionConfig, DtmfConfig

log = logging.getLogger(__name__)

_EPSILON = 1e-6

KEYS = "0123456789*#ABCD"
FREQUENCIES: dict[str, tuple[int, int]] = {
    key: (low, high)
    for row, low in zip(("123A", "456B", "789C", "*0#D"), (697, 770, 852, 941), strict=True)
    for key, high in zip(row, (1209, 1336, 1477, 1633), strict=True)
}
"""Each key's low and high frequency (Hz)."""
TONE_S = 0.1
GAP_S = 0.1
PAUSE_S = 0.5
"""The silence a ``w`` (or ``W``) stands for."""
LEVEL = 0.25
"""Each of a key's two sine waves, as a fraction of full scale (about -15 dBFS RMS together)."""
RAMP_S = 0.005
"""Fade in and out of each tone (no clicks)."""


@dataclass(frozen=True, slots=True)
class EntryStarted:
    key: str


@dataclass(frozen=True, slots=True)
class Deliver:
    digits: str
    text: str
    """The user message: the agent's ``format`` with the keys in it."""
    why: str
    """``digits``, ``terminator`` or ``timeout``."""


@dataclass(frozen=True, slots=True)
class KeyAction:
    key: str
    action: DtmfActionConfig


DtmfStep = EntryStarted | Deliver | KeyAction


class DtmfRules:
    """One call's key presses under its agent's ``dtmf`` rules."""

    def __init__(self, config: DtmfConfig) -> None:
        self._config = config
        self._digits = ""
        self._last_at = 0.0

    @property
    def entry(self) -> str:
        """The keys of the entry in progress ("" when none)."""
        return self._digits

    def key(self, key: str, now: float) -> list[DtmfStep]:
        """The caller pressed ``key`` at media time ``now``."""
        config = self._config
        if len(key) != 1 or key not in KEYS:
            raise ValueError(f"not a DTMF key: {key!r}")
        if not self._digits and key in config.actions:
            return [KeyAction(key, config.actions[key])]
        if not config.enabled:
            return []
        steps: list[DtmfStep] = [] if self._digits else [EntryStarted(key)]
        self._digits += key
        self._last_at = now
        collect = config.collect
        if key == collect.terminator:
            return [*steps, self._deliver("terminator")]
        if collect.digits and len(self._digits) >= collect.digits:
            return [*steps, self._deliver("digits")]
        return steps

    def tick(self, now: float) -> list[DtmfStep]:
        """Media time moved on (every inbound frame): an entry left alone long enough is complete."""
        if self._digits and now - self._last_at + _EPSILON >= self._config.collect.timeout_s:
            return [self._deliver("timeout")]
        return []

    def _deliver(self, why: str) -> Deliver:
        digits, self._digits = self._digits, ""
        return Deliver(digits, self._config.format.replace("{digits}", digits), why)


# -- sending --------------------------------------------------------------------------------------


def check_keys(keys: str) -> str:
    """``keys`` as tones render them (A-D upper-cased); ``ValueError`` with the culprit otherwise."""
    if not keys:
        raise ValueError("no keys to send")
    for k in keys:
        if k.upper() not in KEYS and k not in "wW":
            raise ValueError(f"cannot send {k!r}: keys are 0-9, *, #, A-D and w (a half-second pause)")
    return "".join(k if k in "wW" else k.upper() for k in keys)


def tones(keys: str, sample_rate: int) -> bytes:
    """PCM16 audio of ``keys`` pressed one after the other (see the module docstring)."""
    keys = check_keys(keys)
    n_tone, n_gap, n_pause = (round(s * sample_rate) for s in (TONE_S, GAP_S, PAUSE_S))
    t = np.arange(n_tone) / sample_rate
    ramp = np.ones(n_tone)
    n_ramp = max(1, round(RAMP_S * sample_rate))
    ramp[:n_ramp] = ramp[-n_ramp:][::-1] = 0.5 - 0.5 * np.cos(np.pi * np.arange(n_ramp) / n_ramp)
    parts: list[bytes] = []
    for key in keys:
        if key in "wW":
            parts.append(bytes(2 * n_pause))
            continue
        low, high = FREQUENCIES[key]
        wave = (np.sin(2 * np.pi * low * t) + np.sin(2 * np.pi * high * t)) * ramp * (LEVEL * 32767)
        parts.append(wave.astype("<i2").tobytes())
        parts.append(bytes(2 * n_gap))
    return b"".join(parts)
