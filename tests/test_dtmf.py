"""DTMF: the rules that turn the caller's keys into messages and actions, the in-band tones of keys
the agent sends, whole calls in memory, and both directions over a real Twilio media socket."""

from __future__ import annotations

import wave
from base64 import b64decode
from pathlib import Path

import numpy as np
import orjson
import pytest
from pydantic import ValidationError

from ringline.benchmarks.caller import CallerScript, Utterance, clip_script, run_call
from ringline.benchmarks.clips import load_clip
from ringline.config.settings import (
    AgentConfig,
    DtmfActionConfig,
    DtmfCollectConfig,
    DtmfConfig,
    Settings,
    load_settings,
)
from ringline.engine.audio.g711 import ulaw_decode
from ringline.engine.call import Call, CallStatus
from ringline.engine.dtmf import Deliver, DtmfRules, EntryStarted, KeyAction, check_keys, tones
from ringline.engine.events import CallEvent, EventType
from ringline.engine.providers import build_providers
from ringline.engine.record import EndReason
from ringline.engine.tools import ToolRegistry, default_registry, send_dtmf_tool
from ringline.engine.transports.base import SendDtmfFailed
from ringline.engine.transports.socket import SocketTransport
from ringline.engine.transports.twilio.codec import TwilioStream
from ringline.engine.turns import TurnState
from tests.api_fixtures import running
from tests.helpers import CallDriver, Phone
from tests.test_api_calls import ended
from tests.test_call import agent

RATE = 8000
LOW, HIGH = (697, 770, 852, 941), (1209, 1336, 1477, 1633)
LAYOUT = ("123A", "456B", "789C", "*0#D")


def goertzel(block: np.ndarray, hz: float) -> float:
    coeff = 2 * np.cos(2 * np.pi * hz / RATE)
    s1 = s2 = 0.0
    for x in block:
        s1, s2 = x + coeff * s1 - s2, s1
    return s1 * s1 + s2 * s2 - coeff * s1 * s2


def decode_keys(pcm: bytes | np.ndarray) -> str:
    """The keys in PCM16 audio: 20 ms blocks whose strongest low and high DTMF frequencies stand out,
    a key counted once per run of at least two such blocks (an independent Goertzel decoder)."""
    samples = np.frombuffer(pcm, dtype="<i2") if isinstance(pcm, bytes) else pcm
    samples = samples.astype(np.float64)
    keys, run, last = [], 0, ""
    for i in range(0, len(samples) - 159, 160):
        block = samples[i : i + 160]
        if np.sqrt(np.mean(block * block)) < 500:
            key = ""
        else:
            low = [goertzel(block, f) for f in LOW]
            high = [goertzel(block, f) for f in HIGH]
            lo, hi = int(np.argmax(low)), int(np.argmax(high))
            clear = sorted(low)[-2] * 10 < low[lo] and sorted(high)[-2] * 10 < high[hi]
            key = LAYOUT[lo][hi] if clear else ""
        run = run + 1 if key and key == last else (1 if key else 0)
        if run == 2:
            keys.append(key)
        last = key
    return "".join(keys)


# -- tones ---------------------------------------------------------------------------------------


def test_tones_decode_back_to_the_keys_100_ms_on_100_ms_off() -> None:
    pcm = tones("123A456B789C*0#D", RATE)
    assert decode_keys(pcm) == "123A456B789C*0#D"
    assert len(pcm) == 16 * 2 * round(0.2 * RATE)
    peak = np.abs(np.frombuffer(pcm, dtype="<i2")).max()
    assert 12000 < peak <= 16384  # two sines at a quarter of full scale each: no clipping


def test_w_pauses_half_a_second_and_lower_case_letters_are_keys() -> None:
    pcm = tones("1w2", RATE)
    assert len(pcm) == 2 * round((0.2 + 0.5 + 0.2) * RATE)
    assert decode_keys(pcm) == "12"
    assert check_keys("1wW2d") == "1wW2D"
    for bad, message in (("12x", "cannot send 'x'"), ("", "no keys to send"), ("1 2", "cannot send ' '")):
        with pytest.raises(ValueError, match=message):
            tones(bad, RATE)


# -- the rules -----------------------------------------------------------------------------------


def rules(**config: object) -> DtmfRules:
    return DtmfRules(DtmfConfig.model_validate(config))


