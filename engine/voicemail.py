"""Answering-machine detection on outbound calls. Sans-IO.

``VoicemailDetector`` decides from the callee's first seconds whether a person or a machine
answered, then, for a machine, when its greeting is over. It is fed what the call already has:
every inbound 20 ms PCM16 frame with the VAD's speech edge for it (``feed``) and every STT result
(``transcript``), all on media time (seconds of inbound audio). Each input returns what it
decided, in order:

    LISTENING --keyword | long first utterance | beep--> MACHINE --beep | silence | timeout--> DONE
    LISTENING --short first utterance, no keyword--> HUMAN
    LISTENING --nobody spoke within detect_within_s--> HUMAN (verdict ``unknown``)

A beep heard while undecided is both the verdict and the end of the greeting. ``BeepDetector``
finds the beep: one steady tone (400-2000 Hz, at least 150 ms), told from speech by how much of a
frame's energy sits around a single spectral peak and how still that peak stays. Speech spreads
its energy over harmonics and formants and its pitch moves; a DTMF key has two peaks.
"""

from __future__ import annotations

import enum
import logging
import re
from dataclasses import dataclass

import numpy as np

from ringline.config.settings import VoicemailConfig
from ringline.engine.vad.activity import SpeechStarted, SpeechStopped

log = logging.getLogger(__name__)

_EPSILON = 1e-6
"""Media times are sums of 20 ms frames in floating point: compare durations with this slack."""

BEEP_BAND_HZ = (400.0, 2000.0)
"""Where a voicemail beep's tone lies."""
BEEP_MIN_S = 0.15
"""The shortest beep."""
BEEP_TONALITY = 0.9
"""Share of a frame's energy within ``BEEP_LOBE_HZ`` of its strongest frequency for a tone."""
BEEP_LOBE_HZ = 100.0
"""Half-width of a pure tone's peak in a Hann-windowed 20 ms frame (two bins of 50 Hz)."""
BEEP_DRIFT_HZ = 25.0
"""How far a beep's frequency may wander from its first frame's."""
BEEP_FLOOR_DBFS = -40.0
"""Frames quieter than this (RMS) are not looked at."""
FINAL_GRACE_S = 1.5
"""How long after the first utterance ends its final transcript is waited for (keywords)."""


@dataclass(frozen=True, slots=True)
class Beep:
    start: float
    end: float
    hz: float


@dataclass(frozen=True, slots=True)
class _Frame:
    energy: float
    """Sum of squared samples."""
    hz: float | None
    """Where the spectrum peaks (None: silence)."""
    tonality: float
    """Share of the energy within ``BEEP_LOBE_HZ`` of the peak."""


