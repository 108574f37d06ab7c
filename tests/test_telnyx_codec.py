"""Telnyx Media Streaming codec: golden messages (tests/fixtures/media/telnyx) in the shape Telnyx
documents them, every malformed input with its exact error, the reorder window for chunks that
arrive out of order, L16's byte order, and outbound messages that round-trip."""

from __future__ import annotations

import copy
import random
from base64 import b64decode, b64encode
from pathlib import Path
from typing import Any

import orjson
import pytest

from ringline.benchmarks.clips import load_clip
from ringline.engine.audio.formats import ALAW_8K, MULAW_8K, PCM16_8K, PCM16_16K
from ringline.engine.transports.events import AudioReceived, CallStarted, CallStopped, DtmfReceived, MarkPlayed
from ringline.engine.transports.telnyx.codec import (
    MAX_PAYLOAD_BYTES,
    StreamState,
    TelnyxProtocolError,
    TelnyxStream,
    swap16,
)
from ringline.engine.transports.telnyx.reorder import REORDER_WINDOW, ChunkReorder

FIXTURES = Path(__file__).parent / "fixtures" / "media" / "telnyx"
CONVERSATION = sorted(FIXTURES.glob("[0-9][0-9]-*.json"))
STREAM_ID = "32DE0DEA-53CB-4B21-89A4-9E1819C043BC"
CALL_CONTROL_ID = "v3:T02llQxIyaRkhfRKxgAP8nY511EhFLizdvdUKJiSw8d6A9BborherQ"
CLIP = load_clip("book_table.wav")
FRAME, NEXT_FRAME, THIRD_FRAME = CLIP[1600:1760], CLIP[1760:1920], CLIP[1920:2080]  # the golden media
FRAME_B64 = b64encode(FRAME).decode("ascii")
PARAMETERS = {
    "from": "+13122010094",
    "to": "+13122123456",
    "agent": "default",  # from client_state, base64 of {"agent": ..., "var_first_name": ...}
    "var_first_name": "Jane",
    "var_order": "A-1042",  # from custom_parameters
}


def golden(name: str) -> dict[str, Any]:
    """A fixture by name: ``out_media``, ``04-media``, or a conversation step's name (``start``)."""
    exact = FIXTURES / f"{name}.json"
    (path,) = [exact] if exact.exists() else FIXTURES.glob(f"[0-9][0-9]-{name}.json")
    return orjson.loads(path.read_bytes())


def start(**start_fields: Any) -> dict[str, Any]:
    msg = golden("start")
    msg["start"].update(start_fields)
    return msg


def media(payload: str = FRAME_B64, *, stream_id: str = STREAM_ID, **media_fields: Any) -> dict[str, Any]:
    msg = golden("03-media")
    msg["media"].update(payload=payload, **media_fields)
    msg["stream_id"] = stream_id
    return msg


def chunk(number: int, payload: bytes) -> dict[str, Any]:
    return media(b64encode(payload).decode(), chunk=str(number))


def dtmf(digit: Any = "1") -> dict[str, Any]:
    msg = golden("dtmf")
    msg["dtmf"]["digit"] = digit
    return msg


def mark(name: Any = "reply-1 phrase-0") -> dict[str, Any]:
    msg = golden("mark")
    msg["mark"]["name"] = name
    return msg


def wire(msg: dict[str, Any]) -> str:
    return orjson.dumps(msg).decode()


def started(**start_fields: Any) -> TelnyxStream:
    stream = TelnyxStream()
    stream.feed(wire(golden("connected")))
    stream.feed(wire(start(**start_fields)))
    return stream


def refuse(stream: TelnyxStream, msg: dict[str, Any] | str | bytes, message: str) -> None:
    text = wire(msg) if isinstance(msg, dict) else msg
    with pytest.raises(TelnyxProtocolError) as info:
        stream.feed(text)
    assert str(info.value) == message


# -- the golden conversation ----------------------------------------------------------------------


