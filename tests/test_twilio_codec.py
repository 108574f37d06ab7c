"""Twilio Media Streams codec: golden messages in the shape Twilio documents them, every malformed
input with its exact error, the stream's state machine, and outbound messages that round-trip."""

from __future__ import annotations

import copy
import random
from base64 import b64decode, b64encode
from typing import Any

import orjson
import pytest

from ringline.benchmarks.clips import load_clip
from ringline.engine.transports.events import AudioReceived, CallStarted, CallStopped, DtmfReceived, MarkPlayed
from ringline.engine.transports.twilio.codec import (
    MAX_PAYLOAD_BYTES,
    StreamState,
    TwilioProtocolError,
    TwilioStream,
)

ACCOUNT_SID = "AC0123456789abcdef0123456789abcdef"
STREAM_SID = "MZ18ad3ab5a668481ce02b83e7395059f0"
CALL_SID = "CA98b3e5f2c0a14c61a7f4b3e2d1c0b9a8"
FRAME = load_clip("book_table.wav")[1600:1760]  # 20 ms of real mu-law speech
FRAME_B64 = b64encode(FRAME).decode("ascii")


def connected() -> dict[str, Any]:
    return {"event": "connected", "protocol": "Call", "version": "1.0.0"}


def start(**start_fields: Any) -> dict[str, Any]:
    body = {
        "accountSid": ACCOUNT_SID,
        "streamSid": STREAM_SID,
        "callSid": CALL_SID,
        "tracks": ["inbound"],
        "customParameters": {"agent": "support", "FirstName": "Jane"},
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
    }
    body.update(start_fields)
    return {"event": "start", "sequenceNumber": "1", "start": body, "streamSid": STREAM_SID}


def media(payload: str = FRAME_B64, *, stream_sid: str = STREAM_SID, **media_fields: Any) -> dict[str, Any]:
    body = {"track": "inbound", "chunk": "2", "timestamp": "20", "payload": payload}
    body.update(media_fields)
    return {"event": "media", "sequenceNumber": "3", "media": body, "streamSid": stream_sid}


def dtmf(digit: Any = "1") -> dict[str, Any]:
    return {
        "event": "dtmf",
        "streamSid": STREAM_SID,
        "sequenceNumber": "5",
        "dtmf": {"track": "inbound_track", "digit": digit},
    }


def mark(name: Any = "reply-1 phrase-0") -> dict[str, Any]:
    return {"event": "mark", "sequenceNumber": "4", "streamSid": STREAM_SID, "mark": {"name": name}}


def stop() -> dict[str, Any]:
    return {
        "event": "stop",
        "sequenceNumber": "6",
        "streamSid": STREAM_SID,
        "stop": {"accountSid": ACCOUNT_SID, "callSid": CALL_SID},
    }


def wire(msg: dict[str, Any]) -> str:
    return orjson.dumps(msg).decode()


def started() -> TwilioStream:
    stream = TwilioStream()
    stream.feed(wire(connected()))
    stream.feed(wire(start()))
    return stream


def refuse(stream: TwilioStream, msg: dict[str, Any] | str | bytes, message: str) -> None:
    text = wire(msg) if isinstance(msg, dict) else msg
    with pytest.raises(TwilioProtocolError) as info:
        stream.feed(text)
    assert str(info.value) == message


# -- inbound events ----------------------------------------------------------------------------


def test_connected_yields_nothing_and_keeps_awaiting_start() -> None:
    stream = TwilioStream()
    assert stream.feed(wire(connected())) is None
    assert stream.state is StreamState.AWAITING_START
    assert stream.stream_sid is None and stream.call_sid is None


def test_start_reports_call_with_custom_parameters() -> None:
    stream = TwilioStream()
    event = stream.feed(wire(start()))
    assert event == CallStarted(CALL_SID, STREAM_SID, {"agent": "support", "FirstName": "Jane"})
    assert stream.state is StreamState.STREAMING
    assert (stream.stream_sid, stream.call_sid) == (STREAM_SID, CALL_SID)


