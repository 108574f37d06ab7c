"""Where each webhook goes: the URL an event of a call is sent to, or ``None`` when it is not sent.

Precedence: a tool's own server URL (for the events of that tool), then the agent's
``webhook.url``, then the account's ``webhooks.default_url``. The event filter is the agent's
``webhook.events`` when the agent has a ``webhook`` section, else the account's ``webhooks.events``;
it applies to the agent's and the account's URLs. A tool's own URL is the tool's server: it always
gets that tool's events (filtering them out would break the tool)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ringline.api.routing import agent_config
from ringline.api.store import Call, OutboxEvent, Store
from ringline.config.settings import WEBHOOK_EVENTS, AgentConfig, Settings
from ringline.engine.errors import ConfigError

log = logging.getLogger(__name__)

EVENT_TYPES: tuple[str, ...] = WEBHOOK_EVENTS
"""``assistant-request``, ``tool-calls``, ``status-update``, ``end-of-call-report``."""


def webhook_url(settings: Settings, agent: AgentConfig | None, event: str, tool_url: str | None = None) -> str | None:
    """The URL ``event`` of a call handled by ``agent`` goes to; ``None``: not sent."""
    if event not in EVENT_TYPES:
        raise ValueError(f"unknown webhook event {event!r} (want one of {', '.join(EVENT_TYPES)})")
    if tool_url:
        return tool_url
    hook = agent.webhook if agent is not None else None
    events = hook.events if hook is not None else settings.webhooks.events
    if event not in events:
        return None
    if hook is not None and hook.url:
        return hook.url
    return settings.webhooks.default_url


def outbox_event(
    settings: Settings,
    agent: AgentConfig | None,
    call_id: str | None,
    event_type: str,
    payload: dict[str, Any],
    *,
    tool_url: str | None = None,
) -> OutboxEvent | None:
    """The outbox entry that sends ``payload`` as ``event_type``, or ``None`` when nothing is to be sent.

    ``payload`` is the event's own body (``{"type": event_type, ...}`` is what the receiver gets: the
    type is added here when missing). Give the result to the call's store method (``outbox=``) so the
    event is written in the same transaction as the change, or to ``Store.enqueue``."""
    url = webhook_url(settings, agent, event_type, tool_url)
    if url is None:
        return None
    body = payload if payload.get("type") == event_type else {"type": event_type, **payload}
    return OutboxEvent(type=event_type, payload=body, url=url, call_id=call_id)


def status_payload(call: Call) -> dict[str, Any]:
    """The body of a ``status-update`` for ``call`` as it now is (its row, just changed).

    ``status`` is the call's status as the calls API names it (``queued``, ``ringing``,
    ``in_progress``, ``forwarding``, ``ended``); an ended call adds ``end_reason`` and ``duration_s``."""
    at = call.ended_at if call.ended_at is not None else call.updated_at
    body: dict[str, Any] = {
        "type": "status-update",
        "call_id": call.id,
        "status": call.status.value,
        "timestamp": at.isoformat().replace("+00:00", "Z"),
        "agent_id": call.agent_id,
        "direction": call.direction.value,
        "from_number": call.from_number,
        "to_number": call.to_number,
        "metadata": call.metadata,
    }
    if call.ended_at is not None:
        body["end_reason"] = call.end_reason
        body["duration_s"] = call.duration_s
    return body


class CallWebhooks:
    """The app's webhook events (``app[WEBHOOKS]``): builds the outbox entries of a call's events and
    tells the dispatcher when some were written, so it sends them at once rather than at its next poll.

    Write events in the transaction of the change that caused them, then call ``notify()``::

        await store.end_call(call_id, reason, outbox=webhooks.status_update(agent))
        webhooks.notify()
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._listeners: list[Callable[[], None]] = []

    def event(
        self, agent: AgentConfig | None, call_id: str | None, event_type: str, payload: dict[str, Any]
    ) -> OutboxEvent | None:
        """``outbox_event`` with these settings."""
        return outbox_event(self.settings, agent, call_id, event_type, payload)

    def status_update(self, agent: AgentConfig | None) -> Callable[[Call], list[OutboxEvent]]:
        """The ``outbox=`` of a call's status change: a ``status-update`` made from the changed row."""

        def events(call: Call) -> list[OutboxEvent]:
            event = outbox_event(self.settings, agent, call.id, "status-update", status_payload(call))
            return [] if event is None else [event]

        return events

    def listen(self, wake: Callable[[], None]) -> Callable[[], None]:
        """Call ``wake`` on each ``notify()``; returns how to stop."""
        self._listeners.append(wake)
        return lambda: self._listeners.remove(wake)

    def notify(self) -> None:
        """Events were just committed to the outbox."""
        for wake in self._listeners:
            wake()


async def restart_outbox(webhooks: CallWebhooks, store: Store) -> Callable[[Call], list[OutboxEvent]]:
    """The ``outbox=`` of ``mark_live_calls_ended`` at start-up: each call a previous run left live gets
    its ``ended`` status-update, sent where its agent's events go (config file agents and API agents)."""
    agents: dict[str, AgentConfig] = dict(webhooks.settings.agents)
    offset = 0
    while True:
        page = await store.list_agents(limit=500, offset=offset)
        for row in page.items:
            try:
                agents[row.id] = agent_config(row)
            except ConfigError as exc:
                log.warning("webhooks of agent %s go to the account's URL: %s", row.id, exc)
        offset += len(page.items)
        if not page.items or offset >= page.total:
            break

    def events(call: Call) -> list[OutboxEvent]:
        agent = agents.get(call.agent_id) if call.agent_id is not None else None
        return webhooks.status_update(agent)(call)

    return events
