"""A call: wires the transport, listener (VAD + STT + turn-taking), responder and playout.

Data flows one way: inbound audio -> VAD/STT -> ``TurnTaker`` -> actions -> responder/playout
-> transport. The call owns every task it starts and ends them all in ``end``. Behaviours with a
schedule of their own (re-engaging a silent caller, the duration limit) are polled on every
inbound frame and act through the same actions.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from ringline.config.settings import AgentConfig
from ringline.engine.audio.ambience import AmbienceBed, AmbienceError, load_loop
from ringline.engine.audio.clock import Clock
from ringline.engine.audio.formats import FRAME_MS, AudioFormat, Encoding
from ringline.engine.audio.framing import Framer
from ringline.engine.audio.g711 import decode
from ringline.engine.audio.resample import AudioConverter
from ringline.engine.behaviours.limits import Cut, DurationLimit, SayGoodbye, Warn
from ringline.engine.behaviours.silence import GiveUp, Reengage, SilenceWatch
from ringline.engine.dtmf import Deliver, DtmfRules, DtmfStep, EntryStarted, KeyAction
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
from ringline.engine.transports.base import Briefing, MediaTransport, TransferFailed
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
from ringline.engine.vad.activity import Activity, SpeechStarted, SpeechStopped, VoiceActivity, make_classifier
from ringline.engine.voicemail import AmdEvent, GreetingEnded, Verdict, VoicemailDetector

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
        outbound: bool = False,
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
        self._voicemail = (
            VoicemailDetector(agent.voicemail, wire.sample_rate) if outbound and agent.voicemail.enabled else None
        )
        self._dtmf = DtmfRules(agent.dtmf)
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
            fillers=agent.fillers,
            caller_silent=self._caller_silent,
        )
        self._silence = SilenceWatch(agent.silence)
        self._limit: DurationLimit | None = None
        self._handover: asyncio.Task[str | None] | None = None
        self._closing = False
        """``end`` has begun (it may be waiting for a hand-over to finish)."""
        self._briefing: str | None = None
        """What a warm transfer under way tells whoever answers."""
        """The transport handing the call over (``transfer``): None once done, else why not."""
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
        agent = self.agent
        if agent.max_duration_s is not None:
            self._limit = DurationLimit(
                self._clock.now(),
                agent.max_duration_s,
                warning_s=agent.duration_warning_s,
                warning=agent.duration_warning,
                goodbye=agent.duration_goodbye,
            )
        ambience = await self._load_ambience()
        try:
            self._stt = stt = await self._providers.stt.open(self._wire)
        except ProviderError as exc:
            self._playout.start(ambience)
            self._set_status(CallStatus.ACTIVE)
            await self._cannot_hear(exc)
            return
        if stt.format == self._wire:
            self._stt_takes_wire = True
        elif stt.format != self._pcm_format:
            self._stt_converter = AudioConverter(self._pcm_format, stt.format)
        self._stt_task = asyncio.create_task(self._read_transcripts(stt), name=f"stt-{self.call_id}")
        self._playout.start(ambience)
        self._set_status(CallStatus.ACTIVE)
        if self.agent.first_speaker == "agent" and self.agent.first_message:
            self._turns.agent_speaks()
            self._start_reply(script=self.agent.first_message)

    async def _load_ambience(self) -> AmbienceBed | None:
        config = self.agent.ambience
        if not config.enabled:
            return None
        try:
            return AmbienceBed(await load_loop(config, self._wire))
        except AmbienceError as exc:  # the call goes on without it
            self.fault("ambience", str(exc))
            return None

    async def end(self, reason: EndReason, detail: str = "") -> None:
        """End the call (idempotent): stop every task, close the STT, hang up the transport."""
        self._closing = True
        handover = self._handover
        if handover is not None and not handover.done() and handover is not asyncio.current_task():
            # The transport is handing the call over: its socket closing is the hand-over's doing,
            # and whether it worked decides how the call ends.
            await asyncio.gather(asyncio.shield(handover), return_exceptions=True)
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
        if reason not in (EndReason.CALLER_HANGUP, EndReason.TRANSFERRED):  # a transfer hung up already
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
        status = self.status
        if status is not CallStatus.ACTIVE and status is not CallStatus.TRANSFERRING:
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
        if self._voicemail is not None and self._voicemail.active:
            await self._on_voicemail(self._voicemail.feed(pcm, vad.now, edge))
        if self._dtmf.entry and (steps := self._dtmf.tick(vad.now)):
            await self._on_dtmf(steps)
        turns = self._turns
        if edge is None:
            actions = turns.tick(vad.now, vad.last_voiced_end)
        elif isinstance(edge, SpeechStarted):
            if stt is not None:
                stt.speech(True)
            actions = turns.speech_started(edge.at) + turns.tick(vad.now, vad.last_voiced_end)
        else:
            assert isinstance(edge, SpeechStopped)
            if stt is not None:
                stt.speech(False)
            self._pending = TurnMetrics(user_stopped=self._last_voiced_at)
            actions = turns.speech_stopped(edge.at) + turns.tick(vad.now, vad.last_voiced_end)
        if actions:
            await self._apply(actions)
        self._playout.poll()
        if (due := self._poll_behaviours()) is not None:
            await self._behave(due)

    def on_mark(self, name: str) -> None:
        self.last_heard = self._clock.now()
        self._playout.on_mark(name)

    async def on_dtmf(self, digit: str) -> None:
        """The caller pressed a key: a ``dtmf`` event, then what the agent's ``dtmf`` rules say."""
        self.last_heard = self._clock.now()
        log.info("dtmf %s", digit, extra=self._extra)
        self.events.emit(EventType.DTMF, digit=digit)
        try:
            steps = self._dtmf.key(digit, self._vad.now)
        except ValueError as exc:  # the transport let a bad key through: ignored, not fatal
            log.warning("dtmf ignored: %s", exc, extra=self._extra)
            return
        await self._on_dtmf(steps)

    async def _read_transcripts(self, stt: SttSession) -> None:
        try:
            async for transcript in stt:
                if transcript.is_final:
                    self._pending.stt_final = self._clock.now()
                self.events.emit(EventType.TRANSCRIPT, role="user", text=transcript.text, final=transcript.is_final)
                if self._voicemail is not None and self._voicemail.active:
                    heard = self._voicemail.transcript(transcript.text, final=transcript.is_final, now=self._vad.now)
                    await self._on_voicemail(heard)
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
        holding = self.status is CallStatus.TRANSFERRING  # the caller waits for the hand-over
        for action in actions:
            if holding and not isinstance(action, Finalize | Respond):
                continue  # nothing to prepare, pause or abandon: the agent is done talking
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
                case Respond(text) if holding:
                    self._settle(self.context.add(Message("user", text)))  # heard, not answered
                    self._pending = TurnMetrics()
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
                    self._silence.caller_spoke()
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
            reason, detail = self._hangup
            if reason is EndReason.TRANSFERRED:
                self._hand_over(detail)
            else:
                self._spawn_end(reason, detail)

    # -- behaviours (silence, duration limit) -------------------------------------------------

    def _caller_silent(self) -> bool:
        return self._vad.state is Activity.SILENCE and self._turns.state is TurnState.THINKING

    def _floor_free(self) -> bool:
        """The agent is waiting for the caller: nothing said or under way, nobody talking."""
        return (
            self._turns.state is TurnState.LISTENING
            and self._hangup is None
            and self.status is CallStatus.ACTIVE
            and self._vad.state is Activity.SILENCE
            and not self._reply_task_running()
        )

    def _poll_behaviours(self) -> Reengage | GiveUp | Warn | SayGoodbye | Cut | None:
        now = self._clock.now()
        free = self._floor_free()
        limit = self._limit
        if limit is not None and now >= limit.next_due and (due := limit.poll(now, free)) is not None:
            return due
        return self._silence.poll(now, free)

    async def _behave(self, due: Reengage | GiveUp | Warn | SayGoodbye | Cut) -> None:
        match due:
            case Reengage(text, attempt):
                log.info("caller silent: re-engaging (attempt %d)", attempt, extra=self._extra)
                await self._apply(self._turns.agent_speaks())
                self._start_reply(script=text)
            case Warn(text):
                log.info("call duration: warning the caller", extra=self._extra)
                await self._apply(self._turns.agent_speaks())
                self._start_reply(script=text)
            case GiveUp(text):
                attempts = self._silence.attempts
                await self._sign_off(EndReason.SILENCE_TIMEOUT, f"no answer after {attempts} re-engagements", text)
            case SayGoodbye(text):
                if self._hangup is None:  # else the call is ending after the current reply anyway
                    await self._sign_off(EndReason.MAX_DURATION, f"limit {self.agent.max_duration_s:g} s", text)
            case Cut():
                self._spawn_end(EndReason.MAX_DURATION, "the goodbye was not heard out in time")

    async def _sign_off(self, reason: EndReason, detail: str, goodbye: str) -> None:
        """Take the floor for good, say ``goodbye`` (the caller cannot talk over it), then end."""
        log.info("signing off: %s (%s)", reason.value, detail, extra=self._extra)
        await self._apply(self._turns.sign_off(self._vad.now))
        await self._abandon_reply()
        self._hangup = (reason, detail)
        self._start_reply(script=goodbye)

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

    async def transfer(self, destination: str, message: str | None = None, briefing: str | None = None) -> None:
        """Hand the call over to ``destination`` (after announcing ``message`` if given). With a
        ``briefing``, a warm transfer: whoever answers hears it (in the agent's voice) before the
        caller is connected; the caller waits, heard but not answered. Raises ``TransferFailed``
        at once if this call's transport cannot transfer."""
        self._check_active("transfer")
        if (why := self._transport.transfer_unavailable) is not None:
            raise TransferFailed(why)
        self.events.emit(
            EventType.CONTROL, command="transfer", destination=destination, message=message, briefing=briefing
        )
        self._briefing = briefing
        self._set_status(CallStatus.TRANSFERRING)
        if message:
            await self._take_floor()
            self._hangup = (EndReason.TRANSFERRED, destination)
            self._start_reply(script=message)
        else:
            self._hand_over(destination)

    async def wait_transfer(self) -> str | None:
        """Wait for the hand-over under way, if any: None once the call is handed over (it has
        ended), else why the provider refused (the call goes on, see ``transfer_failed_message``)."""
        task = self._handover
        if task is None:
            return None
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.cancelled() and not asyncio.current_task().cancelling():  # type: ignore[union-attr]
                return "the transfer was abandoned: the call ended"
            raise

    def _hand_over(self, destination: str) -> None:
        """The announcement, if any, was heard: have the transport hand the call over."""
        self._hangup = None
        if self._handover is None or self._handover.done():
            self._handover = asyncio.create_task(self._run_transfer(destination), name=f"transfer-{self.call_id}")

    async def _run_transfer(self, destination: str) -> str | None:
        briefing = None if self._briefing is None else self._render(self._briefing)
        try:
            await self._transport.transfer(destination, briefing)
        except TransferFailed as exc:
            why = str(exc)
        except Exception as exc:  # a transport's bug: the caller is still owed an answer
            log.exception("transfer failed", extra=self._extra)
            why = f"{type(exc).__name__}: {exc}"
        else:
            await self.end(EndReason.TRANSFERRED, destination)
            return None
        self.fault("transfer", why)
        self.events.emit(EventType.TRANSFER_FAILED, destination=destination, detail=why)
        if self.status is CallStatus.TRANSFERRING and not self._closing:  # the call carries on: say so
            self._set_status(CallStatus.ACTIVE)
            await self._take_floor()
            self._start_reply(script=self.agent.transfer_failed_message)
        return why

    def _render(self, text: str) -> Briefing:
        """``text`` in the agent's voice, in whatever format the transport asks for."""
        tts = FailoverTts((self._providers.tts, *self._providers.tts_fallbacks), self)

        async def render(fmt: AudioFormat) -> bytes:
            async def phrases() -> AsyncIterator[str]:
                yield text

            out, converter = bytearray(), None
            async for speech in tts.stream(phrases(), fmt):
                chunk = speech.chunk
                if chunk.format == fmt:
                    out += chunk.data
                else:
                    converter = converter or AudioConverter(chunk.format, fmt)
                    out += converter.convert(chunk.data)
            if converter is not None:
                out += converter.flush()
            return bytes(out)

        return render

    async def send_dtmf(self, keys: str) -> None:
        """Press ``keys`` towards the far end (the ``send_dtmf`` tool: IVR navigation). Raises
        ``SendDtmfFailed`` when the transport cannot."""
        self._check_active("send-dtmf")
        await self._transport.send_dtmf(keys)
        self.events.emit(EventType.DTMF, sent=keys)

    # -- voicemail and DTMF rules (engine/voicemail.py, engine/dtmf.py) ------------------------

    async def _on_voicemail(self, events: list[AmdEvent]) -> None:
        config = self.agent.voicemail
        for event in events:
            match event:
                case Verdict(result, reason, at):
                    self.events.emit(EventType.VOICEMAIL, stage=result, reason=reason, at_s=round(at, 2))
                    if result == "machine":  # the greeting is no one to talk to: stop, and wait it out
                        await self._apply(self._turns.sign_off(self._vad.now))
                        await self._abandon_reply()
                        if config.action == "hang_up":
                            self._spawn_end(EndReason.VOICEMAIL, f"machine ({reason}): hung up")
                case GreetingEnded(how, at):
                    self.events.emit(EventType.VOICEMAIL, stage="greeting_ended", reason=how, at_s=round(at, 2))
                    if config.action == "leave_message" and self.status is CallStatus.ACTIVE:
                        why = self._voicemail.reason if self._voicemail is not None else ""
                        await self._sign_off(
                            EndReason.VOICEMAIL, f"machine ({why}): message left after {how}", config.message
                        )

    async def _on_dtmf(self, steps: list[DtmfStep]) -> None:
        if self.status is not CallStatus.ACTIVE or self._turns.state is TurnState.CLOSING:
            return  # ending, handing over, or saying last words: keys change nothing
        for step in steps:
            match step:
                case EntryStarted():  # a key press interrupts the agent
                    if self._speaking or self._reply_task_running():
                        await self._take_floor()
                case Deliver(digits, text, why):
                    log.info("dtmf entry %s (%s)", digits, why, extra=self._extra)
                    await self._take_floor()
                    self._pending = TurnMetrics(user_stopped=self._clock.now())  # latency from the last key
                    await self._apply([Respond(text)])
                case KeyAction(key, rule) if rule.action == "transfer" and rule.destination:
                    try:
                        await self.transfer(rule.destination, rule.message or None)
                    except (TransferFailed, CallNotActive) as exc:
                        self.fault("dtmf", f"key {key}: {exc}")
                case KeyAction(key, rule):
                    if rule.message:
                        await self._sign_off(EndReason.AGENT_HANGUP, f"key {key}", rule.message)
                    else:
                        self._spawn_end(EndReason.AGENT_HANGUP, f"key {key}")

    async def _take_floor(self) -> None:
        await self._apply(self._turns.interject(self._vad.now))
        await self._abandon_reply()

    def _reply_task_running(self) -> bool:
        return self._reply_task is not None and not self._reply_task.done()
