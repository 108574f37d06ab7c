"""A call: wires the transport, listener (VAD + STT + turn-taking), responder and playout.

Data flows one way: inbound audio -> VAD/STT -> ``TurnTaker`` -> actions -> responder/playout
-> transport. The call owns every task it starts and ends them all in ``end``.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from typing import Any

from ringline.config.settings import AgentConfig
from ringline.engine.audio.clock import Clock
from ringline.engine.audio.formats import FRAME_MS, AudioFormat, Encoding
from ringline.engine.audio.framing import Framer
from ringline.engine.audio.g711 import decode
from ringline.engine.audio.resample import AudioConverter
from ringline.engine.errors import ProviderError, RinglineError
from ringline.engine.events import EventLog, EventType
from ringline.engine.failover import FailoverLlm, FailoverTts
from ringline.engine.llm.base import Context, Message, ToolCall
from ringline.engine.metrics import TurnMetrics
from ringline.engine.playout import Playout
from ringline.engine.providers import Providers
from ringline.engine.record import CallRecord, EndReason
from ringline.engine.recording import CallRecorder, RecordedTransport
from ringline.engine.responder import Responder, ToolRunner
from ringline.engine.stt.base import SttSession
from ringline.engine.tools import ToolRegistry, default_registry
from ringline.engine.transports.base import MediaTransport, TransferFailed
from ringline.engine.turns import (
    AbandonReply,
    Action,
    DropPrepared,
    Finalize,
    Prepare,
    Respond,
    ResumeAudio,
    StopAudio,
    TurnState,
    TurnTaker,
)
from ringline.engine.vad.activity import SpeechStarted, SpeechStopped, VoiceActivity, make_classifier

log = logging.getLogger(__name__)


class CallStatus(enum.Enum):
    CREATED = "created"
    ACTIVE = "active"
    TRANSFERRING = "transferring"
    """A ``transfer`` is under way: announcing it, then handing the call over."""
    ENDING = "ending"
    ENDED = "ended"


class CallNotActive(RinglineError):
    """A control command reached a call that is not in progress."""


class Call:
    def __init__(
        self,
        call_id: str,
        agent_name: str,
        agent: AgentConfig,
        transport: MediaTransport,
        providers: Providers,
        clock: Clock,
        *,
        registry: ToolRegistry | None = None,
    ) -> None:
        self.call_id = call_id
        self.agent = agent
        self.status = CallStatus.CREATED
        self.record = CallRecord(call_id, agent_name, started_at=time.time())
        self.events = EventLog(call_id)
        self.recorder: CallRecorder | None = None
        """Both sides of the call, when the agent records (``agent.recording``)."""
        if agent.recording:
            self.recorder = CallRecorder(transport.format)
            transport = RecordedTransport(transport, self.recorder)
        self._transport = transport
        self._providers = providers
        self._clock = clock
        self._extra = {"call_id": call_id}
        wire = transport.format
        self._wire = wire
        self._pcm_format = AudioFormat(Encoding.PCM16, wire.sample_rate)
        self._framer = Framer(wire.bytes_for(FRAME_MS))
        self._frame_bytes = wire.bytes_for(FRAME_MS)
        self._vad = VoiceActivity(agent.vad, make_classifier(agent.vad, wire.sample_rate))
        self._turns = TurnTaker(agent.turn, agent.interruption)
        self.context = Context(agent.system_prompt)
        self._registry = registry or default_registry()
        self._tools = ToolRunner(self._registry, self.context, self, self)
        self._playout = Playout(transport, clock, agent.playout, self, call_id=call_id)
        self._responder = Responder(
            llm=FailoverLlm(providers.llm, providers.llm_fallback, self),
            tts=FailoverTts((providers.tts, *providers.tts_fallbacks), self),
            registry=self._registry,
            tools=self._tools,
            context=self.context,
            playout=self._playout,
            clock=clock,
            max_tool_rounds=agent.max_tool_rounds,
            apology=agent.apology,
            faults=self,
            call_id=call_id,
        )
        self._stt: SttSession | None = None
        self._stt_converter: AudioConverter | None = None
        self._stt_takes_wire = False
        self._stt_task: asyncio.Task[None] | None = None
        self._reply_task: asyncio.Task[None] | None = None
        self._pending = TurnMetrics()
        """Marks of the caller's turn in progress."""
        self._turn_metrics: TurnMetrics | None = None
        """Marks of the reply in progress."""
        self._last_voiced_at: float | None = None
        self._hangup: tuple[EndReason, str] | None = None
        """Why to end the call once the caller has heard the current reply."""
        self._prepared: tuple[str, Message] | None = None
        """The text a held reply was started for, and the user message it answers."""
        self._end_task: asyncio.Task[None] | None = None
        self.last_heard = clock.now()
        """Clock time of the last message from the provider (for the idle watchdog)."""
        self._ended = asyncio.Event()
        self._settled: set[int] = set()
        """Messages already announced as settled (``message`` events), by id."""
        self._speaking = False
        """The agent's audio is playing (between ``speech`` started and stopped events)."""
        self._transfer_to: str | None = None

    def _set_status(self, new: CallStatus) -> None:
        log.info("call %s -> %s", self.status.value, new.value, extra=self._extra)
        self.status = new
        self.events.emit(EventType.STATUS, status=new.value)

    @property
    def turn_state(self) -> TurnState:
        return self._turns.state

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the STT session, start owned tasks, speak the first message if the agent goes first."""
        try:
            self._stt = stt = await self._providers.stt.open(self._wire)
        except ProviderError as exc:
            self._playout.start()
            self._set_status(CallStatus.ACTIVE)
            await self._cannot_hear(exc)
            return
        if stt.format == self._wire:
            self._stt_takes_wire = True
        elif stt.format != self._pcm_format:
            self._stt_converter = AudioConverter(self._pcm_format, stt.format)
        self._stt_task = asyncio.create_task(self._read_transcripts(stt), name=f"stt-{self.call_id}")
        self._playout.start()
        self._set_status(CallStatus.ACTIVE)
        if self.agent.first_speaker == "agent" and self.agent.first_message:
            self._turns.agent_speaks()
            self._start_reply(script=self.agent.first_message)

    async def end(self, reason: EndReason, detail: str = "") -> None:
        """End the call (idempotent): stop every task, close the STT, hang up the transport."""
        if self.status in (CallStatus.ENDING, CallStatus.ENDED):
            await self._ended.wait()
            return
        self._set_status(CallStatus.ENDING)
        self.record.end_reason, self.record.end_detail = reason, detail
        current = asyncio.current_task()
        tasks = [t for t in (self._reply_task, self._stt_task) if t is not None and t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._reply_task is not None and self._turn_metrics is not None:
            self._responder.truncate_to_heard()
        self._settle_reply(interrupted=True)
        await self._tools.aclose()
        await self._playout.aclose()
        if self._stt is not None:
            try:
                await self._stt.aclose()
            except Exception:
                log.warning("closing STT failed", exc_info=True, extra=self._extra)
        await self._close_providers()
        if reason is EndReason.TRANSFERRED:
            try:
                await self._transport.transfer(detail)
            except TransferFailed as exc:
                self.fault("transfer", str(exc))
                self.record.end_reason, self.record.end_detail = EndReason.TRANSFER_FAILED, str(exc)
                await self._transport.hangup()
        elif reason is not EndReason.CALLER_HANGUP:
            await self._transport.hangup()
        self._finish_record()
        self._set_status(CallStatus.ENDED)
        log.info("call ended: %s %s", reason.value, detail, extra=self._extra)
        self._ended.set()

    async def wait_ended(self) -> None:
        await self._ended.wait()

    def _finish_record(self) -> None:
        record = self.record
        record.ended_at = time.time()
        record.underruns = self._playout.underruns
        record.transcript = self.transcript()

    def transcript(self) -> list[dict[str, Any]]:
        """What was said so far, by whom; assistant turns cut short are marked ``interrupted``."""
        return [
            {"role": m.role, "content": m.content, **({"interrupted": True} if m.interrupted else {})}
            for m in self.context.messages
            if m.role in ("user", "assistant") and m.content
        ]

    # -- inbound ------------------------------------------------------------------------------

    async def on_audio(self, payload: bytes) -> None:
        """One inbound media message (usually exactly one 20 ms frame): the hot path."""
        if self.status is not CallStatus.ACTIVE:
            return
        self.last_heard = self._clock.now()
        if len(payload) == self._frame_bytes:
            await self._on_frame(payload)
        else:
            for frame in self._framer.feed(payload):
                await self._on_frame(frame)

    async def _on_frame(self, frame: bytes) -> None:
        if self.recorder is not None:
            self.recorder.heard(frame)
        pcm = decode(frame, self._wire.encoding) if self._wire.encoding is not Encoding.PCM16 else frame
        stt = self._stt
        if stt is None:  # recognition failed to start: the call is saying so and ending
            pass
        elif self._stt_takes_wire:
            await stt.send(frame)
        elif self._stt_converter is not None:
            await stt.send(self._stt_converter.convert(pcm))
        else:
            await stt.send(pcm)
        vad = self._vad
        edge = vad.feed(pcm)
        if vad.last_voiced_end == vad.now:
            self._last_voiced_at = self._clock.now()
        turns = self._turns
        if edge is None:
            actions = turns.tick(vad.now, vad.last_voiced_end)
        elif isinstance(edge, SpeechStarted):
            actions = turns.speech_started(edge.at) + turns.tick(vad.now, vad.last_voiced_end)
        else:
            assert isinstance(edge, SpeechStopped)
            self._pending = TurnMetrics(user_stopped=self._last_voiced_at)
            actions = turns.speech_stopped(edge.at) + turns.tick(vad.now, vad.last_voiced_end)
        if actions:
            await self._apply(actions)
        self._playout.poll()

    def on_mark(self, name: str) -> None:
        self.last_heard = self._clock.now()
        self._playout.on_mark(name)

    def on_dtmf(self, digit: str) -> None:
        self.last_heard = self._clock.now()
        log.info("dtmf %s", digit, extra=self._extra)
        self.events.emit(EventType.DTMF, digit=digit)

    async def _read_transcripts(self, stt: SttSession) -> None:
        try:
            async for transcript in stt:
                if transcript.is_final:
                    self._pending.stt_final = self._clock.now()
                self.events.emit(EventType.TRANSCRIPT, role="user", text=transcript.text, final=transcript.is_final)
                actions = self._turns.transcript(transcript.text, final=transcript.is_final, now=self._vad.now)
                if actions:
                    await self._apply(actions)
        except asyncio.CancelledError:
            raise
        except ProviderError as exc:
            await self._cannot_hear(exc)
        except Exception as exc:
            log.exception("STT failed", extra=self._extra)
            self._spawn_end(EndReason.ERROR, f"stt: {exc}")

    async def _cannot_hear(self, exc: ProviderError) -> None:
        """Speech recognition is gone for good: say so rather than go silent, then hang up."""
        self.fault("stt", str(exc))
        await self._abandon_reply()
        self._hangup = (EndReason.ERROR, f"stt failed: {exc}")
        self._turns.agent_speaks()
        self._start_reply(script=self.agent.stt_failure_message)

    async def _close_providers(self) -> None:
        """Release what the call's provider adapters hold (HTTP clients, sockets)."""
        p = self._providers
        for provider in (p.stt, p.llm, p.llm_fallback, p.tts, *p.tts_fallbacks):
            aclose = getattr(provider, "aclose", None)
            if aclose is None:
                continue
            try:
                await aclose()
            except Exception:
                log.warning("closing %s failed", type(provider).__name__, exc_info=True, extra=self._extra)

    # -- actions ------------------------------------------------------------------------------

    async def _apply(self, actions: list[Action]) -> None:
        for action in actions:
            match action:
                case Finalize():
                    if self._stt is not None:
                        await self._stt.finalize()
                case Prepare(text):
                    self._prepared = (text, self.context.add(Message("user", text)))
                    self.record.preemptive["started"] += 1
                    self._start_reply(metrics=self._pending, held=True)
                case DropPrepared():
                    await self._drop_prepared()
                case Respond(text):
                    metrics = self._pending
                    metrics.turn_committed = self._clock.now()
                    self._pending = TurnMetrics()
                    if self._prepared is not None and self._prepared[0] == text:
                        self._settle(self._prepared[1])
                        self._prepared = None
                        self.record.preemptive["used"] += 1
                        self.record.turns.append(metrics)
                        self._responder.release()
                    else:
                        await self._drop_prepared()
                        self._settle(self.context.add(Message("user", text)))
                        self._start_reply(metrics=metrics)
                case StopAudio():
                    if self._turn_metrics is not None:
                        self._turn_metrics.interrupted_at = self._clock.now()
                    await self._playout.pause()
                case ResumeAudio():
                    self._playout.resume()
                case AbandonReply():
                    await self._abandon_reply()

    def _start_reply(
        self, *, metrics: TurnMetrics | None = None, script: str | None = None, held: bool = False
    ) -> None:
        metrics = metrics or TurnMetrics()
        self._turn_metrics = metrics
        if not held:
            self.record.turns.append(metrics)
        self._reply_task = asyncio.create_task(self._reply(metrics, script, held), name=f"reply-{self.call_id}")

    async def _drop_prepared(self) -> None:
        """Throw away a reply prepared for a turn that did not end as expected."""
        if self._prepared is None:
            return
        _, user_message = self._prepared
        self._prepared = None
        task, self._reply_task = self._reply_task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self._playout.abandon()
        self._responder.forget()
        self.context.messages[:] = [m for m in self.context.messages if m is not user_message]
        self._turn_metrics = None
        self.record.preemptive["discarded"] += 1

    async def _reply(self, metrics: TurnMetrics, script: str | None, held: bool) -> None:
        try:
            await self._responder.reply(metrics, script, held=held)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # A provider failed mid-reply: the caller keeps the floor, the call goes on.
            log.exception("reply failed", extra=self._extra)
            self.fault("reply", f"{type(exc).__name__}: {exc}")
            self._playout.end()

    async def _abandon_reply(self) -> None:
        task, self._reply_task = self._reply_task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self._playout.abandon()
        if task is not None:
            self._responder.truncate_to_heard()
            self._settle_reply(interrupted=True)
        self._turn_metrics = None

    # -- playout listener ---------------------------------------------------------------------

    def playout_started(self) -> None:
        metrics = self._turn_metrics
        if metrics is not None:
            metrics.mark("first_audio_sent", self._clock.now())
            if metrics.user_stopped is not None:
                self.events.emit(EventType.LATENCY, turn=len(self.record.turns), **metrics.breakdown_ms())
        self._speaking = True
        self.events.emit(EventType.SPEECH, state="started", interrupted=False)
        self._turns.reply_audio_started()

    def playout_finished(self) -> None:
        self._turns.reply_finished()
        self._turn_metrics = None
        self._settle_reply(interrupted=False)
        if self._hangup is not None:
            self._spawn_end(*self._hangup)

    # -- settled messages (events) ------------------------------------------------------------

    def _settle(self, message: Message) -> None:
        """Announce ``message`` as part of the conversation for good (once)."""
        if id(message) in self._settled:
            return
        self._settled.add(id(message))
        self.events.emit(
            EventType.MESSAGE,
            role=message.role,
            content=message.content,
            interrupted=message.interrupted,
            tool_calls=[{"id": c.id, "name": c.name, "arguments": c.arguments} for c in message.tool_calls],
            tool_call_id=message.tool_call_id,
        )

    def tool_started(self, call: ToolCall) -> None:
        self.events.emit(EventType.TOOL_CALL, id=call.id, name=call.name, arguments=call.arguments)

    def tool_finished(self, call: ToolCall, result: Message) -> None:
        self.events.emit(EventType.TOOL_RESULT, id=call.id, name=call.name, result=result.content)
        self._settle(result)

    def _settle_reply(self, *, interrupted: bool) -> None:
        """The reply in progress is over (heard out, or cut short and truncated to what was heard)."""
        if self._speaking:
            self._speaking = False
            self.events.emit(EventType.SPEECH, state="stopped", interrupted=interrupted)
        for message in self._responder.messages:
            if message.content or message.tool_calls:
                self._settle(message)

    # -- FaultSink ----------------------------------------------------------------------------

    def fault(self, stage: str, detail: str) -> None:
        log.warning("%s fault: %s", stage, detail, extra=self._extra)
        self.record.faults.append({"at": time.time(), "stage": stage, "detail": detail})
        self.events.emit(EventType.FAULT, stage=stage, detail=detail)

    # -- CallControl (tools) ------------------------------------------------------------------

    def request_hangup(self, reason: str) -> None:
        self._hangup = (EndReason.AGENT_HANGUP, reason)
        if self._turns.state is TurnState.LISTENING:
            self._spawn_end(EndReason.AGENT_HANGUP, reason)

    def _spawn_end(self, reason: EndReason, detail: str) -> None:
        if self.status in (CallStatus.ACTIVE, CallStatus.TRANSFERRING) and self._end_task is None:
            self._end_task = asyncio.create_task(self.end(reason, detail), name=f"end-{self.call_id}")

    # -- control (the API's live-call commands) -----------------------------------------------

    def _check_active(self, command: str) -> None:
        if self.status is not CallStatus.ACTIVE:
            raise CallNotActive(f"{command}: the call is {self.status.value}, not in progress")

    async def say(self, text: str, *, end_after: bool = False) -> None:
        """Speak ``text`` now. A reply in progress is cut (kept as far as it was heard) and the
        caller's unfinished turn is dropped; the caller can barge in on it as on any reply.
        ``end_after``: hang up once it has been heard."""
        self._check_active("say")
        self.events.emit(EventType.CONTROL, command="say", content=text, end_after=end_after)
        await self._take_floor()
        if end_after:
            self._hangup = (EndReason.API_ENDED, "say end_after")
        self._start_reply(script=text)

    async def inject_context(self, content: str, *, respond: bool = False) -> bool:
        """Add ``content`` to the conversation as a system message. ``respond``: the agent answers
        at once if the floor is free (nobody speaking, no reply under way); otherwise the next
        reply sees it. Returns whether a reply was started."""
        self._check_active("inject-context")
        self.events.emit(EventType.CONTROL, command="inject-context", content=content, respond=respond)
        self._settle(self.context.add(Message("system", content)))
        if not respond or self._turns.state is not TurnState.LISTENING or self._reply_task_running():
            return False
        await self._apply(self._turns.agent_speaks())
        self._start_reply()
        return True

    async def hang_up(self, message: str | None = None) -> None:
        """End the call, after speaking ``message`` if given (the ``end-call`` command)."""
        self._check_active("end-call")
        self.events.emit(EventType.CONTROL, command="end-call", message=message)
        if message:
            await self._take_floor()
            self._hangup = (EndReason.API_ENDED, "end-call")
            self._start_reply(script=message)
        else:
            self._spawn_end(EndReason.API_ENDED, "end-call")

    async def transfer(self, destination: str, message: str | None = None) -> None:
        """Hand the call over to ``destination`` (after announcing ``message`` if given). Raises
        ``TransferFailed`` at once if this call's transport cannot transfer."""
        self._check_active("transfer")
        if (why := self._transport.transfer_unavailable) is not None:
            raise TransferFailed(why)
        self.events.emit(EventType.CONTROL, command="transfer", destination=destination, message=message)
        self._set_status(CallStatus.TRANSFERRING)
        if message:
            await self._take_floor()
            self._hangup = (EndReason.TRANSFERRED, destination)
            self._start_reply(script=message)
        else:
            self._spawn_end(EndReason.TRANSFERRED, destination)

    async def _take_floor(self) -> None:
        await self._apply(self._turns.interject(self._vad.now))
        await self._abandon_reply()

    def _reply_task_running(self) -> bool:
        return self._reply_task is not None and not self._reply_task.done()
