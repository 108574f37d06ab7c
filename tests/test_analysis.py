"""Post-call analysis and the end-of-call report: reading and checking the LLM's answer, the pipeline
over a real store (SQLite and PostgreSQL) with the scripted fake LLM, a real call through the Twilio
socket, and the analysis templates resource."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from ringline.api.analysis import (
    AnswerError,
    Plan,
    PostCall,
    analyse,
    analysis_llm,
    instructions,
    read_answer,
    resolve_plan,
    transcript_for_llm,
)
from ringline.api.store import CallMessage, CallStatus, Conflict, Direction, NotFound, Role, Store
from ringline.api.webhooks import CallWebhooks
from ringline.benchmarks.caller import clip_script, run_call
from ringline.config.providers import FakeLlmConfig, OpenAiLlmConfig
from ringline.config.settings import AgentConfig, AnalysisConfig, AnalysisField, AnalysisPlan, Settings, load_settings
from ringline.engine.audio.clock import LoopClock
from ringline.engine.errors import ProviderError
from ringline.engine.llm.base import Context, LlmEvent, Message, TextDelta, Tool
from ringline.engine.llm.fake import FakeLlm
from tests.api_fixtures import API, ApiServer, running

pytestmark = pytest.mark.timeout(60)

HOOK = "http://127.0.0.1:9/hooks"
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
SCHEMA = [
    {"name": "name", "type": "string", "description": "The caller's name."},
    {"name": "party_size", "type": "number", "description": "How many people."},
    {"name": "confirmed", "type": "bool", "description": "Whether the booking was confirmed."},
]
ANSWER = {
    "summary": "Ada booked a table for four.",
    "structured_data": {"name": "Ada", "party_size": 4, "confirmed": "yes"},
    "success_evaluation": {"success": True, "reason": "The table was booked."},
    "sentiment": " Positive",
}
REPORT_KEYS = {
    "type",
    "call_id",
    "agent_id",
    "direction",
    "from_number",
    "to_number",
    "started_at",
    "ended_at",
    "end_reason",
    "duration_s",
    "usage",
    "transcript",
    "messages",
    "summary",
    "structured_data",
    "success_evaluation",
    "sentiment",
    "analysis",
    "recording_url",
    "latency",
    "metadata",
    "variables",
}


def fields(*names: str) -> tuple[AnalysisField, ...]:
    return tuple(AnalysisField.model_validate(f) for f in SCHEMA if f["name"] in names)


FULL = Plan(summary_prompt="Summarize.", fields=fields("name", "party_size", "confirmed"), rubric="Booked?")


# ---- reading the answer -----------------------------------------------------------------------


def test_every_part_is_read_and_values_are_checked_against_their_declared_type() -> None:
    text = "Here you go:\n```json\n" + json.dumps(ANSWER) + "\n```"
    assert read_answer(text, FULL) == {
        "summary": "Ada booked a table for four.",
        "structured_data": {"name": "Ada", "party_size": 4, "confirmed": None},
        "success_evaluation": {"success": True, "reason": "The table was booked."},
        "sentiment": "positive",
        "errors": {"structured_data.confirmed": 'expected true or false, got "yes"'},
    }


@pytest.mark.parametrize(
    ("data", "wrong"),
    [
        ({"name": "Ada", "party_size": 2.5, "confirmed": False}, []),
        ({"name": None, "party_size": None}, []),  # unknown (null or left out) is no error
        ({"name": 7, "party_size": "four", "confirmed": 1}, ["name", "party_size", "confirmed"]),
        ({"name": "Ada", "party_size": True, "confirmed": True}, ["party_size"]),
        ({"name": "Ada", "party_size": float("inf")}, ["party_size"]),
    ],
)
def test_structured_values_of_the_wrong_type_are_errors_of_their_field(data: dict, wrong: list[str]) -> None:
    got = read_answer(json.dumps(ANSWER | {"structured_data": data}), FULL)
    assert sorted(got["errors"]) == sorted(f"structured_data.{name}" for name in wrong)
    assert got["structured_data"] == {f.name: None if f.name in wrong else data.get(f.name) for f in FULL.fields}


def test_malformed_parts_are_errors_and_an_answer_without_an_object_is_refused() -> None:
    answer = {"summary": " ", "structured_data": [1], "success_evaluation": {"success": "yes"}, "sentiment": "meh"}
    got = read_answer(json.dumps(answer), FULL)
    assert got["errors"] == {
        "summary": 'expected a non-empty string, got " "',
        "structured_data": "expected an object, got [1]",
        "success_evaluation": 'expected an object {"success": true or false, "reason": "..."}, got {"success": "yes"}',
        "sentiment": 'expected positive, neutral or negative, got "meh"',
    }
    assert got["structured_data"] == {"name": None, "party_size": None, "confirmed": None}
    for text, message in [
        ("Sure, here is the answer", "the answer is not a JSON object"),
        ('{"summary": "cut', "the answer is not a JSON object"),
        ("{'summary': 1}", "the answer is not valid JSON"),
        ('{"colour": "red"}', "the answer has none of the keys asked for"),
    ]:
        with pytest.raises(AnswerError, match=message):
            read_answer(text, FULL)


def test_the_plan_takes_the_agents_parts_over_the_templates_over_the_defaults() -> None:
    template = AnalysisPlan.model_validate(
        {"summary_prompt": "Template summary.", "structured_schema": SCHEMA[:1], "sentiment": False}
    )
    inline = AnalysisConfig.model_validate({"success_rubric": "Booked?", "sentiment": True})
    assert resolve_plan(inline, template, "t") == Plan("Template summary.", fields("name"), "Booked?", True, "t")
    assert resolve_plan(AnalysisConfig()).summary_prompt.startswith("Summarize the call")
    off = resolve_plan(AnalysisConfig(summary=False, sentiment=False))
    assert off.empty and off.summary_prompt is None
    with pytest.raises(ValueError, match="field names must be unique; repeated: name"):
        AnalysisConfig.model_validate({"structured_schema": SCHEMA[:1] * 2})


def test_the_request_asks_only_for_the_planned_parts_and_shows_the_whole_call() -> None:
    text = instructions(Plan(None, fields("party_size"), None, True), "Never shown without a rubric.")
    assert '"party_size" (a number): How many people.' in text and '"sentiment"' in text
    assert '"summary"' not in text and '"success_evaluation"' not in text and "Never shown" not in text
    assert "Book tables." in instructions(FULL, "Book tables.")
    messages = conversation("call_1")
    assert transcript_for_llm(messages).splitlines() == [
        "caller: A table for four tonight, I'm Ada.",
        "agent: Let me check. [cut short by the caller]",
        'agent used tool book_table with {"people": 4}',
        "tool book_table answered: booked",
        "agent: Booked!",
    ]
    long = [CallMessage("c", 1, Role.USER, "x" * 100_000, T0)]
    assert "characters left out" in transcript_for_llm(long) and len(transcript_for_llm(long)) < 61_000


def test_the_agents_openai_llm_gets_room_to_answer_an_explicit_one_keeps_its_settings() -> None:
    llm = {"provider": "openai", "api_key": "k", "max_tokens": 200, "first_token_timeout_s": 1.0}
    agent = AgentConfig.model_validate({"llm": llm, "analysis": {"timeout_s": 40}})
    chosen = analysis_llm(agent)
    assert isinstance(chosen, OpenAiLlmConfig)
    assert (chosen.first_token_timeout_s, chosen.timeout_s, chosen.max_tokens, chosen.temperature) == (40, 40, 1000, 0)
    own = AgentConfig.model_validate({"llm": llm, "analysis": {"llm": llm | {"temperature": 0.5}}})
    chosen = analysis_llm(own)
    assert isinstance(chosen, OpenAiLlmConfig)
    assert (chosen.first_token_timeout_s, chosen.max_tokens, chosen.temperature) == (1.0, 200, 0.5)
    assert isinstance(analysis_llm(AgentConfig(analysis=AnalysisConfig())), FakeLlmConfig)


class RefusingLlm:
    """An LLM whose provider refuses for good (a 4xx): not worth asking again."""

    def __init__(self) -> None:
        self.calls = 0

    async def stream(self, context: Context, tools: Sequence[Tool]) -> AsyncIterator[LlmEvent]:
        self.calls += 1
        raise ProviderError("openai: 400 context too long", retryable=False)
        yield TextDelta("")  # pragma: no cover - makes this an async generator


async def test_retryable_failures_are_retried_a_refusal_is_not() -> None:
    context = Context("analyse")
    context.add(Message("user", "caller: hi"))
    config = AnalysisConfig(retry_backoff_s=0, max_attempts=3)
    flaky = FakeLlm(FakeLlmConfig(replies=(json.dumps(ANSWER),), fail_first=2), LoopClock())
    got = await analyse(flaky, FULL, context, config)
    assert (got["status"], got["attempts"], got["summary"]) == ("completed", 3, "Ada booked a table for four.")
    down = FakeLlm(FakeLlmConfig(fail_first=5), LoopClock())
    got = await analyse(down, FULL, context, config)
    assert (got["status"], got["attempts"], got["error"]) == ("failed", 3, "scripted failure 3 of 5")
    refusing = RefusingLlm()
    got = await analyse(refusing, FULL, context, config)
    assert (got["status"], got["attempts"], refusing.calls) == ("failed", 1, 1)
    assert got["error"] == "openai: 400 context too long"


# ---- the pipeline over a real store -----------------------------------------------------------


def conversation(call_id: str) -> list[CallMessage]:
    tool_call = {"id": "call_9", "name": "book_table", "arguments": {"people": 4}}
    return [
        CallMessage(call_id, 1, Role.USER, "A table for four tonight, I'm Ada.", T0),
        CallMessage(
            call_id, 2, Role.ASSISTANT, "Let me check.", T0, interrupted=True, extra={"tool_calls": [tool_call]}
        ),
        CallMessage(call_id, 3, Role.TOOL, "booked", T0, extra={"tool_call_id": "call_9"}),
        CallMessage(call_id, 4, Role.ASSISTANT, "Booked!", T0),
    ]


async def ended_call(store: Store, *, said: bool = True, recording: str | None = None) -> str:
    call = await store.create_call(
        Direction.INBOUND,
        agent_id="default",
        status=CallStatus.IN_PROGRESS,
        from_number="+14155550100",
        to_number="+14155550199",
        metadata={"crm_id": "42"},
    )
    messages = conversation(call.id) if said else [CallMessage(call.id, 1, Role.ASSISTANT, "Hello?", T0)]
    await store.append_journal(messages, [])
    await store.update_call(call.id, latency=[{"first_audio_sent": 420.0}], recording_path=recording)
    await store.end_call(call.id, "caller_hangup")
    return call.id


def webhooks(url: str | None = HOOK) -> CallWebhooks:
    data: dict[str, Any] = {"webhooks": {"default_url": url, "secret": "s3cret"}} if url else {}
    return CallWebhooks(load_settings(data=data))


def agent(**analysis: Any) -> AgentConfig:
    llm = analysis.pop("llm", {"replies": [json.dumps(ANSWER)]})
    base = {"llm": llm, "structured_schema": SCHEMA, "success_rubric": "A table was booked.", "retry_backoff_s": 0}
    return AgentConfig.model_validate({"analysis": base | analysis})


async def post_call(store: Store, call_id: str, config: AgentConfig, hooks: CallWebhooks | None = None) -> None:
    """Run the post-call work of one call to the end."""
    work = PostCall(store, hooks or webhooks(), public_url="wss://voice.example.test")
    work.start(call_id, config)
    await work.aclose()


async def reports(store: Store, call_id: str) -> list[dict[str, Any]]:
    page = await store.list_deliveries(call_id=call_id)
    return [item.payload for item in page.items if item.type == "end-of-call-report"]


async def test_the_analysis_is_stored_with_the_report_in_one_transaction(store: Store) -> None:
    call_id = await ended_call(store, recording="/data/recordings/x.wav")
    await post_call(store, call_id, agent())
    row = await store.get_call(call_id)
    assert row.analysis == {
        "status": "completed",
        "summary": "Ada booked a table for four.",
        "structured_data": {"name": "Ada", "party_size": 4, "confirmed": None},
        "success_evaluation": {"success": True, "reason": "The table was booked."},
        "sentiment": "positive",
        "errors": {"structured_data.confirmed": 'expected true or false, got "yes"'},
        "error": None,
        "attempts": 1,
        "template": None,
    }
    [report] = await reports(store, call_id)
    assert set(report) == REPORT_KEYS
    assert report["analysis"] == row.analysis and report["summary"] == "Ada booked a table for four."
    assert report["structured_data"] == row.analysis["structured_data"] and report["sentiment"] == "positive"
    assert report["success_evaluation"] == {"success": True, "reason": "The table was booked."}
    assert (report["type"], report["call_id"], report["end_reason"]) == ("end-of-call-report", call_id, "caller_hangup")
    assert report["recording_url"] == f"https://voice.example.test/api/v1/calls/{call_id}/recording"
    assert report["usage"] == {"minutes": round(row.duration_s / 60, 4)} and report["duration_s"] == row.duration_s
    assert report["latency"] == [{"first_audio_sent": 420.0}] and report["metadata"] == {"crm_id": "42"}
    assert report[
        "transcript"
    ] == "caller: A table for four tonight, I'm Ada.\nagent: Let me check. [interrupted]\n" + ("agent: Booked!")
    assert [m["role"] for m in report["messages"]] == ["user", "assistant", "tool", "assistant"]
    assert report["messages"][1]["tool_calls"] == [{"id": "call_9", "name": "book_table", "arguments": {"people": 4}}]
    assert report["started_at"] == row.started_at.isoformat() and report["ended_at"] == row.ended_at.isoformat()


async def test_a_flaky_llm_is_retried_and_its_answer_stored(store: Store) -> None:
    call_id = await ended_call(store)
    await post_call(store, call_id, agent(llm={"replies": [json.dumps(ANSWER)], "fail_first": 2}))
    row = await store.get_call(call_id)
    assert row.analysis is not None
    assert (row.analysis["status"], row.analysis["attempts"], row.analysis["sentiment"]) == ("completed", 3, "positive")
    [report] = await reports(store, call_id)
    assert report["analysis"]["status"] == "completed"


async def test_a_failing_llm_is_recorded_failed_and_the_report_still_goes(store: Store) -> None:
    call_id = await ended_call(store)
    await post_call(store, call_id, agent(llm={"fail_first": 100}, max_attempts=3))
    row = await store.get_call(call_id)
    assert row.analysis is not None
    assert (row.analysis["status"], row.analysis["error"], row.analysis["attempts"]) == (
        "failed",
        "scripted failure 3 of 100",
        3,
    )
    [report] = await reports(store, call_id)
    assert report["analysis"]["status"] == "failed" and report["summary"] is None
    assert report["transcript"].startswith("caller: A table for four")


async def test_a_slow_analysis_does_not_hold_the_report_beyond_report_wait_s(store: Store) -> None:
    call_id = await ended_call(store)
    slow = agent(llm={"ttft_ms": 60_000}, timeout_s=0.5, max_attempts=1, report_wait_s=0.05)
    await post_call(store, call_id, slow)
    [report] = await reports(store, call_id)
    assert report["analysis"]["status"] == "pending" and report["summary"] is None
    row = await store.get_call(call_id)  # the analysis was written once done, after the report
    assert row.analysis is not None
    assert (row.analysis["status"], row.analysis["error"]) == ("failed", "no answer within 0.5 s")


async def test_shutting_down_abandons_analyses_still_running_and_reports_them(store: Store) -> None:
    call_id = await ended_call(store)
    work = PostCall(store, webhooks())
    work.start(call_id, agent(llm={"ttft_ms": 60_000}, report_wait_s=60))
    await work.aclose(grace_s=0.05)
    row = await store.get_call(call_id)
    assert row.analysis is not None
    assert (row.analysis["status"], row.analysis["error"]) == (
        "failed",
        "the server shut down before the analysis was done",
    )
    [report] = await reports(store, call_id)
    assert report["analysis"] == row.analysis


async def test_calls_without_analysis_or_speech_or_webhook(store: Store) -> None:
    plain = await ended_call(store)
    await post_call(store, plain, AgentConfig())
    assert (await store.get_call(plain)).analysis is None
    [report] = await reports(store, plain)
    assert report["analysis"] is None and report["summary"] is None and report["recording_url"] is None
    silent = await ended_call(store, said=False)
    await post_call(store, silent, agent())
    row = await store.get_call(silent)
    assert row.analysis is not None
    assert (row.analysis["status"], row.analysis["error"]) == ("skipped", "the caller said nothing")
    unsent = await ended_call(store)
    await post_call(store, unsent, agent(), webhooks(None))
    assert (await store.get_call(unsent)).analysis["status"] == "completed"  # type: ignore[index]
    assert await reports(store, unsent) == []


async def test_an_agent_uses_a_template_by_name_or_id(store: Store) -> None:
    template = await store.create_analysis_template(
        "booking", {"description": "d", "structured_schema": SCHEMA[:2], "sentiment": False}
    )
    answer = json.dumps({k: v for k, v in ANSWER.items() if k != "sentiment"})
    for ref in ("booking", template.id):
        call_id = await ended_call(store)
        config = AgentConfig.model_validate({"analysis": {"template": ref, "llm": {"replies": [answer]}}})
        await post_call(store, call_id, config)
        analysis = (await store.get_call(call_id)).analysis
        assert analysis is not None
        assert (analysis["status"], analysis["template"], analysis["sentiment"]) == ("completed", ref, None)
        assert analysis["structured_data"] == {"name": "Ada", "party_size": 4} and analysis["errors"] == {}
    call_id = await ended_call(store)
    await post_call(store, call_id, AgentConfig.model_validate({"analysis": {"template": "gone"}}))
    analysis = (await store.get_call(call_id)).analysis
    assert analysis is not None
    assert (analysis["status"], analysis["error"]) == ("failed", "there is no analysis template 'gone'")


async def test_analysis_template_rows(store: Store) -> None:
    made = await store.create_analysis_template("sales", {"success_rubric": "Sold."})
    assert (await store.get_analysis_template(made.id), await store.find_analysis_template("sales")) == (made, made)
    with pytest.raises(Conflict, match="an analysis template named 'sales' already exists"):
        await store.create_analysis_template("sales", {})
    other = await store.create_analysis_template("support", {})
    with pytest.raises(Conflict, match="already exists"):
        await store.update_analysis_template(other.id, name="sales")
    changed = await store.update_analysis_template(other.id, name="care", config={"sentiment": False})
    assert (changed.name, changed.config, changed.created_at) == ("care", {"sentiment": False}, other.created_at)
    page = await store.list_analysis_templates(limit=1)
    assert (page.total, [t.name for t in page.items]) == (2, ["care"])
    await store.delete_analysis_template(made.id)
    with pytest.raises(NotFound, match="no analysis template"):
        await store.get_analysis_template(made.id)
    assert await store.find_analysis_template("sales") is None


# ---- a real call ------------------------------------------------------------------------------


def bench(analysis: dict[str, Any] | None, **agent: Any) -> Settings:
    data = load_settings("config/bench.toml").model_dump()
    data["webhooks"] = {"default_url": HOOK, "secret": "s3cret", "events": ["end-of-call-report"]}
    data["agents"]["default"].update(agent, analysis=analysis)
    return Settings.model_validate(data)


async def analysed(server: ApiServer, call_id: str) -> dict[str, Any]:
    """The call's analysis and end-of-call report, once both are written."""
    for _ in range(500):
        row = await server.store.get_call(call_id)
        found = await reports(server.store, call_id)
        if row.analysis is not None and row.analysis["status"] != "pending" and found:
            return {"analysis": row.analysis, "report": found[0]}
        await asyncio.sleep(0.02)
    raise AssertionError(f"call {call_id} was never analysed and reported")