def test_an_entry_ends_at_the_terminator_which_it_keeps() -> None:
    r = rules()
    assert r.key("1", 1.0) == [EntryStarted("1")]
    assert r.key("2", 1.1) == [] and r.key("3", 1.2) == [] and r.entry == "123"
    assert r.key("#", 1.3) == [Deliver("123#", "[DTMF 123#]", "terminator")]
    assert r.entry == "" and r.tick(9.0) == []
    assert r.key("#", 10.0) == [EntryStarted("#"), Deliver("#", "[DTMF #]", "terminator")]


def test_an_entry_ends_after_so_many_digits_or_a_pause() -> None:
    r = rules(collect={"digits": 4, "terminator": ""}, format="Caller keyed {digits}")
    for i, key in enumerate("123"):
        r.key(key, i * 0.1)
    assert r.key("4", 0.3) == [Deliver("1234", "Caller keyed 1234", "digits")]
    r.key("5", 1.0)
    assert r.tick(2.98) == []  # 2 s after the last key, not before
    r.key("6", 2.5)
    assert r.tick(4.48) == []
    assert r.tick(4.5) == [Deliver("56", "Caller keyed 56", "timeout")]


def test_action_keys_act_only_when_they_start_an_entry() -> None:
    transfer = {"action": "transfer", "destination": "+14155550100", "message": "Putting you through."}
    r = rules(actions={"0": transfer, "9": {"action": "hang_up"}})
    (step,) = r.key("0", 1.0)
    assert isinstance(step, KeyAction) and step.key == "0" and step.action.destination == "+14155550100"
    assert r.key("1", 2.0) == [EntryStarted("1")]
    assert r.key("0", 2.1) == []  # mid-entry "0" is a digit (an account number, not a transfer)
    assert r.key("9", 2.2) == [] and r.key("#", 2.3) == [Deliver("109#", "[DTMF 109#]", "terminator")]
    off = rules(enabled=False, actions={"9": {"action": "hang_up"}})
    assert off.key("1", 1.0) == [] and off.tick(10.0) == []
    assert [type(s) for s in off.key("9", 11.0)] == [KeyAction]
    with pytest.raises(ValueError, match="not a DTMF key: 'x'"):
        r.key("x", 3.0)


def test_config_is_checked_at_load() -> None:
    with pytest.raises(ValidationError, match="destination is required when action is transfer"):
        DtmfActionConfig(action="transfer")
    with pytest.raises(ValidationError, match="String should match pattern"):
        DtmfConfig.model_validate({"actions": {"11": {"action": "hang_up"}}})
    with pytest.raises(ValidationError, match="String should match pattern"):
        DtmfCollectConfig(terminator="##")
    assert AgentConfig().dtmf.collect == DtmfCollectConfig(digits=0, terminator="#", timeout_s=2.0)


# -- whole calls in memory ---------------------------------------------------------------------------


class Seen:
    def __init__(self) -> None:
        self.events: list[CallEvent] = []

    def on_event(self, event: CallEvent) -> None:
        self.events.append(event)


async def started(config: AgentConfig, registry: ToolRegistry | None = None) -> tuple[CallDriver, Seen]:
    d = CallDriver(config, registry)
    seen = Seen()
    d.call.events.observe(seen)
    await d.start()
    return d, seen


async def test_a_key_interrupts_the_agent_and_the_entry_is_answered() -> None:
    d, seen = await started(agent(**{"tts.seconds_per_phrase": 3.0, "llm.fallback": "You said: {user}"}))
    await d.say(load_clip("book_table.wav"))
    await d.until(lambda: d.call.turn_state is TurnState.AGENT_SPEAKING)
    await d.wait(0.5)
    await d.call.on_dtmf("4")
    assert len(d.phone.clears) == 1, "the reply was cut at the first key"
    await d.step()
    await d.call.on_dtmf("2")
    await d.call.on_dtmf("#")
    await d.until(lambda: d.call.turn_state is TurnState.LISTENING, limit=6)
    transcript = d.call.transcript()
    assert transcript[-2:] == [
        {"role": "user", "content": "[DTMF 42#]"},
        {"role": "assistant", "content": "You said: [DTMF 42#]"},
    ]
    assert transcript[1]["interrupted"] is True  # the reply the key cut
    assert [e.data for e in seen.events if e.type is EventType.DTMF] == [{"digit": "4"}, {"digit": "2"}, {"digit": "#"}]
    await d.call.end(EndReason.CALLER_HANGUP)