def test_golden_conversation_in_order() -> None:
    assert [p.name for p in CONVERSATION] == [
        "01-connected.json",
        "02-start.json",
        "03-media.json",
        "04-media.json",
        "05-media.json",
        "06-dtmf.json",
        "07-mark.json",
        "08-error.json",
        "09-stop.json",
    ]
    stream = TelnyxStream()
    events = [stream.feed(path.read_bytes()) for path in CONVERSATION]
    assert events == [
        None,
        CallStarted(CALL_CONTROL_ID, STREAM_ID, PARAMETERS),
        AudioReceived(FRAME),  # chunk 1
        None,  # chunk 3 overtook chunk 2: held ...
        AudioReceived(NEXT_FRAME + THIRD_FRAME),  # ... until chunk 2 comes, then both in order
        DtmfReceived("1"),
        MarkPlayed("reply-1 phrase-0"),
        None,  # Telnyx reporting on what we sent: logged and kept
        CallStopped(),
    ]
    assert stream.errors == [{"code": 100003, "title": "Malformed frame", "detail": "The frame could not be parsed."}]
    assert stream.state is StreamState.STOPPED
    assert (stream.reorder.lost, stream.reorder.late) == (0, 0)


def test_golden_outbound_messages() -> None:
    stream = started()
    assert orjson.loads(stream.media(FRAME)) == golden("out_media")
    assert [orjson.loads(m) for m in stream.mark("reply-1 phrase-0")] == [golden("out_mark")]
    assert [orjson.loads(m) for m in stream.clear()] == [golden("out_clear")]


def test_outbound_mark_comes_back_as_the_mark_event() -> None:
    stream = started()
    (sent,) = stream.mark("r2-p5")
    echo = {**orjson.loads(sent), "sequence_number": "9", "stream_id": STREAM_ID}
    assert stream.feed(orjson.dumps(echo)) == MarkPlayed("r2-p5")


def test_outbound_media_is_what_telnyx_sends_inbound() -> None:
    stream = started()
    msg = orjson.loads(stream.media(FRAME))
    msg["media"].update(track="inbound", chunk="2")
    msg["stream_id"] = STREAM_ID
    assert started().feed(orjson.dumps(msg)) == AudioReceived(FRAME)


# -- start --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("encoding", "rate", "fmt"),
    [("PCMU", 8000, MULAW_8K), ("PCMA", 8000, ALAW_8K), ("L16", 8000, PCM16_8K), ("L16", 16000, PCM16_16K)],
)
def test_start_sets_the_wire_format(encoding: str, rate: int, fmt: Any) -> None:
    stream = started(media_format={"encoding": encoding, "sample_rate": rate, "channels": 1})
    assert stream.format == fmt


@pytest.mark.parametrize("encoding", ["G722", "OPUS", "AMR-WB"])
def test_start_with_an_unsupported_codec_says_so(encoding: str) -> None:
    stream = TelnyxStream()
    refuse(
        stream,
        start(media_format={"encoding": encoding, "sample_rate": 16000, "channels": 1}),
        f"media encoding {encoding!r} is not supported: stream PCMU, PCMA or L16",
    )
    assert stream.state is StreamState.AWAITING_START


@pytest.mark.parametrize(
    ("fmt", "message"),
    [
        (
            {"encoding": "PCMU", "sample_rate": 16000, "channels": 1},
            "unsupported media format 'PCMU' 16000 Hz 1 channels",
        ),
        (
            {"encoding": "PCMA", "sample_rate": 8000, "channels": 2},
            "unsupported media format 'PCMA' 8000 Hz 2 channels",
        ),
        (
            {"encoding": "L16", "sample_rate": 48000, "channels": 1},
            "unsupported media format 'L16' 48000 Hz 1 channels",
        ),
        (
            {"encoding": "L16", "sample_rate": "8000", "channels": 1},
            "unsupported media format 'L16' '8000' Hz 1 channels",
        ),
        (
            {"encoding": "pcmu", "sample_rate": 8000, "channels": 1},
            "unsupported media format 'pcmu' 8000 Hz 1 channels",
        ),
        (
            {"encoding": "PCMU", "sample_rate": True, "channels": 1},
            "unsupported media format 'PCMU' True Hz 1 channels",
        ),
        ({"sample_rate": 8000}, "unsupported media format None 8000 Hz 1 channels"),
        (
            {"encoding": "PCMU", "sample_rate": 8000, "channels": True},
            "unsupported media format 'PCMU' 8000 Hz True channels",
        ),
        ({"encoding": ["PCMU"], "sample_rate": 8000}, "unsupported media format ['PCMU'] 8000 Hz 1 channels"),
    ],
)
def test_start_with_an_unsupported_media_format(fmt: dict[str, Any], message: str) -> None:
    refuse(TelnyxStream(), start(media_format=fmt), message)


