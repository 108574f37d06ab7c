"""Plivo Audio Streaming codec: golden messages (tests/fixtures/media/plivo) in the shape Plivo
documents them, every malformed input with its exact error, checkpoints as marks, the stream
parameters from ``extra_headers``, and outbound messages that round-trip."""

from __future__ import annotations

import copy
import random
from base64 import b64decode, b64encode
from pathlib import Path
from typing import Any

import orjson
import pytest

from ringline.benchmarks.clips import load_clip
from ringline.engine.audio.formats import MULAW_8K, PCM16_8K, PCM16_16K
from ringline.engine.transports.events import AudioReceived, CallStarted, CallStopped, DtmfReceived, MarkPlayed
from ringline.engine.transports.plivo.codec import (
    MAX_EXTRA_HEADERS,
    MAX_PAYLOAD_BYTES,
    PlivoProtocolError,
    PlivoStream,
    StreamState,
    extra_headers,
)

FIXTURES = Path(__file__).parent / "fixtures" / "media" / "plivo"
CONVERSATION = sorted(FIXTURES.glob("[0-9][0-9]-*.json"))
STREAM_ID = "20170ada-f610-433b-8758-c02a2aab3662"
CALL_ID = "12345678-1234-1234-1234-123456789abc"
CLIP = load_clip("book_table.wav")
FRAME, NEXT_FRAME = CLIP[1600:1760], CLIP[1760:1920]  # what the golden media messages carry
FRAME_B64 = b64encode(FRAME).decode("ascii")
PARAMETERS = {"agent": "default", "from": "14155550100", "to": "14155550199", "var_order": "A1042"}


def golden(name: str) -> dict[str, Any]:
    """A fixture by name: ``out_playAudio``, ``02-media``, or a conversation step's name (``start``)."""
    exact = FIXTURES / f"{name}.json"
    (path,) = [exact] if exact.exists() else FIXTURES.glob(f"[0-9][0-9]-{name}.json")
    return orjson.loads(path.read_bytes())


def start(extra: Any = ..., **start_fields: Any) -> dict[str, Any]:
    msg = golden("start")
    msg["start"].update(start_fields)
    if extra is not ...:
        msg["extra_headers"] = extra
    return msg


def media(payload: str = FRAME_B64, *, stream_id: Any = STREAM_ID, **media_fields: Any) -> dict[str, Any]:
    msg = golden("02-media")
    msg["media"].update(payload=payload, **media_fields)
    msg["streamId"] = stream_id
    return msg


def dtmf(digit: Any = "5") -> dict[str, Any]:
    msg = golden("dtmf")
    msg["dtmf"]["digit"] = digit
    return msg


def played(name: Any = "reply-1 phrase-0") -> dict[str, Any]:
    return {**golden("playedStream"), "name": name}


def wire(msg: dict[str, Any]) -> str:
    return orjson.dumps(msg).decode()


def started(fmt: dict[str, Any] | None = None) -> PlivoStream:
    stream = PlivoStream()
    stream.feed(wire(start(mediaFormat=fmt) if fmt else start()))
    return stream


def refuse(stream: PlivoStream, msg: dict[str, Any] | str | bytes, message: str) -> None:
    text = wire(msg) if isinstance(msg, dict) else msg
    with pytest.raises(PlivoProtocolError) as info:
        stream.feed(text)
    assert str(info.value) == message


# -- the golden conversation ----------------------------------------------------------------------


def test_golden_conversation_in_order() -> None:
    assert [p.name for p in CONVERSATION] == [
        "01-start.json",
        "02-media.json",
        "03-media.json",
        "04-dtmf.json",
        "05-playedStream.json",
        "06-clearedAudio.json",
        "07-stop.json",
    ]
    stream = PlivoStream()
    events = [stream.feed(path.read_bytes()) for path in CONVERSATION]
    assert events == [
        CallStarted(CALL_ID, STREAM_ID, PARAMETERS),
        AudioReceived(FRAME),
        AudioReceived(NEXT_FRAME),
        DtmfReceived("5"),
        MarkPlayed("reply-1 phrase-0"),
        None,  # clearedAudio: the acknowledgement of a clearAudio, nothing to do
        CallStopped(),
    ]
    assert stream.state is StreamState.STOPPED