async def test_a_key_the_transport_should_not_have_let_through_is_ignored(caplog: pytest.LogCaptureFixture) -> None:
    d, seen = await started(agent())
    await d.call.on_dtmf("x")
    await d.wait(3)
    assert d.call.status is CallStatus.ACTIVE and d.call.transcript() == [] and not d.phone.media_times
    assert [e.data for e in seen.events if e.type is EventType.DTMF] == [{"digit": "x"}]
    assert "dtmf ignored: not a DTMF key: 'x'" in caplog.text
    await d.call.end(EndReason.CALLER_HANGUP)


async def test_an_entry_left_alone_is_delivered_after_the_timeout() -> None:
    d, _ = await started(agent(**{"llm.fallback": "You said: {user}"}))
    await d.wait(0.2)
    pressed = d.clock.now()
    await d.call.on_dtmf("7")
    answered = await d.until(lambda: d.phone.media_times, limit=4)
    assert answered - pressed == pytest.approx(2.0, abs=0.06)  # collect.timeout_s, then a zero-latency reply
    await d.until(lambda: d.call.turn_state is TurnState.LISTENING)
    assert d.call.transcript()[-2:] == [
        {"role": "user", "content": "[DTMF 7]"},
        {"role": "assistant", "content": "You said: [DTMF 7]"},
    ]
    await d.call.end(EndReason.CALLER_HANGUP)


async def test_a_hang_up_key_says_goodbye_and_ends_the_call() -> None:
    d, _ = await started(agent(dtmf={"actions": {"9": {"action": "hang_up", "message": "Goodbye."}}}))
    await d.wait(0.2)
    await d.call.on_dtmf("9")
    assert d.call.turn_state is TurnState.CLOSING
    await d.say(load_clip("prices.wav"))  # talking over the goodbye changes nothing
    await d.until(lambda: d.call.status is CallStatus.ENDED, limit=3)
    assert (d.call.record.end_reason, d.call.record.end_detail) == (EndReason.AGENT_HANGUP, "key 9")
    assert d.phone.heard_seconds() == pytest.approx(1.0, abs=0.03) and d.phone.hung_up
    assert d.call.transcript() == [{"role": "assistant", "content": "Goodbye."}]


async def test_a_transfer_key_hands_the_call_over() -> None:
    rule = {"action": "transfer", "destination": "sip:desk@pbx.example.com"}
    d, _ = await started(agent(dtmf={"actions": {"0": rule}}))
    await d.wait(0.2)
    await d.call.on_dtmf("0")
    await d.until(lambda: d.call.status is CallStatus.ENDED, limit=3)
    assert d.phone.transferred_to == "sip:desk@pbx.example.com"
    assert d.call.record.end_reason is EndReason.TRANSFERRED


class KeypadPhone(Phone):
    """A ``Phone`` whose transport can press keys (or refuses to, like a provider that cannot)."""

    def __init__(self, clock, refuse: bool = False) -> None:  # type: ignore[no-untyped-def]
        super().__init__(clock)
        self.keys: list[str] = []
        self.refuse = refuse

    async def send_dtmf(self, keys: str) -> None:
        if self.refuse:
            raise SendDtmfFailed("this line cannot send DTMF")
        self.keys.append(keys)


def keypad_registry() -> ToolRegistry:
    registry = default_registry()
    registry.register(*send_dtmf_tool("send_dtmf", "Press keys on the phone's keypad (IVR menus)."))
    return registry


async def keypad_call(*, refuse: bool = False, recording: bool = False) -> tuple[CallDriver, Seen]:
    config = agent(recording=recording, **{"llm.replies": ['[tool:send_dtmf {"digits": "1w2#"}]']})
    d = CallDriver(config, keypad_registry())
    phone = KeypadPhone(d.clock, refuse=refuse)
    d.phone = phone
    d.call = Call(
        "CA-keys", "default", config, phone, build_providers(config, d.clock), d.clock, registry=keypad_registry()
    )
    phone.call = d.call
    seen = Seen()
    d.call.events.observe(seen)
    await d.start()
    return d, seen


