"""Exotel Voicebot codec: golden messages in the shape Exotel's AgentStream "WebSocket protocol"
page documents them (tests/fixtures/media/exotel), every malformed input with its exact error,
the stream's state machine, and outbound chunks that keep Exotel's size rules."""

from __future__ import annotations

import copy
import random
from base64 import b64decode, b64encode
from pathlib import Path
from typing import Any

import orjson
import pytest

from ringline.engine.audio.formats import PCM16_8K, AudioFormat, Encoding
from ringline.engine.transports.events import AudioReceived, CallStarted, CallStopped, DtmfReceived, MarkPlayed
from ringline.engine.transports.exotel.codec import (
    MAX_CHUNK_BYTES,
    MAX_PAYLOAD_BYTES,
    ExotelProtocolError,
    ExotelStream,
    StreamState,
    min_chunk_bytes,
)

FIXTURES = Path(__file__).parent / "fixtures" / "media" / "exotel"
STREAM_SID = "a6cb4b30e5b04c9d8e4f3f7f8c1d9b21"
CALL_SID = "b5e2a1c0d9f84e7b9a6c5d4e3f2a1b0c"


def golden(name: str) -> dict[str, Any]:
    return orjson.loads((FIXTURES / f"{name}.json").read_bytes())


CHUNK = b64decode(golden("media")["media"]["payload"])  # 100 ms of real speech, 8 kHz PCM16
SPEECH = b64decode(golden("out_media")["media"]["payload"])  # 200 ms of it
FRAME = SPEECH[:320]


def wire(msg: dict[str, Any]) -> str:
    return orjson.dumps(msg).decode()


def start(**start_fields: Any) -> dict[str, Any]:
    msg = golden("start")
    msg["start"].update(start_fields)
    return msg


def media(payload: str | None = None, *, stream_sid: Any = STREAM_SID, **media_fields: Any) -> dict[str, Any]:
    msg = golden("media")
    msg["stream_sid"] = stream_sid
    if payload is not None:
        msg["media"]["payload"] = payload
    msg["media"].update(media_fields)
    return msg


def started(rate: int = 8000) -> ExotelStream:
    stream = ExotelStream()
    stream.feed(wire(golden("connected")))
    stream.feed(wire(start(media_format={"encoding": "audio/x-raw", "sample_rate": str(rate), "bit_rate": "16"})))
    return stream


def refuse(stream: ExotelStream, msg: dict[str, Any] | str | bytes, message: str) -> None:
    text = wire(msg) if isinstance(msg, dict) else msg
    with pytest.raises(ExotelProtocolError) as info:
        stream.feed(text)
    assert str(info.value) == message


# -- inbound events ----------------------------------------------------------------------------


def test_connected_yields_nothing_and_keeps_awaiting_start() -> None:
    stream = ExotelStream()
    assert stream.feed(wire(golden("connected"))) is None
    assert stream.state is StreamState.AWAITING_START


def test_start_reports_the_call_with_from_to_and_custom_parameters() -> None:
    stream = ExotelStream()
    event = stream.feed(wire(golden("start")))
    assert event == CallStarted(
        CALL_SID, STREAM_SID, {"from": "+919876543210", "to": "+918047491899", "agent": "support", "var_name": "Jane"}
    )
    assert stream.state is StreamState.STREAMING
    assert (stream.stream_sid, stream.call_sid, stream.format) == (STREAM_SID, CALL_SID, PCM16_8K)


def test_custom_parameters_override_from_and_to_and_become_strings() -> None:
    event = ExotelStream().feed(wire(start(custom_parameters={"to": "+911", "retries": 3, "direction": "outbound"})))
    assert isinstance(event, CallStarted)
    assert event.parameters == {"from": "+919876543210", "to": "+911", "retries": "3", "direction": "outbound"}


def test_start_without_optional_fields_uses_defaults() -> None:
    msg = golden("start")
    for key in ("custom_parameters", "media_format", "from", "to", "stream_sid"):
        del msg["start"][key]
    stream = ExotelStream()
    assert stream.feed(wire(msg)) == CallStarted(CALL_SID, STREAM_SID, {})  # stream_sid from the top level
    assert stream.format == PCM16_8K


