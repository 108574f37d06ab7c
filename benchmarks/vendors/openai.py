"""A local OpenAI Chat Completions server: ``POST /v1/chat/completions``, streamed (SSE) or not.

It speaks the wire protocol the way api.openai.com does, so the real ``openai`` SDK (and any other
client of the API) runs unchanged against it::

    async with FakeOpenAi(api_key="sk-test") as server:      # or: await server.start() ... close()
        server.script(Script(text="Sure, one moment.", ttft_s=0.3, tokens_per_s=50))
        server.script(Script(tool_calls=[ScriptedToolCall("get_weather", {"city": "Paris"})]))
        llm = OpenAiLlm(OpenAiLlmConfig(provider="openai", api_key="sk-test", base_url=server.url), clock)
        ...
        server.requests[0].body["messages"]                  # every request, recorded whole

Each request plays the next queued ``Script`` (``default`` when the queue is empty). Stream shape:
a first chunk with ``delta.role``, one chunk per text token, per tool call a chunk with its
``id``/``type``/``name`` and empty ``arguments`` then the arguments in pieces, a last chunk with an
empty delta and ``finish_reason``, an optional usage chunk (``stream_options.include_usage``),
then ``data: [DONE]``. Errors are OpenAI's JSON body ``{"error": {message, type, param, code}}``.

Knobs per script: time to response headers and to first token, tokens per second, an error
status (429 with ``Retry-After``), cutting the connection after N chunks, an error event in the
stream after N chunks, and hanging (stop answering, connection left open) after N chunks.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import re
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from ringline.benchmarks.vendors.server import LoopbackServer

_TOKEN = re.compile(r"\s*\S+")

ERRORS: dict[int, tuple[str, str, str | None]] = {
    400: ("invalid_request_error", "Invalid request.", None),
    401: ("invalid_request_error", "Incorrect API key provided.", "invalid_api_key"),
    403: ("invalid_request_error", "You are not allowed to sample from this model.", None),
    404: ("invalid_request_error", "The model does not exist or you do not have access to it.", "model_not_found"),
    408: ("server_error", "Request timed out.", None),
    409: ("server_error", "Conflict.", None),
    429: ("requests", "Rate limit reached for requests.", "rate_limit_exceeded"),
    500: ("server_error", "The server had an error while processing your request. Sorry about that!", None),
    502: ("server_error", "Bad gateway.", None),
    503: ("server_error", "The engine is currently overloaded, please try again later.", None),
}
"""OpenAI's ``type``, ``message`` and ``code`` per status."""


@dataclass(frozen=True, slots=True)
class ScriptedToolCall:
    name: str
    arguments: Mapping[str, Any] | str = field(default_factory=dict)
    """A mapping is sent as its JSON; a string is sent verbatim (it may be invalid JSON)."""
    id: str | None = None
    """``call_<n>`` when unset."""
    pieces: int = 3
    """The arguments arrive in this many fragments (split anywhere, mid-token included)."""

    def argument_text(self) -> str:
        return self.arguments if isinstance(self.arguments, str) else orjson.dumps(dict(self.arguments)).decode()


@dataclass(frozen=True, slots=True)
class Script:
    """One response. Text first, then tool calls (parallel when more than one)."""

    text: str = ""
    tokens: Sequence[str] | None = None
    """The text's tokens, one per chunk; unset: words with their leading spaces."""
    tool_calls: Sequence[ScriptedToolCall] = ()
    finish_reason: str | None = None
    """Unset: ``tool_calls`` when there are tool calls, else ``stop``."""
    headers_after_s: float = 0.0
    """Delay before the response headers (a queueing server). With ``status``: before the error."""
    ttft_s: float = 0.0
    """Time from the headers to the first chunk."""
    tokens_per_s: float = 0.0
    """Rate of the chunks after the first; 0: all at once."""
    status: int = 200
    """An error status answers with OpenAI's error body instead of a completion."""
    error_message: str | None = None
    """Overrides the error body's message (for ``status`` and ``error_after``)."""
    retry_after: str | None = None
    """``Retry-After`` header of an error response."""
    cut_after: int | None = None
    """Abort the TCP connection after this many chunks (no terminating chunk, no ``[DONE]``)."""
    error_after: int | None = None
    """After this many chunks send ``data: {"error": ...}`` (how OpenAI reports a failure mid-stream)."""
    done_after_s: float = 0.0
    """Delay between the terminating chunk (``finish_reason``) and ``[DONE]`` with the end of the
    body."""
    hang_after: int | None = None
    """Stop answering after this many chunks (0: right after the headers); the connection stays
    open until the client leaves or the server closes."""

    def token_list(self) -> list[str]:
        return list(self.tokens) if self.tokens is not None else _TOKEN.findall(self.text)


