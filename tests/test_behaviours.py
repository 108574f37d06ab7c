"""Call behaviours: re-engaging a silent caller, the duration limit, the end-of-call goodbye,
fillers, ambience, backchannels and minimum interrupt words, a refused transfer.

Timing is tested on whole calls in memory on a fake clock (``CallDriver``); each behaviour is also
driven once through the real server with the caller simulator on 127.0.0.1, asserting on what the
caller received and what the call recorded."""

from __future__ import annotations

import asyncio
import math
import wave

import numpy as np
import pytest

from ringline.benchmarks.caller import CallerScript, Utterance, run_call
from ringline.benchmarks.clips import SHORT_CLIP, load_clip
from ringline.benchmarks.script import EndReason as CallerEnd
from ringline.config.behaviours import AmbienceConfig
from ringline.config.settings import load_settings
from ringline.engine.audio.ambience import AmbienceBed, AmbienceError, level_dbfs, make_loop, office
from ringline.engine.audio.formats import MULAW_8K, PCM16_8K
from ringline.engine.audio.g711 import ulaw_decode
from ringline.engine.behaviours.limits import HARD_STOP_GRACE_S, Cut, DurationLimit, SayGoodbye, Warn
from ringline.engine.behaviours.silence import GiveUp, Reengage, SilenceState, SilenceWatch
from ringline.engine.call import CallStatus
from ringline.engine.errors import ConfigError
from ringline.engine.events import EventType
from ringline.engine.llm.base import Tool
from ringline.engine.record import EndReason
from ringline.engine.tools import default_registry
from ringline.engine.turns import TurnState
from tests.helpers import CallDriver
from tests.test_call import agent
from tests.test_call_control import Events
from tests.test_server_loopback import serve, settings  # noqa: F401  (serve is a fixture)

pytestmark = pytest.mark.timeout(60)

BOOK = load_clip("book_table.wav")
PRICES = load_clip("prices.wav")
MMHM = load_clip(SHORT_CLIP)
QUIET = {"silence.enabled": False}


@pytest.fixture
async def driver():
    made: list[CallDriver] = []

    async def make(config, registry=None) -> CallDriver:
        d = CallDriver(config, registry)
        d.events = Events()
        d.call.events.observe(d.events)
        hung_up_at: list[float] = []
        hangup = d.phone.hangup

        async def record_hangup() -> None:
            hung_up_at.append(d.clock.now())
            await hangup()

        d.phone.hangup = record_hangup
        d.hung_up_at = hung_up_at
        made.append(d)
        await d.start()
        return d

    yield make
    for d in made:
        await d.call.end(EndReason.CALLER_HANGUP)


def played(d: CallDriver) -> list[tuple[float, float]]:
    """(start, end) clock times of each stretch of agent audio the caller heard."""
    return [(s.start, s.end) for s in d.phone.buffer.segments if s.samples]


def within(value: float, low: float, high: float) -> bool:
    """``low <= value <= high``, give or take float error in sums of 20 ms steps."""
    return low - 1e-6 <= value <= high + 1e-6


def said(d: CallDriver) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in d.call.transcript()]


# -- silence ---------------------------------------------------------------------------------------


def silence(**overrides):
    config = {
        "silence.reengage_after_s": 2.0,
        "silence.max_attempts": 2,
        "silence.messages": ("Are you still there?", "Hello?"),
        "silence.goodbye": "Goodbye for now.",
    }
    return agent(**{**config, **overrides})


async def test_a_silent_caller_is_reengaged_with_varied_messages_then_hung_up_on(driver):
    d = await driver(silence())
    t0 = d.clock.now()
    await d.until(lambda: d.call.status is CallStatus.ENDED, limit=15)
    assert said(d) == [
        ("assistant", "Are you still there?"),
        ("assistant", "Hello?"),
        ("assistant", "Goodbye for now."),
    ]
    assert d.call.record.end_reason is EndReason.SILENCE_TIMEOUT
    assert d.call.record.end_detail == "no answer after 2 re-engagements"
    runs = played(d)
    assert len(runs) == 3 and all(end - start == pytest.approx(1.0, abs=0.001) for start, end in runs)
    # Each message comes 2 s of silence after the agent last finished speaking (a frame or two late).
    quiet = [runs[0][0] - t0, runs[1][0] - runs[0][1], runs[2][0] - runs[1][1]]
    assert all(within(q, 2.0, 2.05) for q in quiet), quiet
    assert d.hung_up_at[0] >= runs[2][1]  # the goodbye was heard out before the hang-up