@pytest.mark.parametrize(
    ("fmt", "rate"),
    [
        ({"encoding": "audio/x-raw", "sample_rate": "16000", "bit_rate": "16"}, 16000),
        ({"encoding": "raw/slin", "sample_rate": 24000, "bit_rate": 16}, 24000),
        ({"encoding": "audio/L16", "sample_rate": "8000"}, 8000),
        ({"sample_rate": "16000"}, 16000),
    ],
)
def test_start_reads_the_media_format(fmt: dict[str, Any], rate: int) -> None:
    stream = ExotelStream()
    stream.feed(wire(start(media_format=fmt)))
    assert stream.format == AudioFormat(Encoding.PCM16, rate)


def test_media_decodes_payload() -> None:
    assert started().feed(wire(golden("media"))) == AudioReceived(CHUNK)
    assert len(CHUNK) == 1600


def test_media_payload_of_exactly_max_bytes_is_accepted() -> None:
    audio = bytes(range(256)) * (MAX_PAYLOAD_BYTES // 256) + bytes(MAX_PAYLOAD_BYTES % 256)
    assert started().feed(wire(media(b64encode(audio).decode()))) == AudioReceived(audio)


def test_outbound_track_media_is_ignored() -> None:
    assert started().feed(wire(media(track="outbound"))) is None


@pytest.mark.parametrize("digit", list("0123456789*#ABCD"))
def test_dtmf_every_valid_digit(digit: str) -> None:
    msg = golden("dtmf")
    msg["dtmf"]["digit"] = digit
    assert started().feed(wire(msg)) == DtmfReceived(digit)


def test_mark_echo_reports_its_name() -> None:
    assert started().feed(wire(golden("mark"))) == MarkPlayed("1.0.8000")


def test_stop_reports_call_stopped_and_stops_the_stream() -> None:
    stream = started()
    assert stream.feed(wire(golden("stop"))) == CallStopped()
    assert stream.state is StreamState.STOPPED


def test_a_whole_golden_conversation() -> None:
    stream = ExotelStream()
    names = ["connected", "start", "media", "media", "dtmf", "media", "mark", "stop"]
    events, states = [], []
    for name in names:
        events.append(stream.feed(wire(golden(name))))
        states.append(stream.state)
    assert events == [
        None,
        CallStarted(
            CALL_SID,
            STREAM_SID,
            {"from": "+919876543210", "to": "+918047491899", "agent": "support", "var_name": "Jane"},
        ),
        AudioReceived(CHUNK),
        AudioReceived(CHUNK),
        DtmfReceived("5"),
        AudioReceived(CHUNK),
        MarkPlayed("1.0.8000"),
        CallStopped(),
    ]
    assert states == [StreamState.AWAITING_START] + [StreamState.STREAMING] * 6 + [StreamState.STOPPED]


# -- malformed input ----------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "{", '{"event": "media",}', "nope", b"\xff\xfe{}", "[" * 5000])
def test_invalid_json(text: str | bytes) -> None:
    refuse(ExotelStream(), text, "invalid JSON")


@pytest.mark.parametrize("text", ["[]", '"start"', "42", "null", '[{"event": "start"}]'])
def test_json_that_is_not_an_object(text: str) -> None:
    refuse(ExotelStream(), text, "message is not a JSON object")


@pytest.mark.parametrize("msg", [{}, {"stream_sid": STREAM_SID}, {"event": None}, {"event": ["media"]}])
def test_missing_event(msg: dict[str, Any]) -> None:
    refuse(started(), msg, "missing event")


def test_unknown_event() -> None:
    refuse(started(), {"event": "clear", "stream_sid": STREAM_SID}, "unknown event 'clear'")


def test_binary_messages_are_refused() -> None:
    with pytest.raises(ExotelProtocolError) as info:
        started().feed_binary(CHUNK)
    assert str(info.value) == "unexpected binary message"


@pytest.mark.parametrize("name", ["media", "dtmf", "mark", "stop"])
def test_events_before_start(name: str) -> None:
    stream = ExotelStream()
    refuse(stream, golden(name), f"{name} in state awaiting_start")
    assert stream.state is StreamState.AWAITING_START


@pytest.mark.parametrize("name", ["media", "mark", "stop", "start"])
def test_events_after_stop(name: str) -> None:
    stream = started()
    stream.feed(wire(golden("stop")))
    refuse(stream, golden(name), f"{name} in state stopped")


def test_media_for_another_stream() -> None:
    refuse(started(), media(stream_sid="other"), f"media for stream_sid 'other', expected '{STREAM_SID}'")


def test_message_with_twilio_style_stream_sid() -> None:
    msg = golden("mark")
    msg["streamSid"] = msg.pop("stream_sid")
    refuse(started(), msg, f"mark for stream_sid None, expected '{STREAM_SID}'")


@pytest.mark.parametrize(
    "msg",
    [
        {"event": "media", "stream_sid": STREAM_SID},
        {"event": "media", "stream_sid": STREAM_SID, "media": "AAAA"},
        {"event": "media", "stream_sid": STREAM_SID, "media": {"chunk": "1"}},
        {"event": "media", "stream_sid": STREAM_SID, "media": {"payload": 5}},
    ],
)
def test_media_without_payload(msg: dict[str, Any]) -> None:
    refuse(started(), msg, "media without payload")


@pytest.mark.parametrize("payload", ["AAA", "AA=A", "****", "AAAA\n", "AA AA"])
def test_media_payload_not_base64(payload: str) -> None:
    refuse(started(), media(payload), "media payload is not valid base64")


@pytest.mark.parametrize("size", [MAX_PAYLOAD_BYTES + 1, MAX_PAYLOAD_BYTES + 2, 2 * MAX_PAYLOAD_BYTES])
def test_media_payload_over_max(size: int) -> None:
    refuse(started(), media(b64encode(bytes(size)).decode()), f"media payload over {MAX_PAYLOAD_BYTES} bytes")


def test_oversized_payload_is_refused_before_decoding_it() -> None:
    refuse(started(), media("!" * (2 * MAX_PAYLOAD_BYTES)), f"media payload over {MAX_PAYLOAD_BYTES} bytes")


@pytest.mark.parametrize("size", [1, 3, 1599])
def test_media_payload_of_odd_length(size: int) -> None:
    refuse(
        started(), media(b64encode(bytes(size)).decode()), f"media payload of {size} bytes is not whole 16-bit samples"
    )


@pytest.mark.parametrize("track", ["inbound_track", None, 1])
def test_media_on_wrong_track(track: Any) -> None:
    refuse(started(), media(track=track), f"media on track {track!r}")


def test_second_start() -> None:
    stream = started()
    refuse(stream, golden("start"), "start in state streaming")
    assert stream.stream_sid == STREAM_SID


@pytest.mark.parametrize("body", [None, "x", [], 1])
def test_start_without_start_object(body: Any) -> None:
    refuse(ExotelStream(), {"event": "start", "stream_sid": STREAM_SID, "start": body}, "start without start object")


@pytest.mark.parametrize("sid", ["MZ 1", 'MZ"1', "", "M" * 65, 12, None])
def test_start_with_invalid_stream_sid(sid: Any) -> None:
    msg = start(stream_sid=sid)
    msg["stream_sid"] = sid
    stream = ExotelStream()
    refuse(stream, msg, f"start with invalid stream_sid {sid!r}")
    assert stream.state is StreamState.AWAITING_START and stream.stream_sid is None


@pytest.mark.parametrize("sid", ["CA 1", 'CA"}', "", "C" * 65, 7, None])
def test_start_with_invalid_call_sid(sid: Any) -> None:
    refuse(ExotelStream(), start(call_sid=sid), f"start with invalid call_sid {sid!r}")


@pytest.mark.parametrize(
    ("fmt", "message"),
    [
        (
            {"encoding": "audio/x-mulaw", "sample_rate": "8000"},
            "unsupported media format 'audio/x-mulaw' '8000' Hz None bits",
        ),
        (
            {"encoding": "audio/x-raw", "sample_rate": "44100"},
            "unsupported media format 'audio/x-raw' '44100' Hz None bits",
        ),
        ({"encoding": "audio/x-raw", "sample_rate": "8k"}, "unsupported media format 'audio/x-raw' '8k' Hz None bits"),
        ({"encoding": "raw/slin", "sample_rate": 8000.0}, "unsupported media format 'raw/slin' 8000.0 Hz None bits"),
        ({"encoding": "raw/slin", "sample_rate": True}, "unsupported media format 'raw/slin' True Hz None bits"),
        ({"sample_rate": "8000", "bit_rate": "8"}, "unsupported media format None '8000' Hz '8' bits"),
        ({"encoding": 7}, "unsupported media format 7 None Hz None bits"),
    ],
)
def test_start_with_unsupported_media_format(fmt: dict[str, Any], message: str) -> None:
    stream = ExotelStream()
    refuse(stream, start(media_format=fmt), message)
    assert stream.state is StreamState.AWAITING_START


@pytest.mark.parametrize("fmt", ["audio/x-raw", ["x"], 8000])
def test_start_with_media_format_not_an_object(fmt: Any) -> None:
    refuse(ExotelStream(), start(media_format=fmt), "media_format is not an object")


@pytest.mark.parametrize("params", [["agent"], "agent=support", 5])
def test_start_with_custom_parameters_not_an_object(params: Any) -> None:
    refuse(ExotelStream(), start(custom_parameters=params), "custom_parameters is not an object")


@pytest.mark.parametrize("digit", ["x", "12", "", " ", None, 1])
def test_dtmf_with_invalid_digit(digit: Any) -> None:
    msg = golden("dtmf")
    msg["dtmf"]["digit"] = digit
    refuse(started(), msg, f"dtmf with invalid digit {digit!r}")


@pytest.mark.parametrize("mark", [None, "x", {}, {"name": 7}])
def test_mark_without_name(mark: Any) -> None:
    refuse(started(), {**golden("mark"), "mark": mark}, "mark without name")


def test_errors_leave_a_started_stream_usable() -> None:
    stream = started()
    for bad in ("{", wire(media("***")), wire(golden("start")), wire(media(b64encode(b"abc").decode()))):
        with pytest.raises(ExotelProtocolError):
            stream.feed(bad)
    assert stream.state is StreamState.STREAMING
    assert stream.feed(wire(golden("media"))) == AudioReceived(CHUNK)


# -- anything at all: ExotelProtocolError or an event, never another exception ------------------

JUNK_VALUES: list[Any] = [None, True, False, 0, -1, 2**63 - 1, 1.5, "", "x", "MZ 1", [], [1], {}, {"a": {"b": []}}]
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


def _feed_survives(stream: ExotelStream, text: str | bytes) -> None:
    try:
        stream.feed(text)
    except ExotelProtocolError:
        pass


GOLDEN = ["connected", "start", "media", "dtmf", "mark", "stop"]


@pytest.mark.parametrize("name", GOLDEN)
def test_every_field_replaced_by_junk_raises_only_protocol_errors(name: str) -> None:
    msg = golden(name)
    for path in _paths(msg):
        for value in [*JUNK_VALUES, _DELETE]:
            for stream in (ExotelStream(), started()):
                _feed_survives(stream, wire(_replace(msg, path, value)))


@pytest.mark.parametrize("name", GOLDEN)
def test_truncated_and_corrupted_messages_raise_only_protocol_errors(name: str) -> None:
    data = wire(golden(name)).encode()
    rng = random.Random(name)
    for cut in range(0, len(data), max(1, len(data) // 300)):
        _feed_survives(started(), data[:cut])
    for _ in range(300):
        corrupted = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            corrupted[rng.randrange(len(corrupted))] = rng.randrange(256)
        for stream in (ExotelStream(), started()):
            _feed_survives(stream, bytes(corrupted))


# -- outbound -------------------------------------------------------------------------------------


def _payload(message: str) -> bytes:
    msg = orjson.loads(message)
    assert msg["event"] == "media" and msg["stream_sid"] == STREAM_SID
    return b64decode(msg["media"]["payload"], validate=True)


def test_frames_are_held_until_3200_bytes_are_whole() -> None:
    stream = started()
    frames = [SPEECH[i : i + 320] for i in range(0, len(SPEECH), 320)]
    assert [stream.media(f) for f in frames[:9]] == [None] * 9
    message = stream.media(frames[9])
    assert message is not None and orjson.loads(message) == golden("out_media")
    assert [stream.media(f) for f in frames[:9]] == [None] * 9  # and again


@pytest.mark.parametrize(("rate", "least"), [(8000, 3200), (16000, 3200), (24000, 4800)])
def test_the_minimum_chunk_is_3200_bytes_and_100_ms(rate: int, least: int) -> None:
    stream = started(rate)
    assert stream.min_chunk == min_chunk_bytes(stream.format) == least
    frame = rate // 50 * 2
    assert [stream.media(bytes(frame)) for _ in range(least // frame - 1)] == [None] * (least // frame - 1)
    message = stream.media(bytes(frame))
    assert message is not None and len(_payload(message)) == least


def test_a_golden_chunk() -> None:
    stream = started()
    assert stream.media(SPEECH[:1000]) is None
    message = stream.media(SPEECH[1000:])
    assert message is not None and orjson.loads(message) == golden("out_media")


@pytest.mark.parametrize("rate", [8000, 16000, 24000])
def test_chunks_are_multiples_of_320_bytes_and_at_least_100_ms(rate: int) -> None:
    stream = started(rate)
    frame = rate // 50 * 2
    rng = random.Random(rate)
    sizes = []
    for _ in range(200):
        message = stream.media(rng.randbytes(rng.choice([frame, frame, frame // 2, 3 * frame + 2])))
        if message is not None:
            sizes.append(len(_payload(message)))
    least = max(3200, rate // 10 * 2)
    assert sizes and all(size % 320 == 0 and size % frame == 0 and size >= least for size in sizes)


def test_a_huge_payload_is_cut_to_the_maximum_chunk() -> None:
    stream = started()
    audio = bytes(range(256)) * 500  # 128000 bytes
    first = stream.media(audio)
    assert first is not None and _payload(first) == audio[:MAX_CHUNK_BYTES]
    out = stream.mark("m")
    assert b"".join(_payload(m) for m in out[:-1]) == audio[MAX_CHUNK_BYTES:]


def test_mark_writes_out_held_audio_padded_to_whole_frames_then_the_golden_mark() -> None:
    stream = started()
    assert stream.media(SPEECH[:700]) is None
    out = stream.mark("1.0.8000")
    assert len(out) == 2
    assert _payload(out[0]) == SPEECH[:700] + bytes(260)
    assert orjson.loads(out[1]) == golden("out_mark")


def test_mark_with_nothing_held_is_just_the_mark() -> None:
    assert [orjson.loads(m) for m in started().mark("1.0.8000")] == [golden("out_mark")]


def test_clear_drops_held_audio() -> None:
    stream = started()
    assert stream.media(SPEECH[:1280]) is None
    assert [orjson.loads(m) for m in stream.clear()] == [golden("out_clear")]
    assert stream.mark("m") == [f'{{"event":"mark","stream_sid":"{STREAM_SID}","mark":{{"name":"m"}}}}']
    assert stream.media(SPEECH[:1280]) is None  # counting starts again


def test_outbound_media_parses_back_through_the_inbound_path() -> None:
    stream = started()
    message = stream.media(SPEECH)
    assert message is not None
    assert started().feed(message) == AudioReceived(SPEECH)


def test_inbound_mark_echo_of_an_outbound_mark() -> None:
    stream = started()
    assert stream.feed(stream.mark("r2.0.3200")[-1]) == MarkPlayed("r2.0.3200")


@pytest.mark.parametrize("name", ["", 'say "hi"', "back\\slash", "line\nbreak", "café", "n" * 257])
def test_mark_name_that_would_break_json_is_refused(name: str) -> None:
    with pytest.raises(ValueError) as info:
        started().mark(name)
    assert str(info.value) == f"invalid mark name {name!r}"
