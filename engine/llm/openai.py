"""OpenAI Chat Completions behind the ``Llm`` seam: api.openai.com, or any server speaking that API
(vLLM, llama.cpp server, Ollama) through ``base_url``. The only module that imports ``openai``.

One streamed request per ``stream()``: text deltas are yielded as they arrive; tool calls are
assembled from their fragments by ``index`` and each is yielded as soon as it is complete (a
later index starts, or the stream ends). The SDK does not retry (``max_retries=0``): the caller
decides (retry once before the first token, then the fallback provider).

Failures are ``ProviderError``:

- connection errors, timeouts, HTTP 408/409/429/5xx, a stream cut mid-way, an error event in the
  stream, and a stream that ends without ``finish_reason``: ``retryable=True``;
- HTTP 400/401/403/404 and other 4xx: ``retryable=False``;
- no first token within ``first_token_timeout_s``, or no complete reply within ``timeout_s``
  (both on the injected clock): the request is cancelled, ``retryable=True``.

A ``Retry-After`` header (429, 503) is in the message and, in seconds, in ``retry_after``.

Error texts never contain the API key (redacted should a server echo it), and errors are raised
``from None``: the SDK's exception (with the raw response body) is not chained into logged
tracebacks.

Clients: given the process's ``HttpClients``, every call shares one ``AsyncOpenAI`` (and its
connection pool) per base URL, key and timeout (``openai_client``, also used by the OpenAI TTS
adapter); without, the adapter makes its own, closed by ``aclose``.

Choices:

- Tool-call arguments that are not a JSON object: the tool is called with ``{}`` and a warning is
  logged. The tool's own error then reaches the LLM as its result, and it can try again: one
  garbled call does not fail the caller's turn.
- The output limit is sent as ``max_completion_tokens`` to api.openai.com (its reasoning models
  reject ``max_tokens``) and as ``max_tokens`` to every other server (what vLLM, llama.cpp and
  Ollama all accept).
- Reasoning deltas (``reasoning_content``) are not spoken and do not count as the first token.
- The request goes through the SDK client's ``post`` (its base URL, auth, headers, timeouts and
  error mapping) with the body built here and the response handed back unread, instead of
  ``chat.completions.create``: ``create`` walks its parameters against the SDK's TypedDicts on the
  event loop (~0.3 ms of CPU per request with an empty context, ~9 ms with 20 messages), for the
  same bytes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx2
import openai
import orjson

from ringline.config.providers import OpenAiLlmConfig
from ringline.engine.audio.clock import Clock, LoopClock
from ringline.engine.clients import POOL_KEEPALIVE_EXPIRY_S, HttpClients
from ringline.engine.errors import ProviderError, parse_retry_after
from ringline.engine.llm.base import Context, LlmEvent, Message, TextDelta, Tool, ToolCall

log = logging.getLogger(__name__)

OPENAI_URL = "https://api.openai.com/v1"
RETRYABLE_STATUS = frozenset({408, 409, 429})
"""Plus every 5xx."""


_STREAMED: Any = {"headers": {"X-Stainless-Raw-Response": "stream"}}
"""Request options that make the SDK hand back the HTTP response unread (what its
``with_streaming_response`` sets): the body is read here, line by line, as it streams."""


def openai_client(clients: HttpClients, *, api_key: str, base_url: str, timeout_s: float) -> openai.AsyncOpenAI:
    """The ``AsyncOpenAI`` for this base URL, key and timeout, shared through ``clients``: its pool
    keeps connections between turns and calls, on the one TLS context. The SDK never retries.

    HTTP goes through the SDK's aiohttp transport (``DefaultAioHttpClient``, its option for high
    concurrency) instead of httpx's own pool: aiohttp parses responses in C and takes a pooled
    connection without walking the pool, where httpx (h11, anyio) polls every idle connection
    per request. CPU per streamed reply, 100 at a time: 1.2-2.1 ms against 2.6-3.0 ms (measured)."""

    def make() -> tuple[openai.AsyncOpenAI, Callable[[], Awaitable[None]]]:
        # max_connections=0 is aiohttp's "no limit" (its default is 100): a call's request never
        # waits for a connection another call holds; the number of calls bounds them.
        limits = httpx2.Limits(max_connections=0, keepalive_expiry=POOL_KEEPALIVE_EXPIRY_S)
        http = openai.DefaultAioHttpClient(verify=clients.tls_context(), timeout=timeout_s, limits=limits)
        client = openai.AsyncOpenAI(
            api_key=api_key, base_url=base_url, max_retries=0, timeout=timeout_s, http_client=http
        )
        return client, client.close

    return clients.get(("openai", base_url, api_key, timeout_s), make)


async def warm_up(config: OpenAiLlmConfig, clients: HttpClients | None = None) -> None:
    """The one-time costs of the first call, paid at start-up instead (importing this module is
    the biggest, ~1.2 s): the TLS context and the shared client. Sends nothing."""
    llm = OpenAiLlm(config, LoopClock(), clients=clients)
    llm.client()
    await llm.aclose()


class OpenAiLlm:
    def __init__(self, config: OpenAiLlmConfig, clock: Clock, *, clients: HttpClients | None = None) -> None:
        self._config = config
        self._clock = clock
        self._secret = config.api_key.get_secret_value()
        self._base_url = config.base_url or OPENAI_URL
        host = urlsplit(self._base_url).hostname
        self._token_param = "max_completion_tokens" if host == "api.openai.com" else "max_tokens"
        self._owns_clients = clients is None
        self._clients = HttpClients() if clients is None else clients
        self._drains: set[asyncio.Task[None]] = set()  # finished replies' bodies being read to the end

    def client(self) -> openai.AsyncOpenAI:
        """The SDK client (made on first use, on the event loop)."""
        return openai_client(
            self._clients, api_key=self._secret, base_url=self._base_url, timeout_s=self._config.timeout_s
        )

    async def aclose(self) -> None:
        """Close the adapter's own client, if it made one; a shared one is its owner's to close.
        Bodies still being read to their end are let finish first."""
        await self.settle()
        if self._owns_clients:
            await self._clients.aclose()

    async def settle(self) -> None:
        """Wait until the bodies of finished replies are read to their end (their connections are
        back in the pool); ``aclose`` does. A new request does not wait: in a call the last body
        ended seconds ago, and one a server still holds open only keeps its own connection busy
        (the request takes another), never the next reply."""
        if self._drains:
            await asyncio.gather(*self._drains, return_exceptions=True)

    def request(self, context: Context, tools: Sequence[Tool]) -> dict[str, Any]:
        """The JSON body of the Chat Completions request for this context (streamed)."""
        config = self._config
        body: dict[str, Any] = {
            "model": config.model,
            "messages": [to_openai_message(m) for m in context.messages],
            "stream": True,
            "temperature": config.temperature,
        }
        if config.max_tokens is not None:
            body[self._token_param] = config.max_tokens
        if tools:
            body["tools"] = [to_openai_tool(t) for t in tools]
            body["parallel_tool_calls"] = config.parallel_tool_calls
        return body

    async def stream(self, context: Context, tools: Sequence[Tool]) -> AsyncIterator[LlmEvent]:
        body = self.request(context, tools)
        config = self._config
        task = asyncio.current_task()
        assert task is not None
        watchdog = _Watchdog(self._clock, task, config.first_token_timeout_s, config.timeout_s)
        calls = ToolCallAssembler()
        response: httpx2.Response | None = None
        try:
            watchdog.start()
            watchdog.waiting = True
            try:
                response = await self.client().post(
                    "/chat/completions", cast_to=httpx2.Response, body=body, options=_STREAMED
                )
            finally:
                watchdog.waiting = False
            events = sse_data(response.aiter_lines())
            while (data := await self._next(events, watchdog)) is not None:
                chunk = parse_chunk(data)
                if chunk is None:
                    continue
                delta, finish_reason = chunk
                if content := delta.get("content"):
                    watchdog.started = True
                    yield TextDelta(content)
                if tool_calls := delta.get("tool_calls"):
                    watchdog.started = True
                    for call in calls.feed(tool_calls):
                        yield call
                if finish_reason is not None:
                    if finish_reason not in ("stop", "tool_calls"):
                        log.warning("openai: the reply ended early: finish_reason %s", finish_reason)
                    for call in calls.finish():
                        yield call
                    # The reply is whole: end it now, and read what follows ([DONE], the end of
                    # the body) aside, so the connection goes back to the pool.
                    self._drain_later(events, response)
                    response = None
                    return
            raise ProviderError("openai: the stream ended without a finish_reason", retryable=True)
        except asyncio.CancelledError:
            if watchdog.claim_cancellation():
                raise ProviderError(watchdog.expired, retryable=True) from None
            raise
        except openai.APIError as exc:
            if watchdog.claim_cancellation():  # the SDK turned our cancellation into its error
                raise ProviderError(watchdog.expired, retryable=True) from None
            retryable = is_retryable(exc)
            retry_after = retry_after_of(exc) if retryable else None
            raise ProviderError(self._redact(describe(exc)), retryable=retryable, retry_after=retry_after) from None
        except ProviderError as exc:  # from the stream: its text may quote what the server sent
            raise ProviderError(self._redact(str(exc)), retryable=exc.retryable, retry_after=exc.retry_after) from None
        finally:
            await watchdog.stop()
            if response is not None:
                await response.aclose()

    def _drain_later(self, events: AsyncIterator[str], response: httpx2.Response) -> None:
        task = asyncio.create_task(self._drain(events, response), name="openai-drain")
        self._drains.add(task)
        task.add_done_callback(self._drains.discard)

    async def _drain(self, events: AsyncIterator[str], response: httpx2.Response) -> None:
        """Read a finished reply's body to its end (within ``timeout_s``) and close it: a body read
        to the end leaves its connection reusable, one cut short closes it."""
        try:
            async with asyncio.timeout(self._config.timeout_s):
                async for _ in events:
                    pass
        except (TimeoutError, httpx2.HTTPError, ProviderError) as exc:
            log.debug("openai: the end of a finished reply's body was not read (%s): its connection closes", exc)
        finally:
            await response.aclose()

    async def _next(self, events: AsyncIterator[str], watchdog: _Watchdog) -> str | None:
        """The next event's data; None at the end of the body."""
        if watchdog.expired:
            raise ProviderError(watchdog.expired, retryable=True)
        watchdog.waiting = True
        try:
            return await anext(events, None)
        except httpx2.TimeoutException:
            raise ProviderError("openai: request timed out", retryable=True) from None
        except httpx2.HTTPError as exc:  # the connection failed mid-stream
            raise ProviderError(f"openai: connection error ({type(exc).__name__}: {exc})", retryable=True) from None
        finally:
            watchdog.waiting = False

    def _redact(self, text: str) -> str:
        return text.replace(self._secret, "[redacted]") if len(self._secret) >= 4 else text