def test_start_accepts_bytes() -> None:
    assert TwilioStream().feed(wire(start()).encode()) == CallStarted(
        CALL_SID, STREAM_SID, {"agent": "support", "FirstName": "Jane"}
    )


def test_start_without_custom_parameters_or_media_format_uses_defaults() -> None:
    msg = start()
    del msg["start"]["customParameters"], msg["start"]["mediaFormat"]
    assert TwilioStream().feed(wire(msg)) == CallStarted(CALL_SID, STREAM_SID, {})


def test_start_falls_back_to_top_level_stream_sid() -> None:
    msg = start()
    del msg["start"]["streamSid"]
    event = TwilioStream().feed(wire(msg))
    assert isinstance(event, CallStarted) and event.stream_id == STREAM_SID


def test_custom_parameter_values_become_strings() -> None:
    event = TwilioStream().feed(wire(start(customParameters={"retries": 3, "vip": True})))
    assert isinstance(event, CallStarted)
    assert event.parameters == {"retries": "3", "vip": "True"}


def test_media_decodes_payload() -> None:
    stream = started()
    assert stream.feed(wire(media())) == AudioReceived(FRAME)
    assert len(FRAME) == 160


def test_media_without_track_counts_as_inbound() -> None:
    msg = media()
    del msg["media"]["track"]
    assert started().feed(wire(msg)) == AudioReceived(FRAME)