def test_golden_outbound_messages() -> None:
    stream = started()
    assert orjson.loads(stream.media(FRAME)) == golden("out_playAudio")
    assert [orjson.loads(m) for m in stream.mark("reply-1 phrase-0")] == [golden("out_checkpoint")]
    assert [orjson.loads(m) for m in stream.clear()] == [golden("out_clearAudio")]


def test_a_checkpoint_comes_back_as_played_stream() -> None:
    stream = started()
    (sent,) = stream.mark("r2-p5")
    checkpoint = orjson.loads(sent)
    answer = {"event": "playedStream", "streamId": checkpoint["streamId"], "name": checkpoint["name"]}
    assert stream.feed(orjson.dumps(answer)) == MarkPlayed("r2-p5")


def test_outbound_play_audio_carries_what_inbound_media_would() -> None:
    msg = orjson.loads(started().media(FRAME))
    assert b64decode(msg["media"]["payload"], validate=True) == FRAME


# -- start --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("encoding", "rate", "fmt", "content_type"),
    [
        ("audio/x-mulaw", 8000, MULAW_8K, "audio/x-mulaw"),
        ("audio/x-l16", 8000, PCM16_8K, "audio/x-l16"),
        ("audio/x-l16", 16000, PCM16_16K, "audio/x-l16"),
    ],
)
def test_start_sets_the_wire_format_and_play_audio_follows_it(
    encoding: str, rate: int, fmt: Any, content_type: str
) -> None:
    stream = started({"encoding": encoding, "sampleRate": rate})
    assert stream.format == fmt
    sent = orjson.loads(stream.media(b"\x01\x02"))
    assert sent["media"] == {"contentType": content_type, "sampleRate": rate, "payload": "AQI="}


@pytest.mark.parametrize(
    ("fmt", "message"),
    [
        ({"encoding": "audio/x-mulaw", "sampleRate": 16000}, "unsupported media format 'audio/x-mulaw' 16000 Hz"),
        ({"encoding": "audio/x-alaw", "sampleRate": 8000}, "unsupported media format 'audio/x-alaw' 8000 Hz"),
        ({"encoding": "audio/x-l16", "sampleRate": 24000}, "unsupported media format 'audio/x-l16' 24000 Hz"),
        ({"encoding": "audio/x-l16", "sampleRate": "8000"}, "unsupported media format 'audio/x-l16' '8000' Hz"),
        ({"encoding": "audio/x-mulaw", "sampleRate": 8000.0}, "unsupported media format 'audio/x-mulaw' 8000.0 Hz"),
        ({"encoding": ["audio/x-mulaw"], "sampleRate": 8000}, "unsupported media format ['audio/x-mulaw'] 8000 Hz"),
        ({"sampleRate": 8000}, "unsupported media format None 8000 Hz"),
    ],
)
def test_start_with_an_unsupported_media_format(fmt: dict[str, Any], message: str) -> None:
    stream = PlivoStream()
    refuse(stream, start(mediaFormat=fmt), message)
    assert stream.state is StreamState.AWAITING_START


@pytest.mark.parametrize("fmt", [None, "audio/x-mulaw", [8000]])
def test_start_without_media_format_object(fmt: Any) -> None:
    refuse(PlivoStream(), start(mediaFormat=fmt), "start without mediaFormat object")


@pytest.mark.parametrize("sid", ["a b", 'a"b', "a\\b", "", "s" * 65, "a/b", "é", 12, None])
def test_start_with_invalid_stream_id(sid: Any) -> None:
    stream = PlivoStream()
    refuse(stream, start(streamId=sid), f"start with invalid streamId {sid!r}")
    assert stream.stream_id is None


