"""ElevenLabs TTS: the real SDK (HTTP) and Ringline's multi-context socket client (WebSocket)
against the local fake that speaks ElevenLabs' wire protocol; phrase attribution sans I/O; a whole call
through the real server with ElevenLabs as the agent's voice."""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import AsyncIterator, Sequence

import pytest
from aiohttp import web

from ringline.api.app import make_app
from ringline.benchmarks.caller import clip_script, run_call
from ringline.benchmarks.vendors.elevenlabs import FakeElevenLabs, Faults, Latency, tone
from ringline.config.providers import ElevenLabsTtsConfig, FakeTtsConfig
from ringline.config.settings import Settings, load_settings
from ringline.engine.audio.clock import LoopClock
from ringline.engine.audio.formats import ALAW_8K, MULAW_8K, PCM16_8K, PCM16_16K, AudioFormat, Encoding
from ringline.engine.clients import HttpClients
from ringline.engine.errors import ProviderError
from ringline.engine.failover import FailoverTts
from ringline.engine.tts import elevenlabs
from ringline.engine.tts.base import SpeechAudio
from ringline.engine.tts.elevenlabs import ElevenLabsTts
from ringline.engine.tts.elevenlabs_ws import PhraseAligner, output_format_for
from ringline.engine.tts.fake import FakeTts

pytestmark = pytest.mark.timeout(30)

KEY = "xi-test-4f9c2a7e1b"
SECONDS_PER_CHAR = 0.02
TRANSPORTS = pytest.mark.parametrize("transport", ["http", "websocket"])
THREE = ["Sure, I can help.", "Your table for two is booked at eight tonight.", "Anything else?"]


MADE: list[ElevenLabsTts] = []


@pytest.fixture(autouse=True)
async def calls_end():
    """Every adapter a test made is closed as its call would be (the call's socket with it)."""
    yield
    made = list(MADE)
    MADE.clear()
    for tts in made:
        await tts.aclose()


@pytest.fixture
async def fake():
    async with FakeElevenLabs(KEY, latency=Latency(seconds_per_char=SECONDS_PER_CHAR)) as server:
        yield server


def make_tts(fake: FakeElevenLabs, transport: str = "websocket", *, timeout_s: float = 5.0, **kw) -> ElevenLabsTts:
    kw.setdefault("api_key", KEY)
    config = ElevenLabsTtsConfig(provider="elevenlabs", base_url=fake.url, transport=transport, **kw)
    MADE.append(tts := ElevenLabsTts(config, LoopClock(), timeout_s=timeout_s))
    return tts


async def listed(texts: Sequence[str]) -> AsyncIterator[str]:
    for text in texts:
        yield text


async def speak(tts: ElevenLabsTts, texts: Sequence[str], preferred: AudioFormat = MULAW_8K) -> list[SpeechAudio]:
    async with asyncio.timeout(10):
        return [audio async for audio in tts.stream(listed(texts), preferred)]


def by_phrase(audio: list[SpeechAudio]) -> dict[int, bytes]:
    joined: dict[int, bytes] = {}
    for item in audio:
        joined[item.phrase] = joined.get(item.phrase, b"") + item.chunk.data
    return joined


def voiced(text: str, fmt: AudioFormat) -> bytes:
    """What the fake says for ``text``."""
    return tone(len(text.strip()) * SECONDS_PER_CHAR, fmt)


async def failure(tts: ElevenLabsTts, texts: Sequence[str] = ("Hello there.",)) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        await speak(tts, texts)
    return caught.value


# -- output format --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("preferred", "expected", "delivered"),
    [
        (MULAW_8K, "ulaw_8000", MULAW_8K),
        (ALAW_8K, "alaw_8000", ALAW_8K),
        (PCM16_8K, "pcm_8000", PCM16_8K),
        (PCM16_16K, "pcm_16000", PCM16_16K),
        (AudioFormat(Encoding.PCM16, 22050), "pcm_22050", AudioFormat(Encoding.PCM16, 22050)),
        (AudioFormat(Encoding.PCM16, 24000), "pcm_24000", AudioFormat(Encoding.PCM16, 24000)),
        (AudioFormat(Encoding.PCM16, 44100), "pcm_44100", AudioFormat(Encoding.PCM16, 44100)),
        (AudioFormat(Encoding.PCM16, 12000), "pcm_16000", PCM16_16K),  # no rate lost
        (AudioFormat(Encoding.MULAW, 16000), "pcm_16000", PCM16_16K),
        (AudioFormat(Encoding.PCM16, 96000), "pcm_48000", AudioFormat(Encoding.PCM16, 48000)),
    ],
)
def test_output_format_follows_the_call(preferred, expected, delivered):
    assert output_format_for(preferred) == (expected, delivered)