def test_media_payload_of_exactly_max_bytes_is_accepted() -> None:
    audio = bytes(range(256)) * (MAX_PAYLOAD_BYTES // 256) + bytes(MAX_PAYLOAD_BYTES % 256)
    assert len(audio) == MAX_PAYLOAD_BYTES
    assert started().feed(wire(media(b64encode(audio).decode()))) == AudioReceived(audio)


@pytest.mark.parametrize("digit", list("0123456789*#ABCD"))
def test_dtmf_every_valid_digit(digit: str) -> None:
    assert started().feed(wire(dtmf(digit))) == DtmfReceived(digit)


def test_mark_echo_reports_its_name() -> None:
    assert started().feed(wire(mark("reply-7 phrase-2"))) == MarkPlayed("reply-7 phrase-2")


def test_stop_reports_call_stopped_and_stops_the_stream() -> None:
    stream = started()
    assert stream.feed(wire(stop())) == CallStopped()
    assert stream.state is StreamState.STOPPED


def test_state_transitions_through_a_whole_call() -> None:
    stream = TwilioStream()
    states = [stream.state]
    for msg in (connected(), start(), media(), dtmf("#"), mark(), media(), stop()):
        stream.feed(wire(msg))
        states.append(stream.state)
    assert states == [StreamState.AWAITING_START] * 2 + [StreamState.STREAMING] * 5 + [StreamState.STOPPED]


# -- malformed input ----------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "{", '{"event": "media",}', "nope", b"\xff\xfe{}", '"\\ud800"', "[" * 5000])
def test_invalid_json(text: str | bytes) -> None:
    refuse(TwilioStream(), text, "invalid JSON")


@pytest.mark.parametrize("text", ["[]", '"start"', "42", "null", "true", '[{"event": "start"}]'])
def test_json_that_is_not_an_object(text: str) -> None:
    refuse(TwilioStream(), text, "message is not a JSON object")


@pytest.mark.parametrize("msg", [{}, {"streamSid": STREAM_SID}, {"event": None}, {"event": 3}, {"event": ["media"]}])
def test_missing_event(msg: dict[str, Any]) -> None:
    refuse(started(), msg, "missing event")


def test_unknown_event() -> None:
    refuse(started(), {"event": "transcription", "streamSid": STREAM_SID}, "unknown event 'transcription'")


def test_unknown_event_is_case_sensitive() -> None:
    refuse(started(), {**media(), "event": "Media"}, "unknown event 'Media'")


@pytest.mark.parametrize(("msg", "event"), [(media(), "media"), (dtmf(), "dtmf"), (mark(), "mark"), (stop(), "stop")])
def test_events_before_start(msg: dict[str, Any], event: str) -> None:
    stream = TwilioStream()
    refuse(stream, msg, f"{event} in state awaiting_start")
    assert stream.state is StreamState.AWAITING_START


@pytest.mark.parametrize(("msg", "event"), [(media(), "media"), (mark(), "mark"), (stop(), "stop"), (start(), "start")])
def test_events_after_stop(msg: dict[str, Any], event: str) -> None:
    stream = started()
    stream.feed(wire(stop()))
    refuse(stream, msg, f"{event} in state stopped")
    assert stream.state is StreamState.STOPPED


def test_media_for_another_stream() -> None:
    refuse(
        started(),
        media(stream_sid="MZ00000000000000000000000000000000"),
        f"media for streamSid 'MZ00000000000000000000000000000000', expected '{STREAM_SID}'",
    )


def test_message_without_stream_sid() -> None:
    msg = mark()
    del msg["streamSid"]
    refuse(started(), msg, f"mark for streamSid None, expected '{STREAM_SID}'")


@pytest.mark.parametrize(
    "msg",
    [
        {"event": "media", "streamSid": STREAM_SID},
        {"event": "media", "streamSid": STREAM_SID, "media": "AAAA"},
        {"event": "media", "streamSid": STREAM_SID, "media": {"track": "inbound"}},
        media(payload=None),
        media(payload=["AAAA"]),
    ],
)
def test_media_without_payload(msg: dict[str, Any]) -> None:
    refuse(started(), msg, "media without payload")


@pytest.mark.parametrize("payload", ["AAA", "AA=A", "****", "AAAA\n", "AA AA", "w6k="[:-1] + "!"])
def test_media_payload_not_base64(payload: str) -> None:
    refuse(started(), media(payload), "media payload is not valid base64")


@pytest.mark.parametrize("size", [MAX_PAYLOAD_BYTES + 2, MAX_PAYLOAD_BYTES + 3, 2 * MAX_PAYLOAD_BYTES])
def test_media_payload_over_max(size: int) -> None:
    refuse(started(), media(b64encode(bytes(size)).decode()), f"media payload over {MAX_PAYLOAD_BYTES} bytes")


def test_media_payload_one_byte_over_max() -> None:
    # 8001 bytes encode to the same 10668 base64 characters as 8000 bytes.
    refuse(
        started(),
        media(b64encode(bytes(MAX_PAYLOAD_BYTES + 1)).decode()),
        f"media payload over {MAX_PAYLOAD_BYTES} bytes",
    )


def test_oversized_payload_is_refused_before_decoding_it() -> None:
    refuse(started(), media("!" * (2 * MAX_PAYLOAD_BYTES)), f"media payload over {MAX_PAYLOAD_BYTES} bytes")


@pytest.mark.parametrize("track", ["inbound_track", None, 1])
def test_media_on_wrong_track(track: Any) -> None:
    refuse(started(), media(track=track), f"media on track {track!r}")


def test_outbound_track_media_of_a_both_tracks_stream_is_ignored() -> None:
    assert started().feed(orjson.dumps(media(track="outbound"))) is None


@pytest.mark.parametrize("name", ["café", "tab\x7fdel", "a\tb"])
def test_non_ascii_or_control_mark_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="invalid mark name"):
        started().mark(name)


def test_second_start() -> None:
    stream = started()
    refuse(stream, start(), "start in state streaming")
    assert (stream.state, stream.stream_sid) == (StreamState.STREAMING, STREAM_SID)


@pytest.mark.parametrize("body", [None, "x", [], 1])
def test_start_without_start_object(body: Any) -> None:
    stream = TwilioStream()
    refuse(stream, {"event": "start", "streamSid": STREAM_SID, "start": body}, "start without start object")
    assert stream.state is StreamState.AWAITING_START