class BeepDetector:
    """Steady single tones in PCM16 frames; ``feed`` returns a ``Beep`` when one ends.

    A beep's whole frames are tonal; the frames it starts and ends in are partly silence (or
    something else), which widens their peak. They count for the share of a whole frame's energy
    they hold at the beep's frequency, so a beep's length does not depend on how it falls on the
    20 ms frames."""

    def __init__(self, sample_rate: int, *, min_s: float = BEEP_MIN_S) -> None:
        self._rate = sample_rate
        self._min_s = min_s
        self._floor = 32768.0 * 10 ** (BEEP_FLOOR_DBFS / 20)
        self._window: np.ndarray | None = None
        self._n_fft = 0
        self._previous = _Frame(0.0, None, 0.0)
        self._run_start: float | None = None
        self._run_end = 0.0
        self._run_hz = 0.0
        self._run_energy = 0.0
        """Energy of the run's first whole frame (what a whole frame of the tone holds)."""

    def _analyze(self, samples: np.ndarray) -> _Frame:
        energy = float(np.dot(samples, samples))
        n = samples.size
        if n < 32 or energy < n * (self._floor / 10) ** 2:  # 20 dB under the floor: nothing there
            return _Frame(energy, None, 0.0)
        if self._window is None or self._window.size != n:
            self._window = np.hanning(n)
            self._n_fft = 1 << max(8, (2 * n - 1).bit_length())  # zero-padded: ~16 Hz bins at 8 kHz
        power = np.abs(np.fft.rfft(samples * self._window, self._n_fft)) ** 2
        total = float(power.sum())
        if total <= 0.0:
            return _Frame(energy, None, 0.0)
        bin_hz = self._rate / self._n_fft
        peak = int(np.argmax(power))
        lobe = round(BEEP_LOBE_HZ / bin_hz)
        tonality = float(power[max(0, peak - lobe) : peak + lobe + 1].sum()) / total
        offset = 0.0
        if 0 < peak < power.size - 1:  # parabolic interpolation of the peak on log power
            a, b, c = np.log(power[peak - 1 : peak + 2] + 1e-12)
            if (denominator := a - 2 * b + c) != 0:
                offset = 0.5 * (a - c) / denominator
        return _Frame(energy, float((peak + offset) * bin_hz), tonality)

    def _is_tone(self, frame: _Frame, n: int) -> bool:
        """A whole frame of one steady tone in the band, loud enough."""
        return (
            frame.hz is not None
            and BEEP_BAND_HZ[0] <= frame.hz <= BEEP_BAND_HZ[1]
            and frame.tonality >= BEEP_TONALITY
            and frame.energy >= n * self._floor**2
        )

    def _edge(self, frame: _Frame, hz: float) -> float:
        """How much of a frame next to a run of ``hz`` the tone fills (0 to 1)."""
        if frame.hz is None or abs(frame.hz - hz) > 2 * BEEP_DRIFT_HZ or frame.tonality < 0.5:
            return 0.0
        return min(1.0, frame.energy / self._run_energy) if self._run_energy > 0 else 0.0

    def feed(self, pcm: bytes, start: float, end: float) -> Beep | None:
        """One frame covering media time ``start`` to ``end``."""
        samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
        frame = self._analyze(samples)
        previous, self._previous = self._previous, frame
        tone = self._is_tone(frame, samples.size)
        if tone and self._run_start is not None and abs(frame.hz - self._run_hz) <= BEEP_DRIFT_HZ:  # type: ignore[operator]
            self._run_end = end
            return None
        beep = None
        if self._run_start is not None:  # the run is over: this frame may hold its last bit
            tail = self._edge(frame, self._run_hz) * (end - start)
            if self._run_end + tail - self._run_start + _EPSILON >= self._min_s:
                beep = Beep(round(self._run_start, 4), round(self._run_end + tail, 4), round(self._run_hz, 1))
            self._run_start = None
        if tone:  # a tone starts (or jumps to another frequency: a new run)
            assert frame.hz is not None
            self._run_hz, self._run_energy, self._run_end = frame.hz, frame.energy, end
            self._run_start = start - self._edge(previous, frame.hz) * (end - start)
        return beep


# -- the detector ----------------------------------------------------------------------------------


class AmdState(enum.Enum):
    LISTENING = "listening"
    """Undecided."""
    HUMAN = "human"
    """A person (or nobody within the window): the detector is done."""
    MACHINE = "machine"
    """A machine: waiting for the end of its greeting."""
    DONE = "done"
    """The machine's greeting is over: the message is being left (or the call hung up)."""


@dataclass(frozen=True, slots=True)
class Verdict:
    result: str
    """``human``, ``unknown`` (nobody spoke in time) or ``machine``."""
    reason: str
    at: float


@dataclass(frozen=True, slots=True)
class GreetingEnded:
    how: str
    """``beep``, ``silence`` or ``timeout``."""
    at: float


AmdEvent = Verdict | GreetingEnded


def _words(text: str) -> str:
    """Lower-case words separated by single spaces, padded with one: ``" can t stop "`` style
    matching without apostrophes (``can't`` -> ``cant``)."""
    text = re.sub(r"['\u2019]", "", text.lower())
    return " " + " ".join(re.findall(r"[^\W_]+", text)) + " "