def test_channels_default_to_mono() -> None:
    assert started(media_format={"encoding": "PCMA", "sample_rate": 8000}).format == ALAW_8K


@pytest.mark.parametrize("fmt", [None, "PCMU", ["PCMU"], 8000])
def test_start_without_media_format_object(fmt: Any) -> None:
    refuse(TelnyxStream(), start(media_format=fmt), "start without media_format object")


def test_start_without_media_format() -> None:
    msg = start()
    del msg["start"]["media_format"]
    refuse(TelnyxStream(), msg, "start without media_format object")


def test_start_parameters_without_client_state_or_custom_parameters() -> None:
    msg = start()
    del msg["start"]["client_state"], msg["start"]["custom_parameters"]
    event = TelnyxStream().feed(wire(msg))
    assert event == CallStarted(CALL_CONTROL_ID, STREAM_ID, {"from": "+13122010094", "to": "+13122123456"})


@pytest.mark.parametrize(
    "client_state",
    [None, "", "aGF2ZSBhIG5pY2UgZGF5ID1d", "not base64!", b64encode(b"[1, 2]").decode(), b64encode(b"{").decode()],
)
def test_client_state_that_is_not_a_json_object_is_the_applications_own(client_state: Any) -> None:
    event = TelnyxStream().feed(wire(start(client_state=client_state)))
    assert isinstance(event, CallStarted)
    assert event.parameters == {"from": "+13122010094", "to": "+13122123456", "var_order": "A-1042"}


def test_custom_parameters_win_over_client_state_and_start_numbers() -> None:
    state = b64encode(orjson.dumps({"agent": "sales", "retries": 3})).decode()
    custom = [{"name": "agent", "value": "support"}, {"name": "to", "value": "+15550001111"}]
    event = TelnyxStream().feed(wire(start(client_state=state, custom_parameters=custom)))
    assert isinstance(event, CallStarted)
    assert event.parameters == {"from": "+13122010094", "to": "+15550001111", "agent": "support", "retries": "3"}


@pytest.mark.parametrize("custom", ["agent=x", 5, True])
def test_custom_parameters_not_an_object(custom: Any) -> None:
    refuse(TelnyxStream(), start(custom_parameters=custom), "custom_parameters is not an object")


@pytest.mark.parametrize("item", [{"name": "agent"}, {"value": "x"}, {"name": 1, "value": "x"}, "agent", None])
def test_custom_parameters_list_item_without_name_and_value(item: Any) -> None:
    refuse(TelnyxStream(), start(custom_parameters=[item]), f"custom_parameters item {item!r} is not a name and value")


@pytest.mark.parametrize(("field", "value"), [("from", 13122010094), ("to", ["+1"]), ("client_state", 7)])
def test_start_with_non_string_fields(field: str, value: Any) -> None:
    refuse(TelnyxStream(), start(**{field: value}), f"start with invalid {field} {value!r}")


def test_start_with_null_numbers_leaves_them_out() -> None:
    event = TelnyxStream().feed(wire(start(**{"from": None, "to": None})))
    assert isinstance(event, CallStarted) and "from" not in event.parameters and "to" not in event.parameters


@pytest.mark.parametrize("sid", ["32DE 0DEA", 'a"b', "a\\b", "", "S" * 65, "a/b", "é", 12, None])
def test_start_with_invalid_stream_id(sid: Any) -> None:
    msg = start()
    msg["stream_id"] = sid
    stream = TelnyxStream()
    refuse(stream, msg, f"start with invalid stream_id {sid!r}")
    assert stream.state is StreamState.AWAITING_START and stream.stream_id is None


def test_start_falls_back_to_a_stream_id_inside_start() -> None:
    msg = start(stream_id=STREAM_ID)
    del msg["stream_id"]
    event = TelnyxStream().feed(wire(msg))
    assert isinstance(event, CallStarted) and event.stream_id == STREAM_ID


@pytest.mark.parametrize("ccid", ["v3:a b", 'v3:"}', "", "v" * 129, 7, None, "v3:a/b"])
def test_start_with_invalid_call_control_id(ccid: Any) -> None:
    refuse(TelnyxStream(), start(call_control_id=ccid), f"start with invalid call_control_id {ccid!r}")