@pytest.mark.parametrize("sid", ["MZ 1", 'MZ"1', "MZ\\1", "", "M" * 65, "MZ/1", "MZé", 12, None])
def test_start_with_invalid_stream_sid(sid: Any) -> None:
    msg = start(streamSid=sid)
    msg["streamSid"] = sid
    stream = TwilioStream()
    refuse(stream, msg, f"start with invalid streamSid {sid!r}")
    assert stream.state is StreamState.AWAITING_START and stream.stream_sid is None


@pytest.mark.parametrize("sid", ["CA 1", 'CA"}', "", "C" * 65, 7, None])
def test_start_with_invalid_call_sid(sid: Any) -> None:
    refuse(TwilioStream(), start(callSid=sid), f"start with invalid callSid {sid!r}")


def test_start_without_call_sid() -> None:
    msg = start()
    del msg["start"]["callSid"]
    refuse(TwilioStream(), msg, "start with invalid callSid None")


@pytest.mark.parametrize(
    ("encoding", "rate", "channels", "message"),
    [
        ("audio/l16", 16000, 1, "unsupported media format 'audio/l16' 16000 Hz 1 channels"),
        ("audio/x-mulaw", 16000, 1, "unsupported media format 'audio/x-mulaw' 16000 Hz 1 channels"),
        ("audio/x-alaw", 8000, 1, "unsupported media format 'audio/x-alaw' 8000 Hz 1 channels"),
        ("audio/x-mulaw", 8000, 2, "unsupported media format 'audio/x-mulaw' 8000 Hz 2 channels"),
        ("audio/x-mulaw", "8000", 1, "unsupported media format 'audio/x-mulaw' '8000' Hz 1 channels"),
    ],
)
def test_start_with_unsupported_media_format(encoding: str, rate: Any, channels: int, message: str) -> None:
    stream = TwilioStream()
    refuse(stream, start(mediaFormat={"encoding": encoding, "sampleRate": rate, "channels": channels}), message)
    assert stream.state is StreamState.AWAITING_START


@pytest.mark.parametrize("fmt", ["audio/x-mulaw", ["audio/x-mulaw"], 8000])
def test_start_with_media_format_that_is_not_an_object(fmt: Any) -> None:
    with pytest.raises(TwilioProtocolError, match=r"(?i)media ?format"):
        TwilioStream().feed(wire(start(mediaFormat=fmt)))


@pytest.mark.parametrize("params", [["agent"], "agent=support", 5])
def test_start_with_custom_parameters_not_an_object(params: Any) -> None:
    refuse(TwilioStream(), start(customParameters=params), "customParameters is not an object")


@pytest.mark.parametrize("digit", ["x", "12", "", "a", " ", None, 1, ["1"]])
def test_dtmf_with_invalid_digit(digit: Any) -> None:
    refuse(started(), dtmf(digit), f"dtmf with invalid digit {digit!r}")


def test_dtmf_without_dtmf_object() -> None:
    refuse(started(), {"event": "dtmf", "streamSid": STREAM_SID}, "dtmf with invalid digit None")


@pytest.mark.parametrize(
    "msg",
    [
        {"event": "mark", "streamSid": STREAM_SID},
        {"event": "mark", "streamSid": STREAM_SID, "mark": "reply-1"},
        {"event": "mark", "streamSid": STREAM_SID, "mark": {}},
        mark(None),
        mark(7),
    ],
)
def test_mark_without_name(msg: dict[str, Any]) -> None:
    refuse(started(), msg, "mark without name")


def test_errors_leave_a_started_stream_usable() -> None:
    stream = started()
    for bad in ("{", wire(media("***")), wire(dtmf("x")), wire(start())):
        with pytest.raises(TwilioProtocolError):
            stream.feed(bad)
    assert stream.state is StreamState.STREAMING
    assert stream.feed(wire(media())) == AudioReceived(FRAME)


# -- anything at all: TwilioProtocolError or an event, never another exception ------------------

JUNK_VALUES: list[Any] = [None, True, False, 0, -1, 2**63 - 1, 1.5, "", "x", "MZ 1", [], [1], {}, {"a": {"b": []}}]


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


_DELETE = object()


def _feed_survives(stream: TwilioStream, text: str | bytes) -> None:
    try:
        stream.feed(text)
    except TwilioProtocolError:
        pass