async def test_the_silence_clock_stops_while_the_agent_thinks_and_speaks(driver):
    d = await driver(silence(**{"llm.ttft_ms": 5000, "tts.seconds_per_phrase": 3.0}))
    await d.say(BOOK)
    await d.until(lambda: len(played(d)) == 2, limit=20)
    reply, reengaged = played(d)
    assert reply[1] - reply[0] == pytest.approx(3.0, abs=0.001)
    # 5 s thinking and 3 s speaking did not count: 2 s of listening after the reply did.
    assert within(reengaged[0] - reply[1], 2.0, 2.05)
    assert said(d)[-1] == ("assistant", "Are you still there?")


async def test_a_caller_who_speaks_starts_the_attempts_afresh(driver):
    d = await driver(silence(**{"silence.max_attempts": 1, "silence.reengage_after_s": 1.0}))
    await d.until(lambda: len(played(d)) == 1)
    await d.until(lambda: d.call.turn_state is TurnState.LISTENING)
    await d.say(BOOK)  # answers the re-engagement
    await d.until(lambda: d.call.status is CallStatus.ENDED, limit=15)
    assert said(d) == [
        ("assistant", "Are you still there?"),
        ("user", "Tell me more."),
        ("assistant", "Sure, here is the answer"),
        ("assistant", "Are you still there?"),  # attempt 1 again, not the goodbye
        ("assistant", "Goodbye for now."),
    ]
    assert d.call.record.end_reason is EndReason.SILENCE_TIMEOUT


async def test_the_silence_goodbye_cannot_be_talked_over(driver):
    d = await driver(silence(**{"silence.max_attempts": 0, "tts.seconds_per_phrase": 3.0}))
    await d.until(lambda: d.phone.media_times)
    await d.say(PRICES)  # talks over the goodbye
    await d.until(lambda: d.call.status is CallStatus.ENDED, limit=10)
    assert d.phone.clears == []
    assert said(d) == [("assistant", "Goodbye for now.")]
    assert played(d)[0][1] - played(d)[0][0] == pytest.approx(3.0, abs=0.001)


async def test_silence_handling_can_be_turned_off(driver):
    d = await driver(agent(**QUIET, **{"silence.reengage_after_s": 0.5}))
    await d.wait(3.0)
    assert d.phone.media_times == [] and d.call.status is CallStatus.ACTIVE


def test_silence_watch_counts_only_unbroken_listening():
    config = agent(**{"silence.reengage_after_s": 1.0, "silence.max_attempts": 1}).silence
    watch = SilenceWatch(config)
    assert watch.poll(0.0, True) is None and watch.state is SilenceState.WAITING
    assert watch.poll(0.9, True) is None
    assert watch.poll(0.95, False) is None and watch.state is SilenceState.IDLE  # the agent spoke
    assert watch.poll(1.0, True) is None  # counting again from here
    assert watch.poll(1.99, True) is None
    assert watch.poll(2.0, True) == Reengage(config.messages[0], 1)
    assert watch.poll(2.02, True) is None
    assert watch.poll(3.02, True) == GiveUp(config.goodbye)
    assert watch.poll(9.0, True) is None and watch.state is SilenceState.GAVE_UP


# -- call duration limit ---------------------------------------------------------------------------