@pytest.mark.parametrize("body", [None, "x", [], 1])
def test_start_without_start_object(body: Any) -> None:
    refuse(TelnyxStream(), {"event": "start", "stream_id": STREAM_ID, "start": body}, "start without start object")


def test_second_start() -> None:
    stream = started()
    refuse(stream, start(), "start in state streaming")
    assert (stream.state, stream.stream_id) == (StreamState.STREAMING, STREAM_ID)


# -- inbound messages after start -------------------------------------------------------------------


def test_connected_yields_nothing_and_keeps_awaiting_start() -> None:
    stream = TelnyxStream()
    assert stream.feed(wire(golden("connected"))) is None
    assert stream.state is StreamState.AWAITING_START


@pytest.mark.parametrize("digit", list("0123456789*#ABCD"))
def test_dtmf_every_valid_digit(digit: str) -> None:
    assert started().feed(wire(dtmf(digit))) == DtmfReceived(digit)


@pytest.mark.parametrize("digit", ["x", "12", "", "a", " ", None, 1, ["1"]])
def test_dtmf_with_invalid_digit(digit: Any) -> None:
    refuse(started(), dtmf(digit), f"dtmf with invalid digit {digit!r}")


@pytest.mark.parametrize("body", [None, "1", {}, {"mark": "x"}, {"name": 7}])
def test_mark_without_name(body: Any) -> None:
    msg = mark()
    msg["mark"] = body
    refuse(started(), msg, "mark without name")


@pytest.mark.parametrize("payload", [None, "code 1", [1]])
def test_error_without_payload_object(payload: Any) -> None:
    refuse(started(), {"event": "error", "payload": payload, "stream_id": STREAM_ID}, "error without payload object")


def test_error_before_start_is_recorded_too() -> None:
    stream = TelnyxStream()
    assert stream.feed(wire(golden("error"))) is None
    assert stream.errors[0]["code"] == 100003


@pytest.mark.parametrize("text", ["", "{", '{"event": "media",}', b"\xff\xfe{}", '"\\ud800"', "[" * 5000])
def test_invalid_json(text: str | bytes) -> None:
    refuse(TelnyxStream(), text, "invalid JSON")


@pytest.mark.parametrize("text", ["[]", '"start"', "42", "null", "true"])
def test_json_that_is_not_an_object(text: str) -> None:
    refuse(TelnyxStream(), text, "message is not a JSON object")


@pytest.mark.parametrize("msg", [{}, {"stream_id": STREAM_ID}, {"event": None}, {"event": 3}, {"event": ["media"]}])
def test_missing_event(msg: dict[str, Any]) -> None:
    refuse(started(), msg, "missing event")


def test_unknown_event_is_case_sensitive() -> None:
    refuse(started(), {**media(), "event": "Media"}, "unknown event 'Media'")
    refuse(started(), {"event": "streamSid"}, "unknown event 'streamSid'")


def test_binary_messages_are_refused() -> None:
    with pytest.raises(TelnyxProtocolError, match="^unexpected binary message$"):
        started().feed_binary(b"\x00\x01")


@pytest.mark.parametrize(
    ("name", "event"), [("03-media", "media"), ("dtmf", "dtmf"), ("mark", "mark"), ("stop", "stop")]
)
def test_events_before_start(name: str, event: str) -> None:
    stream = TelnyxStream()
    refuse(stream, golden(name), f"{event} in state awaiting_start")
    assert stream.state is StreamState.AWAITING_START


@pytest.mark.parametrize(
    ("name", "event"), [("03-media", "media"), ("mark", "mark"), ("stop", "stop"), ("start", "start")]
)
def test_events_after_stop(name: str, event: str) -> None:
    stream = started()
    stream.feed(wire(golden("stop")))
    refuse(stream, golden(name), f"{event} in state stopped")


def test_media_for_another_stream() -> None:
    other = "00000000-0000-0000-0000-000000000000"
    refuse(started(), media(stream_id=other), f"media for stream_id {other!r}, expected {STREAM_ID!r}")


def test_message_without_stream_id() -> None:
    msg = mark()
    del msg["stream_id"]
    refuse(started(), msg, f"mark for stream_id None, expected {STREAM_ID!r}")