GOLDEN = {"connected": connected(), "start": start(), "media": media(), "dtmf": dtmf(), "mark": mark(), "stop": stop()}


@pytest.mark.parametrize("name", list(GOLDEN))
def test_every_field_replaced_by_junk_raises_only_protocol_errors(name: str) -> None:
    golden = GOLDEN[name]
    for path in _paths(golden):
        for value in [*JUNK_VALUES, _DELETE]:
            for stream in (TwilioStream(), started()):
                _feed_survives(stream, wire(_replace(golden, path, value)))


@pytest.mark.parametrize("name", list(GOLDEN))
def test_truncated_and_corrupted_messages_raise_only_protocol_errors(name: str) -> None:
    data = wire(GOLDEN[name]).encode()
    rng = random.Random(name)
    for cut in range(len(data)):
        _feed_survives(started(), data[:cut])
    for _ in range(300):
        corrupted = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            corrupted[rng.randrange(len(corrupted))] = rng.randrange(256)
        for stream in (TwilioStream(), started()):
            _feed_survives(stream, bytes(corrupted))


def test_random_text_raises_only_protocol_errors() -> None:
    rng = random.Random(7)
    alphabet = '{}[]":,0123456789.-eE truefalsnl\\u"eventmediastart' + "\x00\ud7ff\u2028"
    for _ in range(2000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        _feed_survives(started(), text)


# -- outbound -------------------------------------------------------------------------------------


def test_media_message_round_trips() -> None:
    stream = started()
    msg = orjson.loads(stream.media(FRAME))
    assert msg == {"event": "media", "streamSid": STREAM_SID, "media": {"payload": FRAME_B64}}
    assert b64decode(msg["media"]["payload"], validate=True) == FRAME


@pytest.mark.parametrize("payload", [b"", b"\x00", b"\xff" * 160, bytes(range(256)) * 4])
def test_media_message_round_trips_any_bytes(payload: bytes) -> None:
    msg = orjson.loads(started().media(payload))
    assert msg["streamSid"] == STREAM_SID
    assert b64decode(msg["media"]["payload"], validate=True) == payload


def test_outbound_media_is_what_twilio_sends_inbound() -> None:
    """What we send parses back through the inbound path (same shape, same stream)."""
    stream = started()
    msg = orjson.loads(stream.media(FRAME))
    msg["media"]["track"] = "inbound"
    assert started().feed(orjson.dumps(msg)) == AudioReceived(FRAME)


@pytest.mark.parametrize("name", ["reply-1 phrase-0", "x", "1.0.8000", "a'b", "n" * 256, "a/b{}[]"])
def test_mark_message_round_trips(name: str) -> None:
    msg = orjson.loads(started().mark(name)[0])
    assert msg == {"event": "mark", "streamSid": STREAM_SID, "mark": {"name": name}}


def test_clear_message_round_trips() -> None:
    assert orjson.loads(started().clear()[0]) == {"event": "clear", "streamSid": STREAM_SID}


@pytest.mark.parametrize("name", ["", 'say "hi"', "back\\slash", "line\nbreak", "nul\x00", "tab\t", "\x1f", "n" * 257])
def test_mark_name_that_would_break_json_is_refused(name: str) -> None:
    with pytest.raises(ValueError) as info:
        started().mark(name)
    assert str(info.value) == f"invalid mark name {name!r}"


def test_mark_name_with_lone_surrogate_is_refused() -> None:
    # A lone surrogate cannot be encoded as UTF-8, so the message could never be sent as text.
    with pytest.raises(ValueError) as info:
        started().mark("a\ud800b")
    assert str(info.value) == "invalid mark name 'a\\ud800b'"


def test_inbound_mark_echo_of_an_outbound_mark() -> None:
    stream = started()
    sent = orjson.loads(stream.mark("r2-p5")[0])
    sent["sequenceNumber"] = "9"
    assert stream.feed(orjson.dumps(sent)) == MarkPlayed("r2-p5")