async def test_the_duration_limit_warns_then_says_goodbye_and_hangs_up(driver):
    d = await driver(agent(**QUIET, max_duration_s=6.0, duration_warning_s=3.0))
    t0 = d.clock.now()
    await d.say(BOOK[: 160 * 50])  # a second of speech: the reply plays from ~1.2 s to ~2.2 s
    await d.until(lambda: d.call.status is CallStatus.ENDED, limit=12)
    assert said(d) == [
        ("user", "Tell me more."),
        ("assistant", "Sure, here is the answer"),
        ("assistant", d.call.agent.duration_warning),
        ("assistant", d.call.agent.duration_goodbye),
    ]
    reply, warning, goodbye = played(d)
    assert within(warning[0] - t0, 3.0, 3.05)  # due at 3 s, the floor was free
    assert within(goodbye[0] - t0, 6.0, 6.05)
    assert (d.call.record.end_reason, d.call.record.end_detail) == (EndReason.MAX_DURATION, "limit 6 s")
    assert d.hung_up_at[0] >= goodbye[1]


async def test_the_warning_waits_for_the_floor_and_the_goodbye_cuts_in_and_is_heard(driver):
    d = await driver(
        agent(
            **QUIET,
            **{"tts.seconds_per_phrase": 5.0},
            max_duration_s=6.0,
            duration_warning_s=4.0,
            duration_goodbye="Time is up.",
        )
    )
    t0 = d.clock.now()
    await d.say(BOOK)  # the reply plays from ~1.9 s to ~6.9 s: over the warning, cut by the limit
    await d.until(lambda: len(played(d)) == 2, limit=10)
    await d.say(PRICES)  # and the caller talks over the goodbye
    await d.until(lambda: d.call.status is CallStatus.ENDED, limit=10)
    reply, goodbye = played(d)
    assert within(goodbye[0] - t0, 6.0, 6.05)
    assert goodbye[1] - goodbye[0] == pytest.approx(5.0, abs=0.001)  # heard out whole
    assert len(d.phone.clears) == 1 and d.phone.clears[0] - t0 <= 6.05  # only the reply was cut
    transcript = d.call.transcript()
    assert [m["role"] for m in transcript] == ["user", "assistant", "assistant"]
    assert transcript[1]["interrupted"] is True  # the reply, as far as it was heard
    assert transcript[2]["content"] == "Time is up."  # no warning: the floor was never free
    assert d.call.record.end_reason is EndReason.MAX_DURATION


def test_a_warning_that_finds_no_free_floor_in_time_is_skipped():
    limit = DurationLimit(0.0, 10.0, warning_s=4.0, warning="soon", goodbye="bye")
    assert limit.poll(6.0, False) is None and limit.poll(7.9, False) is None
    assert limit.poll(8.0, True) is None  # 2 s left: it would be cut by the goodbye
    assert limit.poll(9.0, True) is None
    assert limit.poll(10.0, True) == SayGoodbye("bye")


def test_duration_limit_states():
    limit = DurationLimit(100.0, 10.0, warning_s=3.0, warning="soon", goodbye="bye")
    assert limit.next_due == 107.0
    assert limit.poll(107.0, False) is None  # not over the caller
    assert limit.poll(108.0, True) == Warn("soon")
    assert limit.poll(109.0, True) is None
    assert limit.poll(110.0, False) == SayGoodbye("bye")
    assert limit.poll(110.0 + HARD_STOP_GRACE_S - 0.1, True) is None
    assert limit.poll(110.0 + HARD_STOP_GRACE_S, True) == Cut()
    assert limit.poll(200.0, True) is None


def test_a_warning_at_or_after_the_limit_is_refused_at_load():
    with pytest.raises(ConfigError, match=r"duration_warning_s \(30\) must be less than max_duration_s \(20\)"):
        load_settings(data={"agents": {"default": {"max_duration_s": 20}}})


# -- end of call -----------------------------------------------------------------------------------


async def test_end_call_hangs_up_once_the_goodbye_after_it_is_heard(driver):
    d = await driver(agent(**QUIET, **{"llm.replies": ["[tool:end_call {}] Thanks for calling and goodbye."]}))
    await d.say(BOOK)
    await d.until(lambda: d.call.status is CallStatus.ENDED)
    ((start, end),) = played(d)
    assert end - start == pytest.approx(1.0, abs=0.001)
    assert end <= d.hung_up_at[0] <= end + 0.05  # once the final mark came back
    assert said(d)[-1] == ("assistant", "Thanks for calling and goodbye.")
    assert d.call.record.end_reason is EndReason.AGENT_HANGUP


