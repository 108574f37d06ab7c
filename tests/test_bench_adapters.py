"""``benchmarks/adapters.py``'s statistics: the replies it pools over repeats, the bootstrap
interval it prints for the p95's change from one call, and the per-stage split of that change."""

from __future__ import annotations

import numpy as np

from ringline.benchmarks.adapters import (
    REPLY,
    p95,
    p95_delta_interval,
    pooled,
    pooled_stages,
    reply_latencies,
    run_samples,
    stage_times,
)


def _report(*latencies: float | None) -> dict:
    turns = [{"answered": ms is not None, "latency_ms": ms} for ms in latencies]
    return {"calls_detail": [{"turns": turns[:2]}, {"turns": turns[2:]}]}


def test_reply_latencies_takes_every_answered_reply_of_every_call() -> None:
    assert reply_latencies(_report(1150.0, None, 1148.0, 1160.0)) == [1150.0, 1148.0, 1160.0]
    assert reply_latencies({}) == []


def test_the_interval_brackets_no_change_between_samples_of_one_distribution() -> None:
    rng = np.random.default_rng(1)
    base = list(1146 + rng.gamma(2.0, 2.0, 90))
    loaded = list(1146 + rng.gamma(2.0, 2.0, 1500))
    low, high = p95_delta_interval(base, loaded)
    assert low < 0 < high
    assert low <= p95(loaded) - p95(base) <= high


def test_the_interval_excludes_zero_when_the_load_shifts_the_tail() -> None:
    rng = np.random.default_rng(2)
    base = list(1146 + rng.gamma(2.0, 2.0, 90))
    loaded = list(1166 + rng.gamma(2.0, 2.0, 1500))
    low, high = p95_delta_interval(base, loaded)
    assert 10 < low < high < 30


def _row(repeat: int, calls: int, delta: float, cpu: float, late: int = 0) -> dict:
    return {"repeat": repeat, "calls": calls, "p95 delta vs 1": delta, "server CPU %": cpu, "caller late frames": late}


def test_pooled_rows_compare_all_replies_and_list_each_repeats_delta() -> None:
    one = [1140.0 + i / 10 for i in range(100)]
    many = [1145.0 + i / 100 for i in range(1000)]
    runs = [
        (_row(1, 1, 0.0, 2.0), {REPLY: one[:50]}),
        (_row(1, 100, 3.0, 50.0), {REPLY: many[:500]}),
        (_row(2, 1, 0.0, 4.0), {REPLY: one[50:]}),
        (_row(2, 100, 8.0, 54.0), {REPLY: many[500:]}),
    ]
    by_calls = {row["calls"]: row for row in pooled(runs)}
    assert by_calls[1]["replies"] == 100
    assert by_calls[1]["p95 delta vs 1"] is None and by_calls[1]["delta per run"] is None
    loaded = by_calls[100]
    assert (loaded["runs pooled"], loaded["replies"]) == ("2 of 2", 1000)
    assert loaded["p95 delta vs 1"] == p95(many) - p95(one)
    assert loaded["delta per run"] == "+3 / +8"
    assert loaded["left out"] is None
    assert loaded["server CPU %"] == 52.0
    low, high = (float(x) for x in loaded["delta 95 % interval"].split(" .. "))
    assert low <= loaded["p95 delta vs 1"] <= high


def test_a_run_in_which_the_caller_lost_its_clock_is_shown_but_not_pooled() -> None:
    one = [1146.0 + i / 10 for i in range(60)]
    calm = [1146.0 + i / 100 for i in range(600)]
    stalled = [1180.0 + i / 10 for i in range(300)]  # the VM stalled: caller and server alike
    runs = [
        (_row(1, 1, 0.0, 2.0), {REPLY: one}),
        (_row(1, 100, 4.0, 50.0), {REPLY: calm}),
        (_row(2, 100, 40.0, 60.0, late=65), {REPLY: stalled}),
    ]
    loaded = next(row for row in pooled(runs) if row["calls"] == 100)
    assert (loaded["runs pooled"], loaded["replies"]) == ("1 of 2", 600)
    assert loaded["p95"] == p95(calm)
    assert loaded["delta per run"] == "+4 / +40*"
    assert loaded["left out"] == "repeat 2: 65 late caller frames"
    assert loaded["server CPU %"] == 55.0  # every run's CPU still counts


def _turn(stt: float, committed: float, token: float, audio: float, sent: float) -> dict:
    return {
        "stt_final": stt,
        "turn_committed": committed,
        "llm_first_token": token,
        "tts_first_audio": audio,
        "first_audio_sent": sent,
    }


def test_stage_times_split_a_reply_into_its_hops_and_sum_the_adapters() -> None:
    times = stage_times(_turn(310.0, 810.0, 1170.0, 1470.0, 1471.0))
    assert times == {
        "server": 1471.0,
        "adapters": 310.0 + 360.0 + 300.0,
        "STT final": 310.0,
        "end of turn": 500.0,
        "LLM first token": 360.0,
        "TTS first audio": 300.0,
        "audio sent": 1.0,
    }
    assert stage_times({**_turn(310.0, 810.0, 1170.0, 1470.0, 1471.0), "tts_first_audio": None}) is None


def test_run_samples_hold_the_callers_replies_and_every_stage_of_the_servers_turns() -> None:
    report = {
        **_report(1150.0, 1160.0),
        "server_turns": [_turn(300.0, 800.0, 1160.0, 1460.0, 1461.0), _turn(320.0, 820.0, 1175.0, 1480.0, 1482.0)],
    }
    samples = run_samples(report)
    assert samples[REPLY] == [1150.0, 1160.0]
    assert samples["adapters"] == [960.0, 980.0]  # 300 + 360 + 300, 320 + 355 + 305
    assert samples["audio sent"] == [1.0, 2.0]


def test_pooled_stages_show_which_stage_moved_the_p95() -> None:
    rng = np.random.default_rng(3)

    def samples(count: int, tts_shift: float) -> dict:
        stt, llm, tts = (base + rng.gamma(2.0, 1.0, count) for base in (310.0, 355.0, 295.0))
        tts = tts + tts_shift
        return {"STT final": list(stt), "LLM first token": list(llm), "TTS first audio": list(tts)}

    runs = [(_row(1, 1, 0.0, 2.0), samples(120, 0.0)), (_row(1, 100, 0.0, 50.0), samples(1500, 20.0))]
    by_stage = {row["p95 of"]: row for row in pooled_stages(runs)}
    assert by_stage["STT final"]["delta 95 % interval"] is not None
    low, high = (float(x) for x in by_stage["TTS first audio"]["delta 95 % interval"].split(" .. "))
    assert 10 < low < high < 30
    low, high = (float(x) for x in by_stage["LLM first token"]["delta 95 % interval"].split(" .. "))
    assert low < 0 < high
    assert by_stage[REPLY]["delta"] is None  # no caller samples in these runs
