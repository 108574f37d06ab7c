"""An agent's tool templates (``/api/v1/tools``) as the tools of one call.

``add_agent_tools`` loads the templates the agent names (``AgentConfig.tools``) from the store when
a call starts and registers each in the call's ``ToolRegistry``: a ``function`` template as an
``HttpTool`` sending ``tool-calls`` webhooks (to the tool's URL, else the agent's or the account's
webhook URL: ``webhook_url``), signed like every webhook (``signing``); ``end_call``,
``transfer_call`` and ``send_dtmf`` as the engine's built-in actions. A template the agent names
that cannot be used (deleted, no URL to send to, an unreadable stored config, the database failing)
is left out, and the reason returned for the call to record as a fault: the call goes on without it.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping

from pydantic import ValidationError

from ringline.api.store import Store, StoreError
from ringline.api.v1.tools import EndCallTool, FunctionTool, SendDtmfTool, TransferCallTool, stored_config
from ringline.api.webhooks.signing import DELIVERY_HEADER, EVENT_HEADER, sign
from ringline.api.webhooks.targets import webhook_url
from ringline.config.settings import AgentConfig, Settings
from ringline.engine.clients import HttpClients
from ringline.engine.http_tools import CallDetails, HttpEndpoint, HttpTool, Stamp, tool_session
from ringline.engine.llm.base import Tool
from ringline.engine.tools import (
    ToolPhrases,
    ToolRegistry,
    TransferTarget,
    end_call_tool,
    send_dtmf_tool,
    transfer_tool,
)

log = logging.getLogger(__name__)


def webhook_stamp(settings: Settings, event: str) -> Stamp:
    """The headers of a webhook that waits for its answer (``tool-calls``, ``assistant-request``):
    the event, the delivery id and, when ``[webhooks] secret`` is set, the signature."""
    secret = settings.webhooks.secret

    def stamp(body: bytes, delivery: str) -> Mapping[str, str]:
        headers = {EVENT_HEADER: event, DELIVERY_HEADER: delivery}
        if secret is not None:
            headers |= sign(secret.get_secret_value(), body, time.time())
        return headers

    return stamp


async def add_agent_tools(
    tools: ToolRegistry, settings: Settings, store: Store, clients: HttpClients, agent: AgentConfig, call: CallDetails
) -> list[str]:
    """Register ``agent.tools`` in ``tools`` (a template named like a built-in replaces it). Returns,
    for each template left out, why: the call records them as faults."""
    problems: list[str] = []
    details, looked_up = call, call.direction != "outbound"
    for name in dict.fromkeys(agent.tools):
        try:
            row = await store.find_tool(name)
            if row is None:
                problems.append(f"tool {name!r}: no such tool template")
                continue
            config = stored_config(row)
        except StoreError as exc:
            problems.append(f"tool {name!r}: cannot load it: {exc}")
            continue
        except ValidationError as exc:
            problems.append(f"tool {name!r}: its stored config is invalid: {exc.errors()[0]['msg']}")
            continue
        tools.remove(name)
        if isinstance(config, FunctionTool):
            url = webhook_url(settings, agent, "tool-calls", tool_url=config.url)
            if url is None:
                problems.append(f"tool {name!r}: no URL: give the tool one, or the agent or account a webhook URL")
                continue
            if not looked_up:
                details, looked_up = await _with_metadata(store, details), True
            endpoint = HttpEndpoint(url, config.method, config.headers, config.timeout_s)
            http = HttpTool(name, endpoint, details, tool_session(clients), webhook_stamp(settings, "tool-calls"))
            tools.register_call(Tool(name, config.description, config.parameters), http, phrases=_phrases(config))
        elif isinstance(config, EndCallTool):
            tools.register(*end_call_tool(name, config.description), ends_reply=True)
        elif isinstance(config, TransferCallTool):
            targets = [TransferTarget(d.destination, d.description, d.message, d.warm) for d in config.destinations]
            tools.register(*transfer_tool(name, config.description, targets), ends_reply=True)
        elif isinstance(config, SendDtmfTool):
            tools.register(*send_dtmf_tool(name, config.description))
    for problem in problems:
        log.warning("%s", problem, extra={"call_id": call.call_id})
    return problems


def _phrases(config: FunctionTool) -> ToolPhrases | None:
    m = config.messages
    if m.start is None and m.slow is None and m.failed is None:
        return None
    return ToolPhrases(start=m.start, slow=m.slow, slow_after_s=m.slow_after_s, failed=m.failed)


async def _with_metadata(store: Store, details: CallDetails) -> CallDetails:
    """``details`` with the metadata an outbound call was placed with (``POST /calls``), if its row has any."""
    try:
        row = await store.get_call(details.call_id)
    except StoreError:  # NotFound too: not placed through the API
        return details
    return dataclasses.replace(details, metadata=row.metadata) if row.metadata else details
