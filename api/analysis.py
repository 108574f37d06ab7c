"""After a call: its analysis and its end-of-call report, in the background.

The ledger hands each ended call to ``PostCall.start`` (its row, transcript and end already written)
and returns; nothing here runs on a call's path. For each call:

1. When the agent has an ``analysis`` table: one request to the analysis LLM (the agent's ``llm`` by
   default) for a summary, the values of the structured schema, a pass/fail judgement against the
   success rubric and the caller's sentiment, answered as one JSON object. Each part is checked on its
   own: a value of the wrong type is that part's error (in ``errors``), not a reason to ask again. A
   failed request (provider error, timeout, an answer that is no JSON object) is retried, up to
   ``max_attempts`` with a doubling backoff; then the analysis is recorded ``failed`` with the last error.
2. The ``end-of-call-report`` webhook: as soon as the analysis is done, written in the same transaction
   as it; or, when ``report_wait_s`` passes first, with the analysis ``pending`` (the row gets the
   analysis when it is done). Calls without analysis report at once. Nothing is queued when no webhook
   URL applies.

The row's ``analysis`` (``GET /api/v1/calls/{id}``) always has the same keys: ``status`` (``pending``,
``completed``, ``failed`` or ``skipped``), ``summary``, ``structured_data`` (every schema field, null
when unknown or invalid), ``success_evaluation`` (``{"success": bool, "reason": str}``), ``sentiment``
(``positive``, ``neutral`` or ``negative``), ``errors`` (``{"structured_data.age": "expected a number,
got 'forty'"}``), ``error`` (why it failed or was skipped), ``attempts`` and ``template``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from pydantic import ValidationError

from ringline.api.store import Call as CallRow
from ringline.api.store import CallMessage, NotFound, OutboxEvent, Role, Store, StoreError
from ringline.api.v1.analysis import template_plan
from ringline.api.v1.calls import message_out, transcript_text
from ringline.api.webhooks.targets import CallWebhooks, webhook_url
from ringline.config.providers import LlmConfig, OpenAiLlmConfig
from ringline.config.settings import (
    DEFAULT_SUMMARY_PROMPT,
    AgentConfig,
    AnalysisConfig,
    AnalysisField,
    AnalysisPlan,
)
from ringline.engine.audio.clock import LoopClock
from ringline.engine.clients import HttpClients
from ringline.engine.errors import ProviderError, RinglineError
from ringline.engine.llm.base import Context, Llm, Message, TextDelta
from ringline.engine.providers import build_llm

log = logging.getLogger(__name__)

REPORT = "end-of-call-report"
SENTIMENTS = ("positive", "neutral", "negative")
MAX_TRANSCRIPT_CHARS = 60_000
"""A longer transcript loses its middle before it goes to the LLM (about 15k tokens are kept)."""
MAX_AGENT_PROMPT_CHARS = 8_000
"""The agent's own instructions, shown to the LLM for the success judgement, are cut to this."""
ANSWER_TOKENS = 1000
"""The least room an OpenAI-compatible analysis LLM gets for its answer."""
SHUTDOWN_GRACE_S = 5.0
"""At shutdown, analyses still running after this long are abandoned (recorded failed, reports sent)."""
_TYPES = {"string": "a string", "number": "a number", "bool": "true or false"}


class AnswerError(RinglineError):
    """The LLM's answer cannot be read as the analysis asked for (asked again)."""


@dataclass(frozen=True, slots=True)
class Plan:
    """What one call's analysis asks for, its agent's settings over its template's over the defaults."""

    summary_prompt: str | None
    """None: no summary."""
    fields: tuple[AnalysisField, ...] = ()
    rubric: str | None = None
    sentiment: bool = True
    template: str | None = None

    @property
    def empty(self) -> bool:
        return self.summary_prompt is None and not self.fields and self.rubric is None and not self.sentiment


def resolve_plan(config: AnalysisPlan, template: AnalysisPlan | None = None, name: str | None = None) -> Plan:
    def pick(field: str, default: Any) -> Any:
        for source in (config, template):
            if source is not None and (value := getattr(source, field)) is not None:
                return value
        return default

    return Plan(
        summary_prompt=pick("summary_prompt", DEFAULT_SUMMARY_PROMPT) if pick("summary", True) else None,
        fields=pick("structured_schema", ()),
        rubric=pick("success_rubric", None),
        sentiment=pick("sentiment", True),
        template=name,
    )


