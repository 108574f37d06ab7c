"""Voice activity hysteresis with a scripted classifier (exact frame by frame), the webrtcvad
classifier on real audio, and the end-of-turn silence rule."""

from __future__ import annotations

import numpy as np
import pytest
import webrtcvad

from ringline.benchmarks.clips import load_clip
from ringline.config.settings import TurnConfig, VadConfig
from ringline.engine.audio.g711 import ulaw_decode
from ringline.engine.vad.activity import (
    Activity,
    SpeechStarted,
    SpeechStopped,
    VoiceActivity,
    WebRtcClassifier,
)
from ringline.engine.vad.endpoint import required_silence

FRAME_S = 0.02
PCM_FRAME = 320  # bytes of 20 ms PCM16 at 8 kHz
SILENT_PCM = bytes(PCM_FRAME)


class Scripted:
    """A classifier that answers from a script: ``#`` voiced, ``.`` unvoiced, one per frame."""

    def __init__(self, script: str) -> None:
        self.answers = [c == "#" for c in script]
        self.frames: list[bytes] = []

    def is_speech(self, frame: bytes) -> bool:
        self.frames.append(frame)
        return self.answers.pop(0)


def run(script: str, config: VadConfig | None = None) -> tuple[VoiceActivity, list[tuple[int, object]]]:
    """Feed one frame per script character; returns the VAD and (frame index, event) pairs."""
    vad = VoiceActivity(config or VadConfig(), Scripted(script))
    events = []
    for i in range(len(script)):
        if (event := vad.feed(SILENT_PCM)) is not None:
            events.append((i, event))
    return vad, events


def t(frames: int) -> float:
    """Media time at the end of frame ``frames - 1`` (i.e. after ``frames`` frames)."""
    return pytest.approx(frames * FRAME_S, abs=1e-9)


# Defaults: start 60 ms (3 frames) within a 100 ms (5 frame) window, stop after 160 ms (8 frames).


def test_defaults_are_three_voiced_frames_in_five_and_eight_unvoiced() -> None:
    assert (VadConfig().start_ms, VadConfig().start_window_ms, VadConfig().stop_ms) == (60, 100, 160)


def test_media_time_advances_20_ms_per_frame() -> None:
    vad = VoiceActivity(VadConfig(), Scripted("." * 250))
    assert vad.now == 0.0
    for n in range(1, 251):
        vad.feed(SILENT_PCM)
        assert vad.now == t(n)


def test_media_time_follows_frame_ms() -> None:
    vad = VoiceActivity(VadConfig(), Scripted("...."), frame_ms=10)
    for _ in range(4):
        vad.feed(SILENT_PCM)
    assert vad.now == pytest.approx(0.04)


def test_classifier_sees_each_frame_as_given() -> None:
    classifier = Scripted("#.")
    vad = VoiceActivity(VadConfig(), classifier)
    frames = [bytes([1]) * PCM_FRAME, bytes([2]) * PCM_FRAME]
    for frame in frames:
        vad.feed(frame)
    assert classifier.frames == frames


def test_start_after_three_consecutive_voiced_frames_dated_to_the_first() -> None:
    vad, events = run("..###")
    assert events == [(4, SpeechStarted(t(2)))]
    assert vad.state is Activity.SPEECH
    assert vad.speech_started_at == t(2)


def test_two_voiced_frames_are_not_speech() -> None:
    vad, events = run("..##" + "." * 20)
    assert events == []
    assert vad.state is Activity.SILENCE


def test_scattered_voiced_frames_within_the_window_start_speech() -> None:
    # Voiced frames 0, 2 and 4 all fall in the 5-frame window that ends at frame 4.
    _, events = run("#.#.#")
    assert events == [(4, SpeechStarted(t(0)))]


def test_voiced_frames_spread_wider_than_the_window_never_start() -> None:
    _, events = run("#..#..#..#..#..#")
    assert events == []


def test_start_is_dated_to_the_first_voiced_frame_still_in_the_window() -> None:
    # Frame 0 left the window before the third voiced frame arrived, so it is neither counted
    # nor used as the start: speech is dated to frame 4, the first voiced frame of frames 2..6.
    _, events = run("#...###")
    assert events == [(6, SpeechStarted(t(4)))]


def test_start_back_dated_over_a_gap_inside_the_window() -> None:
    _, events = run("...#.##")
    assert events == [(6, SpeechStarted(t(3)))]


def test_stop_after_eight_unvoiced_frames_dated_to_end_of_last_voiced() -> None:
    vad, events = run("..#####" + "." * 8)
    assert events == [(4, SpeechStarted(t(2))), (14, SpeechStopped(t(7)))]
    assert vad.state is Activity.SILENCE
    assert vad.last_voiced_end == t(7)


