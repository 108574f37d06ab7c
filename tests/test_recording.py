"""Call recording: both sides on the caller's timeline, clears cut, streamed to a stereo WAV in
bounded memory; a long call, a crash mid-call and a failing disk."""

from __future__ import annotations

import asyncio
import shutil
import struct
import tracemalloc
import wave
from pathlib import Path

import numpy as np
import pytest

from ringline.benchmarks.clips import load_clip
from ringline.engine.audio.formats import MULAW_8K, PCM16_8K
from ringline.engine.audio.g711 import decode, encode
from ringline.engine.record import EndReason
from ringline.engine.recording import CallRecorder, RecorderState, StereoTimeline
from ringline.engine.turns import TurnState
from tests.helpers import CallDriver
from tests.test_call import agent

BOOK = load_clip("book_table.wav")
PRICES = load_clip("prices.wav")
TONE = b"\x10" * 160  # a loud mu-law frame


def test_agent_audio_plays_after_what_was_queued_or_from_now_if_the_buffer_ran_dry() -> None:
    t = StereoTimeline()
    t.heard(b"\xff" * 800)  # 100 ms of caller
    t.said(TONE)  # buffer dry: plays from 100 ms
    t.said(TONE)  # queued after it
    assert len(t.agent) == 800 + 320 and t.agent[800:] == TONE * 2
    t.heard(b"\xff" * 160)  # 120 ms: the second frame has not played yet
    t.cleared()
    assert len(t.agent) == 960  # the unplayed frame is gone
    t.heard(b"\xff" * 800)
    t.said(TONE)
    assert len(t.agent) == 1760 + 160 and t.agent[1760:] == TONE


def test_taking_the_settled_part_keeps_positions_relative_to_the_caller() -> None:
    t = StereoTimeline()
    t.heard(b"\x01" * 1000)
    t.said(TONE)  # from 1000
    left, right = t.take()
    assert (left, right) == (b"\x01" * 1000, b"\xff" * 1000)  # the agent's frame is ahead: not taken
    assert (t.base, bytes(t.agent), len(t.caller)) == (1000, TONE, 0)
    t.heard(b"\x02" * 80)
    t.cleared()  # the provider dropped the 80 samples not yet played
    assert bytes(t.agent) == TONE[:80]
    t.heard(b"\x02" * 400)
    t.said(TONE)  # the buffer ran dry at 1080: plays from the caller's position, 1480
    assert t.end == 1480 + 160
    left, right = t.take(everything=True)
    assert right == TONE[:80] + b"\xff" * 400 + TONE and left == b"\x02" * 480 + b"\xff" * 160
    assert t.held_bytes == 0 and t.base == 1640


def test_pcm_wires_are_recorded_as_mulaw() -> None:
    rec = CallRecorder(PCM16_8K)
    pcm = np.full(160, 8000, dtype="<i2").tobytes()
    rec.heard(pcm)
    assert bytes(rec.timeline.caller) == encode(pcm, MULAW_8K.encoding)


def read_stereo(path: Path) -> tuple[np.ndarray, np.ndarray, int]:
    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getsampwidth()) == (2, 2)
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, 2)
        return data[:, 0], data[:, 1], w.getframerate()


def header_sizes(path: Path) -> tuple[int, int]:
    """(RIFF size, data size) as written in the header."""
    head = path.read_bytes()[:44]
    assert head[:4] == b"RIFF" and head[8:16] == b"WAVEfmt " and head[36:40] == b"data"
    return struct.unpack_from("<I", head, 4)[0], struct.unpack_from("<I", head, 40)[0]


