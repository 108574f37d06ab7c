"""Browser calls over WebRTC: an aiortc caller against the real server on loopback (Opus and G.711),
the offer endpoint's refusals, and the transport's outbound queue and track on a fake clock."""

from __future__ import annotations

import asyncio

import pytest

from ringline.api.state import CALLS
from ringline.benchmarks.webrtc import browser_call, clip_pcm
from ringline.config.settings import Settings, load_settings
from ringline.engine.audio.clock import FakeClock
from ringline.engine.audio.formats import MULAW_8K, PCM16_16K
from ringline.engine.record import EndReason
from ringline.engine.transports.webrtc.ice import keep_candidates
from ringline.engine.transports.webrtc.media import InboundAudio, ReplyQueue, ReplyTrack
from ringline.engine.transports.webrtc.sdp import SdpError, parse_offer
from tests.api_fixtures import ApiServer, running

pytestmark = pytest.mark.timeout(30)

REPLY = "Sure, here is the answer"


def bench_settings() -> Settings:
    """config/bench.toml (fake providers, one 1 s phrase a reply) with a store of the test's own."""
    data = load_settings("config/bench.toml").model_dump()
    data["api"].pop("data_dir")  # the test's RINGLINE_DATA_DIR
    return Settings.model_validate(data)


async def ended(server: ApiServer, call_id: str):
    return await asyncio.wait_for(server.app[CALLS].wait_finished(call_id), 10)


@pytest.mark.parametrize("codec", ["opus", "PCMU"])
async def test_a_browser_call_is_answered_and_ends_when_the_browser_hangs_up(codec: str) -> None:
    async with running(bench_settings()) as server:
        key = await server.key("calls:write", "calls:read")
        result = await browser_call(server.url, key, [clip_pcm("book_table.wav")], codec=codec)
        assert result.error == ""
        assert result.codec == codec
        assert len(result.latencies_ms) == 1, "the reply's audio never reached the caller"
        assert 0 < result.latencies_ms[0] < 3000
        record = await ended(server, result.call_id)
    assert record.end_reason is EndReason.CALLER_HANGUP
    assert record.transcript[:2] == [
        {"role": "user", "content": "Tell me more."},
        {"role": "assistant", "content": REPLY},
    ]
    assert result.answer["events_url"] == f"/api/v1/calls/{result.call_id}/events?token={result.answer['events_token']}"


async def test_the_events_token_opens_the_calls_events_socket() -> None:
    async with running(bench_settings()) as server:
        key = await server.key("calls:write", "calls:read")
        result = await browser_call(server.url, key, [clip_pcm("book_table.wav")])
        await ended(server, result.call_id)
        types = []
        async with server.session.ws_connect(server.ws_url + result.answer["events_url"]) as ws:
            async for msg in ws:
                types.append(msg.json()["type"])
    assert "latency" in types and types[-1] == "stream_end"


async def test_offers_are_refused_without_the_scopes_or_with_bad_sdp_or_agent() -> None:
    async with running(bench_settings()) as server:
        reader = await server.key("calls:read")
        writer = await server.key("calls:write", "calls:read")
        offer = {"sdp": "v=0\r\n", "type": "offer"}
        async with server.post("/api/v1/webrtc/offer", json=offer) as resp:
            assert resp.status == 401
        async with server.post("/api/v1/webrtc/offer", json=offer, key=reader) as resp:
            assert resp.status == 403
            assert (await resp.json())["error"] == "this API key lacks the scope calls:write"
        async with server.post("/api/v1/webrtc/offer", json={"sdp": "hello", "type": "offer"}, key=writer) as resp:
            assert resp.status == 422
            assert (await resp.json())["error"] == "offer is not SDP: it must start with 'v=0'"
        async with server.post("/api/v1/webrtc/offer", json=offer, key=writer) as resp:
            assert resp.status == 422
            assert (await resp.json())["error"] == "offer has no audio section"
        result = await browser_call(server.url, writer, [], agent="nobody")
        assert result.error == "offer answered 422: unknown agent 'nobody'"
        assert len(server.app[CALLS]) == 0