async def test_the_send_dtmf_tool_presses_keys_through_the_transport() -> None:
    d, seen = await keypad_call()
    await d.say(load_clip("book_table.wav"))
    await d.until(lambda: d.call.turn_state is TurnState.LISTENING and d.phone.media_times)
    assert d.phone.keys == ["1w2#"]  # type: ignore[attr-defined]
    (result,) = [e.data for e in seen.events if e.type is EventType.TOOL_RESULT]
    assert (result["name"], result["result"]) == ("send_dtmf", "ok: pressed 1w2#")
    assert [e.data for e in seen.events if e.type is EventType.DTMF] == [{"sent": "1w2#"}]
    await d.call.end(EndReason.CALLER_HANGUP)


async def test_a_transport_that_cannot_send_keys_is_an_error_the_llm_reads() -> None:
    d, seen = await keypad_call(refuse=True)
    await d.say(load_clip("book_table.wav"))
    await d.until(lambda: d.call.turn_state is TurnState.LISTENING and d.phone.media_times)
    (result,) = [e.data for e in seen.events if e.type is EventType.TOOL_RESULT]
    assert result["result"].startswith("error:") and "this line cannot send DTMF" in result["result"]
    assert not [e for e in seen.events if e.type is EventType.DTMF]
    await d.call.end(EndReason.CALLER_HANGUP)


async def test_keys_the_agent_sends_are_in_its_recorded_track(tmp_path: Path) -> None:
    d, _ = await keypad_call(recording=True)
    assert d.call.recorder is not None
    d.call.recorder.open(tmp_path / "keys.wav")
    await d.say(load_clip("book_table.wav"))
    await d.until(lambda: d.call.turn_state is TurnState.LISTENING and d.phone.media_times)
    await d.call.end(EndReason.CALLER_HANGUP)
    assert await d.call.recorder.aclose() == tmp_path / "keys.wav"
    with wave.open(str(tmp_path / "keys.wav")) as w:
        right = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")[1::2]
    assert decode_keys(right) == "12#"


# -- Twilio ---------------------------------------------------------------------------------------


class Socket:
    """What ``SocketTransport`` needs of an aiohttp WebSocketResponse."""

    closed = False

    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send_str(self, text: str) -> None:
        self.sent.append(text)


async def test_twilio_sends_keys_as_in_band_tones_in_one_media_message() -> None:
    codec = TwilioStream()
    start = {"event": "start", "streamSid": "MZ1", "start": {"streamSid": "MZ1", "callSid": "CA1"}}
    codec.feed(orjson.dumps(start))
    socket = Socket()
    transport = SocketTransport(socket, codec)  # type: ignore[arg-type]
    await transport.send_dtmf("90*")
    (message,) = socket.sent
    body = orjson.loads(message)
    assert (body["event"], body["streamSid"]) == ("media", "MZ1")
    assert decode_keys(ulaw_decode(b64decode(body["media"]["payload"]))) == "90*"
    with pytest.raises(SendDtmfFailed, match="cannot send 'x'"):
        await transport.send_dtmf("9x")
    assert len(socket.sent) == 1


def bench_settings(**agent_overrides: object) -> Settings:
    data = load_settings("config/bench.toml").model_dump()
    data["agents"]["default"].update(agent_overrides)
    return Settings.model_validate(data)


async def test_keys_pressed_on_a_real_media_socket_reach_the_conversation() -> None:
    script = CallerScript((Utterance(b"\xff" * 160, "keys", dtmf="42#"),), reply_timeout_s=5.0, max_call_s=20.0)
    async with running(bench_settings()) as server:
        result = await run_call(f"{server.ws_url}/media/twilio", script)
        assert result.error is None and result.answered == 1
        await ended(server, result.call_sid)
        messages = [(m.role.value, m.content) for m in await server.store.list_messages(result.call_sid)]
        assert messages == [("user", "[DTMF 42#]"), ("assistant", "Sure, here is the answer")]
        events = await server.store.list_events(result.call_sid)
        assert [e.payload for e in events if e.type == "dtmf"] == [{"digit": "4"}, {"digit": "2"}, {"digit": "#"}]


async def test_the_far_end_of_a_real_media_socket_hears_the_keys_the_agent_sends() -> None:
    def tools(name: str, config: AgentConfig) -> ToolRegistry:
        return keypad_registry()

    settings = bench_settings(llm={"provider": "fake", "replies": ['[tool:send_dtmf {"digits": "314#"}]']})
    async with running(settings, tools=tools) as server:
        result = await run_call(f"{server.ws_url}/media/twilio", clip_script(0, 1), record=True)
        assert result.error is None and result.answered == 1 and result.recording is not None
        assert decode_keys(result.recording.agent) == "314#"