def test_seven_unvoiced_frames_do_not_stop_speech() -> None:
    vad, events = run("#####" + "." * 7)
    assert events == [(2, SpeechStarted(t(0)))]
    assert vad.state is Activity.SPEECH


def test_short_gap_inside_speech_does_not_stop_it() -> None:
    _, events = run("#####" + "." * 7 + "#####" + "." * 8)
    assert events == [(2, SpeechStarted(t(0))), (24, SpeechStopped(t(17)))]


def test_a_single_voiced_frame_restarts_the_stop_count() -> None:
    _, events = run("###" + ".......#" + "......." + "." * 1)
    assert events == [(2, SpeechStarted(t(0))), (18, SpeechStopped(t(11)))]


def test_unvoiced_frames_while_silent_emit_nothing() -> None:
    _, events = run("." * 100)
    assert events == []


def test_speech_restarts_with_a_fresh_window_after_a_stop() -> None:
    # The voiced frames before the stop do not count towards the next start.
    _, events = run("###" + "." * 8 + "##" + "." * 3 + "###")
    assert events == [
        (2, SpeechStarted(t(0))),
        (10, SpeechStopped(t(3))),
        (18, SpeechStarted(t(16))),
    ]


def test_speaking_for_counts_from_the_back_dated_start() -> None:
    vad = VoiceActivity(VadConfig(), Scripted("..#####" + "." * 8))
    seen = []
    for _ in range(15):
        vad.feed(SILENT_PCM)
        seen.append(vad.speaking_for)
    assert seen[:4] == [0.0] * 4
    assert seen[4] == pytest.approx(0.06)  # frame 4 ends at 0.10; speech started at 0.04
    assert seen[13] == pytest.approx(0.24)
    assert seen[14] == 0.0  # stopped


def test_custom_thresholds() -> None:
    config = VadConfig(start_ms=40, start_window_ms=60, stop_ms=100)  # 2 in 3 frames, stop after 5
    # The two-frame burst at 7..8 keeps the speech alive: stop comes 5 frames after frame 8.
    _, events = run("#.#" + "." * 4 + "##" + "." * 5, config)
    assert events == [(2, SpeechStarted(t(0))), (13, SpeechStopped(t(9)))]


def test_window_shorter_than_start_is_widened_to_start() -> None:
    config = VadConfig(start_ms=60, start_window_ms=20, stop_ms=160)
    _, events = run("###", config)
    assert events == [(2, SpeechStarted(t(0)))]


def test_zero_start_and_stop_still_need_one_frame() -> None:
    config = VadConfig(start_ms=0, start_window_ms=0, stop_ms=0)
    _, events = run(".#.", config)
    assert events == [(1, SpeechStarted(t(1))), (2, SpeechStopped(t(2)))]


# -- webrtcvad on real audio -------------------------------------------------------------------


def pcm_frames(pcm: bytes) -> list[bytes]:
    return [pcm[i : i + PCM_FRAME] for i in range(0, len(pcm) - PCM_FRAME + 1, PCM_FRAME)]


@pytest.fixture(scope="module")
def speech_frames() -> list[bytes]:
    return pcm_frames(ulaw_decode(load_clip("book_table.wav")))


def level_dbfs(frame: bytes) -> float:
    samples = np.frombuffer(frame, dtype="<i2").astype(np.float64)
    rms = np.sqrt(np.mean(samples**2))
    return -np.inf if rms == 0 else float(20 * np.log10(rms / 32768))


@pytest.mark.parametrize("aggressiveness", [0, 1, 2, 3])
def test_digital_silence_is_not_speech(aggressiveness: int) -> None:
    classifier = WebRtcClassifier(aggressiveness, 8000)
    assert not any(classifier.is_speech(SILENT_PCM) for _ in range(50))


def test_real_speech_has_voiced_frames(speech_frames: list[bytes]) -> None:
    classifier = WebRtcClassifier(3, 8000)
    voiced = [classifier.is_speech(f) for f in speech_frames]
    assert len(speech_frames) > 100
    assert sum(voiced) > len(voiced) // 2  # a trimmed clip of continuous speech


def classify(frames: list[bytes], floor: float) -> list[bool]:
    """Every frame through one classifier in order (webrtcvad adapts, so order matters)."""
    classifier = WebRtcClassifier(3, 8000, energy_floor_dbfs=floor)
    return [classifier.is_speech(f) for f in frames]


def webrtcvad_alone(frames: list[bytes]) -> list[bool]:
    vad = webrtcvad.Vad(3)
    return [vad.is_speech(f, 8000) for f in frames]