def loud(track: np.ndarray, rate: int) -> np.ndarray:
    """Which 20 ms frames of a track have sound."""
    frames = track[: len(track) // 160 * 160].reshape(-1, 160).astype(np.float64)
    return np.sqrt((frames**2).mean(axis=1)) > 300


async def test_a_recorded_call_has_the_caller_left_and_the_agent_right_in_time(tmp_path: Path) -> None:
    d = CallDriver(agent(recording=True))
    assert d.call.recorder is not None
    path = tmp_path / "call.wav"
    d.call.recorder.open(path)
    await d.start()
    await d.wait(0.2)
    last = await d.say(BOOK)
    await d.until(lambda: d.call.turn_state is TurnState.LISTENING and d.phone.media_times)
    first_reply = d.phone.media_times[0]
    await d.call.end(EndReason.CALLER_HANGUP)
    assert await d.call.recorder.aclose() == path
    left, right, rate = read_stereo(path)
    assert rate == 8000
    caller, agent_ = loud(left, rate), loud(right, rate)
    start = 1000.0  # the driver's clock origin
    assert left[1600 : 1600 + len(BOOK)].tobytes() == decode(BOOK, MULAW_8K.encoding)  # after 0.2 s, exactly
    speech = slice(10, round((last - start) / 0.02))
    assert caller[speech].mean() > 0.7 and not agent_[speech].any()  # caller talking, agent quiet
    reply_from = round((first_reply - start) / 0.02)
    assert agent_[reply_from + 1 : reply_from + 45].all()  # 1 s reply right where it was sent (+- a frame)...
    assert not caller[reply_from : reply_from + 45].any()  # ...over the caller's silence
    assert len(left) == len(right) == pytest.approx((d.clock.now() - start) * 8000, abs=800)
    assert header_sizes(path) == (path.stat().st_size - 8, path.stat().st_size - 44)


async def test_a_barge_in_cuts_the_agent_track_where_the_caller_stopped_hearing_it(tmp_path: Path) -> None:
    d = CallDriver(agent(recording=True, **{"tts.seconds_per_phrase": 3.0}))
    assert d.call.recorder is not None
    d.call.recorder.open(tmp_path / "call.wav")
    await d.start()
    await d.say(BOOK)
    await d.until(lambda: d.call.turn_state is TurnState.AGENT_SPEAKING)
    await d.wait(1.0)
    barge = d.clock.now()
    await d.say(PRICES)
    await d.call.end(EndReason.CALLER_HANGUP)
    path = await d.call.recorder.aclose()
    assert path is not None
    _, right, rate = read_stereo(path)
    agent_ = loud(right, rate)
    cut = round((d.phone.clears[0] - 1000.0) / 0.02)
    assert agent_[cut - 20 : cut].all()  # the reply played up to the clear...
    assert not agent_[cut + 1 :].any()  # ...and nothing of its unplayed rest is in the recording
    assert d.phone.clears[0] - barge < 0.3


# -- bounded memory, crash safety, failures -------------------------------------------------------


def caller_frame(k: int) -> bytes:
    """Frame ``k`` of the caller: a ramp of mu-law codes that says which frame it is."""
    return bytes((k * 7 + i) % 256 for i in range(160))


async def feed(rec: CallRecorder, frames: int, *, first: int = 0, reply_every: int = 250) -> int:
    """``frames`` 20 ms frames as a call sends them: one inbound frame at a time, the event loop
    free in between, a 2 s reply queued 200 ms ahead every ``reply_every`` frames, a clear now and
    then. Returns the most audio the recorder held at once (bytes)."""
    most = 0
    for k in range(first, first + frames):
        rec.heard(caller_frame(k))
        if k % reply_every == 0:
            for _ in range(10):  # the playout keeps ~200 ms queued at the provider
                rec.said(TONE)
        elif k % reply_every < 100 and k % 2 == 0:
            rec.said(TONE)
            rec.said(TONE)
        if k % 1000 == 999:
            rec.cleared()
        most = max(most, rec.buffered_bytes)
        await asyncio.sleep(0)  # the next frame comes from the socket
        if k % 50 == 49:  # a second of audio takes a second to come: the disk has long written the last
            await rec.written()
    return most


async def test_ten_minutes_are_streamed_in_bounded_memory_with_the_header_right(tmp_path: Path) -> None:
    frames = 10 * 60 * 50
    rec = CallRecorder(MULAW_8K)
    path = tmp_path / "long.wav"
    rec.open(path)
    most = await feed(rec, frames - 6000)
    tracemalloc.start()  # over the last two minutes only (tracing costs 10x): holding on would add 1.9 MB
    try:
        most = max(most, await feed(rec, 6000, first=frames - 6000))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # One second a track plus what is queued ahead: tens of KB, where the whole call would be
    # 9.6 MB as mu-law (19 MB as the WAV's PCM).
    assert most < 40_000
    assert peak < 500_000
    assert await rec.aclose() == path and rec.state is RecorderState.CLOSED
    size = path.stat().st_size
    samples = frames * 160
    assert size >= 44 + 4 * samples
    assert header_sizes(path) == (size - 8, size - 44)
    left, right, _ = read_stereo(path)
    assert len(left) == (size - 44) // 4
    for k in (0, 1, 12345, frames - 1):  # the caller's frames are all there, in order
        assert left[k * 160 : (k + 1) * 160].tobytes() == decode(caller_frame(k), MULAW_8K.encoding)
    assert loud(right, 8000)[1:10].all() and not loud(right, 8000)[150:240].any()  # replies from 20 ms, then silence


async def test_a_crash_mid_call_leaves_a_readable_file_up_to_the_last_flush(tmp_path: Path) -> None:
    rec = CallRecorder(MULAW_8K)
    path = tmp_path / "crash.wav"
    rec.open(path)
    await feed(rec, 50 * 7 + 30)  # 7.6 s
    await rec.written()  # the last flush's write, as a crash a moment later would find it
    copy = tmp_path / "after-crash.wav"
    shutil.copy(path, copy)  # the file as the process left it, never closed
    flushed = rec.timeline.base
    assert flushed == 7 * 8000  # whole seconds: the rest was still in memory
    left, right, rate = read_stereo(copy)
    assert len(left) == len(right) == flushed and rate == 8000
    assert header_sizes(copy) == (copy.stat().st_size - 8, copy.stat().st_size - 44)
    assert left[-160:].tobytes() == decode(caller_frame(349), MULAW_8K.encoding)
    await rec.aclose()
    assert len(read_stereo(path)[0]) == rec.timeline.base  # and closing writes the rest


async def test_a_disk_that_fails_stops_the_recording_not_the_call(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the recordings directory should be")
    rec = CallRecorder(MULAW_8K)
    rec.open(blocker / "call.wav")
    most = await feed(rec, 50 * 5)
    assert rec.state is RecorderState.FAILED and rec.error is not None and rec.error.startswith("FileExistsError")
    assert most < 40_000 and rec.buffered_bytes < 20_000  # nothing piles up after the failure
    assert await rec.aclose() is None
    assert "recording" in caplog.text and "stopped" in caplog.text


async def test_a_recorder_never_given_a_file_keeps_nothing(tmp_path: Path) -> None:
    rec = CallRecorder(MULAW_8K)
    most = await feed(rec, 50 * 60)
    assert most < 40_000 and rec.seconds == pytest.approx(60.0, abs=0.3)
    assert await rec.aclose() is None and rec.state is RecorderState.CLOSED
    assert not await asyncio.to_thread(lambda: list(tmp_path.iterdir()))
