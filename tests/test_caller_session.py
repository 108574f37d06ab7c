"""CallerSession, the sans-IO caller, driven with explicit times (no sockets, no sleeps)."""

from __future__ import annotations

import base64
import json

import pytest

from ringline.benchmarks.script import CallerScript, EndReason, Utterance
from ringline.benchmarks.session import CallerSession, Phase
from ringline.benchmarks.wire import SILENCE_B64, WireError, encode_frames, parse_server_message, split_frames

pytestmark = pytest.mark.timeout(5)

SPEECH = b"\x10" * 480  # three 20 ms frames


def script(*utterances: Utterance, **kw: object) -> CallerScript:
    kw.setdefault("pause_ms", 100.0)
    return CallerScript(tuple(utterances) or (Utterance(SPEECH, "hello"),), **kw)  # type: ignore[arg-type]


def media(call: CallerSession, seconds: float = 0.02) -> str:
    payload = base64.b64encode(b"\x20" * round(seconds * 8000)).decode()
    return json.dumps({"event": "media", "streamSid": call.wire.stream_sid, "media": {"payload": payload}})


def mark(call: CallerSession, name: str) -> str:
    return json.dumps({"event": "mark", "streamSid": call.wire.stream_sid, "mark": {"name": name}})


def clear(call: CallerSession) -> str:
    return json.dumps({"event": "clear", "streamSid": call.wire.stream_sid})


def events(messages: list[str]) -> list[dict]:
    return [json.loads(m) for m in messages]


def run_until(call: CallerSession, t_end: float, sent: list[dict] | None = None) -> list[dict]:
    """Poll at every deadline up to t_end (as a perfectly punctual adapter would)."""
    out = sent if sent is not None else []
    while not call.done and call.next_deadline() <= t_end:
        out += events(call.poll(call.next_deadline()))
    return out


