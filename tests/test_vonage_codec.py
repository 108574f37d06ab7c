"""Vonage WebSocket codec: golden messages in the shape Vonage's WebSockets guide documents them
(tests/fixtures/media/vonage), every malformed input with its exact error, the stream's state
machine, and outbound frames and actions."""

from __future__ import annotations

import copy
import random
from pathlib import Path
from typing import Any

import orjson
import pytest

from ringline.benchmarks.clips import load_clip
from ringline.engine.audio.formats import PCM16_16K, AudioFormat, Encoding
from ringline.engine.audio.g711 import ulaw_decode
from ringline.engine.audio.resample import Resampler
from ringline.engine.transports.events import AudioReceived, CallStarted, DtmfReceived, MarkPlayed
from ringline.engine.transports.vonage.codec import StreamState, VonageProtocolError, VonageStream

FIXTURES = Path(__file__).parent / "fixtures" / "media" / "vonage"
CALL_UUID = "aaaaaaaa-bbbb-cccc-dddd-0123456789ab"


def golden(name: str) -> dict[str, Any]:
    return orjson.loads((FIXTURES / f"{name}.json").read_bytes())


def speech_16k() -> bytes:
    """A second of real speech as Vonage sends it at 16 kHz."""
    resampler = Resampler(8000, 16000)
    pcm = resampler.process(ulaw_decode(load_clip("book_table.wav")[:8000])) + resampler.flush()
    return pcm[: 640 * 50]


SPEECH = speech_16k()
FRAME = SPEECH[6400:7040]  # 20 ms at 16 kHz


def wire(msg: dict[str, Any]) -> str:
    return orjson.dumps(msg).decode()


def connected(**fields: Any) -> dict[str, Any]:
    return {**golden("connected"), **fields}


def started(rate: int = 16000) -> VonageStream:
    stream = VonageStream()
    stream.feed(wire(connected(**{"content-type": f"audio/l16;rate={rate}"})))
    return stream


def refuse(stream: VonageStream, msg: dict[str, Any] | str | bytes, message: str) -> None:
    text = wire(msg) if isinstance(msg, dict) else msg
    with pytest.raises(VonageProtocolError) as info:
        stream.feed(text)
    assert str(info.value) == message


def refuse_binary(stream: VonageStream, data: bytes, message: str) -> None:
    with pytest.raises(VonageProtocolError) as info:
        stream.feed_binary(data)
    assert str(info.value) == message


# -- inbound events ----------------------------------------------------------------------------


def test_connected_reports_the_call_with_its_headers_as_parameters() -> None:
    stream = VonageStream()
    event = stream.feed(wire(golden("connected")))
    assert event == CallStarted(
        CALL_UUID,
        CALL_UUID,
        {
            "call_uuid": CALL_UUID,
            "agent": "support",
            "from": "447700900123",
            "to": "447700900000",
            "direction": "inbound",
            "var_name": "Jane",
            "retries": "3",
            "vip": "false",
            "address": '{"city":"New York City"}',
        },
    )
    assert stream.state is StreamState.STREAMING
    assert stream.format == PCM16_16K and stream.call_id == CALL_UUID


