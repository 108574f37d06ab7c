"""Voice activity per 20 ms frame with start/stop hysteresis, on media time.

Media time is seconds of inbound audio received: deterministic, immune to network jitter, and
what end-of-turn silences are measured in. ``SpeechStarted.at`` is back-dated to the first voiced
frame of the start window and ``SpeechStopped.at`` to the end of the last voiced frame.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass
from typing import Protocol

import webrtcvad

from ringline.config.settings import VadConfig
from ringline.engine.audio.g711 import rms


class SpeechClassifier(Protocol):
    def is_speech(self, frame: bytes) -> bool:
        """Whether one frame of PCM16 audio is voiced."""
        ...


class WebRtcClassifier:
    """webrtcvad (~2.5 us a 20 ms frame) behind an energy gate.

    webrtcvad keeps saying "speech" for 40-140 ms after speech ends (its hangover), which would
    add that much to every end-of-turn silence. A frame whose RMS level is below
    ``energy_floor_dbfs`` is unvoiced whatever webrtcvad says, which trims that tail. The level
    is only computed for frames webrtcvad calls voiced (~0.2 us more). Frames must be 10, 20 or 30 ms at 8/16/32/48 kHz.
    """

    def __init__(self, aggressiveness: int, sample_rate: int, energy_floor_dbfs: float = -50.0) -> None:
        self._vad = webrtcvad.Vad(aggressiveness)
        self._rate = sample_rate
        self._floor = 32768 * 10 ** (energy_floor_dbfs / 20)  # RMS in PCM16 units

    def is_speech(self, frame: bytes) -> bool:
        if not self._vad.is_speech(frame, self._rate):
            return False
        return rms(frame) >= self._floor


def make_classifier(config: VadConfig, sample_rate: int) -> SpeechClassifier:
    """One call's classifier, as ``config.engine`` says (Silero's module loads only when used)."""
    if config.engine == "silero":
        from ringline.engine.vad.silero import SileroClassifier

        return SileroClassifier(sample_rate, config.silero_threshold, config.energy_floor_dbfs)
    return WebRtcClassifier(config.aggressiveness, sample_rate, config.energy_floor_dbfs)


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    at: float


@dataclass(frozen=True, slots=True)
class SpeechStopped:
    at: float


class Activity(enum.Enum):
    SILENCE = "silence"
    SPEECH = "speech"


class VoiceActivity:
    def __init__(self, config: VadConfig, classifier: SpeechClassifier, frame_ms: int = 20) -> None:
        self._classifier = classifier
        self._frame = frame_ms / 1000
        self._frame_ms = frame_ms
        self._start_frames = max(1, round(config.start_ms / frame_ms))
        self._stop_frames = max(1, round(config.stop_ms / frame_ms))
        window = max(self._start_frames, round(config.start_window_ms / frame_ms))
        self._window: deque[bool] = deque(maxlen=window)
        self._voiced_in_window = 0
        self._unvoiced_run = 0
        self.state = Activity.SILENCE
        self._frames = 0
        self.now = 0.0
        """Media time: end of the last frame fed (frame count times frame length, so that
        silences compare exactly instead of drifting by float rounding)."""
        self.last_voiced_end = 0.0
        self.speech_started_at = 0.0

    def feed(self, frame: bytes) -> SpeechStarted | SpeechStopped | None:
        voiced = self._classifier.is_speech(frame)
        self._frames += 1
        self.now = self._frames * self._frame_ms / 1000
        window = self._window
        if len(window) == window.maxlen and window[0]:
            self._voiced_in_window -= 1
        window.append(voiced)
        if voiced:
            self._voiced_in_window += 1
            self.last_voiced_end = self.now
            self._unvoiced_run = 0
        else:
            self._unvoiced_run += 1

        if self.state is Activity.SILENCE:
            if voiced and self._voiced_in_window >= self._start_frames:
                first = next(i for i, v in enumerate(window) if v)
                self.speech_started_at = (self._frames - (len(window) - first)) * self._frame_ms / 1000
                self.state = Activity.SPEECH
                return SpeechStarted(self.speech_started_at)
        elif self._unvoiced_run >= self._stop_frames:
            self.state = Activity.SILENCE
            self._window.clear()
            self._voiced_in_window = 0
            return SpeechStopped(self.last_voiced_end)
        return None

    @property
    def speaking_for(self) -> float:
        """Seconds since the current speech started (0 in silence)."""
        return self.now - self.speech_started_at if self.state is Activity.SPEECH else 0.0