@TRANSPORTS
async def test_mulaw_call_gets_ulaw_8000_untouched(fake, transport):
    audio = await speak(make_tts(fake, transport), ["Hello there."])
    assert [r.query["output_format"] for r in fake.requests] == ["ulaw_8000"]
    assert audio and all(a.chunk.format == MULAW_8K for a in audio)
    assert by_phrase(audio) == {0: voiced("Hello there.", MULAW_8K)}  # byte for byte: no conversion


@TRANSPORTS
async def test_alaw_and_pcm_calls_get_their_own_format(fake, transport):
    tts = make_tts(fake, transport)
    alaw = await speak(tts, ["Hello."], ALAW_8K)
    pcm = await speak(tts, ["Hello."], PCM16_16K)
    assert [r.query["output_format"] for r in fake.requests] == ["alaw_8000", "pcm_16000"]
    assert {a.chunk.format for a in alaw} == {ALAW_8K} and {a.chunk.format for a in pcm} == {PCM16_16K}
    assert by_phrase(pcm) == {0: voiced("Hello.", PCM16_16K)}


@TRANSPORTS
async def test_voice_settings_model_and_voice_reach_the_server(fake, transport):
    settings = {"stability": 0.3, "similarity_boost": 0.9, "speed": 1.1}
    tts = make_tts(fake, transport, voice_id="voice-abc", model_id="eleven_turbo_v2_5", **settings)
    await speak(tts, ["Hello there.", "Bye."])
    request = fake.requests[0]
    assert request.voice_settings == settings
    assert request.path.startswith("/v1/text-to-speech/voice-abc/")
    assert request.headers["xi-api-key"] == KEY
    if transport == "http":
        assert request.body["model_id"] == "eleven_turbo_v2_5" and request.body["text"] == "Hello there."
        assert [r.body.get("previous_text") for r in fake.requests] == [None, "Hello there."]
        assert fake.requests[1].voice_settings == settings
    else:
        assert request.path.endswith("/multi-stream-input")
        assert request.query["model_id"] == "eleven_turbo_v2_5" and request.query["inactivity_timeout"] == "180"
        assert request.messages[0] == {"text": " ", "voice_settings": settings, "context_id": "reply-1"}
        assert [m.get("flush") for m in request.messages[1:-1]] == [True, True]
        assert request.messages[-1] == {"context_id": "reply-1", "close_context": True}


# -- phrases --------------------------------------------------------------------------------------


@TRANSPORTS
async def test_three_phrase_reply_is_attributed_phrase_by_phrase(fake, transport):
    audio = await speak(make_tts(fake, transport), THREE)
    phrases = [a.phrase for a in audio]
    assert phrases == sorted(phrases)
    assert by_phrase(audio) == {i: voiced(text, MULAW_8K) for i, text in enumerate(THREE)}
    sockets = 1 if transport == "websocket" else 3
    assert len(fake.requests) == sockets
    assert [g.strip() for r in fake.requests for g in r.generations] == THREE


@TRANSPORTS
async def test_blank_phrase_keeps_its_number_but_is_not_sent(fake, transport):
    audio = await speak(make_tts(fake, transport), ["Hello.", "  ", "Bye now."])
    assert sorted(by_phrase(audio)) == [0, 2]
    assert [g.strip() for r in fake.requests for g in r.generations] == ["Hello.", "Bye now."]


@TRANSPORTS
async def test_each_phrase_is_spoken_as_it_arrives(fake, transport):
    heard = [asyncio.Event() for _ in THREE]

    async def llm() -> AsyncIterator[str]:
        for i, text in enumerate(THREE):
            yield text
            await heard[i].wait()  # the next phrase only exists once this one was voiced

    order = []
    async with asyncio.timeout(10):
        async for audio in make_tts(fake, transport).stream(llm(), MULAW_8K):
            order.append(audio.phrase)
            heard[audio.phrase].set()
    assert sorted(set(order)) == [0, 1, 2] and order == sorted(order)
    if transport == "websocket":  # one context, fed phrase by phrase
        assert len(fake.requests) == 1
        assert [m.get("text") for m in fake.requests[0].messages] == [" ", *(t + " " for t in THREE), None]


