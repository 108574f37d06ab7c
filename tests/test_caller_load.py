"""The load report's barge-in figures, the scripts and CLI options behind them (no sockets)."""

from __future__ import annotations

import pytest

from ringline.benchmarks.caller import _parse_args, clip_script
from ringline.benchmarks.concurrency import BARGE_IN_COLUMNS, COLUMNS, markdown_table
from ringline.benchmarks.load import LoadReport, aggregate, start_offsets
from ringline.benchmarks.script import CallerScript, CallResult, Turn, Utterance
from ringline.benchmarks.wire import SILENCE

pytestmark = pytest.mark.timeout(5)

URL = "ws://127.0.0.1:8090/media/twilio"


def turn(index: int, *, talked_over: bool = False, stop_ms: float | None = None, cleared: bool = False) -> Turn:
    t = Turn(index=index, text="", speech_start=float(index), talked_over=talked_over, speech_end=index + 0.5)
    t.agent_stop_ms = stop_ms
    t.agent_cleared = cleared
    return t


def result(*turns: Turn) -> CallResult:
    return CallResult(url=URL, stream_sid="MZ1", call_sid="CA1", turns=list(turns))


def scripts(n: int, turns: int) -> list[CallerScript]:
    return [CallerScript(tuple(Utterance(b"\x10" * 160) for _ in range(turns)))] * n


def test_barge_in_figures_cover_every_talked_over_turn_of_every_call() -> None:
    results = [
        result(
            turn(0), turn(1, talked_over=True, stop_ms=80.0, cleared=True), turn(2, talked_over=True, stop_ms=120.0)
        ),
        result(
            turn(0),
            turn(1, talked_over=True, stop_ms=100.0, cleared=True),
            turn(2, talked_over=True, stop_ms=None),  # agent audio still playing when the call ended
            turn(3, stop_ms=999.0, cleared=True),  # not talked over: ignored whatever it holds
        ),
    ]
    report = aggregate(results, scripts(1, 3) + scripts(1, 4))

    assert report.talked_over_turns == 4
    assert report.talked_over_cleared == 2  # the 120 ms stop was the audio running out
    # over the three stops: 80, 100, 120 (p95 interpolates between the top two ranks)
    assert report.agent_stop_median_ms == pytest.approx(100.0)
    assert report.agent_stop_p95_ms == pytest.approx(118.0)
    assert report.agent_stop_max_ms == pytest.approx(120.0)
    d = report.to_dict()
    assert (d["talked_over_turns"], d["talked_over_cleared"], d["agent_stop_p95_ms"]) == (4, 2, pytest.approx(118.0))
    line = next(line for line in report.format().splitlines() if line.startswith("barge-in:"))
    assert line == (
        "barge-in: talked-over turns 4, agent audio cleared 2/4; agent stop median 100.0 ms, p95 118.0 ms, max 120.0 ms"
    )


def test_without_talked_over_turns_there_are_no_barge_in_figures() -> None:
    report = aggregate([result(turn(0), turn(1, stop_ms=50.0, cleared=True))], scripts(1, 2))
    assert (report.talked_over_turns, report.talked_over_cleared) == (0, 0)
    assert (report.agent_stop_median_ms, report.agent_stop_p95_ms, report.agent_stop_max_ms) == (None, None, None)
    assert "barge-in" not in report.format()


def test_talked_over_turns_that_never_stopped_show_as_dashes() -> None:
    report = aggregate([result(turn(0), turn(1, talked_over=True))], scripts(1, 2))
    assert report.talked_over_turns == 1 and report.agent_stop_max_ms is None
    assert "agent audio cleared 0/1; agent stop median -, p95 -, max -" in report.format()


def test_clip_script_barges_in_on_every_reply_but_the_first_utterance() -> None:
    script = clip_script(2, 4, barge_in_after_ms=300.0)
    assert [u.barge_in_after_ms for u in script.utterances] == [None, 300.0, 300.0, 300.0]
    assert all(u.barge_in_after_ms is None for u in clip_script(2, 4).utterances)


def test_cli_barge_in_option() -> None:
    assert _parse_args(["--url", URL, "--barge-in-ms", "300"]).barge_in_ms == 300.0
    assert _parse_args(["--url", URL]).barge_in_ms is None
    with pytest.raises(SystemExit):
        _parse_args(["--url", URL, "--barge-in-ms", "-1"])


def test_a_hesitating_caller_says_each_utterance_in_two_parts_with_the_pause_between() -> None:
    plain, hesitant = clip_script(0, 3), clip_script(0, 2, hesitate_ms=400)
    for j, utterance in enumerate(hesitant.utterances):
        first, second = plain.utterances[j], plain.utterances[j + 1]  # its own clip, then the next
        assert utterance.audio == first.audio + SILENCE * 20 + second.audio  # 400 ms: 20 frames
        assert utterance.text == f"{first.text} {second.text}"
    assert _parse_args(["--url", URL, "--hesitate-ms", "400"]).hesitate_ms == 400.0
    assert _parse_args(["--url", URL]).hesitate_ms is None
    with pytest.raises(SystemExit):
        _parse_args(["--url", URL, "--hesitate-ms", "-5"])


def test_concurrency_table_adds_barge_in_columns_only_when_asked() -> None:
    row = LoadReport(calls=10, turns_expected=40, turns_answered=40, talked_over_turns=30, talked_over_cleared=29)
    row.agent_stop_p95_ms = 121.4
    d = row.to_dict()
    plain = markdown_table([d]).splitlines()
    assert "barge-in" not in plain[0]
    header, _, cells = markdown_table([d], COLUMNS + BARGE_IN_COLUMNS).splitlines()
    assert header.endswith("| barge-ins cleared | barge-in stop p95 ms |")
    assert cells.startswith("| 10 | - | - | 40/40 |")
    assert cells.endswith("| 29/30 | 121 |")


@pytest.mark.parametrize(("n", "ramp_s"), [(100, 2.0), (4, 0.08), (10, 1.0)])
def test_calls_start_over_the_ramp_on_frame_phases_spread_over_the_frame(n: int, ramp_s: float) -> None:
    offsets = start_offsets(n, ramp_s)
    assert offsets[0] == 0.0 and offsets == sorted(offsets) and ramp_s <= offsets[-1] + ramp_s / n < ramp_s + 0.02
    phases = sorted(round((t % 0.02) * 1e6) for t in offsets)  # microseconds into the 20 ms frame
    assert len(set(phases)) == n  # no two calls send their frames in the same instant
    assert max(b - a for a, b in zip(phases, phases[1:] + [phases[0] + 20_000], strict=True)) <= 20_000 / n + 1