async def test_a_real_call_is_analysed_and_reported() -> None:
    analysis = {"llm": {"replies": [json.dumps(ANSWER)]}, "structured_schema": SCHEMA, "success_rubric": "Booked."}
    async with running(bench(analysis)) as server:
        result = await run_call(f"{server.ws_url}/media/twilio", clip_script(0, 2))
        assert result.error is None and result.answered == 2
        got = await analysed(server, result.call_sid)
        assert got["analysis"]["status"] == "completed" and got["analysis"]["summary"] == ANSWER["summary"]
        assert got["analysis"]["success_evaluation"]["success"] is True
        assert got["analysis"]["structured_data"] == {"name": "Ada", "party_size": 4, "confirmed": None}
        key = await server.key("calls:read")
        async with server.get(f"{API}/calls/{result.call_sid}", key=key) as resp:
            body = await resp.json()
        assert body["data"]["analysis"] == got["analysis"]
        report = got["report"]
        assert set(report) == REPORT_KEYS and report["analysis"] == got["analysis"]
        assert report["recording_url"] is None  # not recorded (the path is tested over the store above)
        assert report["transcript"].splitlines() == ["caller: Tell me more.", "agent: Sure, here is the answer"] * 2
        assert len(report["latency"]) == 2 and report["end_reason"] == "caller_hangup"
        assert report["duration_s"] > 1 and report["usage"]["minutes"] == round(report["duration_s"] / 60, 4)


