"""The ``assistant-request`` webhook: an inbound call asks the user's server which agent answers it.

When an inbound call starts whose stream names no ``agent`` (the called number's inbound agent, else
the default agent, would answer it) and an ``assistant-request`` URL is configured for that agent (its
``webhook``, else the account's ``[webhooks]``: ``webhook_url``), Ringline POSTs, signed like every
webhook::

    {"type": "assistant-request", "call_id", "direction": "inbound", "from_number", "to_number",
     "agent_id": the agent that answers otherwise, "parameters": the media stream's parameters}

and waits up to ``webhooks.assistant_request_timeout_s`` (5 s) for a JSON object, one of::

    {"agent_id": "agt_..."}                                   a stored agent (or a config file's agent)
    {"agent": {...whole agent config...}}                     a transient agent, for this call only
    {"agent_id": "agt_...", "overrides": {...}}               a JSON merge patch onto a stored agent
    {"overrides": {...}}                                      ... onto the agent that answers otherwise

each optionally with ``"variables": {"name": "value"}`` for the prompt's ``{{placeholders}}`` (over
the stream's). An empty answer (no body, or ``{}``) keeps the agent. No answer in time, an error
status, a malformed answer or an agent that does not exist or is disabled: the agent that answers
otherwise does, and the reason is logged and recorded as the call's ``fault``. The caller hears
nothing extra beyond that wait (the media socket's frames wait in its bounded read buffer).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Self

import aiohttp
import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ringline.api.routing import agent_for_call
from ringline.api.store import Store, StoreError
from ringline.api.v1.common import merge_patch
from ringline.api.webhooks.targets import webhook_url
from ringline.api.webhooks.tools import webhook_stamp
from ringline.config.settings import AgentConfig, Settings
from ringline.engine.clients import HttpClients
from ringline.engine.errors import ConfigError
from ringline.engine.http_tools import USER_AGENT, read_at_most, tool_session
from ringline.engine.transports.events import CallStarted

log = logging.getLogger(__name__)

EVENT = "assistant-request"
TRANSIENT = "transient"
"""The ``agent_id`` a call answered by a transient agent (the whole config in the answer) records."""
MAX_ANSWER_BYTES = 256 * 1024
_PROVIDER_TABLES = frozenset({"stt", "llm", "llm_fallback", "tts"})


class AnswerError(ValueError):
    """An assistant-request answer that cannot be used; the message says why."""


class AssistantAnswer(BaseModel):
    """The answer's document (see the module's docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    agent_id: str | None = Field(None, min_length=1, max_length=200)
    agent: dict[str, Any] | None = None
    overrides: dict[str, Any] | None = None
    variables: dict[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")], str | int | float | bool] = {}

    @model_validator(mode="after")
    def _one_agent(self) -> Self:
        if self.agent is not None and (self.agent_id is not None or self.overrides is not None):
            raise ValueError('"agent" is a whole transient agent: it takes neither "agent_id" nor "overrides"')
        return self

    @classmethod
    def parse(cls, body: bytes) -> AssistantAnswer:
        """The answer in ``body``; raises ``AnswerError``. No body at all is an empty answer."""
        if not body.strip():
            return cls()
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise AnswerError(f"not JSON (at character {exc.pos})") from None
        if not isinstance(doc, dict):
            raise AnswerError(f"not a JSON object but {type(doc).__name__}")
        try:
            return cls.model_validate(doc)
        except ValidationError as exc:
            raise AnswerError(_first_error(exc)) from None


@dataclass(frozen=True, slots=True)
class Choice:
    """The agent that answers a call, its variables, and why the webhook's answer was not used (if so)."""

    agent_id: str
    agent: AgentConfig
    variables: Mapping[str, str]
    fault: str | None = None
    asked: bool = False
    """An assistant-request was sent."""


async def choose_assistant(
    settings: Settings, store: Store | None, clients: HttpClients, started: CallStarted, fallback: Choice
) -> Choice:
    """Ask the ``assistant-request`` URL (if any) which agent answers the inbound call that ``started``;
    ``fallback`` (the agent the call's number or parameters name) answers when it does not say, or
    cannot be heard."""
    url = webhook_url(settings, fallback.agent, EVENT)
    if url is None or started.parameters.get("agent"):  # a stream that names its agent has chosen
        return fallback
    call_id, parameters = started.call_id, started.parameters
    payload = {
        "type": EVENT,
        "call_id": call_id,
        "direction": "inbound",
        "from_number": parameters.get("from", ""),
        "to_number": parameters.get("to", ""),
        "agent_id": fallback.agent_id,
        "parameters": dict(parameters),
    }
    wait_s = settings.webhooks.assistant_request_timeout_s
    try:
        answer = await _ask(settings, clients, url, call_id, orjson.dumps(payload), wait_s)
        choice = await _resolve(settings, store, answer, fallback)
    except AnswerError as exc:
        log.warning("assistant-request: %s: agent %s answers", exc, fallback.agent_id, extra={"call_id": call_id})
        return dataclasses.replace(fallback, fault=str(exc), asked=True)
    log.info("assistant-request: agent %s answers", choice.agent_id, extra={"call_id": call_id})
    return choice


async def _ask(
    settings: Settings, clients: HttpClients, url: str, call_id: str, body: bytes, wait_s: float
) -> AssistantAnswer:
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
    headers |= webhook_stamp(settings, EVENT)(body, f"{call_id}:{EVENT}")
    try:
        async with asyncio.timeout(wait_s):
            async with tool_session(clients).post(url, data=body, headers=headers, allow_redirects=False) as resp:
                status, raw = resp.status, await read_at_most(resp.content, MAX_ANSWER_BYTES)
    except TimeoutError:
        raise AnswerError(f"no answer within {wait_s:g} s") from None
    except aiohttp.ClientError as exc:
        raise AnswerError(f"request failed: {type(exc).__name__}: {exc}") from None
    if not 200 <= status < 300:
        raise AnswerError(f"answered HTTP {status}")
    if raw is None:
        raise AnswerError(f"answer larger than {MAX_ANSWER_BYTES // 1024} KiB")
    return AssistantAnswer.parse(raw)


async def _resolve(settings: Settings, store: Store | None, answer: AssistantAnswer, fallback: Choice) -> Choice:
    variables = dict(fallback.variables) | {k: _text(v) for k, v in answer.variables.items()}
    agent_id, agent = fallback.agent_id, fallback.agent
    if answer.agent is not None:
        try:
            return Choice(TRANSIENT, AgentConfig.model_validate(answer.agent), variables, asked=True)
        except ValidationError as exc:
            raise AnswerError(f"agent: {_first_error(exc)}") from None
    if answer.agent_id is not None:
        try:
            agent_id, agent = await agent_for_call(settings, store, {"agent": answer.agent_id})
        except ConfigError as exc:
            raise AnswerError(f"agent_id: {exc}") from None
        except StoreError as exc:
            raise AnswerError(f"agent_id: cannot load agent {answer.agent_id!r}: {exc}") from None
    if answer.overrides is not None:
        doc = merge_patch(agent.model_dump(), answer.overrides, replaces=_switches_provider)
        try:
            agent = AgentConfig.model_validate(doc)
        except ValidationError as exc:
            raise AnswerError(f"overrides: {_first_error(exc)}") from None
    return Choice(agent_id, agent, variables, asked=True)


def _switches_provider(key: str, current: dict[str, Any], new: dict[str, Any]) -> bool:
    """A provider table naming another provider replaces the old one (as ``PATCH /agents`` does)."""
    return key in _PROVIDER_TABLES and new.get("provider", current.get("provider")) != current.get("provider")


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(p) for p in error["loc"])
    return f"{where}: {error['msg']}" if where else error["msg"]


def _text(value: str | float | bool) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
