"""Live calls in the store: the row, transcript and events written as a call goes through the real
Twilio socket; agents chosen from the config, the API's agents or the called number; restart recovery;
recordings; API keys looked up in the store."""

from __future__ import annotations

import asyncio
import wave

import pytest

from ringline.api.http import hash_key
from ringline.api.state import KEYS
from ringline.api.store import CallStatus, Direction, NumberProvider, Role, open_store
from ringline.benchmarks.caller import clip_script, run_call
from ringline.config.settings import Settings, load_settings
from tests.api_fixtures import ApiServer, running

pytestmark = pytest.mark.timeout(60)


def bench(**api: object) -> Settings:
    data = load_settings("config/bench.toml").model_dump()
    data["api"].update(api)
    return Settings.model_validate(data)


async def ended(server: ApiServer, call_id: str):
    """The call's row once the ledger has ended it."""
    for _ in range(200):
        row = await server.store.get_call(call_id)
        if row.status is CallStatus.ENDED:
            return row
        await asyncio.sleep(0.02)
    raise AssertionError(f"call {call_id} never ended in the store")


async def test_a_call_is_recorded_as_it_goes() -> None:
    async with running(bench()) as server:
        params = {"from": "+14155550100", "to": "+14155550199", "var_name": "Ada"}
        result = await run_call(f"{server.ws_url}/media/twilio", clip_script(0, 2, custom_parameters=params))
        assert result.error is None and result.answered == 2
        row = await ended(server, result.call_sid)
        assert (row.direction, row.agent_id, row.end_reason) == (Direction.INBOUND, "default", "caller_hangup")
        assert (row.from_number, row.to_number, row.variables) == ("+14155550100", "+14155550199", {"name": "Ada"})
        assert row.started_at is not None and row.duration_s > 1
        assert len(row.latency) == 2 and all(turn["first_audio_sent"] is not None for turn in row.latency)
        messages = await server.store.list_messages(result.call_sid)
        assert [m.role for m in messages] == [Role.USER, Role.ASSISTANT] * 2
        assert [m.seq for m in messages] == [1, 2, 3, 4]
        events = await server.store.list_events(result.call_sid)
        types = [e.type for e in events]
        assert types[0] == "status" and events[0].payload == {"status": "active"}
        assert types[-1] == "status" and events[-1].payload == {"status": "ended"}
        assert types.count("message") == 4 and types.count("latency") == 2
        assert [e.seq for e in events] == list(range(1, len(events) + 1))


async def test_an_api_agent_answers_by_id_or_by_the_called_number() -> None:
    async with running(bench()) as server:
        config = load_settings("config/bench.toml").agents["default"].model_dump(mode="json")
        config.update(first_speaker="agent", first_message="Hello from the API agent.")
        agent = await server.store.create_agent("api agent", config)
        await server.store.create_number("+14155550123", NumberProvider.TWILIO, inbound_agent_id=agent.id)
        for params in ({"agent": agent.id}, {"to": "+14155550123"}):
            result = await run_call(
                f"{server.ws_url}/media/twilio", clip_script(0, 1, custom_parameters=params, wait_for_greeting=True)
            )
            assert result.error is None
            assert (await ended(server, result.call_sid)).agent_id == agent.id
            messages = await server.store.list_messages(result.call_sid)
            assert messages[0].content == "Hello from the API agent."


async def test_an_unknown_or_disabled_agent_is_refused_and_not_recorded() -> None:
    async with running(bench()) as server:
        agent = await server.store.create_agent("off", {}, enabled=False)
        for wanted in ("nobody", agent.id):
            result = await run_call(
                f"{server.ws_url}/media/twilio", clip_script(0, 1, custom_parameters={"agent": wanted})
            )
            assert result.close_code == 1008  # policy violation: refused
        page = await server.store.list_calls()
        assert page.total == 0


async def test_calls_left_live_by_a_previous_run_end_with_engine_restart(data_dir) -> None:
    store = await open_store(f"sqlite:///{data_dir / 'ringline.db'}")
    call = await store.create_call(Direction.INBOUND, status=CallStatus.IN_PROGRESS)
    await store.close()
    async with running(bench()) as server:
        row = await server.store.get_call(call.id)
        assert (row.status, row.end_reason) == (CallStatus.ENDED, "engine_restart")


async def test_a_recorded_call_leaves_its_wav_and_path(data_dir) -> None:
    settings = bench()
    agent = settings.agents["default"].model_copy(update={"recording": True})
    settings = settings.model_copy(update={"agents": {"default": agent}})
    async with running(settings) as server:
        result = await run_call(f"{server.ws_url}/media/twilio", clip_script(0, 1))
        row = await ended(server, result.call_sid)
        assert row.recording_path == str(data_dir / "recordings" / f"{result.call_sid}.wav")
        with wave.open(row.recording_path) as w:
            assert (w.getnchannels(), w.getframerate()) == (2, 8000) and w.getnframes() > 8000


async def test_api_keys_are_looked_up_in_the_store_and_revocation_is_immediate(api: ApiServer) -> None:
    keys = api.app[KEYS]
    key = await api.key("calls:read", name="reader")
    principal = await keys.find_key(hash_key(key))
    assert principal is not None and (principal.name, principal.scopes) == ("reader", frozenset({"calls:read"}))
    assert await keys.find_key(hash_key("rl_" + "x" * 43)) is None
    await api.store.revoke_api_key(principal.id)
    assert await keys.find_key(hash_key(key)) is not None  # remembered for a few seconds...
    keys.forget(principal.id)  # ...unless revoked through this process
    assert await keys.find_key(hash_key(key)) is None
    for _ in range(100):  # the first use is recorded off the request path
        if (await api.store.get_api_key(principal.id)).last_used_at is not None:
            break
        await asyncio.sleep(0.01)
    else:
        raise AssertionError("last_used_at was never written")
