"""The Deepgram STT adapter, running the real deepgram-sdk against the local fake ``/v1/listen``."""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import numpy as np
import orjson
import pytest
from aiohttp import web

from ringline.api.app import CALLS, make_app
from ringline.benchmarks.caller import CallerScript, Utterance, run_call
from ringline.benchmarks.clips import CLIP_TEXTS, load_clip
from ringline.benchmarks.vendors.deepgram import FakeDeepgram
from ringline.config.providers import DeepgramSttConfig
from ringline.config.settings import Settings, load_settings
from ringline.engine.audio.clock import LoopClock
from ringline.engine.audio.formats import ALAW_8K, MULAW_8K, PCM16_16K, AudioFormat, Encoding
from ringline.engine.audio.g711 import encode
from ringline.engine.clients import HttpClients
from ringline.engine.errors import ProviderError
from ringline.engine.stt.base import Transcript
from ringline.engine.stt.deepgram import DeepgramStt, DeepgramSttSession, SessionState
from ringline.engine.stt.deepgram_protocol import ReplayBuffer, Send, next_message, parse_message, read_results

pytestmark = pytest.mark.timeout(30)

SECRET = "dg-secret-5f0c1e2a9b7d4c3e8a6f"
"""A key the fake does not accept (the auth test looks for it in errors and logs)."""


# -- audio ------------------------------------------------------------------------------------