def reply_tasks() -> list[asyncio.Task]:
    """A reply's helper tasks still running (the call's idle reader is not one)."""
    return [
        t for t in asyncio.all_tasks() if t.get_name() in ("elevenlabs-phrases", "elevenlabs-watchdog") and not t.done()
    ]


async def test_replies_of_a_call_take_turns_on_one_socket_a_context_each(fake):
    tts = make_tts(fake)
    first = await speak(tts, ["Hello there."])
    second = await speak(tts, THREE)
    assert by_phrase(first) == {0: voiced("Hello there.", MULAW_8K)}
    assert by_phrase(second) == {i: voiced(text, MULAW_8K) for i, text in enumerate(THREE)}
    assert len(fake.requests) == 1 and fake.connections.connections == 1  # no handshake before the second
    assert [m["context_id"] for m in fake.requests[0].messages] == ["reply-1"] * 3 + ["reply-2"] * 5
    await tts.aclose()  # the call ended
    async with asyncio.timeout(5):
        await fake.requests[0].finished.wait()
    assert fake.requests[0].messages[-1] == {"close_socket": True}


async def test_a_reply_cut_off_closes_its_context_and_the_next_hears_none_of_it(fake):
    fake.latency = Latency(seconds_per_char=SECONDS_PER_CHAR, realtime_factor=1.0)  # real time: still talking
    tts = make_tts(fake)
    stream = tts.stream(listed(THREE), MULAW_8K)
    first = await anext(stream)
    assert first.phrase == 0
    await stream.aclose()  # barge-in
    closed = {"context_id": "reply-1", "close_context": True}
    async with asyncio.timeout(5):
        await fake.wait_for_messages(lambda messages: messages[-1] == closed)
    assert reply_tasks() == []
    # the server still voices what reply-1 flushed, on the same socket, while reply-2 speaks
    fake.latency = Latency(seconds_per_char=SECONDS_PER_CHAR)
    audio = await speak(tts, ["Yes?"])
    assert by_phrase(audio) == {0: voiced("Yes?", MULAW_8K)}  # not a byte of reply-1's
    assert len(fake.requests) == 1


async def test_quick_barge_ins_never_open_more_contexts_than_elevenlabs_allows(fake):
    fake.latency = Latency(seconds_per_char=SECONDS_PER_CHAR, realtime_factor=1.0)  # each cut reply voices on
    tts = make_tts(fake)
    for _ in range(7):
        stream = tts.stream(listed(THREE), MULAW_8K)
        assert (await anext(stream)).phrase == 0
        await stream.aclose()
    # five contexts still being voiced fill a socket: the sixth reply went to a new one, refused nowhere
    assert len(fake.requests) == 2
    assert all(not m.get("error") for r in fake.requests for m in r.messages)
    assert [m["context_id"] for m in fake.requests[1].messages if m.get("text") == " "] == ["reply-1", "reply-2"]


async def test_a_socket_the_server_closed_between_replies_is_replaced(fake):
    tts = make_tts(fake)
    fake.inactivity_s = 0.3  # the caller talks for longer than the socket may idle
    await speak(tts, ["Hello there."])
    async with asyncio.timeout(5):
        await fake.requests[0].finished.wait()
    fake.inactivity_s = None
    audio = await speak(tts, ["Still there?"])
    assert by_phrase(audio) == {0: voiced("Still there?", MULAW_8K)}
    assert len(fake.requests) == 2


async def test_a_socket_that_stops_answering_pings_between_replies_is_replaced(fake, monkeypatch):
    monkeypatch.setattr(elevenlabs, "HEARTBEAT_S", 0.2)
    tts = make_tts(fake)
    await speak(tts, ["Hello there."])
    fake.answer_pings = False  # the connection is gone somewhere on the way: nothing comes back
    async with asyncio.timeout(5):
        await fake.requests[0].finished.wait()  # the client gave up on it and dropped it
    fake.answer_pings = True
    audio = await speak(tts, ["Still there?"])
    assert by_phrase(audio) == {0: voiced("Still there?", MULAW_8K)}
    assert len(fake.requests) == 2