# ---- the analysis templates resource ----------------------------------------------------------


async def call_api(server: ApiServer, method: str, path: str, key: str | None, body: Any = None) -> tuple[int, Any]:
    async with server.request(method, API + path, key=key, json=body) as resp:
        return resp.status, await resp.json()


async def test_analysis_templates_crud(api: ApiServer) -> None:
    key = await api.key("agents:read", "agents:write")
    body = {
        "name": "booking",
        "description": "Table bookings",
        "structured_schema": SCHEMA,
        "success_rubric": "Booked.",
    }
    status, made = await call_api(api, "POST", "/analysis-templates", key, body)
    assert status == 201, made
    made = made["data"]
    assert made["name"] == "booking" and made["structured_schema"] == SCHEMA and made["id"].startswith("atpl_")
    assert (made["summary"], made["summary_prompt"], made["sentiment"]) == (None, None, None)
    tid = made["id"]
    assert (await call_api(api, "GET", f"/analysis-templates/{tid}", key))[1]["data"] == made
    status, page = await call_api(api, "GET", "/analysis-templates", key)
    assert (status, page["data"], page["meta"]["pagination"]["total"]) == (200, [made], 1)
    status, patched = await call_api(
        api, "PATCH", f"/analysis-templates/{tid}", key, {"sentiment": False, "success_rubric": None}
    )
    assert status == 200, patched
    patched = patched["data"]
    assert (patched["sentiment"], patched["success_rubric"], patched["structured_schema"]) == (False, None, SCHEMA)
    stored = await api.store.get_analysis_template(tid)
    assert stored.config == {"description": "Table bookings", "structured_schema": SCHEMA, "sentiment": False}
    status, renamed = await call_api(api, "PATCH", f"/analysis-templates/{tid}", key, {"name": "bookings"})
    assert (status, renamed["data"]["name"]) == (200, "bookings")
    assert (await call_api(api, "DELETE", f"/analysis-templates/{tid}", key))[0] == 200
    assert (await call_api(api, "GET", f"/analysis-templates/{tid}", key))[0] == 404