def test_start_falls_back_to_a_top_level_stream_id() -> None:
    msg = start()
    del msg["start"]["streamId"]
    msg["streamId"] = STREAM_ID
    event = PlivoStream().feed(wire(msg))
    assert isinstance(event, CallStarted) and event.stream_id == STREAM_ID


@pytest.mark.parametrize("cid", ["a b", 'a"}', "", "c" * 65, 7, None])
def test_start_with_invalid_call_id(cid: Any) -> None:
    refuse(PlivoStream(), start(callId=cid), f"start with invalid callId {cid!r}")


@pytest.mark.parametrize("body", [None, "x", [], 1])
def test_start_without_start_object(body: Any) -> None:
    refuse(PlivoStream(), {"event": "start", "start": body}, "start without start object")


def test_second_start() -> None:
    stream = started()
    refuse(stream, start(), "start in state streaming")
    assert (stream.state, stream.stream_id) == (StreamState.STREAMING, STREAM_ID)


@pytest.mark.parametrize(
    ("extra", "params"),
    [
        ("agent=support,var_name=Jane", {"agent": "support", "var_name": "Jane"}),
        ("userId=12345;sessionId=abc-xyz", {"userId": "12345", "sessionId": "abc-xyz"}),  # Plivo's example
        (" agent = support , , to=1415=x ", {"agent": "support", "to": "1415=x"}),
        ("", {}),
        ("{}", {}),
        ('{"agent": "support", "retries": 3}', {"agent": "support", "retries": "3"}),
        ({"agent": "support", "vip": True}, {"agent": "support", "vip": "True"}),
        (None, {}),
    ],
)
def test_extra_headers_become_parameters(extra: Any, params: dict[str, str]) -> None:
    event = PlivoStream().feed(wire(start(extra)))
    assert event == CallStarted(CALL_ID, STREAM_ID, params)


def test_start_without_extra_headers_has_no_parameters() -> None:
    msg = start()
    del msg["extra_headers"]
    assert PlivoStream().feed(wire(msg)) == CallStarted(CALL_ID, STREAM_ID, {})


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("agent", "extra_headers item 'agent' is not key=value"),
        ("agent=x,=y", "extra_headers item '=y' is not key=value"),
        ("{nope", "extra_headers is not valid JSON"),
        ("[1]", "extra_headers item '[1]' is not key=value"),
        (["agent=x"], "extra_headers is not an object or key=value text"),
        (5, "extra_headers is not an object or key=value text"),
        ("{" + "1" * MAX_EXTRA_HEADERS, f"extra_headers over {MAX_EXTRA_HEADERS} characters"),
    ],
)
def test_malformed_extra_headers(extra: Any, message: str) -> None:
    refuse(PlivoStream(), start(extra), message)


def test_extra_headers_reads_on_its_own() -> None:
    assert extra_headers("a=1;b=2,c=3") == {"a": "1", "b": "2", "c": "3"}
    with pytest.raises(PlivoProtocolError, match="^extra_headers is not an object or key=value text$"):
        extra_headers(3.5)


# -- inbound messages after start -------------------------------------------------------------------


@pytest.mark.parametrize("digit", list("0123456789*#ABCD"))
def test_dtmf_every_valid_digit(digit: str) -> None:
    assert started().feed(wire(dtmf(digit))) == DtmfReceived(digit)


@pytest.mark.parametrize("digit", ["x", "12", "", "a", None, 1, ["1"]])
def test_dtmf_with_invalid_digit(digit: Any) -> None:
    refuse(started(), dtmf(digit), f"dtmf with invalid digit {digit!r}")


def test_played_stream_without_stream_id_is_for_this_stream() -> None:
    msg = played()
    del msg["streamId"]
    assert started().feed(wire(msg)) == MarkPlayed("reply-1 phrase-0")


def test_legacy_played_event_is_a_played_stream() -> None:
    assert started().feed(wire({**played(), "event": "played"})) == MarkPlayed("reply-1 phrase-0")