@dataclass(slots=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    """The parsed JSON body (what the client sent, whole)."""
    received_at: float
    peer: tuple[str, int] | None = None
    """The client's address and port: the same for requests on one kept-alive connection."""
    chunks_sent: int = 0
    first_chunk_at: float | None = None
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when the client went away before the response was complete."""
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when the handler is done, whatever the outcome."""


class FakeOpenAi(LoopbackServer):
    """The fake server on 127.0.0.1, port chosen by the OS. ``url`` is the SDK's ``base_url``."""

    URL_TEMPLATE = "http://127.0.0.1:{port}/v1"
    SHUTDOWN_TIMEOUT_S = 60.0  # aiohttp's default: closing ends hanging scripts, the rest may finish

    def __init__(
        self,
        api_key: str = "sk-fake",
        *,
        default: Script | None = None,
        model: str | None = None,
        keep_alive: bool = True,
    ) -> None:
        super().__init__()
        self.api_key = api_key
        self.default = default or Script(text="Hello from the fake.")
        self.model = model
        """Reported in chunks; unset: the requested model."""
        self.keep_alive = keep_alive
        """False: ``Connection: close`` on every response (like a server that does not keep idle
        connections), so a client that is never closed holds no socket."""
        self.requests: list[RecordedRequest] = []
        self._scripts: deque[Script] = deque()
        self._ids = itertools.count(1)
        self._arrived = asyncio.Condition()

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/v1/chat/completions", self._completions)

    # -- scripting and inspection -------------------------------------------------------------

    def script(self, *scripts: Script) -> None:
        """Queue responses, played one per request in order."""
        self._scripts.extend(scripts)

    async def wait_request(self, n: int = 1) -> RecordedRequest:
        """The ``n``-th request (1-based), once it has arrived."""
        async with self._arrived:
            await self._arrived.wait_for(lambda: len(self.requests) >= n)
        return self.requests[n - 1]

    # -- the endpoint ---------------------------------------------------------------------------

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            body = None
        peer = request.transport.get_extra_info("peername") if request.transport is not None else None
        recorded = RecordedRequest(request.method, request.path, dict(request.headers), body, time.monotonic(), peer)
        async with self._arrived:
            self.requests.append(recorded)
            self._arrived.notify_all()
        try:
            response = await self._answer(request, recorded)
            if not self.keep_alive and not response.prepared:
                response.force_close()
            return response
        except (asyncio.CancelledError, ConnectionResetError):
            recorded.disconnected.set()
            raise
        finally:
            recorded.finished.set()

    async def _answer(self, request: web.Request, recorded: RecordedRequest) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return _error(401)
        body = recorded.body
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list) or not body.get("model"):
            return _error(400, "'messages' and 'model' are required properties.")
        script = self._scripts.popleft() if self._scripts else self.default
        if await self._pause(script.headers_after_s):
            return _error(503)
        if script.status != 200:
            return _error(script.status, script.error_message, retry_after=script.retry_after)
        completion_id = f"chatcmpl-fake{next(self._ids)}"
        calls = [(c, c.id or f"call_{completion_id[-4:]}_{i}") for i, c in enumerate(script.tool_calls)]
        if not body.get("stream"):
            if await self._pause(script.ttft_s):
                return _error(503)
            return web.json_response(_completion(completion_id, self.model or body["model"], script, calls))
        return await self._stream(request, recorded, script, completion_id, calls)

    async def _stream(
        self,
        request: web.Request,
        recorded: RecordedRequest,
        script: Script,
        completion_id: str,
        calls: list[tuple[ScriptedToolCall, str]],
    ) -> web.StreamResponse:
        body = recorded.body
        base = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": self.model or body["model"],
            "service_tier": "default",
            "system_fingerprint": "fp_fake",
        }
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
                "x-request-id": f"req_{completion_id}",
                "openai-processing-ms": "1",
            }
        )
        if not self.keep_alive:
            response.force_close()
        await response.prepare(request)
        deltas = _deltas(script, calls)
        loop = asyncio.get_running_loop()
        if await self._pause(script.ttft_s):
            return response
        origin = loop.time()
        step = 1 / script.tokens_per_s if script.tokens_per_s else 0.0
        for n, (delta, finish) in enumerate(deltas):
            if n == script.hang_after:
                await self.closing.wait()
                return response
            if n == script.cut_after:
                assert request.transport is not None
                request.transport.abort()
                return response
            if n == script.error_after:
                await _send(response, {"error": _error_body(500, script.error_message)})
                return response
            if step and n and await self._pause(origin + n * step - loop.time()):
                return response
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            await _send(response, {**base, "choices": [choice]})
            recorded.chunks_sent += 1
            if recorded.first_chunk_at is None:
                recorded.first_chunk_at = time.monotonic()
        if await self._pause(script.done_after_s):
            return response
        if (body.get("stream_options") or {}).get("include_usage"):
            await _send(response, {**base, "choices": [], "usage": _usage(script)})
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def _pause(self, seconds: float) -> bool:
        """Wait ``seconds``; True when the server is closing meanwhile."""
        if seconds <= 0:
            return self.closing.is_set()
        try:
            await asyncio.wait_for(self.closing.wait(), seconds)
        except TimeoutError:
            return False
        return True