@pytest.mark.parametrize("rate", [8000, 16000, 24000])
def test_connected_negotiates_the_rate(rate: int) -> None:
    stream = started(rate)
    assert stream.format == AudioFormat(Encoding.PCM16, rate)
    frame = bytes(rate // 50 * 2)
    assert stream.feed_binary(frame) == AudioReceived(frame)


def test_connected_takes_the_call_id_from_uuid_when_there_is_no_call_uuid() -> None:
    msg = {"event": "websocket:connected", "content-type": "audio/l16;rate=8000", "uuid": "63f61863-4a51"}
    event = VonageStream().feed(wire(msg))
    assert isinstance(event, CallStarted)
    assert (event.call_id, event.stream_id, event.parameters) == (
        "63f61863-4a51",
        "63f61863-4a51",
        {"uuid": "63f61863-4a51"},
    )


def test_connected_without_a_call_id_gets_a_made_up_one() -> None:
    stream = VonageStream(new_id=lambda: "vonage-made-up")
    event = stream.feed(wire({"event": "websocket:connected", "content-type": "audio/l16;rate=16000"}))
    assert event == CallStarted("vonage-made-up", "vonage-made-up", {})


def test_default_call_ids_are_unique() -> None:
    ids = set()
    for _ in range(3):
        event = VonageStream().feed(wire({"event": "websocket:connected", "content-type": "audio/l16;rate=16000"}))
        assert isinstance(event, CallStarted) and event.call_id.startswith("vonage-")
        ids.add(event.call_id)
    assert len(ids) == 3


def test_binary_frame_is_caller_audio() -> None:
    assert started().feed_binary(FRAME) == AudioReceived(FRAME)


def test_dtmf() -> None:
    assert started().feed(wire(golden("dtmf"))) == DtmfReceived("5")


@pytest.mark.parametrize("digit", list("0123456789*#"))
def test_dtmf_every_digit_vonage_sends(digit: str) -> None:
    assert started().feed(wire({**golden("dtmf"), "digit": digit})) == DtmfReceived(digit)


def test_notify_echo_is_the_mark_played() -> None:
    assert started().feed(wire(golden("notify"))) == MarkPlayed("1.0.16000")


def test_cleared_yields_nothing() -> None:
    assert started().feed(wire(golden("cleared"))) is None


def test_other_websocket_events_are_ignored_as_vonage_asks() -> None:
    stream = started()
    assert stream.feed(wire({"event": "websocket:something-new", "x": 1})) is None
    assert stream.state is StreamState.STREAMING


def test_a_whole_golden_conversation() -> None:
    stream = VonageStream()
    events: list[Any] = [stream.feed(wire(golden("connected")))]
    frames = [SPEECH[i : i + 640] for i in range(0, len(SPEECH), 640)]
    events += [stream.feed_binary(frame) for frame in frames[:25]]
    events.append(stream.feed(wire(golden("dtmf"))))
    events += [stream.feed_binary(frame) for frame in frames[25:]]
    events.append(stream.feed(wire(golden("notify"))))
    events.append(stream.feed(wire(golden("cleared"))))
    assert isinstance(events[0], CallStarted) and events[0].parameters["agent"] == "support"
    audio = [e for e in events if isinstance(e, AudioReceived)]
    assert b"".join(e.payload for e in audio) == SPEECH and len(audio) == 50
    assert [e for e in events if not isinstance(e, (AudioReceived, CallStarted))] == [
        DtmfReceived("5"),
        MarkPlayed("1.0.16000"),
        None,
    ]


# -- malformed input ----------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "{", '{"event": "websocket:dtmf",}', "nope", b"\xff\xfe{}", "[" * 5000])
def test_invalid_json(text: str | bytes) -> None:
    refuse(VonageStream(), text, "invalid JSON")


@pytest.mark.parametrize("text", ["[]", '"websocket:connected"', "42", "null", "true"])
def test_json_that_is_not_an_object(text: str) -> None:
    refuse(VonageStream(), text, "message is not a JSON object")


@pytest.mark.parametrize("msg", [{}, {"digit": "5"}, {"event": None}, {"event": 3}, {"action": "notify"}])
def test_missing_event(msg: dict[str, Any]) -> None:
    refuse(started(), msg, "missing event")


@pytest.mark.parametrize("event", ["media", "connected", "Websocket:dtmf", "notify"])
def test_unknown_event(event: str) -> None:
    refuse(started(), {"event": event}, f"unknown event {event!r}")


@pytest.mark.parametrize("name", ["dtmf", "notify", "cleared"])
def test_events_before_connected(name: str) -> None:
    stream = VonageStream()
    refuse(stream, golden(name), f"websocket:{name} in state awaiting_connected")
    assert stream.state is StreamState.AWAITING_CONNECTED


def test_binary_before_connected() -> None:
    refuse_binary(VonageStream(), FRAME, "binary frame in state awaiting_connected")


@pytest.mark.parametrize("size", [0, 1, 320, 639, 641, 960, 1280, 65536])
def test_binary_frame_of_the_wrong_size(size: int) -> None:
    refuse_binary(started(), bytes(size), f"binary frame of {size} bytes, expected 640")


def test_odd_length_frame_at_8k() -> None:
    refuse_binary(started(8000), bytes(321), "binary frame of 321 bytes, expected 320")


def test_connected_twice() -> None:
    stream = started()
    refuse(stream, connected(call_uuid="other"), "websocket:connected in state streaming")
    assert stream.call_id == CALL_UUID


@pytest.mark.parametrize(
    "content_type", ["audio/l16;rate=44100", "audio/l16", "audio/pcmu;rate=8000", "AUDIO/L16;RATE=16000", 16000, None]
)
def test_connected_with_unsupported_content_type(content_type: Any) -> None:
    msg = connected(**{"content-type": content_type})
    stream = VonageStream()
    refuse(stream, msg, f"websocket:connected with unsupported content-type {content_type!r}")
    assert stream.state is StreamState.AWAITING_CONNECTED


def test_connected_without_content_type() -> None:
    msg = connected()
    del msg["content-type"]
    refuse(VonageStream(), msg, "websocket:connected with unsupported content-type None")


@pytest.mark.parametrize("call_id", ["a b", 'a"b', "", "x" * 65, 7, ["a"], None])
def test_connected_with_invalid_call_uuid(call_id: Any) -> None:
    refuse(VonageStream(), connected(call_uuid=call_id), f"websocket:connected with invalid call uuid {call_id!r}")


@pytest.mark.parametrize("digit", ["x", "12", "", " ", None, 5, ["1"]])
def test_dtmf_with_invalid_digit(digit: Any) -> None:
    refuse(started(), {**golden("dtmf"), "digit": digit}, f"websocket:dtmf with invalid digit {digit!r}")


@pytest.mark.parametrize("payload", [None, "1.0.16000", {}, {"name": 7}, {"customKey": "x"}, ["name"]])
def test_notify_without_name(payload: Any) -> None:
    refuse(started(), {"event": "websocket:notify", "payload": payload}, "websocket:notify without name")


def test_errors_leave_a_connected_stream_usable() -> None:
    stream = started()
    for bad in ("{", wire({"event": "websocket:dtmf", "digit": "x"}), wire(golden("connected"))):
        with pytest.raises(VonageProtocolError):
            stream.feed(bad)
    with pytest.raises(VonageProtocolError):
        stream.feed_binary(b"\x00")
    assert stream.state is StreamState.STREAMING
    assert stream.feed_binary(FRAME) == AudioReceived(FRAME)


# -- anything at all: VonageProtocolError or an event, never another exception ------------------

JUNK_VALUES: list[Any] = [None, True, False, 0, -1, 2**63 - 1, 1.5, "", "x", "a b", [], [1], {}, {"a": {"b": []}}]
_DELETE = object()


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    if isinstance(value, dict):
        for key, child in value.items():
            out.append((*prefix, key))
            out += _paths(child, (*prefix, key))
    return out


def _replace(msg: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    msg = copy.deepcopy(msg)
    node = msg
    for key in path[:-1]:
        node = node[key]
    if value is _DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return msg


def _feed_survives(stream: VonageStream, text: str | bytes) -> None:
    try:
        stream.feed(text)
    except VonageProtocolError:
        pass


GOLDEN = ["connected", "dtmf", "notify", "cleared"]


@pytest.mark.parametrize("name", GOLDEN)
def test_every_field_replaced_by_junk_raises_only_protocol_errors(name: str) -> None:
    msg = golden(name)
    for path in _paths(msg):
        for value in [*JUNK_VALUES, _DELETE]:
            for stream in (VonageStream(), started()):
                _feed_survives(stream, wire(_replace(msg, path, value)))


@pytest.mark.parametrize("name", GOLDEN)
def test_truncated_and_corrupted_messages_raise_only_protocol_errors(name: str) -> None:
    data = wire(golden(name)).encode()
    rng = random.Random(name)
    for cut in range(len(data)):
        _feed_survives(started(), data[:cut])
    for _ in range(300):
        corrupted = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            corrupted[rng.randrange(len(corrupted))] = rng.randrange(256)
        for stream in (VonageStream(), started()):
            _feed_survives(stream, bytes(corrupted))


def test_random_binary_raises_only_protocol_errors() -> None:
    rng = random.Random(3)
    for _ in range(500):
        for stream in (VonageStream(), started()):
            try:
                stream.feed_binary(rng.randbytes(rng.choice([0, 1, 320, 639, 640, 641, 2000])))
            except VonageProtocolError:
                pass


# -- outbound -------------------------------------------------------------------------------------


def test_whole_frames_go_out_as_they_are() -> None:
    stream = started()
    assert stream.media(FRAME) is FRAME


def test_short_payloads_are_held_until_a_frame_is_whole() -> None:
    stream = started()
    assert stream.media(SPEECH[:200]) is None
    assert stream.media(SPEECH[200:500]) is None
    assert stream.media(SPEECH[500:900]) == SPEECH[:640]
    assert stream.media(SPEECH[900:1280]) == SPEECH[640:1280]


def test_long_payloads_go_out_a_frame_a_call_and_the_rest_at_the_mark() -> None:
    stream = started()
    tones = SPEECH[: 640 * 3 + 100]
    assert stream.media(tones) == tones[:640]
    assert stream.media(FRAME) == tones[640:1280]
    out = stream.mark("r1")
    assert b"".join(out[:-1]) == tones[1280:] + FRAME + bytes(540)  # in order, the end padded with silence
    assert orjson.loads(out[-1]) == {"action": "notify", "payload": {"name": "r1"}}
    assert all(len(frame) == 640 for frame in out[:-1])


def test_frames_follow_the_negotiated_rate() -> None:
    stream = started(8000)
    assert stream.media(bytes(640)) == bytes(320)
    assert stream.mark("m")[0] == bytes(320)


def test_mark_is_the_golden_notify() -> None:
    assert [orjson.loads(m) for m in started().mark("1.0.16000")] == [golden("out_notify")]


def test_clear_is_the_golden_clear_and_drops_held_audio() -> None:
    stream = started()
    assert stream.media(SPEECH[:100]) is None
    assert [orjson.loads(m) for m in stream.clear()] == [golden("out_clear")]
    assert stream.mark("m") == ['{"action":"notify","payload":{"name":"m"}}']
    assert stream.media(FRAME) is FRAME


def test_notify_round_trips_through_the_inbound_echo() -> None:
    stream = started()
    notify = orjson.loads(stream.mark("r2.0.3200")[-1])
    echo = {"event": "websocket:notify", "payload": notify["payload"]}
    assert stream.feed(wire(echo)) == MarkPlayed("r2.0.3200")


@pytest.mark.parametrize("name", ["", 'say "hi"', "back\\slash", "line\nbreak", "café", "n" * 257])
def test_mark_name_that_would_break_json_is_refused(name: str) -> None:
    with pytest.raises(ValueError) as info:
        started().mark(name)
    assert str(info.value) == f"invalid mark name {name!r}"


def test_closing_the_socket_is_the_caller_hanging_up() -> None:
    assert VonageStream.hangup_on_close is True
