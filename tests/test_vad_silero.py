"""Silero VAD: the window/context/state bookkeeping against a scripted session (exact), the real
model on the speech clips at 8 and 16 kHz, per-call state, hysteresis, a whole call, selection
from config, and the errors for a missing package, a bad rate and a bad config value."""

from __future__ import annotations

import re
import sys

import numpy as np
import pytest
import soxr

from ringline.benchmarks.clips import load_clip
from ringline.config.settings import AgentConfig, VadConfig, load_settings
from ringline.engine import providers
from ringline.engine.audio.g711 import ulaw_decode
from ringline.engine.errors import ConfigError
from ringline.engine.record import EndReason
from ringline.engine.vad.activity import SpeechStarted, SpeechStopped, VoiceActivity, WebRtcClassifier, make_classifier
from ringline.engine.vad.silero import SileroClassifier, load_model, model_path, warm_up
from tests.helpers import CallDriver

FRAME_S = 0.02
RATES = [8000, 16000]
WINDOW = {8000: 256, 16000: 512}
CONTEXT = {8000: 32, 16000: 64}
MISSING = "ringline_test_no_such_package"
MISSING_MESSAGE = (
    "vad.engine 'silero' needs the silero-vad package, which is not installed: run "
    "`pip install --no-deps silero-vad` (--no-deps: it declares torch, which Ringline does not use)"
)


def frame_samples(rate: int) -> int:
    return rate // 50


def frames_of(pcm: np.ndarray, rate: int) -> list[bytes]:
    n = frame_samples(rate)
    return [pcm[i : i + n].astype("<i2").tobytes() for i in range(0, len(pcm) - n + 1, n)]


def clip_pcm(name: str, rate: int) -> np.ndarray:
    """A speech clip (8 kHz mu-law) as PCM16 at ``rate``."""
    pcm = np.frombuffer(ulaw_decode(load_clip(name)), dtype="<i2")
    if rate == 8000:
        return pcm
    return soxr.resample(pcm, 8000, rate)


def silence(seconds: float, rate: int) -> np.ndarray:
    return np.zeros(round(seconds * rate), dtype=np.int16)


def noise(seconds: float, rate: int, dbfs: float, seed: int = 0) -> np.ndarray:
    samples = np.random.default_rng(seed).standard_normal(round(seconds * rate)) * 32768 * 10 ** (dbfs / 20)
    return np.round(samples).astype(np.int16)


# -- bookkeeping, against a scripted session --------------------------------------------------