def _deltas(script: Script, calls: list[tuple[ScriptedToolCall, str]]) -> list[tuple[dict[str, Any], str | None]]:
    """Every chunk's delta and finish_reason, in order."""
    first: dict[str, Any] = {"role": "assistant", "content": "" if not calls else None, "refusal": None}
    deltas: list[tuple[dict[str, Any], str | None]] = [(first, None)]
    deltas += [({"content": token}, None) for token in script.token_list()]
    for index, (call, call_id) in enumerate(calls):
        head = {"index": index, "id": call_id, "type": "function", "function": {"name": call.name, "arguments": ""}}
        deltas.append(({"tool_calls": [head]}, None))
        for piece in _split(call.argument_text(), call.pieces):
            deltas.append(({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}, None))
    deltas.append(({}, script.finish_reason or ("tool_calls" if calls else "stop")))
    return deltas


def _split(text: str, pieces: int) -> list[str]:
    size = max(1, -(-len(text) // max(1, pieces)))
    return [text[i : i + size] for i in range(0, len(text), size)]


def _completion(
    completion_id: str, model: str, script: Script, calls: list[tuple[ScriptedToolCall, str]]
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": "".join(script.token_list()) or None, "refusal": None}
    if calls:
        message["tool_calls"] = [
            {"id": call_id, "type": "function", "function": {"name": c.name, "arguments": c.argument_text()}}
            for c, call_id in calls
        ]
    finish = script.finish_reason or ("tool_calls" if calls else "stop")
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": _usage(script),
        "service_tier": "default",
        "system_fingerprint": "fp_fake",
    }


def _usage(script: Script) -> dict[str, int]:
    completion = len(script.token_list()) + sum(len(c.argument_text()) // 4 + 1 for c in script.tool_calls)
    return {"prompt_tokens": 10, "completion_tokens": completion, "total_tokens": 10 + completion}


def _error_body(status: int, message: str | None = None) -> dict[str, Any]:
    kind, default, code = ERRORS.get(status, ("server_error", f"HTTP {status}.", None))
    return {"message": message or default, "type": kind, "param": None, "code": code}


def _error(status: int, message: str | None = None, *, retry_after: str | None = None) -> web.Response:
    headers = {"Retry-After": retry_after} if retry_after is not None else None
    return web.json_response({"error": _error_body(status, message)}, status=status, headers=headers)


async def _send(response: web.StreamResponse, payload: dict[str, Any]) -> None:
    await response.write(b"data: " + orjson.dumps(payload) + b"\n\n")


async def _serve(args: argparse.Namespace) -> None:
    default = Script(text=args.text, ttft_s=args.ttft_ms / 1000, tokens_per_s=args.tokens_per_s)
    server = FakeOpenAi(args.api_key, default=default)
    await server.start(args.port)
    print(server.url, flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await server.close()


def main() -> None:
    """Serve the fake standalone (every request gets the same scripted reply), e.g. for benchmarks
    that point a Ringline server at it: ``python -m ringline.benchmarks.vendors.openai``."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--api-key", default="sk-fake")
    parser.add_argument("--text", default="Sure, I can help with that. What time would you like?")
    parser.add_argument("--ttft-ms", type=float, default=0.0)
    parser.add_argument("--tokens-per-s", type=float, default=0.0)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(parser.parse_args()))


if __name__ == "__main__":
    main()