# -- request mapping ------------------------------------------------------------------------------


def to_openai_message(message: Message) -> dict[str, Any]:
    """A context message in the Chat Completions shape. An interrupted assistant message already
    holds only what the caller heard: it goes as is."""
    if message.role == "tool":
        return {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.content}
    if message.role == "assistant" and message.tool_calls:
        return {
            "role": "assistant",
            "content": message.content or None,
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": orjson.dumps(call.arguments).decode()},
                }
                for call in message.tool_calls
            ],
        }
    return {"role": message.role, "content": message.content}


def to_openai_tool(tool: Tool) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {"name": tool.name, "description": tool.description, "parameters": tool.parameters},
    }


# -- errors ---------------------------------------------------------------------------------------


def is_retryable(exc: openai.APIError) -> bool:
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in RETRYABLE_STATUS or exc.status_code >= 500
    return True  # connection errors, timeouts, an error event mid-stream


def retry_after_of(exc: openai.APIError) -> float | None:
    """Seconds the server asked to wait (``Retry-After`` of an error response), if it said."""
    if isinstance(exc, openai.APIStatusError):
        return parse_retry_after(exc.response.headers.get("retry-after"))
    return None


def describe(exc: openai.APIError) -> str:
    """One line for operators, from the parts of the SDK's error that are safe to show."""
    if isinstance(exc, openai.APIConnectionError):
        if timed_out(exc):
            return "openai: request timed out"
        cause = root_cause(exc)
        if cause is exc:
            return "openai: connection error"
        return f"openai: connection error ({type(cause).__name__}: {cause})"
    body = exc.body if isinstance(exc.body, dict) else {}
    message = body.get("message") if isinstance(body.get("message"), str) else exc.message
    code = exc.code or exc.type
    if isinstance(exc, openai.APIStatusError):
        text = f"openai: HTTP {exc.status_code}" + (f" {code}" if code else "") + f": {message}"
        if retry_after := exc.response.headers.get("retry-after"):
            text += f" (retry after {retry_after} s)"
        return text
    return "openai: error in the stream" + (f" {code}" if code else "") + f": {message}"