class VoicemailDetector:
    def __init__(self, config: VoicemailConfig, sample_rate: int) -> None:
        self._config = config
        self.state = AmdState.LISTENING
        self._keywords = [(k, _words(k)) for k in config.keywords]
        self._rate = sample_rate
        self._beeps = BeepDetector(sample_rate) if config.beep else None
        self._speech_start: float | None = None
        """Media time the first utterance started (None: nobody has spoken)."""
        self._speaking = False
        self._last_stop = 0.0
        """Where the callee's last speech ended."""
        self._awaiting_final = False
        """The callee paused and their final transcript has not come yet."""
        self._machine_at = 0.0
        self.reason = ""
        """Why the verdict is what it is."""

    def _set_state(self, new: AmdState) -> None:
        log.debug("voicemail %s -> %s", self.state.value, new.value)
        self.state = new

    @property
    def active(self) -> bool:
        """Still needs audio and transcripts."""
        return self.state in (AmdState.LISTENING, AmdState.MACHINE)

    # -- inputs -------------------------------------------------------------------------------

    def feed(self, pcm: bytes, now: float, edge: SpeechStarted | SpeechStopped | None = None) -> list[AmdEvent]:
        """One inbound frame ending at media time ``now``, with the VAD's edge for it."""
        if not self.active:
            return []
        if isinstance(edge, SpeechStarted):
            self._speaking = True
            if self._speech_start is None:
                self._speech_start = edge.at
        elif isinstance(edge, SpeechStopped):
            self._speaking = False
            self._last_stop = edge.at
            self._awaiting_final = True
        if self._beeps is not None:
            beep = self._beeps.feed(pcm, now - len(pcm) / (2 * self._rate), now)
            if beep is not None:
                return self._beep(beep)
        if self.state is AmdState.LISTENING:
            return self._judge(now)
        return self._greeting_over(now)

    def transcript(self, text: str, *, final: bool, now: float) -> list[AmdEvent]:
        """An STT result of the callee's speech."""
        if self.state is not AmdState.LISTENING:
            return []
        if final:
            self._awaiting_final = False
        words = _words(text)
        for keyword, pattern in self._keywords:
            if pattern in words:
                return self._machine(f"keyword {keyword!r}", now)
        return []

    # -- decisions ----------------------------------------------------------------------------

    def _beep(self, beep: Beep) -> list[AmdEvent]:
        events: list[AmdEvent] = []
        if self.state is AmdState.LISTENING:
            events += self._machine(f"beep at {beep.hz:g} Hz", beep.end)
        self._set_state(AmdState.DONE)
        return [*events, GreetingEnded("beep", beep.end)]

    def _machine(self, reason: str, now: float) -> list[AmdEvent]:
        self.reason = reason
        self._machine_at = now
        self._set_state(AmdState.MACHINE)
        return [Verdict("machine", reason, now)]

    def _human(self, result: str, reason: str, now: float) -> list[AmdEvent]:
        self.reason = reason
        self._set_state(AmdState.HUMAN)
        return [Verdict(result, reason, now)]

    def _judge(self, now: float) -> list[AmdEvent]:
        config = self._config
        start = self._speech_start
        if start is None:
            if now + _EPSILON >= config.detect_within_s:
                return self._human("unknown", f"no speech within {config.detect_within_s:g} s", now)
            return []
        end = now if self._speaking else self._last_stop
        if end - start + _EPSILON >= config.long_utterance_s:
            return self._machine(f"first utterance over {config.long_utterance_s:g} s", now)
        if self._speaking:
            return []
        pause = now - self._last_stop + _EPSILON
        final_in = not self._awaiting_final or pause >= config.utterance_gap_s + FINAL_GRACE_S
        if pause >= config.utterance_gap_s and final_in:
            return self._human("human", f"first utterance of {end - start:.2f} s", now)
        return []

    def _greeting_over(self, now: float) -> list[AmdEvent]:
        config = self._config
        if self.state is not AmdState.MACHINE:
            return []
        if now - self._machine_at + _EPSILON >= config.max_greeting_s:
            self._set_state(AmdState.DONE)
            return [GreetingEnded("timeout", now)]
        quiet = now - max(self._last_stop, self._machine_at) + _EPSILON
        if not self._speaking and quiet >= config.greeting_end_silence_s:
            self._set_state(AmdState.DONE)
            return [GreetingEnded("silence", now)]
        return []