class ScriptedSession:
    """Stands in for the ``InferenceSession``: answers each run with the next scripted
    probability and ``state + 1``, and keeps copies of what it was given."""

    def __init__(self, probabilities: list[float]) -> None:
        self.probabilities = list(probabilities)
        self.inputs: list[dict[str, np.ndarray]] = []

    def run(self, outputs: object, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        assert outputs is None
        self.inputs.append({k: np.array(v, copy=True) for k, v in feeds.items()})
        p = self.probabilities.pop(0)
        return [np.array([[p]], dtype=np.float32), feeds["state"] + 1]


def ramp(n: int) -> np.ndarray:
    """Distinct-enough samples that a misplaced copy shows."""
    return (np.arange(n) * 7 % 20000 - 10000).astype(np.int16)


@pytest.mark.parametrize("rate", RATES)
def test_windows_are_whole_with_the_previous_windows_tail_in_front(rate: int) -> None:
    window, context = WINDOW[rate], CONTEXT[rate]
    session = ScriptedSession([0.1] * 5)
    classifier = SileroClassifier(rate, session=session)
    audio = ramp(5 * window)
    runs_after = []
    for frame in frames_of(audio, rate):  # 8 frames hold exactly 5 windows
        classifier.is_speech(frame)
        runs_after.append(len(session.inputs))
    assert runs_after == [0, 1, 1, 2, 3, 3, 4, 5]  # a window completes in 5 frames of 8
    scaled = audio.astype(np.float32) / 32768
    for i, fed in enumerate(session.inputs):
        expected_context = np.zeros(context, np.float32) if i == 0 else scaled[i * window - context : i * window]
        expected = np.concatenate([expected_context, scaled[i * window : (i + 1) * window]])
        np.testing.assert_array_equal(fed["input"], expected[None])
        assert fed["input"].dtype == np.float32
        np.testing.assert_array_equal(fed["state"], np.full((2, 1, 128), i, np.float32))  # each run's state goes on
        assert fed["sr"].dtype == np.int64 and fed["sr"].shape == () and int(fed["sr"]) == rate


def test_frames_of_any_length_make_the_same_windows() -> None:
    audio = ramp(3 * 256 + 100)
    by_frames, odd = ScriptedSession([0.1] * 3), ScriptedSession([0.1] * 3)
    a, b = SileroClassifier(8000, session=by_frames), SileroClassifier(8000, session=odd)
    for frame in frames_of(audio, 8000):
        a.is_speech(frame)
    raw = audio.tobytes()
    for i in range(0, len(raw), 2 * 37):  # 37-sample chunks
        b.is_speech(raw[i : i + 2 * 37])
    assert len(by_frames.inputs) == len(odd.inputs) == 3
    for x, y in zip(by_frames.inputs, odd.inputs, strict=True):
        np.testing.assert_array_equal(x["input"], y["input"])


def loud_frames(count: int) -> list[bytes]:
    return [np.full(256, 3000, dtype="<i2").tobytes()] * count  # one window each, -21 dBFS


def test_hysteresis_between_threshold_and_threshold_minus_015() -> None:
    probabilities = [0.2, 0.5, 0.4, 0.36, 0.351, 0.349, 0.49, 0.5, 0.1]
    classifier = SileroClassifier(8000, threshold=0.5, session=ScriptedSession(probabilities))
    voiced = [classifier.is_speech(f) for f in loud_frames(len(probabilities))]
    assert voiced == [False, True, True, True, True, False, False, True, False]
    assert classifier.probability == pytest.approx(0.1)


def test_a_frame_answers_with_the_latest_complete_window() -> None:
    classifier = SileroClassifier(8000, session=ScriptedSession([0.9, 0.1]))
    loud = np.full(160, 3000, dtype="<i2").tobytes()
    # windows complete in frames 2 (samples 256) and 4 (512): frame 1 has no window yet
    assert [classifier.is_speech(loud) for _ in range(4)] == [False, True, True, False]


def test_low_threshold_keeps_a_positive_release_threshold() -> None:
    classifier = SileroClassifier(8000, threshold=0.1, session=ScriptedSession([0.2, 0.05, 0.009]))
    assert [classifier.is_speech(f) for f in loud_frames(3)] == [True, True, False]  # released below 0.01


def test_frames_below_the_energy_floor_are_never_speech() -> None:
    classifier = SileroClassifier(8000, energy_floor_dbfs=-30.0, session=ScriptedSession([0.99] * 3))
    quiet = np.full(256, 500, dtype="<i2").tobytes()  # -36 dBFS
    loud = np.full(256, 1500, dtype="<i2").tobytes()  # -27 dBFS
    assert [classifier.is_speech(f) for f in (quiet, loud, quiet)] == [False, True, False]


def test_unsupported_rate_and_threshold_are_errors() -> None:
    session = ScriptedSession([])
    with pytest.raises(ValueError, match=r"^Silero VAD takes 8000 or 16000 Hz audio, got 48000 Hz$"):
        SileroClassifier(48000, session=session)
    with pytest.raises(ValueError, match=r"^Silero threshold must be between 0 and 1, got 1.0$"):
        SileroClassifier(8000, threshold=1.0, session=session)


# -- the package and the model ------------------------------------------------------------------


def test_model_is_found_without_importing_the_package_or_torch() -> None:
    path = model_path()
    assert path.name == "silero_vad.onnx" and path.parent.name == "data" and path.is_file()
    load_model()
    assert "silero_vad" not in sys.modules
    assert "torch" not in sys.modules


def test_the_model_takes_what_the_classifier_gives_it() -> None:
    session = load_model()
    inputs = {i.name: (i.type, i.shape) for i in session.get_inputs()}
    assert inputs["input"][0] == "tensor(float)" and len(inputs["input"][1]) == 2
    assert inputs["state"][0] == "tensor(float)" and inputs["state"][1][0] == 2 and inputs["state"][1][2] == 128
    assert inputs["sr"] == ("tensor(int64)", [])
    assert [o.name for o in session.get_outputs()] == ["output", "stateN"]


def test_one_session_per_process() -> None:
    assert load_model() is load_model()


def test_missing_package_is_a_config_error_naming_the_fix() -> None:
    with pytest.raises(ConfigError) as err:
        model_path(MISSING)
    assert str(err.value) == MISSING_MESSAGE
    with pytest.raises(ConfigError) as err:
        load_model(MISSING)
    assert str(err.value) == MISSING_MESSAGE


async def test_warm_up_reports_a_missing_package_and_loads_an_installed_one() -> None:
    with pytest.raises(ConfigError) as err:
        await warm_up(MISSING)
    assert str(err.value) == MISSING_MESSAGE
    await warm_up()
    assert load_model() is load_model()


async def test_the_server_warms_silero_up_only_for_agents_that_use_it() -> None:
    said: list[str] = []
    await providers.warm_up([AgentConfig()], said.append)
    assert said == []
    await providers.warm_up([AgentConfig(), AgentConfig(vad=VadConfig(engine="silero"))], said.append)
    assert said[0] == "loading silero vad ..." and re.fullmatch(r"silero vad ready in [\d.]+ s", said[1])


# -- the real model on real speech --------------------------------------------------------------


def classify(pcm: np.ndarray, rate: int, **kwargs: float) -> tuple[list[bool], list[float]]:
    classifier = SileroClassifier(rate, **kwargs)
    voiced, probabilities = [], []
    for frame in frames_of(pcm, rate):
        voiced.append(classifier.is_speech(frame))
        probabilities.append(classifier.probability)
    return voiced, probabilities


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("name", ["book_table.wav", "open_tomorrow.wav", "prices.wav", "reschedule.wav"])
def test_speech_is_voiced_and_silence_around_it_is_not(rate: int, name: str) -> None:
    speech = clip_pcm(name, rate)
    lead = 25  # frames of silence before the clip
    voiced, _ = classify(np.concatenate([silence(lead * FRAME_S, rate), speech, silence(0.5, rate)]), rate)
    clip_frames = len(speech) // frame_samples(rate)
    assert not any(voiced[:lead])
    inside = voiced[lead + 3 : lead + clip_frames - 3]  # the model needs a window or two to react
    assert sum(inside) >= 0.75 * len(inside)
    assert not any(voiced[lead + clip_frames + 8 :])  # 160 ms after the clip


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("dbfs", [-70.0, -55.0, -45.0])
def test_digital_silence_and_low_noise_are_not_speech(rate: int, dbfs: float) -> None:
    # No energy floor: this is the model's own verdict.
    for audio in (silence(2.0, rate), noise(2.0, rate, dbfs)):
        voiced, probabilities = classify(audio, rate, energy_floor_dbfs=-120.0)
        assert not any(voiced)
        assert max(probabilities) < 0.2


@pytest.mark.parametrize("rate", RATES)
def test_calls_do_not_share_state(rate: int) -> None:
    a_audio = np.concatenate([silence(0.2, rate), clip_pcm("prices.wav", rate), silence(0.4, rate)])
    b_audio = np.concatenate([noise(0.5, rate, -40.0), clip_pcm("thanks.wav", rate)])
    a_alone, b_alone = classify(a_audio, rate), classify(b_audio, rate)
    a, b = SileroClassifier(rate), SileroClassifier(rate)
    a_mixed: tuple[list[bool], list[float]] = ([], [])
    b_mixed: tuple[list[bool], list[float]] = ([], [])
    for fa, fb in zip(frames_of(a_audio, rate), frames_of(b_audio, rate), strict=False):
        for classifier, frame, out in ((a, fa, a_mixed), (b, fb, b_mixed)):
            out[0].append(classifier.is_speech(frame))
            out[1].append(classifier.probability)
    n = len(a_mixed[0])
    assert n > 100 and any(a_mixed[0]) and any(b_mixed[0])
    assert a_mixed[0] == a_alone[0][:n] and b_mixed[0] == b_alone[0][:n]
    assert a_mixed[1] == a_alone[1][:n] and b_mixed[1] == b_alone[1][:n]


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("name", ["prices.wav", "delivery.wav", "thanks.wav"])
def test_voice_activity_starts_and_stops_around_a_clip(rate: int, name: str) -> None:
    # Not book_table.wav: at 16 kHz Silero hears the pause after "Hi," as 180 ms, over stop_ms.
    config = VadConfig(engine="silero")
    vad = VoiceActivity(config, make_classifier(config, rate))
    speech = clip_pcm(name, rate)
    lead = 10
    audio = np.concatenate([silence(lead * FRAME_S, rate), speech, silence(0.6, rate)])
    events = [(i, e) for i, f in enumerate(frames_of(audio, rate)) if (e := vad.feed(f)) is not None]
    assert [type(e) for _, e in events] == [SpeechStarted, SpeechStopped]
    clip_start, clip_end = lead * FRAME_S, lead * FRAME_S + len(speech) / rate
    started, stopped = events[0][1], events[1][1]
    assert clip_start - 1e-9 <= started.at <= clip_start + 0.1
    assert clip_end - 0.1 <= stopped.at <= clip_end + 0.02
    assert (events[1][0] + 1) * FRAME_S == pytest.approx(stopped.at + 0.16)  # stop_ms after the last voiced frame


async def test_a_call_with_silero_hears_the_caller_and_answers_after_the_silence() -> None:
    bench = load_settings("config/bench.toml").agents["default"]
    agent = bench.model_copy(update={"vad": bench.vad.model_copy(update={"engine": "silero"})})
    d = CallDriver(agent)
    await d.start()
    try:
        last = await d.say(load_clip("prices.wav"))
        first_audio = await d.until(lambda: d.phone.media_times)
        assert 0.18 <= first_audio - last <= 0.26  # 200 ms end-of-turn silence after the last voiced frame
        assert [t["role"] for t in d.call.transcript()] == ["user", "assistant"]
    finally:
        await d.call.end(EndReason.CALLER_HANGUP)


# -- configuration --------------------------------------------------------------------------------


def test_webrtc_is_the_default_and_silero_is_chosen_by_config() -> None:
    assert VadConfig().engine == "webrtc"
    assert isinstance(make_classifier(VadConfig(), 8000), WebRtcClassifier)
    assert isinstance(make_classifier(VadConfig(engine="silero"), 16000), SileroClassifier)


def test_settings_load_selects_silero() -> None:
    settings = load_settings(data={"agents": {"default": {"vad": {"engine": "silero", "silero_threshold": 0.6}}}})
    vad = settings.agent(None).vad
    assert (vad.engine, vad.silero_threshold) == ("silero", 0.6)


@pytest.mark.parametrize(
    ("vad", "message"),
    [
        ({"engine": "cobra"}, "agents.default.vad.engine: Input should be 'webrtc' or 'silero'"),
        ({"silero_threshold": 1.0}, "agents.default.vad.silero_threshold: Input should be less than 1"),
        ({"silero_threshold": 0}, "agents.default.vad.silero_threshold: Input should be greater than 0"),
    ],
)
def test_bad_vad_settings_name_the_field(vad: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(data={"agents": {"default": {"vad": vad}}})
    assert str(err.value) == f"config is invalid:\n  {message}"