def root_cause(exc: BaseException) -> BaseException:
    """The first exception of the chain: what aiohttp raised, under the httpx and SDK errors it was
    mapped to."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


def timed_out(exc: BaseException) -> bool:
    """A timeout, by what went wrong first: the SDK's aiohttp transport maps a refused connection
    to httpx's ``ConnectTimeout`` (so to the SDK's ``APITimeoutError``)."""
    return isinstance(root_cause(exc), TimeoutError | httpx2.TimeoutException | openai.APITimeoutError)


# -- stream parsing -------------------------------------------------------------------------------


async def sse_data(lines: AsyncIterator[str]) -> AsyncIterator[str]:
    """The ``data`` of each server-sent event (several data lines joined by newlines); comments,
    other fields and events without data are skipped."""
    data: list[str] = []
    async for line in lines:
        if line:
            if line.startswith("data:"):
                data.append(line[6:] if line.startswith("data: ") else line[5:])
        elif data:
            yield data[0] if len(data) == 1 else "\n".join(data)
            data = []
    if data:
        yield "\n".join(data)


def parse_chunk(data: str) -> tuple[dict[str, Any], str | None] | None:
    """A ``chat.completion.chunk``'s first choice as ``(delta, finish_reason)``; None for ``[DONE]``
    and chunks without choices (usage). An error event raises."""
    if data == "[DONE]":
        return None
    try:
        chunk = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise ProviderError("openai: a stream event is not JSON", retryable=True) from None
    if not isinstance(chunk, dict):
        raise ProviderError("openai: a stream event is not a JSON object", retryable=True)
    if (error := chunk.get("error")) is not None:
        error = error if isinstance(error, dict) else {"message": str(error)}
        code = error.get("code") or error.get("type")
        raise ProviderError(
            "openai: error in the stream" + (f" {code}" if code else "") + f": {error.get('message')}",
            retryable=True,
        )
    choices = chunk.get("choices")
    if not choices:
        return None
    choice = choices[0]
    return choice.get("delta") or {}, choice.get("finish_reason")


# -- stream assembly ------------------------------------------------------------------------------


@dataclass(slots=True)
class _PendingCall:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class ToolCallAssembler:
    """Tool-call deltas in, complete ``ToolCall``s out. Fragments are grouped by ``index`` (id and
    name come first, the arguments in pieces); a call is complete when a later index starts or
    the stream ends."""

    def __init__(self) -> None:
        self._pending: dict[int, _PendingCall] = {}
        self._last = -1

    def feed(self, deltas: Sequence[dict[str, Any]]) -> list[ToolCall]:
        complete: list[ToolCall] = []
        for delta in deltas:
            index = delta.get("index")
            call_id = delta.get("id")
            if index is None:  # some servers leave it out: a new id is a new call
                current = self._pending.get(self._last)
                index = self._last + 1 if current is None or (call_id and call_id != current.id) else self._last
            if index < self._last and index not in self._pending:
                log.warning("openai: fragment of tool call %d after it was complete: ignored", index)
                continue
            if index > self._last:
                complete += self._complete(below=index)
                self._last = index
            pending = self._pending.setdefault(index, _PendingCall())
            if call_id and not pending.id:
                pending.id = call_id
            if function := delta.get("function"):
                if (name := function.get("name")) and not pending.name:
                    pending.name = name
                if arguments := function.get("arguments"):
                    pending.arguments.append(
                        arguments if isinstance(arguments, str) else orjson.dumps(arguments).decode()
                    )
        return complete

    def finish(self) -> list[ToolCall]:
        return self._complete(below=None)

    def _complete(self, below: int | None) -> list[ToolCall]:
        ready = sorted(i for i in self._pending if below is None or i < below)
        return [_tool_call(self._pending.pop(i)) for i in ready]


def _tool_call(pending: _PendingCall) -> ToolCall:
    call_id = pending.id or Context.new_call_id()
    if not pending.name:
        log.warning("openai: tool call %s has no name", call_id)
    return ToolCall(call_id, pending.name, parse_arguments("".join(pending.arguments), pending.name, call_id))


def parse_arguments(text: str, name: str, call_id: str) -> dict[str, Any]:
    """The arguments object; ``{}`` (and a warning) when they are not a JSON object."""
    if not text.strip():
        return {}
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        log.warning("openai: tool call %s %s: arguments are not JSON (%s): calling it with {}", name, call_id, exc)
        return {}
    if not isinstance(value, dict):
        log.warning(
            "openai: tool call %s %s: arguments are a JSON %s: calling it with {}", name, call_id, type(value).__name__
        )
        return {}
    return value


# -- deadlines on the injected clock --------------------------------------------------------------


class _Watchdog:
    """``asyncio.timeout`` on the injected clock, for the two deadlines of one request. Past a
    deadline, if the consumer's task is waiting on the provider it is cancelled (and the
    cancellation claimed back as a ``ProviderError``, like ``asyncio.timeout`` turns it into
    ``TimeoutError``); if it is elsewhere (the stream is suspended at a ``yield``), ``expired`` is
    raised when the stream resumes: the consumer's own awaits are never cancelled."""

    def __init__(self, clock: Clock, task: asyncio.Task[Any], first_token_s: float, total_s: float) -> None:
        self._clock = clock
        self._task = task
        self._first_token_s = first_token_s
        self._total_s = total_s
        self._baseline = task.cancelling()
        self._cancelled = False
        self._watch: asyncio.Task[None] | None = None
        self.waiting = False
        """The consumer's task is inside the SDK (awaiting headers or a chunk)."""
        self.started = False
        """The first token has arrived."""
        self.expired = ""
        """Why the request failed, once a deadline passed."""

    def start(self) -> None:
        self._watch = asyncio.create_task(self._run(self._clock.now()), name="openai-deadline")

    async def _run(self, origin: float) -> None:
        end = origin + self._total_s
        await self._clock.sleep_until(min(end, origin + self._first_token_s))
        if not self.started and self._first_token_s < self._total_s:
            self._expire(f"openai: no first token within {self._first_token_s:g} s")
            return
        await self._clock.sleep_until(end)
        self._expire(f"openai: no complete reply within {self._total_s:g} s")

    def _expire(self, reason: str) -> None:
        self.expired = reason
        if self.waiting:
            self._cancelled = True
            self._task.cancel()

    def claim_cancellation(self) -> bool:
        """In ``except CancelledError``: True when the cancellation was ours alone."""
        return self._cancelled and self._task.uncancel() <= self._baseline

    async def stop(self) -> None:
        if self._watch is not None and not self._watch.done():
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
