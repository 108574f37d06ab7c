"""A local OpenAI speech server: ``POST /v1/audio/speech`` streaming raw PCM, the way
api.openai.com does, so the real ``openai`` SDK runs unchanged against it::

    async with FakeOpenAiTts(api_key="sk-test") as server:  # or: await server.start() ... close()
        tts = OpenAiTts(OpenAiTtsConfig(provider="openai", api_key="sk-test", base_url=server.url), clock)
        ...
        server.requests[0].body["voice"]                      # every request, recorded whole

Auth is ``Authorization: Bearer <key>``. The body is ``{model, input, voice, response_format,
speed, instructions, stream_format}``; the answer is a chunked body of 24 kHz mono PCM16 (the
``pcm`` format; the fake speaks no other and says so with a 400), a tone lasting
``seconds_per_char`` per character of ``input``. ``instructions`` with ``tts-1``/``tts-1-hd`` is a
400, as it is at OpenAI. Errors are OpenAI's ``{"error": {message, type, param, code}}``.

Latency model and faults are the ElevenLabs fake's (``Latency``, ``Faults``): time to first audio,
realtime factor, connection setup cost; error status (429 with ``Retry-After``), cut after N
pieces, stop answering after N pieces.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from ringline.benchmarks.vendors.elevenlabs import ConnectionCosts, Faults, Latency, Pacer, pieces, tone
from ringline.benchmarks.vendors.server import LoopbackServer
from ringline.engine.audio.formats import AudioFormat, Encoding

PCM_24K = AudioFormat(Encoding.PCM16, 24000)

ERRORS: dict[int, tuple[str, str, str | None]] = {
    400: ("invalid_request_error", "Invalid request.", None),
    401: ("invalid_request_error", "Incorrect API key provided.", "invalid_api_key"),
    403: ("invalid_request_error", "You are not allowed to use this model.", None),
    429: ("requests", "Rate limit reached for requests.", "rate_limit_exceeded"),
    500: ("server_error", "The server had an error while processing your request. Sorry about that!", None),
    503: ("server_error", "The engine is currently overloaded, please try again later.", None),
}


@dataclass(slots=True)
class RecordedSpeech:
    path: str
    headers: dict[str, str]
    body: Any
    received_at: float
    pieces_sent: int = 0
    first_audio_at: float | None = None
    finished: asyncio.Event = field(default_factory=asyncio.Event)


class _Cut(Exception):
    pass


class FakeOpenAiTts(LoopbackServer):
    """The fake server on 127.0.0.1, port chosen by the OS. ``url`` is the SDK's ``base_url``."""

    URL_TEMPLATE = "http://127.0.0.1:{port}/v1"

    def __init__(self, api_key: str = "sk-fake", *, latency: Latency | None = None, faults: Faults | None = None):
        super().__init__()
        self.api_key = api_key
        self.latency = latency or Latency()
        self.faults = faults or Faults()
        self.requests: list[RecordedSpeech] = []
        self.connections = ConnectionCosts()

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/v1/audio/speech", self._speech)

    async def _speech(self, request: web.Request) -> web.StreamResponse:
        await self.connections.charge(request, self.latency)
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            body = None
        recorded = RecordedSpeech(request.path, dict(request.headers), body, time.monotonic())
        self.requests.append(recorded)
        try:
            if request.headers.get("Authorization") != f"Bearer {self.api_key}":
                return _error(401)
            if self.faults.status is not None:
                return _error(self.faults.status, self.faults.message, retry_after=self.faults.retry_after)
            if problem := _invalid(body):
                return _error(400, problem)
            return await self._stream(request, body["input"], recorded)
        finally:
            recorded.finished.set()

    async def _stream(self, request: web.Request, text: str, recorded: RecordedSpeech) -> web.StreamResponse:
        latency, faults = self.latency, self.faults
        pacer = Pacer(asyncio.get_running_loop().time(), latency)
        response = web.StreamResponse(headers={"Content-Type": "audio/pcm"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        audio = tone(len(text.strip()) * latency.seconds_per_char, PCM_24K, latency.tone_hz)
        for piece in pieces(audio, PCM_24K, latency.chunk_ms):
            if faults.hang_after is not None and recorded.pieces_sent >= faults.hang_after:
                await self.closing.wait()
                break
            if faults.cut_after is not None and recorded.pieces_sent >= faults.cut_after:
                assert request.transport is not None
                request.transport.abort()
                return response
            await pacer.wait(len(piece) / PCM_24K.bytes_per_second)
            await response.write(piece)
            recorded.pieces_sent += 1
            if recorded.first_audio_at is None:
                recorded.first_audio_at = time.monotonic()
        await response.write_eof()
        return response


def _invalid(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "The body must be a JSON object."
    for name in ("model", "input", "voice"):
        if not isinstance(body.get(name), str) or not body[name]:
            return f"'{name}' is a required property."
    if body.get("response_format", "mp3") != "pcm":
        return "This fake speaks response_format 'pcm' only."
    if body.get("instructions") is not None and body["model"].startswith("tts-1"):
        return f"instructions are not supported by {body['model']}."
    speed = body.get("speed", 1.0)
    if not isinstance(speed, int | float) or not 0.25 <= speed <= 4.0:
        return "speed must be between 0.25 and 4.0."
    return None


def _error(status: int, message: str | None = None, *, retry_after: str | None = None) -> web.Response:
    kind, default, code = ERRORS.get(status, ("server_error", "Error.", None))
    body = {"error": {"message": message or default, "type": kind, "param": None, "code": code}}
    headers = {"Retry-After": retry_after} if retry_after else None
    return web.json_response(body, status=status, headers=headers, dumps=lambda v: orjson.dumps(v).decode())
