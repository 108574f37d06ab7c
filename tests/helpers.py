"""In-memory doubles shared by the tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from ringline.benchmarks.playback import PlaybackBuffer
from ringline.config.settings import AgentConfig
from ringline.engine.audio.clock import Clock, FakeClock
from ringline.engine.audio.formats import MULAW_8K, AudioFormat
from ringline.engine.call import Call
from ringline.engine.providers import Providers, build_providers
from ringline.engine.tools import ToolRegistry
from ringline.engine.transports.base import Briefing, TransferFailed


@dataclass
class Sent:
    at: float
    kind: str  # "media", "mark", "clear", "hangup"
    data: bytes | str = b""


@dataclass
class RecordingTransport:
    """A MediaTransport that records what the call sends, stamped with the clock."""

    clock: Clock
    format: AudioFormat = MULAW_8K
    sent: list[Sent] = field(default_factory=list)

    async def send_audio(self, payload: bytes) -> None:
        self.sent.append(Sent(self.clock.now(), "media", payload))

    async def mark(self, name: str) -> None:
        self.sent.append(Sent(self.clock.now(), "mark", name))

    async def clear(self) -> None:
        self.sent.append(Sent(self.clock.now(), "clear"))

    async def hangup(self) -> None:
        self.sent.append(Sent(self.clock.now(), "hangup"))

    transfer_unavailable: str | None = "this transport cannot transfer"

    async def transfer(self, destination: str, briefing: Briefing | None = None) -> None:
        raise TransferFailed(self.transfer_unavailable or "")

    def of(self, kind: str) -> list[Sent]:
        return [s for s in self.sent if s.kind == kind]


@dataclass
class PlayoutEvents:
    started: int = 0
    finished: int = 0

    def playout_started(self) -> None:
        self.started += 1

    def playout_finished(self) -> None:
        self.finished += 1


class Phone:
    """The provider's side of a call, in memory: plays the agent's audio in real time on the
    fake clock (a ``PlaybackBuffer``), echoes marks when their audio has played, honours clear.
    Drive it with ``CallDriver``."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.format = MULAW_8K
        self.buffer = PlaybackBuffer(keep_audio=True)
        self.media_times: list[float] = []
        self.clears: list[float] = []
        self.hung_up = False
        self._echo: list[str] = []
        self.call: Call | None = None

    async def send_audio(self, payload: bytes) -> None:
        self.media_times.append(self.clock.now())
        self.buffer.push(payload, self.clock.now())

    async def mark(self, name: str) -> None:
        self._echo += self.buffer.mark(name, self.clock.now())

    async def clear(self) -> None:
        self.clears.append(self.clock.now())
        self._echo += self.buffer.clear(self.clock.now())

    async def hangup(self) -> None:
        self.hung_up = True

    transfer_unavailable: str | None = None
    transferred_to: str | None = None
    briefing: bytes | None = None
    """A warm transfer's briefing, as the far end would have heard it."""
    refuse_transfer: bool = False
    transfer_gate: asyncio.Event | None = None
    """When set, a transfer completes only once the test sets it (the far end still ringing)."""

    async def transfer(self, destination: str, briefing: Briefing | None = None) -> None:
        if self.transfer_gate is not None:
            await self.transfer_gate.wait()
        if self.refuse_transfer:
            raise TransferFailed(f"provider refused the transfer to {destination}")
        if briefing is not None:
            self.briefing = await briefing(self.format)
        self.transferred_to = destination
        self.hung_up = True

    def deliver_marks(self) -> None:
        due, self._echo = self._echo + self.buffer.due_marks(self.clock.now()), []
        for name in due:
            assert self.call is not None
            self.call.on_mark(name)

    def heard_seconds(self) -> float:
        return self.buffer.played_samples(self.clock.now()) / 8000


SILENCE_FRAME = b"\xff" * 160


def frames(ulaw: bytes) -> list[bytes]:
    return [ulaw[i : i + 160].ljust(160, b"\xff") for i in range(0, len(ulaw), 160)]


class CallDriver:
    """Runs a ``Call`` frame by frame on a fake clock: each step sends one 20 ms frame, lets
    every task run, delivers due marks and advances time by 20 ms."""

    def __init__(
        self, agent: AgentConfig, registry: ToolRegistry | None = None, providers: Providers | None = None
    ) -> None:
        self.clock = FakeClock(1000.0)
        self.phone = Phone(self.clock)
        providers = providers or build_providers(agent, self.clock)
        self.call = Call("CA-test", "default", agent, self.phone, providers, self.clock, registry=registry)
        self.phone.call = self.call
        self.speech_started_at: list[float] = []

    async def start(self) -> None:
        await self.call.start()
        await self._settle()

    async def _settle(self) -> None:
        for _ in range(30):
            await asyncio.sleep(0)

    async def step(self, frame: bytes = SILENCE_FRAME) -> None:
        await self.call.on_audio(frame)
        await self._settle()
        self.phone.deliver_marks()
        await self.clock.advance(0.02)
        await self._settle()

    async def say(self, ulaw: bytes) -> float:
        """Speak a clip; returns the clock time its last frame was sent."""
        self.speech_started_at.append(self.clock.now())
        for frame in frames(ulaw):
            await self.step(frame)
        return self.clock.now() - 0.02

    async def wait(self, seconds: float) -> None:
        for _ in range(round(seconds / 0.02)):
            await self.step()

    async def until(self, predicate: Callable[[], bool], limit: float = 10.0) -> float:
        """Send silence until ``predicate()`` holds; returns the clock time it did."""
        for _ in range(round(limit / 0.02)):
            if predicate():
                return self.clock.now()
            await self.step()
        raise AssertionError(f"condition not met within {limit} s")