async def test_a_kept_socket_lost_as_a_reply_begins_gives_way_to_a_new_one(fake):
    tts = make_tts(fake)
    await speak(tts, ["Hello there."])
    fake.faults = Faults(drop_at_context=2)  # the connection dies the moment the next reply opens its context
    audio = await speak(tts, THREE)
    assert by_phrase(audio) == {i: voiced(text, MULAW_8K) for i, text in enumerate(THREE)}  # nothing lost
    assert len(fake.requests) == 2
    spoken = [m["text"].strip() for m in fake.requests[1].messages if m.get("text", " ").strip()]
    assert spoken == THREE  # the new socket heard every phrase, once


async def test_a_new_socket_lost_as_the_reply_begins_fails_the_reply(fake):
    fake.faults = Faults(drop_at_context=1)  # nothing to fall back on: the provider itself is failing
    error = await failure(make_tts(fake))
    assert error.retryable
    assert len(fake.requests) == 1


async def test_a_kept_socket_lost_after_the_reply_was_heard_is_not_started_over(fake):
    tts = make_tts(fake)
    await speak(tts, ["Hello there."])
    # the reply's first piece of audio reached the caller, then the connection died
    fake.faults = Faults(cut_after=fake.requests[0].pieces_sent + 1)
    error = await failure(tts, THREE)
    assert error.retryable
    assert len(fake.requests) == 1  # the rest is the failover's to speak, from the phrase that was cut


async def test_a_stall_after_a_late_first_phrase_is_noticed_stall_s_after_it(fake, monkeypatch):
    monkeypatch.setattr(elevenlabs, "KEEPALIVE_S", 60.0)  # the watchdog first sleeps toward this
    fake.faults = Faults(hang_after=0)

    async def slow_llm() -> AsyncIterator[str]:  # the first phrase comes after the watchdog started
        await fake.wait_for_messages(lambda messages: len(messages) == 1)
        yield "Here it is."

    with pytest.raises(ProviderError, match="no audio for 0.3 s"):
        async with asyncio.timeout(5):  # not KEEPALIVE_S later
            async for _ in make_tts(fake, timeout_s=0.3).stream(slow_llm(), MULAW_8K):
                pass


async def test_two_replies_at_once_on_one_call_each_get_a_socket(fake):
    tts = make_tts(fake)
    await speak(tts, ["Hello."])  # the call's socket exists
    one, two = await asyncio.gather(speak(tts, ["Transferring you now."]), speak(tts, ["A caller about a booking."]))
    assert by_phrase(one) == {0: voiced("Transferring you now.", MULAW_8K)}
    assert by_phrase(two) == {0: voiced("A caller about a booking.", MULAW_8K)}
    assert len(fake.requests) == 2  # the second, a briefing say, had one of its own
    async with asyncio.timeout(5):
        await fake.requests[1].finished.wait()  # and closed it when done


async def test_an_idle_socket_gets_keep_alives_until_the_phrase_comes(fake, monkeypatch):
    monkeypatch.setattr(elevenlabs, "KEEPALIVE_S", 0.05)
    keepalive = {"text": "", "context_id": "reply-1"}

    async def slow_llm() -> AsyncIterator[str]:  # thinking (a tool runs) until two keep-alives went
        await fake.wait_for_messages(lambda messages: messages.count(keepalive) >= 2)
        yield "Here it is."

    audio = [a async for a in make_tts(fake).stream(slow_llm(), MULAW_8K)]
    assert b"".join(a.chunk.data for a in audio) == voiced("Here it is.", MULAW_8K)
    assert [m.get("text") for m in fake.requests[0].messages][-2:] == ["Here it is. ", None]


async def test_a_phrase_source_that_fails_fails_the_reply_and_closes_its_context(fake):
    async def broken_llm() -> AsyncIterator[str]:
        yield "One moment."
        raise RuntimeError("the LLM stream broke")

    tts = make_tts(fake)
    with pytest.raises(RuntimeError, match="the LLM stream broke"):
        async with asyncio.timeout(10):
            async for _ in tts.stream(broken_llm(), MULAW_8K):
                pass
    closed = {"context_id": "reply-1", "close_context": True}
    async with asyncio.timeout(5):
        await fake.wait_for_messages(lambda messages: messages[-1] == closed)
    assert reply_tasks() == []
    assert by_phrase(await speak(tts, ["Sorry."])) == {0: voiced("Sorry.", MULAW_8K)}  # the socket is fine
    assert len(fake.requests) == 1