def test_frames_below_the_energy_floor_are_never_speech(speech_frames: list[bytes]) -> None:
    levels = [level_dbfs(f) for f in speech_frames]
    raw = webrtcvad_alone(speech_frames)
    assert any(v and level < -50 for v, level in zip(raw, levels, strict=True))  # webrtcvad's hangover
    gated = classify(speech_frames, -50.0)
    assert not any(g and level < -50 for g, level in zip(gated, levels, strict=True))
    assert not any(classify(speech_frames, 0.0))


@pytest.mark.parametrize("floor", [-50.0, -35.0, -20.0])
def test_energy_gate_keeps_exactly_the_voiced_frames_at_or_above_the_floor(
    speech_frames: list[bytes], floor: float
) -> None:
    raw = webrtcvad_alone(speech_frames)
    expected = [v and level_dbfs(f) >= floor for v, f in zip(raw, speech_frames, strict=True)]
    assert classify(speech_frames, floor) == expected


def test_loud_speech_is_speech(speech_frames: list[bytes]) -> None:
    # Frames louder than about -19 dBFS RMS: their sum of squares does not fit in 32 bits.
    loud = [i for i, f in enumerate(speech_frames) if level_dbfs(f) > -19.0]
    assert loud
    raw = webrtcvad_alone(speech_frames)
    gated = classify(speech_frames, -50.0)
    assert [gated[i] for i in loud] == [raw[i] for i in loud]
    assert all(raw[i] for i in loud)


def test_loud_caller_is_heard_from_the_first_word(speech_frames: list[bytes]) -> None:
    louder = [
        np.clip(np.frombuffer(f, dtype="<i2").astype(np.float64) * 2, -32768, 32767).astype("<i2").tobytes()
        for f in speech_frames
    ]  # +6 dB: a caller close to the microphone
    vad = VoiceActivity(VadConfig(), WebRtcClassifier(3, 8000))
    events = [e for f in [SILENT_PCM] * 10 + louder if (e := vad.feed(f)) is not None]
    assert isinstance(events[0], SpeechStarted)
    assert events[0].at == pytest.approx(10 * FRAME_S, abs=0.021)


def test_real_clip_is_one_utterance_between_silences(speech_frames: list[bytes]) -> None:
    vad = VoiceActivity(VadConfig(), WebRtcClassifier(3, 8000))
    frames = [SILENT_PCM] * 10 + speech_frames + [SILENT_PCM] * 20
    events = [(i, e) for i, f in enumerate(frames) if (e := vad.feed(f)) is not None]
    assert [type(e) for _, e in events] == [SpeechStarted, SpeechStopped]
    clip_start, clip_end = 10 * FRAME_S, (10 + len(speech_frames)) * FRAME_S
    started, stopped = events[0][1], events[1][1]
    assert clip_start - 1e-9 <= started.at <= clip_start + 0.1
    assert clip_end - 0.1 <= stopped.at <= clip_end + 1e-9
    assert events[1][0] * FRAME_S + FRAME_S == pytest.approx(stopped.at + 0.16)


# -- end-of-turn silence ------------------------------------------------------------------------

TURN = TurnConfig(silence_ms=500, sentence_end_silence_ms=300, continuation_silence_ms=1200)


@pytest.mark.parametrize(
    "text",
    ["I'd like a table.", "What time do you open?", "Thanks!", "Thanks.  ", "Really?!", "Done.\n"],
)
def test_sentence_end_is_short(text: str) -> None:
    assert required_silence(text, TURN) == 0.3


@pytest.mark.parametrize(
    "text",
    [
        "I'd like a table and",
        "so, um",
        "for two, uh",
        "table for two,",
        "well...",
        "well\u2026",
        "I want to -",
        "AND",
        "and.",  # a trailing conjunction wins over the period the STT put after it
        "I need to.",
        "Because?",
        "like,",
        'um"',
    ],
)
def test_trailing_conjunction_filler_or_comma_waits_longer(text: str) -> None:
    assert required_silence(text, TURN) == 1.2


@pytest.mark.parametrize("text", ["Book a table", "brand", "android", "sand", "Um-brella stand", "3:30"])
def test_plain_text_takes_plain_silence(text: str) -> None:
    assert required_silence(text, TURN) == 0.5


@pytest.mark.parametrize("text", ["", "   ", "\n"])
def test_empty_text_takes_plain_silence(text: str) -> None:
    assert required_silence(text, TURN) == 0.5


def test_continuation_words_come_from_config() -> None:
    config = TurnConfig(
        silence_ms=500, sentence_end_silence_ms=300, continuation_silence_ms=1200, continuation_words=("well",)
    )
    assert required_silence("oh well", config) == 1.2
    assert required_silence("bread and", config) == 0.5
    assert required_silence("bread and.", config) == 0.3
