import asyncio

import pytest

from ringline.config.settings import PlayoutConfig
from ringline.engine.audio.clock import FakeClock
from ringline.engine.playout import MARK_GRACE, Playout, PlayoutState
from tests.helpers import PlayoutEvents, RecordingTransport

SECOND = 8000  # bytes of mu-law 8 kHz


@pytest.fixture
async def setup():
    clock = FakeClock(100.0)
    transport = RecordingTransport(clock)
    events = PlayoutEvents()
    playout = Playout(transport, clock, PlayoutConfig(lead_ms=200, frame_ms=20), events)
    playout.start()
    yield clock, transport, events, playout
    await playout.aclose()


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


async def test_sends_lead_at_once_then_paces_at_real_time(setup):
    clock, transport, events, playout = setup
    playout.begin()
    playout.push(b"\x01" * SECOND, 0)
    await settle()
    media = transport.of("media")
    assert len(media) == 11  # frames 0..10: everything due within the 200 ms lead
    assert all(len(m.data) == 160 for m in media)
    assert events.started == 1
    await clock.advance(0.01)  # check half-way between frame deadlines
    for step in range(1, 11):
        await clock.advance(0.02)
        # Two frames a wake-up: frames 11+12 go out when frame 12 falls due, and so on.
        assert len(transport.of("media")) == 11 + 2 * (step // 2)
    # Frame k leaves when frame k (odd k) or k+1 (even k) is due: never more than 200 ms ahead
    # of its playback time, never less than 180 ms.
    for k, m in enumerate(transport.of("media")[11:], start=11):
        play_at = 100.0 + k * 0.02
        assert 0.18 - 1e-9 <= play_at - m.at <= 0.2 + 1e-9


async def test_final_mark_finishes_the_reply(setup):
    clock, transport, events, playout = setup
    playout.begin()
    playout.push(b"\x01" * 800, 0)  # 100 ms
    playout.end()
    await settle()
    marks = transport.of("mark")
    assert [m.data for m in marks] == ["1.0.800"]
    assert playout.state is PlayoutState.DRAINED
    assert events.finished == 0
    playout.on_mark("1.0.800")
    assert events.finished == 1
    assert playout.state is PlayoutState.IDLE


async def test_partial_last_frame_is_padded_with_silence(setup):
    clock, transport, events, playout = setup
    playout.begin()
    playout.push(b"\x01" * 200, 0)
    playout.end()
    await settle()
    media = transport.of("media")
    assert [len(m.data) for m in media] == [160, 160]
    assert media[1].data == b"\x01" * 40 + b"\xff" * 120


async def test_marks_at_phrase_boundaries(setup):
    clock, transport, events, playout = setup
    playout.begin()
    playout.push(b"\x01" * 480, 0)
    playout.push(b"\x02" * 480, 1)
    playout.end()
    await settle()
    assert [m.data for m in transport.of("mark")] == ["1.0.480", "1.0.960"]
    # The mark follows the frame that completed the phrase.
    kinds = [s.kind for s in transport.sent]
    assert kinds == ["media"] * 3 + ["mark"] + ["media"] * 3 + ["mark"]


async def test_heard_estimate_follows_time_and_never_exceeds_what_was_sent(setup):
    clock, transport, events, playout = setup
    playout.begin()
    playout.push(b"\x01" * SECOND, 0)
    await settle()
    assert playout.heard_bytes() == 0
    await clock.advance(0.5)
    assert playout.heard_bytes() == 4000
    # A mark that comes back later than expected moves the estimate back.
    playout.on_mark("1.0.3200")
    assert playout.heard_bytes() == 3200


async def test_pause_clears_and_resume_replays_from_what_was_heard(setup):
    clock, transport, events, playout = setup
    playout.begin()
    playout.push(b"\x01" * SECOND, 0)
    await settle()
    await clock.advance(0.3)
    await playout.pause()
    assert transport.sent[-1].kind == "clear"
    assert playout.state is PlayoutState.PAUSED
    assert playout.heard_bytes() == 2400
    sent_before = len(transport.of("media"))
    await clock.advance(0.5)
    assert len(transport.of("media")) == sent_before  # nothing while paused
    playout.resume()
    await settle()
    replayed = transport.of("media")[sent_before:]
    assert len(replayed) == 11
    # Audio resumes at the first unheard byte: total audio sent after resume covers the rest.
    playout.end()
    await clock.advance(2.0)
    total_after = sum(len(m.data) for m in transport.of("media")[sent_before:])
    assert total_after == SECOND - 2400


async def test_marks_from_before_a_clear_are_ignored(setup):
    clock, transport, events, playout = setup
    playout.begin()
    playout.push(b"\x01" * 800, 0)
    playout.end()
    await settle()
    await playout.pause()
    playout.on_mark("1.0.800")  # echoed by the provider because of the clear
    assert events.finished == 0
    playout.resume()
    await settle()
    assert transport.of("mark")[-1].data == "1.1.800"
    playout.on_mark("1.1.800")
    assert events.finished == 1


async def test_abandon_clears_only_if_audio_may_be_playing(setup):
    clock, transport, events, playout = setup
    playout.begin()
    playout.push(b"\x01" * SECOND, 0)
    await settle()
    await playout.abandon()
    assert transport.sent[-1].kind == "clear"
    assert playout.state is PlayoutState.IDLE
    playout.begin()
    await playout.abandon()  # nothing sent: no clear
    assert len(transport.of("clear")) == 1


async def test_underrun_slips_the_timeline_instead_of_bursting(setup):
    clock, transport, events, playout = setup
    playout.begin()
    playout.push(b"\x01" * 1600, 0)  # 200 ms, all sent at once
    await settle()
    await clock.advance(1.0)  # synthesis stalls for a second
    playout.push(b"\x01" * 1600, 0)
    await settle()
    assert playout.underruns == 1
    # The new audio goes out as a fresh lead on a slipped timeline, not as a catch-up burst.
    assert len(transport.of("media")) == 10 + 10
    await playout.pause()
    assert playout.heard_bytes() == 1600  # the stall is not counted as heard audio


async def test_missing_final_mark_is_given_up_after_grace(setup):
    clock, transport, events, playout = setup
    playout.begin()
    playout.push(b"\x01" * 800, 0)
    playout.end()
    await settle()
    await clock.advance(0.1 + MARK_GRACE - 0.05)
    playout.poll()
    assert events.finished == 0
    await clock.advance(0.1)
    playout.poll()
    assert events.finished == 1


async def test_empty_reply_finishes_at_once(setup):
    clock, transport, events, playout = setup
    playout.begin()
    playout.end()
    await settle()
    assert events.finished == 1
    assert transport.sent == []


async def test_heard_fractions_per_phrase(setup):
    clock, transport, events, playout = setup
    playout.begin()
    playout.push(b"\x01" * 800, 0)
    playout.push(b"\x01" * 1600, 1)
    playout.push(b"\x01" * 800, 2)
    await settle()
    await clock.advance(0.2)  # 1600 bytes heard: phrase 0 whole, half of phrase 1
    assert playout.heard_fractions() == [1.0, 0.5, 0.0]