@pytest.mark.parametrize("body", [None, "AAAA", {"track": "inbound"}, {"payload": None}, {"payload": ["AAAA"]}])
def test_media_without_payload(body: Any) -> None:
    refuse(started(), {"event": "media", "stream_id": STREAM_ID, "media": body}, "media without payload")


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


def test_outbound_track_media_is_ignored_and_does_not_disturb_the_order() -> None:
    stream = started()
    assert stream.feed(wire(chunk(1, FRAME))) == AudioReceived(FRAME)
    assert stream.feed(wire(media(FRAME_B64, track="outbound", chunk="90"))) is None
    assert stream.feed(wire(chunk(2, NEXT_FRAME))) == AudioReceived(NEXT_FRAME)


@pytest.mark.parametrize("number", ["", "-1", "1.5", "x", "²", "1" * 19, -1, 1.0, True, [], 10**18])
def test_media_with_invalid_chunk(number: Any) -> None:
    refuse(started(), media(chunk=number), f"media with invalid chunk {number!r}")


def test_media_without_chunk_passes_straight_through() -> None:
    msg = media()
    del msg["media"]["chunk"]
    assert started().feed(wire(msg)) == AudioReceived(FRAME)


def test_integer_chunk_numbers_are_accepted() -> None:
    stream = started()
    assert stream.feed(wire(media(chunk=4))) == AudioReceived(FRAME)
    assert stream.feed(wire(media(chunk="5"))) == AudioReceived(FRAME)


def test_l16_is_big_endian_on_the_wire_and_little_endian_inside() -> None:
    stream = started(media_format={"encoding": "L16", "sample_rate": 16000, "channels": 1})
    little = bytes([0x01, 0x02, 0xFF, 0x7F, 0x00, 0x80])  # 513, 32767, -32768
    big = bytes([0x02, 0x01, 0x7F, 0xFF, 0x80, 0x00])
    assert stream.feed(wire(media(b64encode(big).decode()))) == AudioReceived(little)
    assert b64decode(orjson.loads(stream.media(little))["media"]["payload"]) == big


def test_l16_payload_of_odd_length() -> None:
    stream = started(media_format={"encoding": "L16", "sample_rate": 8000, "channels": 1})
    refuse(stream, media(b64encode(b"\x00\x01\x02").decode()), "L16 media payload of odd length 3")


def test_swap16_round_trips_and_drops_an_odd_byte() -> None:
    data = bytes(range(200))
    assert swap16(swap16(data)) == data
    assert swap16(b"\x01\x02\x03") == b"\x02\x01"


def test_errors_leave_a_started_stream_usable() -> None:
    stream = started()
    for bad in ("{", wire(media("***")), wire(dtmf("x")), wire(start())):
        with pytest.raises(TelnyxProtocolError):
            stream.feed(bad)
    assert stream.state is StreamState.STREAMING
    assert stream.feed(wire(media())) == AudioReceived(FRAME)


# -- chunks out of order ------------------------------------------------------------------------


def frames(n: int) -> list[bytes]:
    return [bytes([i]) * 160 for i in range(n)]


def feed_chunks(stream: TelnyxStream, numbers: list[int], audio: list[bytes]) -> list[bytes | None]:
    out = []
    for number in numbers:
        event = stream.feed(wire(chunk(number, audio[number])))
        assert event is None or isinstance(event, AudioReceived)
        out.append(None if event is None else event.payload)
    return out


def test_in_order_chunks_come_straight_out() -> None:
    audio = frames(6)
    assert feed_chunks(started(), [1, 2, 3, 4, 5], audio) == audio[1:6]


def test_a_swapped_pair_comes_out_in_order_in_one_event() -> None:
    audio = frames(6)
    stream = started()
    assert feed_chunks(stream, [1, 3, 2, 4], audio) == [audio[1], None, audio[2] + audio[3], audio[4]]
    assert (stream.reorder.lost, stream.reorder.late) == (0, 0)


def test_a_missing_chunk_is_given_up_after_the_window() -> None:
    audio = frames(10)
    stream = started()
    numbers = [1, *range(3, 3 + REORDER_WINDOW + 1), 3 + REORDER_WINDOW + 1]
    out = feed_chunks(stream, numbers, audio)
    assert out[: REORDER_WINDOW + 1] == [audio[1]] + [None] * REORDER_WINDOW
    held = b"".join(audio[3 : 3 + REORDER_WINDOW + 1])
    assert out[REORDER_WINDOW + 1] == held  # chunk 2 lost: the held ones come out, in order
    assert out[-1] == audio[3 + REORDER_WINDOW + 1]
    assert stream.reorder.lost == 1