# -- fillers ---------------------------------------------------------------------------------------


def fillers(**overrides):
    return agent(**QUIET, **{"fillers.enabled": True, "fillers.after_ms": 1200}, **overrides)


async def test_a_slow_reply_gets_one_filler_first(driver):
    d = await driver(fillers(**{"llm.ttft_ms": 2500}))
    await d.say(BOOK)
    await d.until(lambda: d.call.turn_state is TurnState.THINKING)
    committed = d.clock.now()  # the LLM started earlier, preemptively: its answer comes at ~2.3 s
    await d.until(lambda: len(played(d)) == 2, limit=10)
    await d.until(lambda: d.call.turn_state is TurnState.LISTENING)
    filler, answer = played(d)
    assert within(filler[0] - committed, 1.2, 1.24)
    assert filler[1] - filler[0] == pytest.approx(1.0, abs=0.001) and filler[1] <= answer[0] + 1e-6
    assert said(d) == [
        ("user", "Tell me more."),
        ("assistant", "One moment."),
        ("assistant", "Sure, here is the answer"),
    ]
    assert [(m.role, m.content) for m in d.call.context.messages[1:]] == said(d)  # the LLM sees it was said


@pytest.mark.parametrize("ttft_ms", [0, 600, 1100])
async def test_a_reply_that_comes_in_time_gets_no_filler(driver, ttft_ms):
    d = await driver(fillers(**{"llm.ttft_ms": ttft_ms}))
    for clip in (BOOK, PRICES):
        await d.say(clip)
        await d.until(lambda: d.call.turn_state is TurnState.LISTENING and d.phone.media_times, limit=6)
        await d.wait(1.5)
    assert [c for r, c in said(d) if r == "assistant"] == ["Sure, here is the answer"] * 2


async def test_no_filler_over_a_caller_who_is_talking(driver):
    d = await driver(fillers(**{"llm.ttft_ms": 2500, "interruption.min_speech_ms": 2000}))
    await d.say(BOOK)
    await d.until(lambda: d.call.turn_state is TurnState.THINKING)
    await d.wait(0.9)
    await d.say(MMHM)  # talking at the 1.2 s mark, too briefly to take the floor
    await d.until(lambda: d.call.turn_state is TurnState.LISTENING and d.phone.media_times, limit=6)
    assert said(d) == [("user", "Tell me more."), ("assistant", "Sure, here is the answer")]


async def test_a_filler_covers_a_slow_tool_and_the_context_stays_valid(driver):
    registry = default_registry()
    release = asyncio.Event()

    async def lookup(args, control):
        await release.wait()
        return "open until ten"

    registry.register(Tool("lookup", "Opening hours"), lookup)
    d = await driver(fillers(**{"llm.replies": ["[tool:lookup {}]", "We are open until ten."]}), registry)
    await d.say(BOOK)
    await d.until(lambda: d.phone.media_times, limit=3)
    release.set()
    await d.until(lambda: d.call.turn_state is TurnState.LISTENING and len(d.call.transcript()) == 3, limit=5)
    ((start, end),) = played(d)  # the answer came while the filler played: heard straight after it
    assert end - start == pytest.approx(2.0, abs=0.001)
    roles = [(m.role, m.content, bool(m.tool_calls)) for m in d.call.context.messages[1:]]
    assert roles == [
        ("user", "Tell me more.", False),
        ("assistant", "", True),
        ("tool", "open until ten", False),  # right after its call, as providers require
        ("assistant", "One moment.", False),
        ("assistant", "We are open until ten.", False),
    ]