@pytest.mark.parametrize("name", [None, 7, ["x"]])
def test_played_stream_without_name(name: Any) -> None:
    refuse(started(), played(name), "playedStream without name")


def test_played_stream_for_another_stream() -> None:
    refuse(
        started(),
        {**played(), "streamId": "other"},
        f"playedStream for streamId 'other', expected {STREAM_ID!r}",
    )


@pytest.mark.parametrize("text", ["", "{", '{"event": "media",}', b"\xff\xfe{}", "[" * 5000])
def test_invalid_json(text: str | bytes) -> None:
    refuse(PlivoStream(), text, "invalid JSON")


@pytest.mark.parametrize("text", ["[]", '"start"', "42", "null"])
def test_json_that_is_not_an_object(text: str) -> None:
    refuse(PlivoStream(), text, "message is not a JSON object")


@pytest.mark.parametrize("msg", [{}, {"streamId": STREAM_ID}, {"event": None}, {"event": 3}])
def test_missing_event(msg: dict[str, Any]) -> None:
    refuse(started(), msg, "missing event")


@pytest.mark.parametrize("event", ["Media", "mark", "connected", "playAudio", "checkpoint"])
def test_unknown_events(event: str) -> None:
    refuse(started(), {"event": event, "streamId": STREAM_ID}, f"unknown event {event!r}")


def test_binary_messages_are_refused() -> None:
    with pytest.raises(PlivoProtocolError, match="^unexpected binary message$"):
        started().feed_binary(b"\x00\x01")


@pytest.mark.parametrize(
    ("name", "event"),
    [("02-media", "media"), ("dtmf", "dtmf"), ("playedStream", "playedStream"), ("clearedAudio", "clearedAudio")],
)
def test_events_before_start(name: str, event: str) -> None:
    stream = PlivoStream()
    refuse(stream, golden(name), f"{event} in state awaiting_start")
    assert stream.state is StreamState.AWAITING_START


@pytest.mark.parametrize(("name", "event"), [("02-media", "media"), ("stop", "stop"), ("start", "start")])
def test_events_after_stop(name: str, event: str) -> None:
    stream = started()
    stream.feed(wire(golden("stop")))
    refuse(stream, golden(name), f"{event} in state stopped")


@pytest.mark.parametrize("other", ["00000000-0000-0000-0000-000000000000", None, 5])
def test_media_for_another_stream(other: Any) -> None:
    refuse(started(), media(stream_id=other), f"media for streamId {other!r}, expected {STREAM_ID!r}")


def test_media_without_stream_id_is_for_this_stream() -> None:
    msg = media()
    del msg["streamId"]
    assert started().feed(wire(msg)) == AudioReceived(FRAME)


@pytest.mark.parametrize("body", [None, "AAAA", {"track": "inbound"}, {"payload": None}, {"payload": ["AAAA"]}])
def test_media_without_payload(body: Any) -> None:
    refuse(started(), {"event": "media", "streamId": STREAM_ID, "media": body}, "media without payload")


@pytest.mark.parametrize("payload", ["AAA", "AA=A", "****", "AAAA\n", "AA AA"])
def test_media_payload_not_base64(payload: str) -> None:
    refuse(started(), media(payload), "media payload is not valid base64")


@pytest.mark.parametrize("size", [MAX_PAYLOAD_BYTES + 1, MAX_PAYLOAD_BYTES + 3, 2 * MAX_PAYLOAD_BYTES])
def test_media_payload_over_max(size: int) -> None:
    refuse(started(), media(b64encode(bytes(size)).decode()), f"media payload over {MAX_PAYLOAD_BYTES} bytes")


def test_oversized_payload_is_refused_before_decoding_it() -> None:
    refuse(started(), media("!" * (2 * MAX_PAYLOAD_BYTES)), f"media payload over {MAX_PAYLOAD_BYTES} bytes")