def test_a_chunk_arriving_after_it_was_given_up_is_dropped() -> None:
    audio = frames(10)
    stream = started()
    feed_chunks(stream, [1, 3, 4, 5, 6], audio)
    assert feed_chunks(stream, [2, 7], audio) == [None, audio[7]]
    assert (stream.reorder.lost, stream.reorder.late) == (1, 1)


def test_duplicates_are_dropped() -> None:
    audio = frames(6)
    stream = started()
    assert feed_chunks(stream, [1, 1, 3, 3, 2], audio) == [audio[1], None, None, None, audio[2] + audio[3]]
    assert stream.reorder.late == 2


def test_a_jump_back_far_behind_is_renumbering_and_is_followed() -> None:
    reorder = ChunkReorder(window=3, resync_gap=100)
    assert reorder.push(500, b"a") == [b"a"]
    assert reorder.push(502, b"c") == []
    assert reorder.push(1, b"x") == [b"c", b"x"]
    assert reorder.push(2, b"y") == [b"y"]


def test_reordering_shuffled_chunks_loses_nothing_within_the_window() -> None:
    rng = random.Random(3)
    audio = frames(201)
    numbers = list(range(201))
    for i in range(1, 201, REORDER_WINDOW):  # after the first, shuffled in blocks the window covers
        block = numbers[i : i + REORDER_WINDOW]
        rng.shuffle(block)
        numbers[i : i + REORDER_WINDOW] = block
    assert numbers != sorted(numbers)
    stream = started()
    out = b"".join(p for p in feed_chunks(stream, numbers, audio) if p is not None)
    assert out == b"".join(audio)
    assert (stream.reorder.lost, stream.reorder.late, stream.reorder.held) == (0, 0, {})


def test_reorder_hold_is_bounded() -> None:
    reorder = ChunkReorder(window=3)
    reorder.push(0, b"0")
    for n in range(2, 1000, 2):  # every other chunk missing
        reorder.push(n, b"n")
        assert len(reorder.held) <= 3
    assert reorder.lost == 499 - 3  # all but those still held


# -- anything at all: TelnyxProtocolError or an event, never another exception ----------------------

JUNK: list[Any] = [None, True, 0, -1, 2**63 - 1, 1.5, "", "x", "a b", [], [1], {}, {"a": {"b": []}}]
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


def _feed_survives(stream: TelnyxStream, text: str | bytes) -> None:
    try:
        stream.feed(text)
    except TelnyxProtocolError:
        pass


@pytest.mark.parametrize("path", CONVERSATION, ids=lambda p: p.stem)
def test_every_field_replaced_by_junk_raises_only_protocol_errors(path: Path) -> None:
    golden_msg = orjson.loads(path.read_bytes())
    for field in _paths(golden_msg):
        for value in [*JUNK, _DELETE]:
            for stream in (TelnyxStream(), started()):
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
        for stream in (TelnyxStream(), started()):
            _feed_survives(stream, bytes(corrupted))


# -- outbound -------------------------------------------------------------------------------------


@pytest.mark.parametrize("payload", [b"", b"\x00", b"\xff" * 160, bytes(range(256)) * 4])
def test_media_message_round_trips_any_bytes(payload: bytes) -> None:
    msg = orjson.loads(started().media(payload))
    assert msg == {"event": "media", "media": {"payload": b64encode(payload).decode()}}


@pytest.mark.parametrize("name", ["reply-1 phrase-0", "x", "a'b", "n" * 256, "a/b{}[]"])
def test_mark_message_round_trips(name: str) -> None:
    assert orjson.loads(started().mark(name)[0]) == {"event": "mark", "mark": {"name": name}}


@pytest.mark.parametrize("name", ["", 'say "hi"', "back\\slash", "line\nbreak", "café", "a\ud800b", "n" * 257])
def test_mark_name_that_would_break_json_is_refused(name: str) -> None:
    with pytest.raises(ValueError) as info:
        started().mark(name)
    assert str(info.value) == f"invalid mark name {name!r}"
