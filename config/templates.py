"""``{{placeholders}}`` in an agent's prompt and first message, filled per call.

``{{ name }}`` (spaces optional) is replaced by the call's variable ``name``, else the agent's
default; ``{{now}}`` by the current date and time in the agent's time zone. A placeholder with
no value is left as written, so a missing variable shows in the transcript instead of vanishing.
"""

from __future__ import annotations

import datetime
import re
import zoneinfo
from collections.abc import Mapping

from ringline.config.settings import AgentConfig

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


def render(text: str, variables: Mapping[str, str]) -> str:
    return _PLACEHOLDER.sub(lambda m: variables.get(m.group(1), m.group(0)), text)


def placeholders(text: str) -> set[str]:
    return set(_PLACEHOLDER.findall(text))


def for_call(agent: AgentConfig, variables: Mapping[str, str] | None = None) -> AgentConfig:
    """The agent with its prompt and first message filled from ``variables`` over its defaults."""
    now = datetime.datetime.now(zoneinfo.ZoneInfo(agent.timezone)).strftime("%A %d %B %Y, %H:%M")
    values = {"now": now, **agent.variables, **(variables or {})}
    prompt, first = render(agent.system_prompt, values), render(agent.first_message, values)
    if prompt == agent.system_prompt and first == agent.first_message:
        return agent
    return agent.model_copy(update={"system_prompt": prompt, "first_message": first})
