"""Call recording: both sides on the caller's timeline, clears cut, a stereo WAV out."""

from __future__ import annotations

import wave

import numpy as np
import pytest

from ringline.benchmarks.clips import load_clip
from ringline.engine.audio.formats import MULAW_8K, PCM16_8K
from ringline.engine.audio.g711 import encode
from ringline.engine.record import EndReason
from ringline.engine.recording import CallRecorder
from ringline.engine.turns import TurnState
from tests.helpers import CallDriver
from tests.test_call import agent

BOOK = load_clip("book_table.wav")
PRICES = load_clip("prices.wav")
TONE = b"\x10" * 160  # a loud mu-law frame


def test_agent_audio_plays_after_what_was_queued_or_from_now_if_the_buffer_ran_dry() -> None:
    rec = CallRecorder(MULAW_8K)
    rec.heard(b"\xff" * 800)  # 100 ms of caller
    rec.said(TONE)  # buffer dry: plays from 100 ms
    rec.said(TONE)  # queued after it
    assert len(rec.agent) == 800 + 320 and rec.agent[800:] == TONE * 2
    rec.heard(b"\xff" * 160)  # 120 ms: the second frame has not played yet
    rec.cleared()
    assert len(rec.agent) == 960  # the unplayed frame is gone
    rec.heard(b"\xff" * 800)
    rec.said(TONE)
    assert len(rec.agent) == 1760 + 160 and rec.agent[1760:] == TONE


def test_pcm_wires_are_recorded_as_mulaw() -> None:
    rec = CallRecorder(PCM16_8K)
    pcm = np.full(160, 8000, dtype="<i2").tobytes()
    rec.heard(pcm)
    assert bytes(rec.caller) == encode(pcm, MULAW_8K.encoding)


def read_stereo(path) -> tuple[np.ndarray, np.ndarray, int]:
    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getsampwidth()) == (2, 2)
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, 2)
        return data[:, 0], data[:, 1], w.getframerate()


def loud(track: np.ndarray, rate: int) -> np.ndarray:
    """Which 20 ms frames of a track have sound."""
    frames = track[: len(track) // 160 * 160].reshape(-1, 160).astype(np.float64)
    return np.sqrt((frames**2).mean(axis=1)) > 300


async def test_a_recorded_call_has_the_caller_left_and_the_agent_right_in_time(tmp_path):
    d = CallDriver(agent(recording=True))
    await d.start()
    await d.wait(0.2)
    last = await d.say(BOOK)
    await d.until(lambda: d.call.turn_state is TurnState.LISTENING and d.phone.media_times)
    first_reply = d.phone.media_times[0]
    await d.call.end(EndReason.CALLER_HANGUP)
    path = tmp_path / "call.wav"
    d.call.recorder.write_wav(path)
    left, right, rate = read_stereo(path)
    assert rate == 8000
    caller, agent_ = loud(left, rate), loud(right, rate)
    start = 1000.0  # the driver's clock origin
    assert d.call.recorder.caller[1600 : 1600 + len(BOOK)] == BOOK  # after 0.2 s of silence, exactly
    speech = slice(10, round((last - start) / 0.02))
    assert caller[speech].mean() > 0.7 and not agent_[speech].any()  # caller talking, agent quiet
    reply_from = round((first_reply - start) / 0.02)
    assert agent_[reply_from + 1 : reply_from + 45].all()  # 1 s reply right where it was sent (+- a frame)...
    assert not caller[reply_from : reply_from + 45].any()  # ...over the caller's silence
    assert len(left) == len(right) == pytest.approx((d.clock.now() - start) * 8000, abs=800)


async def test_a_barge_in_cuts_the_agent_track_where_the_caller_stopped_hearing_it(tmp_path):
    d = CallDriver(agent(recording=True, **{"tts.seconds_per_phrase": 3.0}))
    await d.start()
    await d.say(BOOK)
    await d.until(lambda: d.call.turn_state is TurnState.AGENT_SPEAKING)
    await d.wait(1.0)
    barge = d.clock.now()
    await d.say(PRICES)
    await d.call.end(EndReason.CALLER_HANGUP)
    path = tmp_path / "call.wav"
    d.call.recorder.write_wav(path)
    _, right, rate = read_stereo(path)
    agent_ = loud(right, rate)
    cut = round((d.phone.clears[0] - 1000.0) / 0.02)
    assert agent_[cut - 20 : cut].all()  # the reply played up to the clear...
    assert not agent_[cut + 1 :].any()  # ...and nothing of its unplayed rest is in the recording
    assert d.phone.clears[0] - barge < 0.3