# -- phrase attribution, sans I/O -----------------------------------------------------------------


def test_aligner_cuts_a_message_where_the_next_phrase_starts():
    aligner = PhraseAligner(PCM16_8K)
    assert aligner.add(0, "Hi. ") and aligner.add(1, "Yo!")
    assert aligner.owed
    audio = bytes(range(100)) * 2  # 100 samples: 12.5 ms at 8 kHz
    alignment = {"chars": list("Hi. Yo!"), "charStartTimesMs": [0, 1, 2, 3, 5, 6, 7]}
    pieces = aligner.feed(audio, alignment)
    assert pieces == [(0, audio[:80]), (1, audio[80:])]  # "Y" starts at 5 ms = sample 40 = byte 80
    assert not aligner.owed


def test_aligner_counts_characters_across_messages_and_ignores_blanks():
    aligner = PhraseAligner(MULAW_8K)
    aligner.add(0, "One two.")
    aligner.add(1, "Three.")
    assert aligner.feed(b"a" * 10, {"chars": list(" One t"), "charStartTimesMs": [0] * 6}) == [(0, b"a" * 10)]
    assert aligner.feed(b"b" * 10, None) == [(0, b"b" * 10)]  # no alignment: the phrase being voiced
    assert aligner.feed(b"c" * 10, {"chars": list("wo.  "), "charStartTimesMs": [0] * 5}) == [(0, b"c" * 10)]
    assert aligner.feed(b"d" * 8, {"chars": list("Three."), "charStartTimesMs": [0] * 6}) == [(1, b"d" * 8)]
    assert not aligner.owed


def test_aligner_skips_blank_phrases_and_keeps_whole_samples():
    aligner = PhraseAligner(PCM16_16K)
    assert not aligner.add(0, "   ")
    aligner.add(1, "Ok.")
    assert aligner.feed(b"\x01\x02\x03", {"chars": ["O"], "charStartTimesMs": [0]}) == [(1, b"\x01\x02")]
    assert aligner.feed(b"\x04", {"chars": list("k."), "charStartTimesMs": [0, 0]}) == [(1, b"\x03\x04")]


# -- errors ---------------------------------------------------------------------------------------


@TRANSPORTS
@pytest.mark.parametrize(("status", "retryable"), [(400, False), (403, False), (422, False), (500, True), (503, True)])
async def test_error_status_says_whether_to_retry(fake, transport, status, retryable):
    fake.faults = Faults(status=status)
    error = await failure(make_tts(fake, transport))
    assert error.retryable is retryable
    assert f"HTTP {status}" in str(error)
    assert error.retry_after is None  # the server did not say


@TRANSPORTS
async def test_wrong_key_is_final(fake, transport):
    error = await failure(make_tts(fake, transport, api_key="xi-wrong-key-123"))
    assert not error.retryable
    assert "HTTP 401" in str(error)


@TRANSPORTS
async def test_rate_limit_is_retryable_and_says_when(fake, transport):
    fake.faults = Faults(status=429, retry_after="3")
    error = await failure(make_tts(fake, transport))
    assert error.retryable
    assert "HTTP 429" in str(error) and "retry after 3 s" in str(error)
    assert error.retry_after == 3.0


@TRANSPORTS
async def test_connection_cut_mid_stream_is_retryable(fake, transport):
    fake.faults = Faults(cut_after=2)
    audio: list[SpeechAudio] = []
    with pytest.raises(ProviderError) as caught:
        async with asyncio.timeout(10):
            async for item in make_tts(fake, transport).stream(listed(THREE), MULAW_8K):
                audio.append(item)
    assert caught.value.retryable
    assert 0 < sum(len(a.chunk.data) for a in audio) <= 2 * 800  # what came before the cut was handed on


@TRANSPORTS
async def test_server_that_stops_answering_is_retryable(fake, transport):
    fake.faults = Faults(hang_after=0)
    error = await failure(make_tts(fake, transport, timeout_s=0.3))
    assert error.retryable
    assert "0.3 s" in str(error)


@TRANSPORTS
async def test_server_that_is_down_is_retryable(transport):
    server = await FakeElevenLabs(KEY).start()
    await server.close()  # nothing listens on that port any more
    error = await failure(make_tts(server, transport))
    assert error.retryable
    assert "connection failed" in str(error)