def test_media_payload_of_exactly_max_bytes_is_accepted() -> None:
    audio = bytes(range(256)) * (MAX_PAYLOAD_BYTES // 256) + bytes(MAX_PAYLOAD_BYTES % 256)
    assert started().feed(wire(media(b64encode(audio).decode()))) == AudioReceived(audio)


@pytest.mark.parametrize("track", ["inbound_track", None, 1])
def test_media_on_wrong_track(track: Any) -> None:
    refuse(started(), media(track=track), f"media on track {track!r}")


def test_outbound_track_media_is_ignored() -> None:
    assert started().feed(wire(media(track="outbound"))) is None


def test_l16_media_passes_through_little_endian() -> None:
    stream = started({"encoding": "audio/x-l16", "sampleRate": 16000})
    pcm = bytes([0x01, 0x02, 0xFF, 0x7F])
    assert stream.feed(wire(media(b64encode(pcm).decode()))) == AudioReceived(pcm)
    refuse(stream, media(b64encode(b"\x01\x02\x03").decode()), "L16 media payload of odd length 3")


def test_errors_leave_a_started_stream_usable() -> None:
    stream = started()
    for bad in ("{", wire(media("***")), wire(dtmf("x")), wire(start())):
        with pytest.raises(PlivoProtocolError):
            stream.feed(bad)
    assert stream.state is StreamState.STREAMING
    assert stream.feed(wire(media())) == AudioReceived(FRAME)


# -- anything at all: PlivoProtocolError or an event, never another exception -----------------------

JUNK: list[Any] = [None, True, 0, -1, 2**63 - 1, 1.5, "", "x", "a b", "{", "a=b;c", [], [1], {}, {"a": {"b": []}}]
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


def _feed_survives(stream: PlivoStream, text: str | bytes) -> None:
    try:
        stream.feed(text)
    except PlivoProtocolError:
        pass


@pytest.mark.parametrize("path", CONVERSATION, ids=lambda p: p.stem)
def test_every_field_replaced_by_junk_raises_only_protocol_errors(path: Path) -> None:
    golden_msg = orjson.loads(path.read_bytes())
    for field in _paths(golden_msg):
        for value in [*JUNK, _DELETE]:
            for stream in (PlivoStream(), started()):
                _feed_survives(stream, wire(_replace(golden_msg, field, value)))


@pytest.mark.parametrize("path", CONVERSATION, ids=lambda p: p.stem)
def test_truncated_and_corrupted_messages_raise_only_protocol_errors(path: Path) -> None:
    data = path.read_bytes()
    rng = random.Random(path.name)
    for cut in range(0, len(data), 3):
        _feed_survives(started(), data[:cut])
    for _ in range(200):
        corrupted = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            corrupted[rng.randrange(len(corrupted))] = rng.randrange(256)
        for stream in (PlivoStream(), started()):
            _feed_survives(stream, bytes(corrupted))


# -- outbound -------------------------------------------------------------------------------------


@pytest.mark.parametrize("payload", [b"", b"\x00", b"\xff" * 160, bytes(range(256)) * 4])
def test_play_audio_round_trips_any_bytes(payload: bytes) -> None:
    msg = orjson.loads(started().media(payload))
    assert msg["event"] == "playAudio" and msg["streamId"] == STREAM_ID
    assert b64decode(msg["media"]["payload"], validate=True) == payload


@pytest.mark.parametrize("name", ["reply-1 phrase-0", "x", "a'b", "n" * 256, "a/b{}[]"])
def test_checkpoint_round_trips(name: str) -> None:
    assert orjson.loads(started().mark(name)[0]) == {"event": "checkpoint", "streamId": STREAM_ID, "name": name}


@pytest.mark.parametrize("name", ["", 'say "hi"', "back\\slash", "line\nbreak", "café", "a\ud800b", "n" * 257])
def test_checkpoint_name_that_would_break_json_is_refused(name: str) -> None:
    with pytest.raises(ValueError) as info:
        started().mark(name)
    assert str(info.value) == f"invalid mark name {name!r}"