def tone(hz: float, ms: int, fmt: AudioFormat = MULAW_8K, amplitude: int = 8000) -> bytes:
    t = np.arange(fmt.sample_rate * ms // 1000) / fmt.sample_rate
    pcm = (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.int16).tobytes()
    return encode(pcm, fmt.encoding)


def silence(ms: int, fmt: AudioFormat = MULAW_8K) -> bytes:
    return encode(bytes(fmt.bytes_for(ms) // fmt.encoding.sample_width * 2), fmt.encoding)


def words_of_tones(pitches: list[int], fmt: AudioFormat = MULAW_8K) -> bytes:
    """Tone bursts of 200 ms with 100 ms gaps: one "word" each for the fake in ``tone_words`` mode."""
    return b"".join(tone(hz, 200, fmt) + silence(100, fmt) for hz in pitches)


def frames(audio: bytes, fmt: AudioFormat = MULAW_8K) -> list[bytes]:
    size = fmt.bytes_for(20)
    return [audio[i : i + size] for i in range(0, len(audio), size)]


async def send_all(session: DeepgramSttSession, audio: bytes) -> None:
    for frame in frames(audio, session.format):
        await session.send(frame)


# -- fixtures ---------------------------------------------------------------------------------


class Transcripts:
    """Reads a session's transcripts in a task, as the call does."""

    def __init__(self, session: DeepgramSttSession) -> None:
        self.items: list[Transcript] = []
        self.error: BaseException | None = None
        self._changed = asyncio.Condition()
        self._task = asyncio.create_task(self._read(session))

    async def _read(self, session: DeepgramSttSession) -> None:
        try:
            async for transcript in session:
                self.items.append(transcript)
                async with self._changed:
                    self._changed.notify_all()
        except ProviderError as exc:
            self.error = exc
            async with self._changed:
                self._changed.notify_all()

    @property
    def finals(self) -> list[Transcript]:
        return [t for t in self.items if t.is_final]

    async def wait_until(self, predicate: Callable[[], object]) -> None:
        async with asyncio.timeout(10), self._changed:
            await self._changed.wait_for(predicate)

    async def stop(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


@pytest.fixture
async def fakes() -> AsyncIterator[Callable[..., Awaitable[FakeDeepgram]]]:
    started: list[FakeDeepgram] = []

    async def start(**kw: Any) -> FakeDeepgram:
        fake = FakeDeepgram(**kw)
        await fake.start()
        started.append(fake)
        return fake

    yield start
    for fake in started:
        await fake.close()


def config(fake: FakeDeepgram, **kw: Any) -> DeepgramSttConfig:
    kw.setdefault("api_key", fake.api_key)
    return DeepgramSttConfig(provider="deepgram", base_url=fake.url, **kw)


@pytest.fixture
async def sessions() -> AsyncIterator[Callable[..., Awaitable[tuple[DeepgramSttSession, Transcripts]]]]:
    opened: list[tuple[DeepgramSttSession, Transcripts]] = []

    async def open_session(
        cfg: DeepgramSttConfig, fmt: AudioFormat = MULAW_8K, **kw: Any
    ) -> tuple[DeepgramSttSession, Transcripts]:
        session = await DeepgramStt(cfg, LoopClock(), **kw).open(fmt)
        pair = (session, Transcripts(session))
        opened.append(pair)
        return pair

    yield open_session
    for session, reader in opened:
        await reader.stop()
        await session.aclose()


# -- the replay buffer (sans-IO) --------------------------------------------------------------


def _plan(buffer: ReplayBuffer, finalize_at: int | None) -> list[bytes | str]:
    return [item if isinstance(item, bytes) else item.value for item in buffer.replay(finalize_at)]


def test_replay_starts_where_the_last_final_ended_with_an_unanswered_finalize_in_its_place() -> None:
    buffer = ReplayBuffer(limit=1000)
    for chunk in (b"aaaa", b"bbbb", b"cccc"):
        buffer.append(chunk)
    buffer.ack(6)  # a final ended inside the second chunk
    assert _plan(buffer, None) == [b"bb", b"cccc"]
    assert _plan(buffer, 10) == [b"bb", b"cc", "Finalize", b"cc"]
    assert _plan(buffer, 12) == [b"bb", b"cccc", "Finalize"]
    assert _plan(buffer, 2) == ["Finalize", b"bb", b"cccc"]  # its audio is covered: ask at once
    buffer.ack(12)
    assert _plan(buffer, None) == []
    buffer.ack(8)  # finals never move backwards
    assert buffer.acked == 12


def test_replay_keeps_at_most_its_limit_and_says_once_when_it_starts_dropping() -> None:
    buffer = ReplayBuffer(limit=8)
    assert [buffer.append(c) for c in (b"aaaa", b"bbbb", b"cccc", b"dddd")] == [False, False, True, False]
    assert buffer.acked == 8  # the dropped audio counts as covered
    assert _plan(buffer, None) == [b"cccc", b"dddd"]
    buffer.ack(12)  # a final: the next overflow is news again
    assert [buffer.append(c) for c in (b"eeee", b"ffff")] == [False, True]
    assert _plan(buffer, None) == [b"eeee", b"ffff"]


def test_queued_audio_goes_out_in_messages_of_at_most_the_limit_and_controls_alone() -> None:
    outbox: deque[bytes | Send] = deque([b"aa", b"bb", b"cc", Send.FINALIZE, b"dd"])
    assert next_message(outbox, 4) == b"aabb"
    assert next_message(outbox, 4) == b"cc"  # a control message ends the run of audio
    assert next_message(outbox, 4) is Send.FINALIZE
    assert next_message(outbox, 4) == b"dd" and not outbox


def test_control_messages_are_the_json_the_sdk_sends() -> None:
    assert [orjson.loads(item.text) for item in Send] == [
        {"type": "Finalize"},
        {"type": "KeepAlive"},
        {"type": "CloseStream"},
    ]


def test_results_are_read_from_the_json_with_times_shifted_to_the_session() -> None:
    final = {
        "type": "Results",
        "start": 1.0,
        "duration": 0.5,
        "is_final": True,
        "from_finalize": True,
        "channel": {
            "alternatives": [
                {
                    "transcript": "hi there",
                    "words": [
                        {"word": "hi", "punctuated_word": "Hi", "start": 1.0, "end": 1.2},
                        {"word": "there", "start": 1.2, "end": 1.5},
                    ],
                }
            ]
        },
    }
    transcript, covered = read_results(final, origin=8000, bytes_per_s=8000.0)  # this socket began at 1 s
    assert covered == 8000 + 12000
    assert transcript is not None and transcript.is_final and transcript.text == "hi there"
    assert [(w.text, w.start, w.end) for w in transcript.words] == [("Hi", 2.0, 2.2), ("there", 2.2, 2.5)]
    silent_interim = {
        "type": "Results",
        "start": 0.0,
        "duration": 0.3,
        "channel": {"alternatives": [{"transcript": ""}]},
    }
    assert read_results(silent_interim, 0, 8000.0) == (None, None)
    with pytest.raises(KeyError):  # a final without its times: the session fails loudly, as with the SDK model
        read_results({"type": "Results", "is_final": True, "channel": {"alternatives": []}}, 0, 8000.0)


def test_messages_that_are_not_json_objects_are_skipped() -> None:
    assert parse_message('{"type": "Metadata"}') == {"type": "Metadata"}
    assert parse_message("not json") is None
    assert parse_message("[1, 2]") is None


# -- the fake's own wire surface --------------------------------------------------------------


async def test_the_fake_answers_errors_and_control_messages_as_deepgram_does(fakes) -> None:
    fake = await fakes()
    listen = fake.url.replace("ws", "http", 1) + "/v1/listen?encoding=mulaw&sample_rate=8000"
    async with aiohttp.ClientSession() as http:
        async with http.get(listen, headers={"Authorization": "Token wrong"}) as refused:
            assert refused.status == 401
            assert refused.headers["dg-error"] == "Invalid credentials."
            body = await refused.json()
            assert (body["err_code"], body["err_msg"]) == ("INVALID_AUTH", "Invalid credentials.")
        async with http.ws_connect(listen, headers={"Authorization": f"Token {fake.api_key}"}) as ws:
            await ws.send_str("not json")
            error = await ws.receive_json(timeout=5)
            assert (error["type"], error["variant"], error["message"]) == ("Error", "SchemaError", "not json")
            await ws.send_str('{"type": "CloseStream"}')
            metadata = await ws.receive_json(timeout=5)
            assert metadata["type"] == "Metadata" and metadata["channels"] == 1
            closing = await ws.receive(timeout=5)
            assert closing.type is aiohttp.WSMsgType.CLOSE and closing.data == 1000
    assert [c.type for c in fake.connections[0].control] == ["?", "CloseStream"]


async def test_the_fake_closes_a_socket_idle_for_its_timeout_with_1011(fakes) -> None:
    fake = await fakes(idle_timeout_s=0.3)
    listen = fake.url.replace("ws", "http", 1) + "/v1/listen?encoding=mulaw&sample_rate=8000"
    headers = {"Authorization": f"Token {fake.api_key}"}
    async with aiohttp.ClientSession() as http, http.ws_connect(listen, headers=headers) as ws:
        loop = asyncio.get_running_loop()
        for _ in range(4):  # input every 0.2 s keeps it open
            await asyncio.sleep(0.2)
            await ws.send_str('{"type": "KeepAlive"}')
        quiet_from = loop.time()
        closing = await ws.receive(timeout=5)
        assert closing.type is aiohttp.WSMsgType.CLOSE and closing.data == 1011
        assert 0.25 <= loop.time() - quiet_from < 1.0
    assert fake.connections[0].closed == "idle"


# -- format and parameters --------------------------------------------------------------------


async def test_native_mulaw_and_the_exact_config_params_reach_deepgram(fakes, sessions) -> None:
    fake = await fakes(keep_audio=True)
    cfg = config(
        fake,
        model="nova-2-phonecall",
        language="en-GB",
        interim_results=True,
        punctuate=False,
        smart_format=True,
        endpointing_ms=None,
        utterance_end_ms=1500,
    )
    session, _ = await sessions(cfg, MULAW_8K)
    assert session.format == MULAW_8K
    audio = tone(440, 100) + silence(60)
    await send_all(session, audio)
    await fake.wait_until(lambda: fake.connections[0].audio_bytes == len(audio))
    conn = fake.connections[0]
    assert conn.params == {
        "model": "nova-2-phonecall",
        "language": "en-GB",
        "encoding": "mulaw",
        "sample_rate": "8000",
        "channels": "1",
        "interim_results": "true",
        "punctuate": "false",
        "smart_format": "true",
        "endpointing": "false",
        "utterance_end_ms": "1500",
    }
    assert conn.headers["Authorization"] == f"Token {fake.api_key}"
    assert conn.headers["User-Agent"].startswith("deepgram-sdk/")
    assert bytes(conn.audio) == audio  # as is: no resampling, no transcoding


@pytest.mark.parametrize(
    ("fmt", "encoding", "rate"),
    [
        (ALAW_8K, "alaw", "8000"),
        (PCM16_16K, "linear16", "16000"),
        (AudioFormat(Encoding.PCM16, 24000), "linear16", "24000"),
    ],
)
async def test_alaw_and_linear16_at_any_rate_go_out_as_offered(fakes, sessions, fmt, encoding, rate) -> None:
    fake = await fakes(keep_audio=True, tone_words=True)
    session, reader = await sessions(config(fake), fmt)
    assert session.format == fmt
    audio = words_of_tones([500, 800], fmt)
    await send_all(session, audio)
    await session.finalize()
    await reader.wait_until(lambda: reader.finals)
    conn = fake.connections[0]
    assert (conn.params["encoding"], conn.params["sample_rate"]) == (encoding, rate)
    assert bytes(conn.audio) == audio
    assert reader.finals[0].text == "500 800"  # the fake decoded it as the format said


# -- results ----------------------------------------------------------------------------------


async def test_interims_while_speaking_then_a_final_with_word_timings_after_finalize(fakes, sessions) -> None:
    fake = await fakes(transcripts=["Book a table for two."], interim_every_ms=200, final_latency_ms=50)
    session, reader = await sessions(config(fake, endpointing_ms=None))
    await send_all(session, tone(300, 800) + silence(100))
    await reader.wait_until(lambda: len(reader.items) >= 2)
    assert all(not t.is_final for t in reader.items)
    assert reader.items[0].text == "Book a"  # the fake's interims: the first half of the words
    assert not reader.finals  # endpointing is off: no final until asked
    await session.finalize()
    await reader.wait_until(lambda: reader.finals)
    final = reader.finals[0]
    assert final.text == "Book a table for two."
    assert [w.text for w in final.words] == ["Book", "a", "table", "for", "two."]
    starts = [w.start for w in final.words]
    assert starts == sorted(starts) and final.words[0].start == pytest.approx(0.0, abs=0.02)
    assert final.words[-1].end == pytest.approx(0.8, abs=0.02)
    conn = fake.connections[0]
    assert [c.type for c in conn.control] == ["Finalize"]
    assert conn.finals[0]["from_finalize"] is True


async def test_deepgram_endpointing_finals_come_without_finalize(fakes, sessions) -> None:
    fake = await fakes(transcripts=["What time do you open?"])
    session, reader = await sessions(config(fake, endpointing_ms=200, utterance_end_ms=1000))
    await send_all(session, tone(300, 500) + silence(1200))
    await reader.wait_until(lambda: reader.finals)
    assert reader.finals[0].text == "What time do you open?"
    conn = fake.connections[0]
    assert conn.finals[0]["speech_final"] is True
    assert conn.control == []
    await fake.wait_until(lambda: conn.sent[-1]["type"] == "UtteranceEnd")
    assert conn.sent[-1]["last_word_end"] == pytest.approx(0.5, abs=0.02)
    await session.finalize()  # its answer comes after the UtteranceEnd, on the same ordered stream
    await reader.wait_until(lambda: len(reader.finals) == 2)
    assert [(t.text, t.is_final) for t in reader.items] == [
        ("What time", False),
        ("What time do you open?", True),
        ("", True),  # nothing left to finalize; the UtteranceEnd made no transcript
    ]


# -- keepalive --------------------------------------------------------------------------------


async def test_keepalive_in_silence_keeps_the_socket_past_the_idle_timeout(fakes, sessions) -> None:
    fake = await fakes(idle_timeout_s=0.5)
    session, _ = await sessions(config(fake, keepalive_s=0.1))
    audio = silence(200)
    await send_all(session, audio)
    await fake.wait_until(lambda: len(fake.connections[0].controls("KeepAlive")) >= 8)  # ~0.8 s: twice the timeout
    conn = fake.connections[0]
    assert conn.closed is None and len(fake.connections) == 1
    assert all(c.after_bytes == len(audio) for c in conn.controls("KeepAlive"))  # only once the audio stopped
    assert session.state is SessionState.OPEN


# -- reconnect --------------------------------------------------------------------------------


async def test_a_dropped_socket_reconnects_and_replays_so_no_word_is_lost(fakes, sessions) -> None:
    fake = await fakes(tone_words=True, keep_audio=True)
    first = words_of_tones([400, 600]) + silence(200)
    second = words_of_tones([500, 700, 900, 1100])
    fake.drop_after(len(first) + len(second) // 2)  # mid-utterance, in the third word
    session, reader = await sessions(config(fake, endpointing_ms=None))
    await send_all(session, first)
    await session.finalize()
    await reader.wait_until(lambda: len(reader.finals) == 1)
    await send_all(session, second)
    await session.finalize()
    await reader.wait_until(lambda: len(reader.finals) == 2)

    assert [t.text for t in reader.finals] == ["400 600", "500 700 900 1100"]
    assert [c.closed for c in fake.connections] == ["dropped", None]
    # The new socket got the audio no final covered, from where the first final ended, with
    # the Finalize that had not been answered.
    replayed = fake.connections[1]
    assert bytes(replayed.audio) == second
    assert [c.type for c in replayed.control] == ["Finalize"]
    # Word times are the session's, increasing across the two sockets.
    times = [(w.start, w.end) for t in reader.finals for w in t.words]
    burst_starts = [0.0, 0.3] + [len(first) / 8000 + 0.3 * i for i in range(4)]
    assert [s for s, _ in times] == pytest.approx(burst_starts, abs=0.02)
    assert all(a[1] <= b[0] for a, b in zip(times, times[1:], strict=False))


async def test_reconnecting_that_keeps_failing_ends_the_transcripts_with_a_final_error(fakes, sessions) -> None:
    fake = await fakes()
    session, reader = await sessions(config(fake), give_up_after_s=0.5)
    fake.reject(503, times=1000)
    fake.drop()
    await reader.wait_until(lambda: reader.error is not None)
    error = reader.error
    assert isinstance(error, ProviderError) and error.retryable is False
    assert "HTTP 503" in str(error) and "reconnecting failed for" in str(error)
    assert len(fake.rejected) >= 2  # it did retry
    assert session.state is SessionState.FAILED


async def test_a_finalize_left_unanswered_reconnects_and_asks_again(fakes, sessions) -> None:
    fake = await fakes(transcripts=["Thank you."])
    fake.stall_next()
    session, reader = await sessions(config(fake, endpointing_ms=None, keepalive_s=10), answer_timeout_s=0.3)
    await send_all(session, tone(300, 400) + silence(100))
    loop = asyncio.get_running_loop()
    asked = loop.time()
    await session.finalize()
    await reader.wait_until(lambda: reader.finals)
    assert loop.time() - asked < 5.0  # the Finalize brought the watch forward from the 10 s KeepAlive
    assert [t.text for t in reader.finals] == ["Thank you."]
    assert len(fake.connections) == 2 and fake.connections[0].stalled
    assert [c.type for c in fake.connections[1].control] == ["Finalize"]


# -- connect errors ---------------------------------------------------------------------------


async def test_a_rejected_key_fails_open_without_retry_and_the_key_is_never_logged(fakes, caplog) -> None:
    caplog.set_level(logging.DEBUG)  # websockets logs the handshake headers at DEBUG
    fake = await fakes()
    with pytest.raises(ProviderError) as raised:
        await DeepgramStt(config(fake, api_key=SECRET), LoopClock()).open(MULAW_8K)
    error = raised.value
    assert error.retryable is False
    assert str(error) == "Deepgram rejected the API key (HTTP 401): Invalid credentials."
    assert len(fake.rejected) == 1 and fake.rejected[0].status == 401
    assert fake.rejected[0].headers["Authorization"] == f"Token {SECRET}"  # it did go out, to Deepgram only
    rendered = "".join(traceback.format_exception(error))  # with every chained cause
    assert SECRET not in rendered
    assert "Authorization: Token [REDACTED]" in caplog.text  # the handshake was logged, masked
    assert SECRET not in caplog.text


@pytest.mark.parametrize("status", [429, 500, 503])
async def test_rate_limits_and_server_errors_at_connect_are_retryable(fakes, status) -> None:
    fake = await fakes()
    fake.reject(status)
    with pytest.raises(ProviderError) as raised:
        await DeepgramStt(config(fake), LoopClock()).open(MULAW_8K)
    assert raised.value.retryable is True
    assert f"HTTP {status}" in str(raised.value)


async def test_bad_parameters_at_connect_are_not_retryable(fakes) -> None:
    fake = await fakes()
    fake.reject(400)
    with pytest.raises(ProviderError) as raised:
        await DeepgramStt(config(fake), LoopClock()).open(MULAW_8K)
    assert raised.value.retryable is False
    assert "HTTP 400" in str(raised.value)


# -- closing and the frame path ---------------------------------------------------------------


def _session_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("deepgram-") and not t.done()]


async def test_a_streaming_session_runs_one_task_of_its_own(fakes, sessions) -> None:
    fake = await fakes(transcripts=["Hello."])
    session, reader = await sessions(config(fake, endpointing_ms=None))
    session.speech(True)
    await send_all(session, tone(300, 400))
    await session.finalize()
    await reader.wait_until(lambda: reader.finals)
    # The supervisor reads the results itself; the watch is a timer, not a task.
    assert [t.get_name() for t in _session_tasks()] == ["deepgram-stt"]


async def test_aclose_sends_closestream_gets_the_last_results_and_stops_every_task(fakes) -> None:
    fake = await fakes(transcripts=["Do you deliver?"])
    session = await DeepgramStt(config(fake, endpointing_ms=None), LoopClock()).open(MULAW_8K)
    await send_all(session, tone(300, 300))
    assert _session_tasks()
    await session.aclose()
    conn = fake.connections[0]
    assert [c.type for c in conn.control] == ["CloseStream"]
    assert conn.closed == "CloseStream"
    assert [m["type"] for m in conn.sent][-2:] == ["Results", "Metadata"]  # the flush, then Metadata
    assert conn.audio_bytes == 2400  # nothing sent before aclose was lost
    assert session.state is SessionState.CLOSED
    assert _session_tasks() == []
    await session.aclose()  # idempotent


async def test_aclose_is_bounded_when_deepgram_stops_answering(fakes) -> None:
    fake = await fakes()
    fake.stall_next()
    session = await DeepgramStt(config(fake), LoopClock()).open(MULAW_8K)
    await send_all(session, silence(100))
    loop = asyncio.get_running_loop()
    started = loop.time()
    await session.aclose()
    assert loop.time() - started < 3.0  # _CLOSE_TIMEOUT_S (2 s), then abort: not websockets' 10 s
    await fake.wait_until(lambda: fake.connections[0].closed is not None)
    assert _session_tasks() == []


async def test_sessions_on_shared_clients_share_one_sdk_client_that_closing_leaves_open(fakes) -> None:
    fake = await fakes()
    async with HttpClients() as clients:
        stt = DeepgramStt(config(fake), LoopClock(), clients=clients)
        first, second = await stt.open(MULAW_8K), await stt.open(MULAW_8K)
        assert clients.count == 1 and len(fake.connections) == 2  # one client, a socket per session
        await first.aclose()
        await second.aclose()
        third = await stt.open(MULAW_8K)  # the shared client still works after sessions closed
        await third.aclose()
        assert clients.count == 1
    assert [c.closed for c in fake.connections] == ["CloseStream"] * 3


async def test_send_never_suspends_the_frame_path(fakes, sessions) -> None:
    fake = await fakes()
    session, _ = await sessions(config(fake))
    frame = silence(20)
    coro = session.send(frame)
    with pytest.raises(StopIteration):  # finished on its first step: queued, not written
        coro.send(None)
    await session.finalize()  # sends what is held
    await fake.wait_until(lambda: fake.connections[0].audio_bytes == len(frame))


async def test_audio_goes_out_in_chunks_and_a_finalize_flushes_what_is_held(fakes, sessions) -> None:
    fake = await fakes()
    session, _ = await sessions(config(fake, chunk_ms=60))
    session.speech(True)
    frame = silence(20)
    for _ in range(9):  # three chunks of three frames
        await session.send(frame)
        for _ in range(10):  # let the sender run: it would send each frame alone if it did not hold them
            await asyncio.sleep(0)
    await fake.wait_until(lambda: fake.connections[0].audio_bytes == 9 * len(frame))
    conn = fake.connections[0]
    assert conn.audio_messages <= 4  # one per chunk (a backlog may join two)
    await session.send(frame)  # a third of a chunk: held...
    await session.finalize()  # ...until the finalize, which goes right after it
    finalizes = lambda: [c.after_bytes for c in conn.control if c.type == "Finalize"]  # noqa: E731
    await fake.wait_until(lambda: conn.audio_bytes == 10 * len(frame) and finalizes())
    assert finalizes() == [10 * len(frame)]


async def test_between_speech_messages_are_larger_and_speech_start_sends_the_held_onset(fakes, sessions) -> None:
    fake = await fakes()
    session, _ = await sessions(config(fake, chunk_ms=40, quiet_chunk_ms=200))
    frame = silence(20)
    conn = fake.connections[0]
    for _ in range(10):  # 200 ms of a caller saying nothing: one message
        await session.send(frame)
    await fake.wait_until(lambda: conn.audio_bytes == 10 * len(frame))
    assert conn.audio_messages == 1
    for _ in range(3):  # the onset of speech, before the detector is sure: held
        await session.send(frame)
    session.speech(True)  # the detector heard speech: the onset goes at once, in one message
    await fake.wait_until(lambda: conn.audio_bytes == 13 * len(frame))
    assert conn.audio_messages == 2
    for _ in range(4):  # in speech: 40 ms messages
        await session.send(frame)
    await fake.wait_until(lambda: conn.audio_bytes == 17 * len(frame))
    assert conn.audio_messages == 4
    session.speech(False)
    for _ in range(3):  # quiet again: held past 40 ms...
        await session.send(frame)
    await session.finalize()  # ...until the finalize
    await fake.wait_until(lambda: conn.audio_bytes == 20 * len(frame))
    assert conn.audio_messages == 5


async def test_audio_behind_a_full_socket_waits_and_then_goes_out_whole_and_in_order(fakes, sessions) -> None:
    fake = await fakes(keep_audio=True)
    session, _ = await sessions(config(fake))
    await fake.wait_until(lambda: fake.connections)
    fake.pause_reading()
    transport = session._ws.transport  # white box: to see the socket's own buffer fill
    _, high = transport.get_write_buffer_limits()
    audio = bytearray()
    frame_ms = 500  # large frames: the kernel's buffers take megabytes before the socket's fills
    for i in range(4000):
        frame = bytes((i + j) % 256 for j in range(MULAW_8K.bytes_for(frame_ms)))
        await session.send(frame)
        audio += frame
        if transport.get_write_buffer_size() > high:
            break
    assert transport.get_write_buffer_size() > high  # writing stopped short: the rest is queued
    for _ in range(3):  # the frame path goes on without waiting
        frame = bytes(range(256)) * (MULAW_8K.bytes_for(frame_ms) // 256)
        await session.send(frame)
        audio += frame
    assert "deepgram-drain" in [t.get_name() for t in _session_tasks()]  # to write them as the buffer drains
    await session.finalize()
    fake.pause_reading(False)
    conn = fake.connections[0]
    await fake.wait_until(lambda: conn.controls("Finalize"))
    assert conn.audio == audio  # every byte, in the order sent
    assert conn.controls("Finalize")[0].after_bytes == len(audio)
    assert [t.get_name() for t in _session_tasks()] == ["deepgram-stt"]  # the drain task ended with the backlog


async def test_audio_sent_while_a_cut_connection_is_noticed_goes_out_on_the_next_one(fakes, sessions) -> None:
    fake = await fakes(keep_audio=True)
    session, _ = await sessions(config(fake))
    session._abort()  # white box: its transport is closed, and websockets has not noticed yet
    audio = silence(200)
    for frame in frames(audio):  # the frame path neither raises nor loses audio, at any step of that
        await session.send(frame)
        await asyncio.sleep(0)
    await session.finalize()
    await fake.wait_until(lambda: len(fake.connections) == 2 and fake.connections[1].controls("Finalize"))
    assert fake.connections[1].audio == audio  # replayed whole on the new connection


# -- a whole call -----------------------------------------------------------------------------


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Settings], Awaitable[tuple[web.Application, str]]]]:
    runners: list[web.AppRunner] = []

    async def start(settings: Settings) -> tuple[web.Application, str]:
        app = make_app(settings)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        return app, f"ws://127.0.0.1:{runner.addresses[0][1]}/media/twilio"

    yield start
    for runner in runners:
        await runner.cleanup()


async def test_a_call_hears_the_caller_through_deepgram(fakes, serve) -> None:
    fake = await fakes(transcripts=["I'd like to book a table for two."])
    data = load_settings("config/bench.toml").model_dump()
    data["agents"]["default"]["stt"] = {"provider": "deepgram", "api_key": fake.api_key, "base_url": fake.url}
    app, url = await serve(Settings.model_validate(data))
    clip = load_clip("book_table.wav")
    script = CallerScript((Utterance(clip, CLIP_TEXTS["book_table.wav"]),), reply_timeout_s=5, max_call_s=20)
    result = await run_call(url, script)
    assert result.error is None
    assert result.answered == 1
    record = await asyncio.wait_for(app[CALLS].wait_finished(result.call_sid), 10)
    assert record.transcript[0] == {"role": "user", "content": "I'd like to book a table for two."}
    assert record.transcript[1]["role"] == "assistant"
    conn = fake.connections[0]
    assert (conn.params["encoding"], conn.params["sample_rate"]) == ("mulaw", "8000")
    assert conn.audio_bytes >= len(clip)  # the caller's audio went to Deepgram as it came, mu-law
    assert conn.controls("Finalize")  # the call's VAD asked for the final
    await fake.wait_until(lambda: conn.closed == "CloseStream")  # the call's end closed the stream
