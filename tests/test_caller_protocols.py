"""The caller simulator's provider wires: golden shapes, a sans-IO cross-check against the
server's own codecs (two independent readings of each provider's documents), and one real call
per protocol against the real server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest
from aiohttp import web

from ringline.api.app import CALLS, make_app
from ringline.api.media import CODECS
from ringline.benchmarks.call import run_call
from ringline.benchmarks.caller import media_socket_url
from ringline.benchmarks.clips import load_clip
from ringline.benchmarks.protocols import PROTOCOLS, wire_factory
from ringline.benchmarks.script import CallerScript, EndReason, Utterance
from ringline.benchmarks.session import CallerSession
from ringline.benchmarks.wire import CallerWire, ServerClear, ServerMark, ServerMedia, WireError, split_frames
from ringline.benchmarks.wire_exotel import ExotelWire
from ringline.benchmarks.wire_plivo import PlivoWire
from ringline.benchmarks.wire_telnyx import TelnyxWire
from ringline.benchmarks.wire_vonage import VonageWire, l16_frames
from ringline.config.settings import load_settings
from ringline.engine.audio import ulaw_decode
from ringline.engine.record import EndReason as ServerEnd
from ringline.engine.transports.events import AudioReceived, CallStarted, CallStopped, DtmfReceived, MarkPlayed

pytestmark = pytest.mark.timeout(20)

PARAMS = {"agent": "default", "from": "+14155550100", "to": "+14155550199", "var_name": "Ada"}
SPEECH = load_clip("book_table.wav")[:1600]  # 0.2 s: ten frames
WIRE_FORMAT = {"twilio": "mulaw", "telnyx": "mulaw", "plivo": "mulaw", "vonage": "l16_16k", "exotel": "pcm16"}


def new_wire(protocol: str, **kw: object) -> CallerWire:
    return wire_factory(protocol, **kw)(None)  # type: ignore[arg-type]


def raw(frame: str | bytes) -> bytes:
    """A wire frame's audio (the JSON providers' frames are base64 text)."""
    return base64.b64decode(frame) if isinstance(frame, str) else frame


def texts(messages) -> list[dict]:
    return [json.loads(m) for m in messages]


def feed(codec, message):
    return codec.feed(message) if isinstance(message, str) else codec.feed_binary(message)


def started(protocol: str, wire: CallerWire):
    """The server's codec for ``protocol`` fed the wire's opening messages; (codec, CallStarted)."""
    codec = CODECS[protocol]()
    events = [e for m in wire.open(PARAMS) if (e := feed(codec, m)) is not None]
    assert len(events) == 1 and isinstance(events[0], CallStarted)
    return codec, events[0]


# -- golden shapes -----------------------------------------------------------------------------


def test_telnyx_messages_are_snake_case_with_string_sequence_numbers() -> None:
    wire = TelnyxWire("S1", "v2:abc")
    connected, start = texts(wire.open(PARAMS))
    assert connected == {"event": "connected", "version": "1.0.0"}
    assert start["sequence_number"] == "1" and start["stream_id"] == "S1"
    body = start["start"]
    assert body["call_control_id"] == "v2:abc"
    assert (body["from"], body["to"]) == ("+14155550100", "+14155550199")
    assert body["custom_parameters"] == {"agent": "default", "var_name": "Ada"}
    assert body["media_format"] == {"encoding": "PCMU", "sample_rate": 8000, "channels": 1}
    (media,) = texts(wire.media(2, "AAAA"))
    assert media == {
        "event": "media",
        "sequence_number": "2",
        "stream_id": "S1",
        "media": {"track": "inbound", "chunk": "3", "timestamp": "40", "payload": "AAAA"},
    }
    assert texts(wire.dtmf("7"))[0]["dtmf"] == {"digit": "7"}
    assert texts(wire.stop())[0]["stop"] == {"user_id": wire.user_id, "call_control_id": "v2:abc"}


def test_plivo_opens_with_start_and_extra_headers_and_hangs_up_by_closing() -> None:
    wire = PlivoWire("S1", "C1", epoch_ms=1_700_000_000_000)
    (start,) = texts(wire.open(PARAMS))
    assert start["event"] == "start" and start["sequenceNumber"] == 1
    assert start["start"]["callId"] == "C1" and start["start"]["streamId"] == "S1"
    assert start["start"]["mediaFormat"] == {"encoding": "audio/x-mulaw", "sampleRate": 8000}
    assert start["extra_headers"] == "agent=default;from=+14155550100;to=+14155550199;var_name=Ada"
    (media,) = texts(wire.media(1, "AAAA"))
    assert media["sequenceNumber"] == 2 and media["streamId"] == "S1"
    assert media["media"] == {"track": "inbound", "timestamp": "1700000000020", "chunk": 2, "payload": "AAAA"}
    assert texts(wire.mark_played("m1")) == [
        {"event": "playedStream", "sequenceNumber": 3, "streamId": "S1", "name": "m1"}
    ]
    assert texts(wire.cleared()) == [{"event": "clearedAudio", "sequenceNumber": 4, "streamId": "S1"}]
    assert wire.stop() == ()


def test_vonage_opens_with_headers_then_speaks_binary_16k_frames() -> None:
    wire = VonageWire("0f1e2d3c-aaaa-bbbb-cccc-000000000001")
    (connected,) = texts(wire.open(PARAMS))
    assert connected == {
        "event": "websocket:connected",
        "content-type": "audio/l16;rate=16000",
        "uuid": "0f1e2d3c-aaaa-bbbb-cccc-000000000001",
        **PARAMS,
    }
    frames = wire.frames(SPEECH)
    assert frames is l16_frames(SPEECH)  # converted once per clip
    assert len(frames) == 10 and all(len(f) == 640 for f in frames)
    assert wire.media(0, frames[0]) == (frames[0],)
    assert wire.silence == bytes(640)
    assert texts(wire.dtmf("5")) == [{"event": "websocket:dtmf", "digit": "5", "duration": 260}]
    assert wire.stop() == ()


def test_exotel_sends_100_ms_chunks_of_pcm_and_flushes_them_before_stop() -> None:
    wire = ExotelWire("S1", "C1")
    connected, start = texts(wire.open(PARAMS))
    assert connected == {"event": "connected"}
    body = start["start"]
    assert (body["stream_sid"], body["call_sid"]) == ("S1", "C1")
    assert (body["from"], body["to"]) == ("+14155550100", "+14155550199")
    assert body["custom_parameters"] == {"agent": "default", "var_name": "Ada"}
    assert body["media_format"] == {"encoding": "audio/x-raw", "sample_rate": "8000", "bit_rate": "16"}
    frames = wire.frames(SPEECH)
    assert frames[0] == ulaw_decode(split_frames(SPEECH)[0]) and len(frames[0]) == 320
    out = [m for k in range(7) for m in wire.media(k, frames[k])]
    (chunk,) = texts(out)  # frames 0-4 in one message; 5 and 6 held
    assert chunk["media"]["chunk"] == "1" and chunk["media"]["timestamp"] == "0"
    assert base64.b64decode(chunk["media"]["payload"]) == b"".join(frames[:5])
    tail, stop = texts(wire.stop())
    assert tail["media"]["timestamp"] == "100" and base64.b64decode(tail["media"]["payload"]) == b"".join(frames[5:7])
    assert stop["event"] == "stop" and stop["stop"]["call_sid"] == "C1"


@pytest.mark.parametrize(
    ("wire", "message", "error"),
    [
        (TelnyxWire("S1", "v2:a"), '{"event":"media","stream_id":"S2","media":{"payload":""}}',
         "'media' message for stream_id 'S2', not 'S1'"),
        (TelnyxWire("S1", "v2:a"), '{"event":"mark","mark":{}}', "mark message's mark without name string"),
        (TelnyxWire("S1", "v2:a"), b"\x00", "binary message (RTP mode sends JSON text)"),
        (PlivoWire("S1", "C1"),
         '{"event":"playAudio","media":{"contentType":"audio/x-l16","sampleRate":16000,"payload":""}}',
         "playAudio with unsupported contentType 'audio/x-l16' sampleRate 16000"),
        (PlivoWire("S1", "C1"), '{"event":"media"}', "unknown event 'media'"),
        (VonageWire("U1"), b"\x00" * 320, "binary frame of 320 bytes, not 640 (20 ms of L16 16 kHz)"),
        (VonageWire("U1"), '{"action":"notify","payload":"x"}', "notify message without payload object"),
        (ExotelWire("S1", "C1"), '{"event":"clear"}', "'clear' message for stream_sid None, not 'S1'"),
        (ExotelWire("S1", "C1"), '{"event":"media","stream_sid":"S1","media":{"payload":"AAAA"}}',
         "media chunk of 3 bytes, not a multiple of 320"),
    ],
)  # fmt: skip
def test_malformed_server_messages_raise_exact_errors(wire: CallerWire, message: str | bytes, error: str) -> None:
    with pytest.raises(WireError) as info:
        wire.parse(message)
    assert str(info.value) == error


def test_telnyx_reorder_swaps_adjacent_frames_and_the_server_puts_them_back() -> None:
    wire = TelnyxWire("S1", "v2:abc", reorder_rate=1.0)
    codec, _ = started("telnyx", wire)
    frames = wire.frames(SPEECH)
    sent = [m for k, frame in enumerate(frames) for m in wire.media(k, frame)]
    chunks = [json.loads(m)["media"]["chunk"] for m in sent]
    assert chunks == ["1", "3", "2", "5", "4", "7", "6", "9", "8"] and wire.reordered == 4
    assert texts(wire.stop())[0]["media"]["chunk"] == "10"  # the held frame goes out before stop
    sent.append(
        f'{{"event":"media","sequence_number":"99","stream_id":"S1","media":{{"chunk":"10","payload":"{frames[9]}"}}}}'
    )
    heard = b"".join(e.payload for m in sent if isinstance(e := codec.feed(m), AudioReceived))
    assert heard == b"".join(split_frames(SPEECH))
    assert codec.reorder.lost == 0


# -- cross-check against the server's codecs (sans-IO) ------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_the_server_codec_reads_the_call_parameters_and_ids(protocol: str) -> None:
    wire = new_wire(protocol)
    _, call = started(protocol, wire)
    assert call.call_id == wire.call_id
    assert {k: call.parameters.get(k) for k in PARAMS} == PARAMS


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_caller_audio_and_dtmf_reach_the_server_codec_intact(protocol: str) -> None:
    wire = new_wire(protocol)
    codec, _ = started(protocol, wire)
    frames = wire.frames(SPEECH)
    sent = [m for k, frame in enumerate(frames) for m in wire.media(k, frame)]
    sent += wire.dtmf("9")
    events = [e for m in sent if (e := feed(codec, m)) is not None]
    audio = b"".join(e.payload for e in events if isinstance(e, AudioReceived))
    assert audio == b"".join(map(raw, frames))  # same bytes in the wire format (mu-law, PCM16 or L16 16 kHz)
    assert events[-1] == DtmfReceived("9")
    assert codec.format.sample_rate == (16000 if protocol == "vonage" else 8000)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_server_audio_marks_and_clears_round_trip(protocol: str) -> None:
    wire = new_wire(protocol)
    codec, _ = started(protocol, wire)
    reply = load_clip("thanks.wav")[:4000]  # 0.5 s of mu-law
    pcm = ulaw_decode(reply)
    payload = {"mulaw": reply, "pcm16": pcm, "l16_16k": b"".join(l16_frames(reply))}[WIRE_FORMAT[protocol]]
    step = codec.format.bytes_for(20)
    out = [m for i in range(0, len(payload), step) if (m := codec.media(payload[i : i + step])) is not None]
    out += codec.mark("r1-end")
    parsed = [wire.parse(m) for m in out]
    media = [e for e in parsed if isinstance(e, ServerMedia)]
    assert sum(len(e.payload) for e in media) == len(reply)  # 8 kHz samples: the duration heard
    assert parsed[-1] == ServerMark(parsed[-1].name)
    echo = [feed(codec, m) for m in wire.mark_played(parsed[-1].name)]
    assert echo == [MarkPlayed("r1-end")]
    (clear,) = [wire.parse(m) for m in codec.clear()]
    assert clear == ServerClear()
    assert [feed(codec, m) for m in wire.cleared()] == [None] * len(wire.cleared())
    stop = [feed(codec, m) for m in wire.stop()]
    assert stop == ([] if protocol in ("plivo", "vonage") else [CallStopped()])


def test_providers_that_drop_marks_at_a_clear_acknowledge_the_clear_instead() -> None:
    wire = PlivoWire("S1", "C1")
    call = CallerSession(CallerScript((Utterance(SPEECH),), pause_ms=0.0), wire=wire)
    call.open(0.0)
    play = {"event": "playAudio", "streamId": "S1", "media": {"contentType": "audio/x-mulaw", "sampleRate": 8000}}
    play["media"]["payload"] = base64.b64encode(b"\x20" * 8000).decode()  # 1 s
    call.receive(json.dumps(play), 0.0)
    assert not call.receive(json.dumps({"event": "checkpoint", "streamId": "S1", "name": "m1"}), 0.01)
    assert call.receive(json.dumps({"event": "clearAudio", "streamId": "S1"}), 0.5)
    sent = texts(call.poll(0.5))
    assert [m["event"] for m in sent if m["event"] != "media"] == ["clearedAudio"]
    (mark,) = call.finish().marks
    assert mark.name == "m1" and mark.echoed_at is None


# -- one real call per protocol -----------------------------------------------------------------


@pytest.fixture
async def server_url():
    app = make_app(load_settings("config/bench.toml"))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield app, f"ws://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_scripted_call_completes_a_turn_over_each_protocol(server_url, protocol: str) -> None:
    app, base = server_url
    script = CallerScript(
        (Utterance(load_clip("book_table.wav")[:8000], "book"),),  # 1 s of speech
        pause_ms=200.0,
        reply_timeout_s=5.0,
        max_call_s=15.0,
        custom_parameters={"from": "+14155550100", "var_name": "Ada"},
    )
    url = media_socket_url(base, protocol)
    assert url.endswith(f"/media/{protocol}")
    result = await run_call(url, script, wire_factory=wire_factory(protocol))
    assert result.error is None and result.ended_by is EndReason.HANGUP
    assert result.protocol_errors == []
    (turn,) = result.turns
    assert turn.answered and turn.latency_ms is not None and 0 < turn.latency_ms < 3000
    assert turn.reply.audio_s == pytest.approx(1.0, abs=0.021)  # bench replies are 1 s
    assert result.marks and all(m.echoed_at is not None for m in result.marks)
    record = await asyncio.wait_for(app[CALLS].wait_finished(result.call_sid), 10)
    assert [t["role"] for t in record.transcript] == ["user", "assistant"]
    assert record.end_reason is ServerEnd.CALLER_HANGUP  # Plivo and Vonage: by closing the socket