async def test_socket_error_message_from_the_server_is_reported(fake):
    fake.inactivity_s = 0.2
    never = asyncio.Event()

    async def silent_llm() -> AsyncIterator[str]:
        await never.wait()
        yield "unreachable"

    with pytest.raises(ProviderError) as caught:
        async with asyncio.timeout(10):
            async for _ in make_tts(fake).stream(silent_llm(), MULAW_8K):
                pass
    assert not caught.value.retryable  # a policy close: trying again will not help
    assert "input_timeout_exceeded" in str(caught.value)


@pytest.mark.parametrize("transport", ["http", "websocket"])
async def test_fallback_speaks_the_rest_when_elevenlabs_breaks_mid_reply(fake, transport):
    fake.faults = Faults(cut_after=1)
    queue: asyncio.Queue[str | None] = asyncio.Queue()

    async def phrases() -> AsyncIterator[str]:  # the responder's: the LLM fills the queue
        while (text := await queue.get()) is not None:
            yield text

    faults: list[str] = []

    class Faulted:
        def fault(self, stage: str, detail: str) -> None:
            faults.append(detail)

    tts = FailoverTts([make_tts(fake, transport), FakeTts(FakeTtsConfig(), LoopClock())], Faulted())
    queue.put_nowait(THREE[0])
    voiced: set[int] = set()
    rest: list[str | None] = [*THREE[1:], None]
    async with asyncio.timeout(10):
        async for audio in tts.stream(phrases(), MULAW_8K):
            voiced.add(audio.phrase)
            if faults and rest:  # ElevenLabs failed while the LLM was still going
                for text in rest:
                    queue.put_nowait(text)
                rest.clear()
    assert len(faults) == 1
    assert voiced == {0, 1, 2}


@TRANSPORTS
async def test_key_is_never_logged_nor_in_errors(fake, transport, caplog):
    caplog.set_level(logging.DEBUG)
    await speak(make_tts(fake, transport), ["Hello."])  # a success, logged at debug everywhere
    fake.faults = Faults(status=401, message=f"Invalid API key: {KEY}")  # a server that echoes it
    errors = [await failure(make_tts(fake, transport))]
    fake.faults = Faults(cut_after=1)
    errors.append(await failure(make_tts(fake, transport)))
    for error in errors:
        assert KEY not in str(error)
        assert KEY not in "".join(traceback.format_exception(error))  # nothing chained carries it
    assert KEY not in caplog.text
    assert all(KEY not in str(record.args) for record in caplog.records)
    if transport == "http":
        assert "[redacted]" in str(errors[0])


@TRANSPORTS
async def test_replies_on_shared_clients_keep_the_http_connection_warm(fake, transport):
    config = ElevenLabsTtsConfig(provider="elevenlabs", api_key=KEY, base_url=fake.url, transport=transport)
    async with HttpClients() as clients:
        for _ in range(2):  # two calls' replies
            assert by_phrase(await speak(ElevenLabsTts(config, LoopClock(), clients=clients), ["Hello."]))
        assert clients.count == 1
    # HTTP: the second reply came on the first one's connection; a socket is one call's alone
    assert fake.connections.connections == (1 if transport == "http" else 2)


# -- a whole call ---------------------------------------------------------------------------------


async def test_call_through_the_real_server_speaks_with_elevenlabs(fake):
    fake.latency = Latency(seconds_per_char=0.05, ttfa_s=0.05, realtime_factor=0.1)
    data = load_settings("config/bench.toml").model_dump()
    data["agents"]["default"]["tts"] = {
        "provider": "elevenlabs",
        "api_key": KEY,
        "base_url": fake.url,
        "transport": "websocket",
    }
    runner = web.AppRunner(make_app(Settings.model_validate(data)))
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        url = f"ws://127.0.0.1:{runner.addresses[0][1]}/media/twilio"
        result = await run_call(url, clip_script(0, 1, pause_ms=200, reply_timeout_s=5))
    finally:
        await runner.cleanup()
    assert result.error is None
    assert result.answered == 1
    assert [r.query["output_format"] for r in fake.requests] == ["ulaw_8000"]  # Twilio's own format
    spoken = sum(len(g.strip()) for g in fake.requests[0].generations) * 0.05
    assert spoken > 0.5
    assert result.turns[0].reply.audio_s == pytest.approx(spoken, abs=0.03)