def record(status: str, **parts: Any) -> dict[str, Any]:
    """An analysis as the call's row keeps it: every key, whatever the status."""
    base = dict.fromkeys(("summary", "structured_data", "success_evaluation", "sentiment", "error", "template"))
    return base | {"status": status, "errors": {}, "attempts": 0} | parts


PENDING = record("pending")


# ---- the request and its answer -------------------------------------------------------------


def instructions(plan: Plan, agent_prompt: str = "") -> str:
    """The system message: what to answer, as one JSON object of the parts the plan asks for."""
    lines = [
        "You analyse a phone call that has ended, between a caller and an AI phone agent. The user message is "
        "the call's transcript.",
        "Answer with one JSON object and nothing else (no Markdown), with exactly these keys:",
    ]
    if plan.summary_prompt is not None:
        lines.append(f'- "summary": a string. {plan.summary_prompt}')
    if plan.fields:
        lines.append('- "structured_data": an object with exactly these keys, each null when the call does not tell:')
        lines += [f'  - "{f.name}" ({_TYPES[f.type]}): {f.description}' for f in plan.fields]
    if plan.rubric is not None:
        lines.append(
            '- "success_evaluation": {"success": true or false, "reason": "one or two sentences on why"}, '
            "judging the call by this rubric:"
        )
        lines += [f"    {line}" for line in plan.rubric.splitlines()]
    if plan.sentiment:
        lines.append('- "sentiment": the caller\'s overall sentiment: "positive", "neutral" or "negative".')
    if plan.rubric is not None and agent_prompt.strip():
        lines += ["", "The agent was instructed:", _clip(agent_prompt.strip(), MAX_AGENT_PROMPT_CHARS)]
    return "\n".join(lines)


def transcript_for_llm(messages: Sequence[CallMessage]) -> str:
    """The call as the LLM reads it: who said what, the tools the agent used and what they answered."""
    tool_names: dict[str, str] = {}
    lines = []
    for m in messages:
        extra = m.extra or {}
        text = " ".join(m.content.split())
        if m.role is Role.USER and text:
            lines.append(f"caller: {text}")
        elif m.role is Role.ASSISTANT:
            if text:
                lines.append(f"agent: {text}" + (" [cut short by the caller]" if m.interrupted else ""))
            for call in extra.get("tool_calls") or ():
                if isinstance(call, dict):
                    tool_names[str(call.get("id"))] = name = str(call.get("name"))
                    lines.append(f"agent used tool {name} with {json.dumps(call.get('arguments'), ensure_ascii=False)}")
        elif m.role is Role.TOOL:
            lines.append(f"tool {tool_names.get(str(extra.get('tool_call_id')), '?')} answered: {text}")
        elif m.role is Role.SYSTEM and text:
            lines.append(f"(context given to the agent: {text})")
    return _clip("\n".join(lines), MAX_TRANSCRIPT_CHARS)


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n[... {len(text) - 2 * half} characters left out ...]\n{text[-half:]}"


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 80 else text[:77] + "..."