async def test_agents_lists_the_config_agents() -> None:
    async with running(bench_settings()) as server:
        key = await server.key("calls:write")
        async with server.get("/api/v1/webrtc/agents", key=key) as resp:
            body = await resp.json()
    assert body["data"] == {"default": "default", "agents": [{"id": "default", "name": "default", "source": "config"}]}


async def test_the_playground_page_and_its_files_are_served() -> None:
    async with running(bench_settings()) as server:
        for path, kind in (("/playground", "text/html"), ("/playground/playground.js", "text/javascript")):
            async with server.get(path) as resp:
                assert resp.status == 200
                assert resp.content_type == kind
        async with server.get("/playground/..%2Fwebrtc.py") as resp:
            assert resp.status == 404


# ---- sans-IO pieces ---------------------------------------------------------------------------


def test_marks_come_out_after_the_frames_queued_before_them() -> None:
    queue = ReplyQueue(MULAW_8K)
    queue.push(b"\x01" * 160)
    queue.mark("a")
    queue.push(b"\x02" * 100)  # a partial frame, padded out by the next mark
    queue.mark("b")
    assert queue.pop() == ([], b"\x01" * 160)
    assert queue.pop() == (["a"], b"\x02" * 100 + b"\xff" * 60)
    assert queue.pop() == (["b"], b"\xff" * 160)  # silence once empty
    queue.push(b"\x03" * 160)
    queue.mark("c")
    queue.clear()
    assert queue.pop() == ([], b"\xff" * 160)
    assert queue.queued_frames == 0


async def test_the_track_emits_a_frame_every_20_ms_of_its_clock_and_reports_marks() -> None:
    clock = FakeClock(100.0)
    heard: list[tuple[str, float]] = []
    track = ReplyTrack(PCM16_16K, clock, on_mark=lambda name: heard.append((name, clock.now())))
    track.queue.push(b"\x10\x00" * 320 * 2)
    track.queue.mark("end")
    first = await track.recv()
    assert (first.pts, first.sample_rate, first.samples) == (0, 16000, 320)
    second = asyncio.create_task(track.recv())
    await clock.advance(0.019)
    assert not second.done()
    await clock.advance(0.001)
    assert (await second).pts == 320
    assert heard == []
    third = asyncio.create_task(track.recv())
    await clock.advance(0.02)
    assert (await third).pts == 640
    assert heard == [("end", pytest.approx(100.04))]  # both frames have played


def test_inbound_opus_frames_become_20_ms_frames_of_the_call_format() -> None:
    import av
    import numpy as np

    inbound = InboundAudio(PCM16_16K)
    out: list[bytes] = []
    for _ in range(10):
        stereo = np.full((1, 960 * 2), 1000, dtype=np.int16)
        frame = av.AudioFrame.from_ndarray(stereo, format="s16", layout="stereo")
        frame.sample_rate = 48000
        out += inbound.feed(frame)
    assert len(out) >= 8 and all(len(f) == 640 for f in out)


def test_sdp_refusals_and_loopback_candidates() -> None:
    with pytest.raises(SdpError, match="^offer is not SDP: it must start with 'v=0'$"):
        parse_offer("hello")
    sdp = (
        "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
        "a=candidate:1 1 udp 2122260223 192.0.2.2 50000 typ host\r\n"
        "a=candidate:2 1 udp 2122260223 127.0.0.1 50001 typ host\r\n"
        "a=candidate:3 1 udp 2122260223 0a1b.local 50002 typ host\r\n"
    )
    kept = keep_candidates(sdp, ("127.0.0.1",))
    assert "127.0.0.1 50001" in kept and "192.0.2.2" not in kept and ".local" not in kept
    assert keep_candidates(sdp, ()) == sdp == keep_candidates(sdp, ("127.0.0.1", "192.0.2.2"))
