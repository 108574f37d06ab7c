"""Which agent answers a call: a config file's agent or one created through the API."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import ValidationError

from ringline.api.store import Agent, NotFound, Store
from ringline.config.settings import AgentConfig, Settings
from ringline.engine.errors import ConfigError


def agent_config(row: Agent) -> AgentConfig:
    """The configuration an API agent's stored document describes (keys missing from it come from
    the environment, as for a config file's agents)."""
    try:
        return AgentConfig.model_validate(row.config)
    except ValidationError as exc:
        raise ConfigError(f"agent {row.id} has an invalid stored config: {exc.errors()[0]['msg']}") from exc


async def agent_for_call(
    settings: Settings, store: Store | None, parameters: Mapping[str, str]
) -> tuple[str, AgentConfig]:
    """The id and config of the agent for a call with these stream ``parameters``.

    ``agent`` names a config file's agent or an API agent's id; without it, the called number
    (``to``) picks its inbound agent; without that, the config's ``default_agent`` answers.
    Raises ConfigError for an agent that does not exist or is disabled.
    """
    wanted = parameters.get("agent") or ""
    if not wanted and store is not None and (to := parameters.get("to")):
        number = await store.find_number(to)
        if number is not None and number.inbound_agent_id:
            wanted = number.inbound_agent_id
    if not wanted or wanted in settings.agents:
        name = wanted or settings.default_agent
        return name, settings.agent(name)
    if store is None:
        raise ConfigError(f"unknown agent {wanted!r}")
    try:
        row = await store.get_agent(wanted)
    except NotFound:
        raise ConfigError(f"unknown agent {wanted!r}") from None
    if not row.enabled:
        raise ConfigError(f"agent {wanted!r} is disabled")
    return row.id, agent_config(row)