async def test_a_filler_goes_with_a_reply_the_caller_interrupts(driver):
    d = await driver(fillers(**{"llm.ttft_ms": 3000}))
    await d.say(BOOK)
    await d.until(lambda: d.phone.media_times, limit=3)  # the filler is playing
    await d.say(PRICES)
    await d.until(lambda: d.call.turn_state is TurnState.LISTENING and len(d.call.transcript()) == 4, limit=10)
    assert len(d.phone.clears) == 1  # the filler was cut a moment in, too soon for a word of it
    assert said(d) == [
        ("user", "Tell me more."),
        ("user", "Tell me more."),
        ("assistant", "Let me check."),  # the next reply was slow too: the next filler
        ("assistant", "Sure, here is the answer"),
    ]


# -- ambience --------------------------------------------------------------------------------------


def heard_audio(d: CallDriver, start: float, end: float) -> np.ndarray:
    """PCM16 the caller heard between two clock times."""
    out = []
    for seg in d.phone.buffer.segments:
        a, b = max(start, seg.start), min(end, seg.end)
        if b > a and seg.audio is not None:
            i, j = round((a - seg.start) * 8000), round((b - seg.start) * 8000)
            out.append(np.frombuffer(ulaw_decode(bytes(seg.audio[i:j])), dtype="<i2"))
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int16)


def heard_time(d: CallDriver, start: float, end: float) -> float:
    return sum(max(0.0, min(end, s.end) - max(start, s.start)) for s in d.phone.buffer.segments)


def ambience(**overrides):
    return agent(**{**QUIET, "ambience.enabled": True, "ambience.level_dbfs": -40.0, **overrides})


async def test_ambience_plays_unbroken_through_silence_and_replies(driver):
    d = await driver(ambience())
    t0 = d.clock.now()
    await d.wait(1.0)
    assert heard_time(d, t0 + 0.02, t0 + 1.0) == pytest.approx(0.98, abs=1e-6)  # no gap
    assert level_dbfs(heard_audio(d, t0, t0 + 1.0).tobytes()) == pytest.approx(-40.0, abs=1.0)
    await d.say(BOOK)
    await d.until(lambda: d.call.turn_state is TurnState.LISTENING and len(d.call.transcript()) == 2, limit=5)
    await d.wait(0.5)
    assert heard_time(d, t0 + 0.02, d.clock.now()) == pytest.approx(d.clock.now() - t0 - 0.02, abs=1e-3)
    assert said(d) == [("user", "Tell me more."), ("assistant", "Sure, here is the answer")]
    assert not d.call.transcript()[1].get("interrupted")


async def test_ambience_is_mixed_under_the_reply_which_is_heard_no_later(driver):
    plain = await driver(agent(**QUIET))
    mixed = await driver(ambience(**{"ambience.level_dbfs": -30.0}))
    for d in (plain, mixed):
        await d.say(BOOK)
        await d.until(lambda d=d: d.call.turn_state is TurnState.LISTENING and len(d.call.transcript()) == 2)
    (reply,) = plain.phone.buffer.segments
    # Same inputs on the same fake timeline: the queued ambience was cleared as the reply began,
    # which the caller hears from the same moment as without ambience, and the ambience goes on.
    assert mixed.phone.clears == [reply.start]
    bed, under = mixed.phone.buffer.segments
    assert under.start == reply.start and under.end > reply.end + 0.1
    tone = np.frombuffer(ulaw_decode(bytes(reply.audio)), dtype="<i2").astype(np.int32)
    heard = np.frombuffer(ulaw_decode(bytes(under.audio[: tone.size])), dtype="<i2").astype(np.int32)
    residual = np.clip(heard - tone, -32768, 32767).astype("<i2")
    assert level_dbfs(residual.tobytes()) == pytest.approx(-30.0, abs=1.0)  # the ambience, under the reply


async def test_a_barge_in_still_clears_and_the_ambience_comes_back(driver):
    d = await driver(ambience(**{"tts.seconds_per_phrase": 4.0}))
    await d.say(BOOK)
    await d.until(lambda: d.call.turn_state is TurnState.AGENT_SPEAKING)
    await d.wait(1.0)
    await d.say(PRICES)
    assert len(d.phone.clears) == 2  # the ambience queued before the reply, then the barge-in
    cleared = d.phone.clears[1]
    await d.wait(0.5)
    assert heard_time(d, cleared + 0.06, cleared + 0.5) == pytest.approx(0.44, abs=1e-3)  # back within 60 ms
    assert d.call.transcript()[1]["interrupted"] is True