def _is(kind: str, value: Any) -> bool:
    if kind == "string":
        return isinstance(value, str)
    if kind == "bool":
        return isinstance(value, bool)
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def parse_object(text: str) -> dict[str, Any]:
    """The JSON object in ``text`` (Markdown fences and words around it are ignored)."""
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end < start:
        raise AnswerError(f"the answer is not a JSON object: {_show(text)}")
    try:
        value = json.loads(text[start : end + 1])
    except ValueError as exc:
        raise AnswerError(f"the answer is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise AnswerError(f"the answer is not a JSON object: {_show(text)}")
    return value


def read_answer(text: str, plan: Plan) -> dict[str, Any]:
    """The parts of the analysis in the LLM's ``text``, each checked, with an error per part or field that
    failed its check. Raises ``AnswerError`` when there is no JSON object or it has none of the keys asked."""
    doc = parse_object(text)
    asked = {
        "summary": plan.summary_prompt is not None,
        "structured_data": bool(plan.fields),
        "success_evaluation": plan.rubric is not None,
        "sentiment": plan.sentiment,
    }
    if not any(key in doc for key, wanted in asked.items() if wanted):
        keys = ", ".join(k for k, wanted in asked.items() if wanted)
        raise AnswerError(f"the answer has none of the keys asked for ({keys}): {_show(doc)}")
    out: dict[str, Any] = {}
    errors: dict[str, str] = {}

    def missing_or(key: str, want: str) -> str:
        return f"expected {want}, got {_show(doc[key])}" if key in doc else "missing from the answer"

    if asked["summary"]:
        value = doc.get("summary")
        if isinstance(value, str) and value.strip():
            out["summary"] = value.strip()
        else:
            errors["summary"] = missing_or("summary", "a non-empty string")
    if asked["structured_data"]:
        data = doc.get("structured_data")
        if not isinstance(data, dict):
            errors["structured_data"] = missing_or("structured_data", "an object")
            data = {}
        values: dict[str, Any] = {}
        for field in plan.fields:
            value = data.get(field.name)
            if value is None or _is(field.type, value):
                values[field.name] = value
            else:
                values[field.name] = None
                errors[f"structured_data.{field.name}"] = f"expected {_TYPES[field.type]}, got {_show(value)}"
        out["structured_data"] = values
    if asked["success_evaluation"]:
        value = doc.get("success_evaluation")
        if isinstance(value, dict) and isinstance(value.get("success"), bool):
            reason = value.get("reason", "")
            if not isinstance(reason, str):
                errors["success_evaluation.reason"] = f"expected a string, got {_show(reason)}"
                reason = ""
            out["success_evaluation"] = {"success": value["success"], "reason": reason.strip()}
        else:
            want = 'an object {"success": true or false, "reason": "..."}'
            errors["success_evaluation"] = missing_or("success_evaluation", want)
    if asked["sentiment"]:
        value = doc.get("sentiment")
        if isinstance(value, str) and value.strip().lower() in SENTIMENTS:
            out["sentiment"] = value.strip().lower()
        else:
            errors["sentiment"] = missing_or("sentiment", "positive, neutral or negative")
    return out | {"errors": errors}


async def complete(llm: Llm, context: Context) -> str:
    """The LLM's whole text answer."""
    parts = []
    async with contextlib.aclosing(llm.stream(context, ())) as events:
        async for event in events:
            if isinstance(event, TextDelta):
                parts.append(event.text)
    return "".join(parts)


async def analyse(
    llm: Llm, plan: Plan, context: Context, config: AnalysisConfig, *, call_id: str | None = None
) -> dict[str, Any]:
    """Ask ``llm`` until an answer can be read or the attempts run out; the record either way."""
    wait = config.retry_backoff_s
    for attempt in range(1, config.max_attempts + 1):
        try:
            async with asyncio.timeout(config.timeout_s):
                text = await complete(llm, context)
            return record("completed", **read_answer(text, plan), attempts=attempt, template=plan.template)
        except (ProviderError, AnswerError, TimeoutError) as exc:
            error = f"no answer within {config.timeout_s:g} s" if isinstance(exc, TimeoutError) else str(exc)
            retryable = exc.retryable if isinstance(exc, ProviderError) else True
            if not retryable or attempt == config.max_attempts:
                return record("failed", error=error, attempts=attempt, template=plan.template)
            delay = exc.retry_after if isinstance(exc, ProviderError) and exc.retry_after is not None else wait
            log.info(
                "call %s: analysis attempt %d failed (%s): again in %.1f s",
                call_id,
                attempt,
                error,
                delay,
                extra={"call_id": call_id},
            )
            await asyncio.sleep(delay)
            wait *= 2
    raise AssertionError("unreachable: max_attempts >= 1")


def analysis_llm(agent: AgentConfig) -> LlmConfig:
    """The analysis LLM's configuration: ``analysis.llm``, else the agent's own with room for a long
    prompt and a full answer (an explicit ``analysis.llm`` keeps what it sets)."""
    config = agent.analysis
    assert config is not None
    chosen = config.llm if config.llm is not None else agent.llm
    if isinstance(chosen, OpenAiLlmConfig):
        given = config.llm.model_fields_set if config.llm is not None else set()
        room: dict[str, Any] = {"first_token_timeout_s": config.timeout_s, "timeout_s": config.timeout_s}
        room["temperature"] = 0.0
        if chosen.max_tokens is not None and chosen.max_tokens < ANSWER_TOKENS:
            room["max_tokens"] = ANSWER_TOKENS
        chosen = chosen.model_copy(update={k: v for k, v in room.items() if k not in given})
    return chosen


# ---- the end-of-call report -----------------------------------------------------------------


def report_payload(row: CallRow, messages: Sequence[CallMessage], recording_url: str | None) -> dict[str, Any]:
    """The ``end-of-call-report`` body: the call, its transcript, its analysis and what it cost."""
    analysis = row.analysis or {}
    return {
        "type": REPORT,
        "call_id": row.id,
        "agent_id": row.agent_id,
        "direction": row.direction.value,
        "from_number": row.from_number,
        "to_number": row.to_number,
        "started_at": row.started_at.isoformat() if row.started_at else None,
        "ended_at": row.ended_at.isoformat() if row.ended_at else None,
        "end_reason": row.end_reason,
        "duration_s": row.duration_s,
        "usage": {"minutes": round(row.duration_s / 60, 4)},
        "transcript": transcript_text(list(messages)),
        "messages": [message_out(m).model_dump(mode="json") for m in messages],
        "summary": analysis.get("summary"),
        "structured_data": analysis.get("structured_data"),
        "success_evaluation": analysis.get("success_evaluation"),
        "sentiment": analysis.get("sentiment"),
        "analysis": row.analysis,
        "recording_url": recording_url if row.recording_path is not None else None,
        "latency": row.latency,
        "metadata": row.metadata,
        "variables": row.variables,
    }


class PostCall:
    """One per process (the ledger's): each ended call's analysis and end-of-call report, as tasks it owns.

    ``webhooks`` builds the report's outbox entry and wakes the dispatcher (None: no reports);
    ``clients`` are the process's shared HTTP clients (cloud LLMs); ``public_url`` (the server's, see
    ``telephony.public_url``) makes the report's recording URL absolute."""

    def __init__(
        self,
        store: Store,
        webhooks: CallWebhooks | None,
        *,
        clients: HttpClients | None = None,
        public_url: str | None = None,
        api_prefix: str = "/api/v1",
    ) -> None:
        self._store = store
        self._webhooks = webhooks
        self._clients = clients
        base = (public_url or "").replace("wss://", "https://", 1).replace("ws://", "http://", 1)
        self._api_base = base + api_prefix
        self._jobs: set[asyncio.Task[None]] = set()
        self._analyses: set[asyncio.Task[dict[str, Any]]] = set()

    def start(self, call_id: str, agent: AgentConfig) -> None:
        """Analyse and report the call that has just ended (its row says so). Returns at once; does
        nothing for an agent without analysis whose reports go nowhere."""
        if agent.analysis is None and not self._reports(agent):
            return
        task = asyncio.create_task(self._run(call_id, agent), name=f"post-call-{call_id}")
        self._jobs.add(task)
        task.add_done_callback(self._jobs.discard)

    async def aclose(self, grace_s: float = SHUTDOWN_GRACE_S) -> None:
        """Give the calls in hand ``grace_s`` to finish, then abandon their analyses (recorded failed,
        reported) and wait for the writes."""
        if self._jobs:
            await asyncio.wait(tuple(self._jobs), timeout=grace_s)
        for task in tuple(self._analyses):
            task.cancel()
        while self._jobs:
            await asyncio.gather(*tuple(self._jobs), return_exceptions=True)

    async def _run(self, call_id: str, agent: AgentConfig) -> None:
        extra = {"call_id": call_id}
        try:
            await self._post_call(call_id, agent)
        except NotFound:
            log.info("call %s was deleted before its analysis and report were written", call_id, extra=extra)
        except StoreError as exc:
            log.error("the analysis or report of call %s was not written: %s", call_id, exc, extra=extra)
        except Exception:  # a task boundary: a bug here must not go unseen
            log.exception("the analysis or report of call %s failed", call_id, extra=extra)

    async def _post_call(self, call_id: str, agent: AgentConfig) -> None:
        messages = await self._store.list_messages(call_id)
        config = agent.analysis
        if config is None:
            await self._enqueue(self._report(agent, messages)(await self._store.get_call(call_id)))
            return
        await self._store.update_call(call_id, analysis=PENDING)
        task = asyncio.create_task(self._analysis(call_id, agent, messages), name=f"analysis-{call_id}")
        self._analyses.add(task)
        task.add_done_callback(self._analyses.discard)
        await asyncio.wait((task,), timeout=config.report_wait_s)
        if task.done():
            await self._store.update_call(call_id, analysis=_outcome(task), outbox=self._report(agent, messages))
            self._notify()
            return
        log.info("call %s: reporting before its analysis is done", call_id, extra={"call_id": call_id})
        await self._enqueue(self._report(agent, messages)(await self._store.get_call(call_id)))
        await asyncio.wait((task,))
        await self._store.update_call(call_id, analysis=_outcome(task))

    def _report(self, agent: AgentConfig, messages: Sequence[CallMessage]) -> Callable[[CallRow], list[OutboxEvent]]:
        """The ``outbox=`` of the report: made from the call's row as the same transaction leaves it."""

        def events(row: CallRow) -> list[OutboxEvent]:
            if self._webhooks is None:
                return []
            url = f"{self._api_base}/calls/{quote(row.id, safe='')}/recording"
            event = self._webhooks.event(agent, row.id, REPORT, report_payload(row, messages, url))
            return [] if event is None else [event]

        return events

    def _reports(self, agent: AgentConfig) -> bool:
        """Whether the agent's end-of-call reports are sent anywhere."""
        return self._webhooks is not None and webhook_url(self._webhooks.settings, agent, REPORT) is not None

    async def _enqueue(self, events: list[OutboxEvent]) -> None:
        if events:
            await self._store.enqueue(events)
            self._notify()

    def _notify(self) -> None:
        if self._webhooks is not None:
            self._webhooks.notify()

    async def _analysis(self, call_id: str, agent: AgentConfig, messages: Sequence[CallMessage]) -> dict[str, Any]:
        config = agent.analysis
        assert config is not None
        name = config.template
        template = None
        if name is not None:
            try:
                template = await self._template(name)
            except (StoreError, ValidationError) as exc:
                return record("failed", error=f"the analysis template {name!r} could not be read: {exc}", template=name)
            if template is None:
                return record("failed", error=f"there is no analysis template {name!r}", template=name)
        plan = resolve_plan(config, template, name)
        if plan.empty:
            return record("skipped", error="nothing to analyse: every part is off", template=name)
        if not any(m.role is Role.USER and m.content.strip() for m in messages):
            return record("skipped", error="the caller said nothing", template=name)
        context = Context(instructions(plan, agent.system_prompt))
        context.add(Message("user", transcript_for_llm(messages)))
        llm = build_llm(analysis_llm(agent), LoopClock(), self._clients)
        try:
            result = await analyse(llm, plan, context, config, call_id=call_id)
        finally:
            if (aclose := getattr(llm, "aclose", None)) is not None:
                await aclose()
        if result["status"] == "failed":
            log.warning("call %s: analysis failed: %s", call_id, result["error"], extra={"call_id": call_id})
        return result

    async def _template(self, name: str) -> AnalysisPlan | None:
        """The template named ``name`` (or with that id), as a plan; None when there is none."""
        row = await self._store.find_analysis_template(name)
        if row is None:
            try:
                row = await self._store.get_analysis_template(name)
            except NotFound:
                return None
        return template_plan(row.config)


def _outcome(task: asyncio.Task[dict[str, Any]]) -> dict[str, Any]:
    if task.cancelled():
        return record("failed", error="the server shut down before the analysis was done")
    if (exc := task.exception()) is not None:
        log.error("analysis failed", exc_info=exc)
        return record("failed", error=f"internal error: {type(exc).__name__}")
    return task.result()