async def test_analysis_template_errors(api: ApiServer) -> None:
    writer, reader = await api.key("agents:read", "agents:write"), await api.key("agents:read")
    body = {"name": "booking", "structured_schema": SCHEMA[:1]}
    assert (await call_api(api, "POST", "/analysis-templates", None, body))[0] == 401
    assert (await call_api(api, "POST", "/analysis-templates", reader, body))[0] == 403
    assert (await call_api(api, "GET", "/analysis-templates", await api.key("calls:read")))[0] == 403
    tid = (await call_api(api, "POST", "/analysis-templates", writer, body))[1]["data"]["id"]
    status, error = await call_api(api, "POST", "/analysis-templates", writer, body)
    assert (status, error["error"]) == (409, "an analysis template named 'booking' already exists")
    for bad, field, reason in [
        ({"name": "x", "structured_schema": [SCHEMA[0] | {"type": "date"}]}, "structured_schema.0.type", "Input"),
        ({"name": "x", "structured_schema": SCHEMA[:1] * 2}, "structured_schema", "field names must be unique"),
        ({"name": "atpl_x"}, "name", "may not start with 'atpl_' (template ids do)"),
        ({"name": "x", "colour": "red"}, "colour", "unknown field"),
        ({"name": "x", "summary_prompt": ""}, "summary_prompt", "String should have at least 1 character"),
    ]:
        status, error = await call_api(api, "POST", "/analysis-templates", writer, bad)
        assert status == 422 and error["details"][field].startswith(reason), (bad, error)
    status, error = await call_api(api, "PATCH", f"/analysis-templates/{tid}", writer, {"name": None})
    assert (status, error["details"]) == (422, {"name": "may not be null"})
    status, error = await call_api(
        api, "PATCH", f"/analysis-templates/{tid}", writer, {"structured_schema": SCHEMA[:1] * 2}
    )
    assert status == 422 and "structured_schema" in error["details"]
    status, error = await call_api(api, "GET", "/analysis-templates/atpl_nope", writer)
    assert (status, error["error"]) == (404, "no analysis template atpl_nope")
    assert (await call_api(api, "PATCH", "/analysis-templates/atpl_nope", writer, {"sentiment": True}))[0] == 404
    assert (await call_api(api, "DELETE", "/analysis-templates/atpl_nope", writer))[0] == 404
    agent = await api.store.create_agent("a", {"analysis": {"template": "booking"}})
    status, error = await call_api(api, "DELETE", f"/analysis-templates/{tid}", writer)
    assert (status, error["error"]) == (409, f"analysis template 'booking' is used by agents {agent.id}")
    status, error = await call_api(api, "PATCH", f"/analysis-templates/{tid}", writer, {"name": "renamed"})
    assert status == 409 and "rename it there first" in error["error"]
    assert (await call_api(api, "PATCH", f"/analysis-templates/{tid}", writer, {"sentiment": False}))[0] == 200
