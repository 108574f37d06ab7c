"""RtpTicker on a fake clock: every sender once a tick, deadlines from the origin, stalls as documented."""

from __future__ import annotations

import asyncio
import logging

import pytest

from ringline.engine.audio.clock import FakeClock
from ringline.engine.transports.rtp.clock import RECEIVE, SEND, RtpTicker


class StallingClock:
    """A ``FakeClock`` whose time can also jump without waking anyone: a loop that stalled."""

    def __init__(self) -> None:
        self.inner = FakeClock(100.0)
        self.offset = 0.0

    def now(self) -> float:
        return self.inner.now() + self.offset

    async def sleep_until(self, deadline: float) -> None:
        await self.inner.sleep_until(deadline - self.offset)

    def stall(self, seconds: float) -> None:
        self.offset += seconds

    async def advance(self, seconds: float) -> None:
        await self.inner.advance(seconds)


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[int, float]] = []

    def __call__(self, tick: int, now: float) -> None:
        self.calls.append((tick, round(now, 6)))


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


async def test_every_sender_once_per_tick_on_the_origin_grid() -> None:
    clock = StallingClock()
    senders = [Recorder() for _ in range(3)]
    async with RtpTicker(clock) as ticker:
        for sender in senders:
            ticker.register(sender)
        await settle()
        await clock.advance(0.1)
        expected = [(n, round(100.0 + n * 0.02, 6)) for n in range(6)]
        for sender in senders:
            assert sender.calls == expected
        ticker.unregister(senders[1])
        ticker.unregister(senders[1])  # twice is harmless
        await clock.advance(0.04)
        assert [t for t, _ in senders[0].calls] == list(range(8))
        assert len(senders[1].calls) == 6
        assert ticker.tick == 7 and len(ticker) == 2
        assert ticker.stats.count == 8 and ticker.stats.max == pytest.approx(0.0, abs=1e-9)


async def test_short_stall_bursts_the_missed_ticks() -> None:
    clock = StallingClock()
    rec = Recorder()
    async with RtpTicker(clock, max_catch_up=5) as ticker:

        def stall_once(tick: int, now: float) -> None:
            if tick == 2:
                clock.stall(0.075)  # a blocking call in the loop: 3.75 ticks

        ticker.register(stall_once)
        ticker.register(rec)
        await settle()
        await clock.advance(0.2)
        ticks = [t for t, _ in rec.calls]
        assert ticks == list(range(len(ticks)))  # none skipped
        assert ticks[-1] >= 9
        burst_times = {now for t, now in rec.calls if 3 <= t <= 5}
        assert burst_times == {round(100.0 + 0.04 + 0.075, 6)}  # ticks 3, 4, 5 back to back
        assert ticker.stats.bursts == 2  # ticks 3 and 4 ran a whole interval late or more, tick 5 only 15 ms
        assert ticker.stats.skipped == 0
        assert ticker.stats.max == pytest.approx(0.055)  # tick 3 was due at 100.06, ran at 100.115


async def test_long_stall_skips_to_the_tick_now_due(caplog: pytest.LogCaptureFixture) -> None:
    clock = StallingClock()
    rec = Recorder()
    async with RtpTicker(clock, max_catch_up=5) as ticker:

        def stall_once(tick: int, now: float) -> None:
            if tick == 1:
                clock.stall(0.5)

        ticker.register(stall_once)
        ticker.register(rec)
        with caplog.at_level(logging.WARNING):
            await settle()
            await clock.advance(0.05)
        ticks = [t for t, _ in rec.calls]
        assert ticks[:3] == [0, 1, 26]  # due at 100.52 + ...: 24 ticks never ran
        assert ticker.stats.skipped == 24
        assert "rtp ticker stalled 480 ms: skipping 24 ticks" in caplog.text
        gaps = {b - a for a, b in zip(ticks[2:], ticks[3:], strict=False)}
        assert gaps == {1}  # back on the grid afterwards


async def test_failing_sender_is_dropped_not_the_others(caplog: pytest.LogCaptureFixture) -> None:
    clock = StallingClock()
    rec = Recorder()

    def broken(tick: int, now: float) -> None:
        raise RuntimeError("bug")

    async with RtpTicker(clock) as ticker:
        ticker.register(broken)
        ticker.register(rec)
        with caplog.at_level(logging.ERROR):
            await settle()
            await clock.advance(0.06)
        assert len(ticker) == 1
        assert [t for t, _ in rec.calls] == [0, 1, 2, 3]
        assert "failed: unregistered" in caplog.text


async def test_stats_percentiles_and_close() -> None:
    ticker = RtpTicker(FakeClock())
    for lateness in [0.001] * 98 + [0.004, 0.009]:
        ticker.stats.record(lateness)
    assert ticker.stats.percentile(50) == 0.001
    assert ticker.stats.percentile(99) == 0.009
    assert ticker.stats.max == 0.009
    ticker.stats.reset()
    assert ticker.stats.percentile(99) == 0.0 and ticker.stats.count == 0
    await ticker.start()
    await ticker.aclose()
    await ticker.aclose()  # idempotent


async def test_send_phase_runs_before_receive_phase() -> None:
    clock = StallingClock()
    order: list[str] = []
    async with RtpTicker(clock) as ticker:
        ticker.register(lambda tick, now: order.append(f"rx-a{tick}"), RECEIVE)
        ticker.register(lambda tick, now: order.append(f"tx-b{tick}"), SEND)
        ticker.register(lambda tick, now: order.append(f"tx-c{tick}"))
        await settle()
        await clock.advance(0.02)
        assert order == ["tx-b0", "tx-c0", "rx-a0", "tx-b1", "tx-c1", "rx-a1"]
        with pytest.raises(ValueError, match="phase must be SEND"):
            ticker.register(lambda tick, now: None, 2)
