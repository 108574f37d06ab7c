"""The server side of the provider tests: settings with a provider's fake, an agent that speaks
first on one of our numbers, and the callee the fakes put on the line once a call is answered."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from ringline.api.store import Call, CallStatus, NumberProvider
from ringline.benchmarks.caller import CallerScript, CallResult, run_call, wire_factory
from ringline.config.settings import Settings, load_settings
from tests.api_fixtures import ApiServer
from tests.telephony_fakes.base import FakeProvider

PUBLIC = "https://voice.example.com"
OURS, THEIRS = "+14155550100", "+14155550199"
GREETING = "Thanks for calling Acme."
"""One phrase: 1.0 s of audio with config/bench.toml's fake TTS."""


def settings(provider: str, config: dict[str, Any] | None) -> Settings:
    data = load_settings("config/bench.toml").model_dump()
    data["telephony"] = {"public_url": PUBLIC}
    if config is not None:
        data["telephony"][provider] = config
    return Settings.model_validate(data)


def connect(fake: FakeProvider, server: ApiServer, protocol: str) -> None:
    """Point ``fake`` at ``server``: our public URL is it, and answered calls open its media socket
    with the caller simulator speaking ``protocol``: the callee waits for the agent's greeting,
    hears it out, and hangs up without a word."""

    def route(url: str) -> str:
        for public, local in ((PUBLIC, server.url), (PUBLIC.replace("https", "wss"), server.ws_url)):
            if url.startswith(public):
                return local + url.removeprefix(public)
        raise AssertionError(f"{url} is not on our public URL")

    async def opener(url: str, call_id: str, parameters: Mapping[str, str]) -> CallResult:
        script = CallerScript(
            (),
            wait_for_greeting=True,
            custom_parameters=dict(parameters),
            call_sid=call_id,
            reply_timeout_s=10,
            max_call_s=20,
        )
        return await run_call(url, script, wire_factory=wire_factory(protocol))

    fake.route, fake.opener = route, opener


async def greeter(server: ApiServer, provider: NumberProvider, *, inbound: bool) -> str:
    """An API agent that speaks first, on our number at ``provider`` (its inbound or outbound agent)."""
    config = load_settings("config/bench.toml").agents["default"].model_dump(mode="json")
    config.update(first_speaker="agent", first_message=GREETING)
    agent = await server.store.create_agent("greeter", config)
    which = {"inbound_agent_id": agent.id} if inbound else {"outbound_agent_id": agent.id}
    await server.store.create_number(OURS, provider, **which)
    return agent.id


async def stream_of(fake: FakeProvider, call_id: str) -> CallResult:
    """The media socket the fake opened for ``call_id``, once the call is over."""
    for _ in range(500):
        if call_id in fake.streams:
            return await asyncio.wait_for(fake.streams[call_id], 30)
        await asyncio.sleep(0.01)
    raise AssertionError(f"the fake never opened a media socket for {call_id}")


async def ended(server: ApiServer, call_id: str) -> Call:
    for _ in range(300):
        row = await server.store.get_call(call_id)
        if row.status is CallStatus.ENDED:
            return row
        await asyncio.sleep(0.02)
    raise AssertionError(f"call {call_id} never ended")