async def test_an_unusable_ambience_file_is_a_fault_and_the_call_goes_on(driver, tmp_path):
    bad = tmp_path / "hum.wav"
    bad.write_bytes(b"RIFF....WAVEfmt nonsense")
    d = await driver(ambience(**{"ambience.sound": str(bad)}))
    await d.say(BOOK)
    await d.until(lambda: d.call.turn_state is TurnState.LISTENING and d.phone.media_times)
    (fault,) = d.events.of(EventType.FAULT)
    assert fault["stage"] == "ambience" and fault["detail"].startswith(f"{bad}: cannot read it as a WAV file")
    assert said(d)[-1] == ("assistant", "Sure, here is the answer")


def test_a_wav_file_is_looped_at_the_calls_rate_and_level(tmp_path):
    path = tmp_path / "room.wav"
    t = np.arange(16000 * 2) / 16000
    tone = (np.sin(2 * np.pi * 440 * t) * 3000).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(2)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(np.repeat(tone, 2).tobytes())  # stereo, both sides the same
    loop = make_loop(str(path), MULAW_8K, -35.0)
    pcm = np.frombuffer(loop.pcm, dtype="<i2")
    assert loop.samples == 16000 - 400  # 2 s at 8 kHz, less the 50 ms crossfaded into the start
    assert level_dbfs(loop.pcm) == pytest.approx(-35.0, abs=0.05)
    spectrum = np.abs(np.fft.rfft(pcm))
    assert np.fft.rfftfreq(pcm.size, 1 / 8000)[spectrum.argmax()] == pytest.approx(440, abs=1)
    assert loop.wire == bytes(loop.wire)  # encoded once, shared
    bed = AmbienceBed(loop)
    frames = [bed.frame(160) for _ in range(loop.samples // 160 + 2)]  # runs past the end: wraps
    assert b"".join(frames) == (loop.wire * 2)[: 160 * len(frames)]


def test_the_office_loop_is_seamless_and_unit_level():
    signal = office(8000)
    assert signal.size == 64000 and np.sqrt(np.mean(signal**2)) == pytest.approx(1.0)
    steps = np.abs(np.diff(signal))
    assert abs(signal[0] - signal[-1]) < np.percentile(steps, 99)  # no click where it wraps


def test_ambience_mixes_saturating_in_any_encoding(tmp_path):
    loop = make_loop("office", PCM16_8K, -20.0)
    loud = np.full(160, 32000, dtype="<i2").tobytes()
    mixed = np.frombuffer(AmbienceBed(loop).mix(loud), dtype="<i2")
    bed = np.frombuffer(loop.pcm[:320], dtype="<i2").astype(np.int32)
    assert (mixed == np.clip(32000 + bed, -32768, 32767)).all() and mixed.max() == 32767
    with pytest.raises(AmbienceError, match="too short for a loop"):
        make_loop(str(_short_wav(tmp_path / "blip.wav")), MULAW_8K, -40.0)


def _short_wav(path):
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(b"\x10\x00" * 80)
    return path


def test_ambience_settings_are_checked_at_load():
    with pytest.raises(ValueError, match="want one of office or the path of a .wav file, got 'rain'"):
        AmbienceConfig(sound="rain")
    with pytest.raises(ValueError, match="no such file: /nonexistent/hum.wav"):
        AmbienceConfig(sound="/nonexistent/hum.wav")
    assert AmbienceConfig().enabled is False and AmbienceConfig().level_dbfs == -45.0


# -- through the real server -----------------------------------------------------------------------


def listening_caller(**kw) -> CallerScript:
    """A caller who says nothing and waits for the server to hang up."""
    return CallerScript((), reply_timeout_s=5.0, max_call_s=20.0, hangup_after_last_reply=False, **kw)


async def test_loopback_silence_timeout(serve):  # noqa: F811
    server = await serve(
        settings(
            **{
                "silence.reengage_after_s": 0.6,
                "silence.messages": ("Are you still there?", "Hello?"),
                "silence.goodbye": "Goodbye for now.",
                "tts.seconds_per_phrase": 0.5,
            }
        )
    )
    result = await run_call(server.ws_url, listening_caller(), record=True)
    assert result.ended_by is CallerEnd.SERVER_CLOSED
    assert result.greeting.audio_s == pytest.approx(1.5, abs=0.01)  # three half-second phrases, nothing more
    record = await server.record(result.call_sid)
    assert record.end_reason is EndReason.SILENCE_TIMEOUT
    assert [t["content"] for t in record.transcript] == ["Are you still there?", "Hello?", "Goodbye for now."]
    voiced = np.flatnonzero(np.abs(result.recording.agent) > 1000) / 8000
    starts = [voiced[0], *voiced[1:][np.diff(voiced) > 0.3]]
    assert len(starts) == 3 and 0.55 <= starts[0] <= 0.8  # 0.6 s of silence, then each message


async def test_loopback_max_duration(serve):  # noqa: F811
    server = await serve(
        settings(
            **QUIET,
            **{"tts.seconds_per_phrase": 0.5},
            max_duration_s=2.0,
            duration_warning_s=1.0,
            duration_warning="Almost out of time.",
            duration_goodbye="Time is up, goodbye.",
        )
    )
    result = await run_call(server.ws_url, listening_caller())
    assert result.ended_by is CallerEnd.SERVER_CLOSED
    assert result.greeting.audio_s == pytest.approx(1.0, abs=0.01)  # the warning and the goodbye, heard out
    assert 2.4 <= result.duration_s <= 3.5
    record = await server.record(result.call_sid)
    assert record.end_reason is EndReason.MAX_DURATION
    assert [t["content"] for t in record.transcript] == ["Almost out of time.", "Time is up, goodbye."]


async def test_loopback_end_call_goodbye_is_heard_before_the_hang_up(serve):  # noqa: F811
    server = await serve(settings(**{"llm.replies": ["[tool:end_call {}] Thanks for calling and goodbye."]}))
    result = await run_call(server.ws_url, CallerScript((Utterance(BOOK),), hangup_after_last_reply=False))
    assert result.ended_by is CallerEnd.SERVER_CLOSED
    reply = result.turns[0].reply
    assert reply.audio_s == pytest.approx(1.0)
    # The socket closed once the goodbye had played (the caller echoes marks up to 2 ms early).
    assert result.duration_s >= reply.first_at + 1.0 - 0.003
    record = await server.record(result.call_sid)
    assert record.end_reason is EndReason.AGENT_HANGUP
    assert record.transcript[-1] == {"role": "assistant", "content": "Thanks for calling and goodbye."}


async def test_loopback_fillers_only_for_slow_replies(serve):  # noqa: F811
    fast = await serve(settings(**{"fillers.enabled": True, "fillers.after_ms": 400}))
    result = await run_call(fast.ws_url, CallerScript((Utterance(BOOK), Utterance(PRICES), Utterance(BOOK))))
    assert result.answered == 3
    record = await fast.record(result.call_sid)
    assert [t["content"] for t in record.transcript if t["role"] == "assistant"] == ["Sure, here is the answer"] * 3
    slow = await serve(settings(**{"fillers.enabled": True, "fillers.after_ms": 400, "llm.ttft_ms": 1500}))
    result = await run_call(slow.ws_url, CallerScript((Utterance(BOOK),), pause_ms=200, reply_timeout_s=5))
    turn = result.turns[0]
    assert 550 <= turn.latency_ms <= 900  # 200 ms end of turn + 400 ms: the filler, not the 1.5 s answer
    assert turn.reply.audio_s == pytest.approx(2.0)  # the filler and the answer
    record = await slow.record(result.call_sid)
    assert [t["content"] for t in record.transcript] == ["Tell me more.", "One moment.", "Sure, here is the answer"]


def heard_s(track: np.ndarray) -> float:
    """Seconds of a recorded track that carry the fake TTS's tone (20 ms windows)."""
    windows = track[: track.size - track.size % 160].reshape(-1, 160).astype(np.float64)
    return float(np.count_nonzero(np.sqrt(np.mean(windows**2, axis=1)) > 1000)) * 0.02


async def test_loopback_backchannel_pauses_then_resumes_the_reply_whole(serve):  # noqa: F811
    server = await serve(settings(**{"tts.seconds_per_phrase": 3.0, "stt.transcripts": ["Book a table.", "Mm-hm."]}))
    script = CallerScript((Utterance(BOOK), Utterance(MMHM, barge_in_after_ms=800)))
    result = await run_call(server.ws_url, script, record=True)
    assert result.error is None
    assert result.clears == 1  # min_words 0: the speech paused the audio until its words were known
    assert heard_s(result.recording.agent) == pytest.approx(3.0, abs=0.06)  # then all of it
    record = await server.record(result.call_sid)
    assert [(t["role"], t["content"]) for t in record.transcript] == [
        ("user", "Book a table."),
        ("assistant", "Sure, here is the answer"),
    ]
    assert "interrupted" not in record.transcript[1]


async def test_loopback_with_min_interrupt_words_a_backchannel_never_stops_the_agent(serve):  # noqa: F811
    server = await serve(
        settings(
            **{
                "tts.seconds_per_phrase": 3.0,
                "interruption.min_words": 1,
                "stt.transcripts": ["Book a table.", "Mm-hm."],
            }
        )
    )
    script = CallerScript((Utterance(BOOK), Utterance(MMHM, barge_in_after_ms=800)))
    result = await run_call(server.ws_url, script, record=True)
    assert result.error is None
    assert result.turns[1].talked_over and result.clears == 0
    assert heard_s(result.recording.agent) == pytest.approx(3.0, abs=0.06)
    assert result.turns[0].reply.max_underrun_ms + result.turns[1].reply.max_underrun_ms == 0  # not a gap
    record = await server.record(result.call_sid)
    assert [t["role"] for t in record.transcript] == ["user", "assistant"]
    assert "interrupted" not in record.transcript[1]


async def test_loopback_with_min_interrupt_words_words_still_interrupt(serve):  # noqa: F811
    server = await serve(
        settings(
            **{
                "tts.seconds_per_phrase": 3.0,
                "interruption.min_words": 2,
                "stt.transcripts": ["Book a table.", "What are your prices?"],
            }
        )
    )
    result = await run_call(server.ws_url, CallerScript((Utterance(BOOK), Utterance(PRICES, barge_in_after_ms=800))))
    assert result.error is None
    assert result.clears == 1 and result.turns[1].agent_cleared
    # Two words had to be transcribed first: the fake STT's first interim comes with the tenth
    # 20 ms frame of speech, sent 180 ms after the first (without min_words: ~100 ms, min_speech_ms);
    # the caller's and the server's clocks differ by a frame's scheduling jitter, hence 160.
    assert 160 <= result.turns[1].agent_stop_ms <= 450
    record = await server.record(result.call_sid)
    assert record.transcript[1]["interrupted"] is True


async def test_loopback_ambience_fills_the_silences(serve):  # noqa: F811
    server = await serve(settings(**QUIET, **{"ambience.enabled": True, "ambience.level_dbfs": -40.0}))
    # With ambience the agent never goes quiet, so the caller cannot hear a reply end: it hangs up at 6 s.
    script = CallerScript((Utterance(BOOK),), pause_ms=1000, max_call_s=6.0)
    result = await run_call(server.ws_url, script, record=True)
    assert result.error is None
    agent_track = result.recording.agent
    before = agent_track[round(0.3 * 8000) : round(0.9 * 8000)]  # before the caller spoke
    assert level_dbfs(before.tobytes()) == pytest.approx(-40.0, abs=1.5)
    record = await server.record(result.call_sid)
    assert record.transcript[-1] == {"role": "assistant", "content": "Sure, here is the answer"}
    assert not math.isinf(level_dbfs(agent_track[-800:].tobytes()))
