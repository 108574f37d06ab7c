"""run_call / run_load over real sockets on 127.0.0.1 against the fake Twilio-speaking agent."""

from __future__ import annotations

import socket
import wave
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import numpy as np
import pytest
from aiohttp import web

from ringline.benchmarks.caller import CallerScript, EndReason, Utterance, run_call, run_load, write_stereo_wav
from ringline.benchmarks.clips import load_clip
from ringline.benchmarks.fake_agent import FakeAgent, FakeAgentConfig

pytestmark = pytest.mark.timeout(20)

SPEECH = load_clip("book_table.wav")[:2400]  # 0.3 s of real speech
REPLY_AUDIO = load_clip("thanks.wav")
EOT_MS = 100.0

Serve = Callable[..., Awaitable[tuple[FakeAgent, str]]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    runners: list[web.AppRunner] = []

    async def start(**config: object) -> tuple[FakeAgent, str]:
        config.setdefault("reply_audio", REPLY_AUDIO)
        config.setdefault("reply_s", 0.3)
        config.setdefault("eot_silence_ms", EOT_MS)
        agent = FakeAgent(FakeAgentConfig(**config))  # type: ignore[arg-type]
        runner = web.AppRunner(agent.app())
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        return agent, f"ws://127.0.0.1:{port}/media/twilio"

    yield start
    for runner in runners:
        await runner.cleanup()


def short_script(*utterances: Utterance, **kw: object) -> CallerScript:
    kw.setdefault("pause_ms", 100.0)
    kw.setdefault("reply_end_silence_ms", 150.0)
    kw.setdefault("reply_timeout_s", 3.0)
    kw.setdefault("max_call_s", 15.0)
    return CallerScript(tuple(utterances) or (Utterance(SPEECH, "hi"),), **kw)  # type: ignore[arg-type]


async def test_two_turns_are_answered_and_latency_is_measured(serve: Serve) -> None:
    agent, url = await serve()
    script = short_script(Utterance(SPEECH, "one"), Utterance(SPEECH, "two"), custom_parameters={"agent": "a1"})
    result = await run_call(url, script)
    await agent.calls[0].done.wait()

    assert result.error is None and result.ended_by is EndReason.HANGUP
    assert [t.answered for t in result.turns] == [True, True]
    for turn in result.turns:
        # the agent answers after EOT_MS of silence frames; allow for scheduling on a busy box
        assert EOT_MS - 25 <= turn.latency_ms <= EOT_MS + 200, turn.latency_ms
        assert turn.reply.audio_s == pytest.approx(0.3)
        assert turn.reply.messages == 15
    fake = agent.calls[0]
    # every mark the agent placed came back, in order
    assert [m.name for m in result.marks] == fake.marks_sent == ["r1-10", "r1-end", "r2-10", "r2-end"]
    assert all(m.echoed_at is not None and m.echoed_at >= m.due_at - 0.003 for m in result.marks)
    start, stop = fake.of("start")[0], fake.of("stop")[0]
    assert start["start"]["customParameters"] == {"agent": "a1"}
    assert stop["stop"]["callSid"] == result.call_sid == start["start"]["callSid"]
    # media numbering is contiguous: sequence after start, chunk from 1, timestamps every 20 ms
    n = len(fake.media_seq)
    assert n == result.frames_sent
    assert fake.media_chunks == list(range(1, n + 1))
    assert fake.media_timestamps == [20 * k for k in range(n)]
    assert fake.media_seq[0] == 2 and int(stop["sequenceNumber"]) > fake.media_seq[-1]
    assert result.close_code == 1000


async def test_stereo_recording_has_caller_left_and_agent_right_at_playback_time(serve: Serve, tmp_path: Path) -> None:
    _, url = await serve()
    result = await run_call(url, short_script(), record=True)
    rec = result.recording
    assert rec is not None
    path = tmp_path / "call.wav"
    write_stereo_wav(path, result)

    with wave.open(str(path), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (2, 2, 8000)
        assert w.getnframes() == len(rec.caller) >= result.frames_sent * 160
        assert abs(w.getnframes() - round(result.duration_s * 8000)) <= 2 * 160
        frames = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, 2)
    left, right = frames[:, 0], frames[:, 1]
    turn = result.turns[0]
    speech = slice(round(turn.speech_start * 8000), round(turn.speech_end * 8000) + 160)
    assert np.abs(left[speech]).mean() > 500  # the caller's speech ...
    # ... and silence before it (the caller's channel runs on the media clock: frame k at k * 20 ms,
    # while speech_start is the frame's send time, a little later)
    assert not left[: speech.start - 160].any()
    first_agent = int(np.flatnonzero(right)[0])
    assert first_agent == pytest.approx(turn.reply.first_at * 8000, abs=2)  # agent audio at playback time
    assert not right[speech].any()
    assert np.count_nonzero(right) > 0.25 * 8000


async def test_barge_in_utterance_starts_while_the_agent_talks_and_gets_it_cleared(serve: Serve) -> None:
    agent, url = await serve(reply_s=2.0, barge_in_ms=100.0, lead_ms=1000.0)  # marks queued far ahead
    interrupt = Utterance(SPEECH, "wait", barge_in_after_ms=200.0)
    result = await run_call(url, short_script(Utterance(SPEECH, "hi"), interrupt, hangup_mid_reply_ms=50.0))
    await agent.calls[0].done.wait()

    first, second = result.turns
    assert second.talked_over
    assert second.speech_start == pytest.approx(first.reply.first_at + 0.2, abs=0.03)
    assert second.speech_start < first.reply.played_until
    assert result.clears == agent.calls[0].clears_sent == 1
    assert first.reply.cleared
    assert first.reply.audio_s < 1.5  # the rest of the 2 s reply never came (1 s was sent ahead)
    # marks placed ahead of playback were all echoed at the clear, before their playback points
    early = [m.name for m in result.marks if m.echoed_at is not None and m.echoed_at < m.due_at - 0.01]
    assert early[:4] == ["r1-20", "r1-30", "r1-40", "r1-50"]  # and more, as the agent kept sending ahead
    assert {m.echoed_at for m in result.marks if m.name in early} == {early_at := result.marks[1].echoed_at}
    assert early_at == pytest.approx(second.speech_start + second.agent_stop_ms / 1000, abs=0.001)
    assert second.agent_stop_ms is not None and 100.0 <= second.agent_stop_ms <= 400.0


async def test_hang_up_mid_reply_sends_stop(serve: Serve) -> None:
    agent, url = await serve(reply_s=2.0)
    result = await run_call(url, short_script(hangup_mid_reply_ms=200.0))
    await agent.calls[0].done.wait()
    assert result.ended_by is EndReason.HANGUP_MID_REPLY
    assert agent.calls[0].of("stop")
    assert result.duration_s == pytest.approx(result.turns[0].reply.first_at + 0.2, abs=0.03)


async def test_agent_hanging_up_ends_the_call(serve: Serve) -> None:
    _, url = await serve(hangup_after_replies=1)
    result = await run_call(url, short_script(Utterance(SPEECH), Utterance(SPEECH)))
    assert result.ended_by is EndReason.SERVER_CLOSED
    assert result.close_code == 1000
    assert result.error is None
    assert result.turns[0].answered
    assert result.answered == 1


async def test_connection_refused_is_a_result_not_an_exception() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = await run_call(f"ws://127.0.0.1:{port}/media/twilio", short_script())
    assert result.ended_by is EndReason.ERROR
    assert result.error is not None and result.error.startswith("connect failed:")
    assert result.turns == []


async def test_run_load_reports_over_all_calls(serve: Serve) -> None:
    agent, url = await serve()
    report = await run_load(url, 3, lambda i: short_script(), ramp_s=0.1)
    assert len(agent.calls) == 3
    assert (report.calls, report.failed_calls) == (3, 0)
    assert (report.turns_answered, report.turns_expected) == (3, 3)
    assert report.latency_median_ms is not None and report.latency_p95_ms >= report.latency_median_ms
    assert report.audio_per_wall_s == pytest.approx(1.0, abs=0.25)
    assert report.reply_audio_s == pytest.approx(0.9)
    assert report.frames_sent == sum(r.frames_sent for r in report.results)
    assert "turns answered 3/3" in report.format()


async def test_run_load_reports_barge_ins_the_agent_cleared(serve: Serve) -> None:
    agent, url = await serve(reply_s=1.0, barge_in_ms=100.0)

    def barge_script(i: int) -> CallerScript:
        return short_script(Utterance(SPEECH, "hi"), Utterance(SPEECH, "wait", barge_in_after_ms=200.0))

    report = await run_load(url, 2, barge_script, ramp_s=0.05)
    assert (report.calls, report.failed_calls) == (2, 0)
    assert report.talked_over_turns == 2
    assert report.talked_over_cleared == 2 == sum(c.clears_sent for c in agent.calls)
    stops = sorted(r.turns[1].agent_stop_ms for r in report.results)
    assert report.agent_stop_max_ms == stops[-1]
    assert report.agent_stop_median_ms == pytest.approx(sum(stops) / 2)
    # the agent clears on the caller's fifth speech frame, sent 80 ms after the first; the clear's
    # arrival is the stop, so it cannot come sooner (a frame may go out up to 2 ms early)
    assert stops[0] >= 75.0 and stops[-1] <= 400.0
    for r in report.results:
        assert r.turns[0].reply.cleared and r.turns[0].reply.audio_s < 1.0  # the rest never came
    assert "agent audio cleared 2/2" in report.format()