def test_open_sends_connected_then_start_with_ids_and_parameters() -> None:
    call = CallerSession(script(custom_parameters={"agent": "a1"}))
    connected, start = events(call.open(100.0))
    assert connected == {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    assert start["event"] == "start" and start["sequenceNumber"] == "1"
    assert start["streamSid"].startswith("MZ") and len(start["streamSid"]) == 34
    body = start["start"]
    assert body["callSid"] == call.result.call_sid and body["callSid"].startswith("CA")
    assert body["accountSid"].startswith("AC")
    assert body["customParameters"] == {"agent": "a1"}
    assert body["mediaFormat"] == {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
    assert body["tracks"] == ["inbound"]


def test_frames_follow_the_absolute_clock_and_overdue_frames_count_as_late() -> None:
    call = CallerSession(script())
    call.open(10.0)
    first = events(call.poll(10.0))
    assert [(m["sequenceNumber"], m["media"]["chunk"], m["media"]["timestamp"]) for m in first] == [("2", "1", "0")]
    assert first[0]["media"]["payload"] == SILENCE_B64
    assert call.poll(10.015) == []
    assert call.next_deadline() == pytest.approx(10.02)
    burst = events(call.poll(10.105))  # slots 20, 40, 60, 80, 100 ms
    assert [m["media"]["timestamp"] for m in burst] == ["20", "40", "60", "80", "100"]
    assert [m["sequenceNumber"] for m in burst] == ["3", "4", "5", "6", "7"]
    assert call.result.late_frames == 4  # all but the 100 ms frame were 20 ms or more late
    assert call.result.max_send_lag_ms == pytest.approx(85.0)


def test_turn_latency_reply_accounting_and_hang_up_after_the_last_reply() -> None:
    call = CallerSession(script(reply_end_silence_ms=300.0))
    call.open(0.0)
    sent = run_until(call, 0.16)
    speech = [m for m in sent if m["media"]["payload"] != SILENCE_B64]
    assert [m["media"]["timestamp"] for m in speech] == ["100", "120", "140"]  # after pause_ms
    turn = call.result.turns[0]
    assert (turn.speech_start, turn.speech_end) == (pytest.approx(0.10), pytest.approx(0.14))
    assert call.phase is Phase.LISTENING

    assert call.receive(media(call, 0.1), 0.39) is False
    call.receive(media(call, 0.1), 0.45)  # 60 ms after the previous message, queued behind it
    assert call.receive(mark(call, "end"), 0.46) is False  # due when playback reaches 0.59
    assert turn.latency_ms == pytest.approx(250.0)
    assert turn.answered
    assert run_until(call, 0.58) and not call.result.marks
    sent = run_until(call, 0.595)
    assert [m["mark"]["name"] for m in sent if m["event"] == "mark"] == ["end"]
    assert call.result.marks[0].echoed_at == pytest.approx(0.59)

    sent = run_until(call, 0.74)
    assert not call.done  # played out at 0.59, but the last message came at 0.45: quiet until 0.75
    sent = run_until(call, 0.76)
    assert sent[-1]["event"] == "stop"
    assert sent[-1]["stop"] == {"accountSid": call.wire.account_sid, "callSid": call.result.call_sid}
    reply = turn.reply
    assert reply.audio_s == pytest.approx(0.2) and reply.messages == 2
    assert reply.max_gap_ms == pytest.approx(60.0) and reply.gaps_over_60ms == 0
    assert reply.underrun_ms == 0.0
    assert reply.span_s == pytest.approx(0.16)
    assert reply.played_until == pytest.approx(0.59)
    assert reply.ended_at == pytest.approx(0.75)
    assert call.result.ended_by is EndReason.HANGUP
    assert call.result.events == {"media": 2, "mark": 1}


def test_next_utterance_waits_for_playback_end_plus_pause() -> None:
    call = CallerSession(script(Utterance(SPEECH), Utterance(SPEECH), pause_ms=500.0, reply_end_silence_ms=300.0))
    call.open(0.0)
    run_until(call, 0.6)  # the first utterance too waits pause_ms: speaks 0.50 .. 0.54
    call.receive(media(call, 1.0), 0.6)  # plays 0.6 .. 1.6
    run_until(call, 2.08)
    assert len(call.result.turns) == 1
    run_until(call, 2.12)
    assert call.result.turns[1].speech_start == pytest.approx(2.1)
    assert not call.result.turns[1].talked_over


def test_underrun_is_the_silence_heard_inside_a_reply() -> None:
    call = CallerSession(script())
    call.open(0.0)
    run_until(call, 0.2)
    call.receive(media(call, 0.02), 0.30)
    call.receive(media(call, 0.02), 0.40)  # playback ran dry at 0.32
    reply = call.result.turns[0].reply
    assert reply.max_underrun_ms == pytest.approx(80.0)
    assert reply.gaps_over_60ms == 1 and reply.max_gap_ms == pytest.approx(100.0)


def test_barge_in_utterance_talks_over_the_agent_and_clear_echoes_pending_marks() -> None:
    second = Utterance(SPEECH, "wait", barge_in_after_ms=200.0)
    call = CallerSession(script(Utterance(SPEECH), second))
    call.open(0.0)
    run_until(call, 0.2)
    call.receive(media(call, 2.0), 0.3)
    call.receive(mark(call, "r1"), 0.3)
    run_until(call, 0.52)
    turn = call.result.turns[1]
    assert turn.speech_start == pytest.approx(0.5)  # first reply audio at 0.3 + 200 ms
    assert turn.talked_over
    assert call.receive(clear(call), 0.6) is True  # the pending mark goes out at once
    sent = events(call.poll(0.6))
    assert [m["mark"]["name"] for m in sent if m["event"] == "mark"] == ["r1"]
    assert call.result.clears == 1
    assert call.result.turns[0].reply.cleared
    assert turn.agent_stop_ms == pytest.approx(100.0)
    assert turn.agent_cleared
    assert call.result.marks[0].due_at == pytest.approx(2.3)
    assert call.result.marks[0].echoed_at == pytest.approx(0.6)


def test_a_clear_settles_the_barge_in_on_a_millisecond_clock() -> None:
    # Times as uvloop reports them (whole ms of a large loop time): the cut end rounds to
    # 3.1810000000001346 while the clear arrived at t = 3.18100000000004, a hair before it.
    call = CallerSession(script(Utterance(SPEECH), Utterance(SPEECH * 10, barge_in_after_ms=300.0)))
    call.open(3104.923)
    run_until(call, 3105.2)
    call.receive(media(call, 0.58), 3107.725)
    run_until(call, 3108.09)
    turn = call.result.turns[1]
    assert turn.talked_over and turn.speech_start == pytest.approx(3.12)
    call.receive(clear(call), 3108.104)
    assert call.buffer.cleared_samples == 4640 - 3032
    assert turn.agent_cleared
    assert turn.agent_stop_ms == pytest.approx(61.0)


def test_agent_audio_that_plays_out_stops_the_barge_in_without_a_clear() -> None:
    call = CallerSession(script(Utterance(SPEECH), Utterance(SPEECH * 20, barge_in_after_ms=200.0)))
    call.open(0.0)
    run_until(call, 0.2)
    call.receive(media(call, 0.5), 0.3)  # plays 0.3 .. 0.8; the caller talks from 0.5
    run_until(call, 0.9)
    turn = call.result.turns[1]
    assert turn.talked_over and turn.speech_start == pytest.approx(0.5)
    assert turn.agent_stop_ms == pytest.approx(300.0)  # heard the agent until its audio ran out
    assert not turn.agent_cleared
    call.receive(clear(call), 0.95)  # a late clear cuts nothing and changes nothing
    assert not turn.agent_cleared and turn.agent_stop_ms == pytest.approx(300.0)


def test_split_frames_pads_the_last_frame_with_mulaw_silence() -> None:
    frames = split_frames(bytes(range(200)))
    assert [len(f) for f in frames] == [160, 160]
    assert frames[0] == bytes(range(160)) and frames[1] == bytes(range(160, 200)) + b"\xff" * 120
    assert encode_frames(bytes(range(200)))[1] == base64.b64encode(frames[1]).decode()


def test_unanswered_turn_times_out_and_the_script_goes_on() -> None:
    call = CallerSession(script(Utterance(SPEECH), Utterance(SPEECH), reply_timeout_s=1.0))
    call.open(0.0)
    run_until(call, 1.12)
    assert len(call.result.turns) == 1
    run_until(call, 1.16)
    first, second = call.result.turns
    assert second.speech_start == pytest.approx(first.speech_end + 1.0)
    assert not first.answered and first.latency_ms is None


def test_greeting_is_heard_out_before_the_first_utterance() -> None:
    call = CallerSession(script(wait_for_greeting=True, pause_ms=200.0, reply_end_silence_ms=300.0))
    call.open(0.0)
    run_until(call, 0.1)
    call.receive(media(call, 0.5), 0.1)  # greeting plays 0.1 .. 0.6
    run_until(call, 0.78)
    assert call.result.turns == []
    run_until(call, 0.82)
    assert call.result.turns[0].speech_start == pytest.approx(0.8)
    assert call.result.greeting.audio_s == pytest.approx(0.5)


def test_hang_up_mid_reply() -> None:
    call = CallerSession(script(hangup_mid_reply_ms=100.0))
    call.open(0.0)
    run_until(call, 0.2)
    call.receive(media(call, 1.0), 0.3)
    sent = run_until(call, 0.5)
    assert sent[-1]["event"] == "stop"
    assert call.result.ended_by is EndReason.HANGUP_MID_REPLY
    assert call.result.duration_s == pytest.approx(0.4)


def test_without_hangup_after_last_reply_the_caller_waits_for_the_agent_to_hang_up() -> None:
    call = CallerSession(script(hangup_after_last_reply=False, reply_timeout_s=1.0, reply_end_silence_ms=300.0))
    call.open(0.0)
    run_until(call, 0.2)
    call.receive(media(call, 0.1), 0.2)
    sent = run_until(call, 1.49)  # the reply was over at 0.5
    assert not call.done
    sent = run_until(call, 1.52)
    assert sent[-1]["event"] == "stop" and call.result.duration_s == pytest.approx(1.5)
    assert call.result.ended_by is EndReason.HANGUP


def test_max_call_s_bounds_a_call_the_agent_never_lets_end() -> None:
    call = CallerSession(script(max_call_s=1.0))
    call.open(0.0)
    run_until(call, 0.2)
    call.receive(media(call, 5.0), 0.2)  # a reply far longer than the call may last
    call.receive(mark(call, "late"), 0.2)
    sent = run_until(call, 1.1)
    assert sent[-1]["event"] == "stop"
    assert call.result.ended_by is EndReason.MAX_DURATION
    result = call.finish()
    assert [(m.name, m.echoed_at) for m in result.marks] == [("late", None)]


def test_dtmf_digits_go_before_the_utterance_audio() -> None:
    call = CallerSession(script(Utterance(b"\x10" * 160, dtmf="12")))
    call.open(0.0)
    sent = run_until(call, 0.16)
    kinds = [
        (m["event"], m.get("dtmf", {}).get("digit"))
        for m in sent
        if m["event"] != "media" or m["media"]["payload"] != SILENCE_B64
    ]
    assert kinds == [("dtmf", "1"), ("dtmf", "2"), ("media", None)]
    assert call.result.turns[0].speech_end == pytest.approx(0.14)


def test_malformed_server_messages_are_recorded_not_fatal() -> None:
    call = CallerSession(script())
    call.open(0.0)
    call.receive("not json", 0.0)
    call.receive(json.dumps({"event": "media", "streamSid": "MZother", "media": {"payload": ""}}), 0.0)
    assert call.result.protocol_errors == [
        "message is not JSON",
        f"'media' message for streamSid 'MZother', not '{call.wire.stream_sid}'",
    ]
    assert not call.done


@pytest.mark.parametrize(
    ("message", "error"),
    [
        ({"event": "media", "streamSid": "MZ1", "media": {}}, "media message without media.payload string"),
        ({"event": "media", "streamSid": "MZ1", "media": {"payload": "%%"}}, "media.payload is not valid base64"),
        ({"event": "mark", "streamSid": "MZ1", "mark": {"name": 3}}, "mark message without mark.name string"),
        ({"event": "dance", "streamSid": "MZ1"}, "unknown event 'dance'"),
        ([1], "message is not a JSON object"),
    ],
)
def test_parse_server_message_errors(message: object, error: str) -> None:
    with pytest.raises(WireError) as exc:
        parse_server_message(json.dumps(message), "MZ1")
    assert str(exc.value) == error


def test_server_close_ends_the_call() -> None:
    call = CallerSession(script())
    call.open(5.0)
    call.poll(5.0)
    call.closed(6.0, 1000)
    assert call.done
    assert call.result.ended_by is EndReason.SERVER_CLOSED
    assert call.result.close_code == 1000
    assert call.result.duration_s == pytest.approx(1.0)
    assert call.poll(6.1) == []
