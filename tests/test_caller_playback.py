"""PlaybackBuffer: Twilio's playback of agent audio, with explicit times."""

from __future__ import annotations

import pytest

from ringline.benchmarks.playback import PlaybackBuffer

pytestmark = pytest.mark.timeout(5)

S = 8000  # samples (mu-law bytes) per second


def audio(seconds: float, byte: int = 0x10) -> bytes:
    return bytes([byte]) * round(seconds * S)


def test_audio_pushed_to_an_idle_buffer_plays_from_now_and_queues_behind() -> None:
    buf = PlaybackBuffer()
    assert buf.idle(0.0)
    assert buf.push(audio(0.5), 1.0) == 1.0
    assert buf.push(audio(0.25), 1.2) == 1.5  # queued behind the first chunk
    assert buf.end_time == 1.75
    assert not buf.idle(1.7)
    assert buf.idle(1.75)
    assert buf.buffered(1.25) == pytest.approx(0.5)
    assert [(s.start, s.samples) for s in buf.segments] == [(1.0, 6000)]


def test_played_samples_count_only_what_was_played_by_now() -> None:
    buf = PlaybackBuffer()
    buf.push(audio(1.0), 0.0)
    assert buf.played_samples(0.0) == 0
    assert buf.played_samples(0.25) == 2000
    assert buf.played_samples(5.0) == 8000
    # a later chunk after the line went quiet starts a new segment at its arrival
    buf.push(audio(0.5), 3.0)
    assert [(s.start, s.samples) for s in buf.segments] == [(0.0, 8000), (3.0, 4000)]
    assert buf.played_samples(3.125) == 9000


def test_mark_on_an_idle_buffer_is_echoed_at_once() -> None:
    buf = PlaybackBuffer()
    assert buf.mark("a", 2.0) == ["a"]
    buf.push(audio(0.1), 2.0)
    assert buf.mark("b", 2.5) == ["b"]  # that audio finished playing at 2.1
    assert buf.next_mark_due() is None


def test_mark_is_due_when_playback_reaches_it() -> None:
    buf = PlaybackBuffer()
    buf.push(audio(0.4), 1.0)
    assert buf.mark("first", 1.1) == []
    buf.push(audio(0.2), 1.1)
    assert buf.mark("second", 1.1) == []
    assert buf.next_mark_due() == pytest.approx(1.4)
    assert buf.due_marks(1.399) == []
    assert buf.due_marks(1.4) == ["first"]
    assert buf.next_mark_due() == pytest.approx(1.6)
    assert buf.due_marks(1.5) == []
    assert buf.due_marks(2.0) == ["second"]


def test_clear_drops_unplayed_audio_and_echoes_every_pending_mark_in_order() -> None:
    buf = PlaybackBuffer(keep_audio=True)
    buf.push(audio(0.5, 0x01) + audio(0.5, 0x02), 0.0)
    buf.mark("m1", 0.0)
    buf.push(audio(0.5), 0.0)
    buf.mark("m2", 0.0)
    assert buf.clear(0.25) == ["m1", "m2"]
    assert buf.next_mark_due() is None
    assert buf.idle(0.25)
    assert buf.end_time == pytest.approx(0.25)
    seg = buf.segments[0]
    assert seg.samples == 2000
    assert seg.audio == audio(0.25, 0x01)
    assert buf.cleared_samples == 10000
    assert buf.played_samples(9.0) == 2000
    # after a clear, new audio plays at once
    assert buf.push(audio(0.1), 0.3) == 0.3


def test_clear_on_an_idle_buffer_drops_nothing() -> None:
    buf = PlaybackBuffer()
    buf.push(audio(0.2), 0.0)
    assert buf.clear(1.0) == []
    assert buf.cleared_samples == 0
    assert buf.segments[0].samples == 1600
