"""HTTP function tools: a tool call the LLM makes, sent to the user's server, its answer the result.

The request is a signed ``POST`` (or the tool's method) of a JSON body::

    {"type": "tool-calls", "call_id", "agent_id", "direction", "from_number", "to_number",
     "metadata", "variables", "tool_call": {"id", "name", "arguments"}}

with the tool's own headers and those its ``Stamp`` gives (signature, event, delivery id: the
delivery id is ``CALL_ID:TOOL_CALL_ID``, the same for every attempt, so a receiver can de-duplicate).
A ``GET`` sends no body: the arguments go in the query (strings as they are, anything else as JSON)
and the call and tool-call ids in ``X-Ringline-Call-Id`` / ``X-Ringline-Tool-Call-Id``; its
signature covers an empty body, not the query.

The answer, read up to ``MAX_ANSWER_BYTES``: a JSON object's ``result`` is the result (a string as
it is, anything else as compact JSON) and its ``error`` makes it a failure; other JSON is the result
as it is, other text likewise, an empty body ``ok``. Any other status than 2xx, no answer within the
tool's ``timeout_s``, or a connection that fails is a failure: a ``ToolError`` the LLM reads and can
recover from, and a ``fault`` recorded on the call.

A tool call is sent at most once: a second run of the same call (same id) gets the first's result.
Only a connection that could not be opened (nothing was sent) is tried again, within the timeout;
a timeout or a connection lost after sending never is, as the server may have acted on it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from ringline.engine.clients import POOL_KEEPALIVE_EXPIRY_S, HttpClients
from ringline.engine.llm.base import ToolCall
from ringline.engine.tools import CallControl, ToolError

log = logging.getLogger(__name__)

MAX_ANSWER_BYTES = 64 * 1024
"""A larger answer is a failure: it would crowd the LLM's context."""
CONNECT_RETRIES = 2
"""Further attempts when the connection could not be opened at all (within the tool's timeout)."""
RETRY_DELAY_S = 0.2
"""Wait before the first such retry; doubled before each next one."""
MAX_DETAIL = 200
"""Characters of an error answer's body quoted in the result the LLM reads."""

Stamp = Callable[[bytes, str], Mapping[str, str]]
"""The headers (signature and the like) of a request with this body and delivery id."""
USER_AGENT = "Ringline-Tools/1"


@dataclass(frozen=True, slots=True)
class HttpEndpoint:
    url: str
    method: str = "POST"
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout_s: float = 10.0
    """The whole request, retries included."""


@dataclass(frozen=True, slots=True)
class CallDetails:
    """What a tool's server is told about the call the tool runs in."""

    call_id: str
    agent_id: str
    direction: str = "inbound"
    from_number: str = ""
    to_number: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)
    variables: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "call_id": self.call_id,
            "agent_id": self.agent_id,
            "direction": self.direction,
            "from_number": self.from_number,
            "to_number": self.to_number,
            "metadata": dict(self.metadata),
            "variables": dict(self.variables),
        }


def tool_session(clients: HttpClients) -> aiohttp.ClientSession:
    """The process's HTTP client for tool calls (and other webhooks that wait for an answer)."""

    def make() -> tuple[aiohttp.ClientSession, Callable[[], Any]]:
        connector = aiohttp.TCPConnector(ssl=clients.tls_context(), limit=0, keepalive_timeout=POOL_KEEPALIVE_EXPIRY_S)
        session = aiohttp.ClientSession(connector=connector, raise_for_status=False)
        return session, session.close

    return clients.get(("http-tools",), make)


class HttpTool:
    """One function tool of one call: a ``CallHandler`` for ``ToolRegistry.register_call``."""

    def __init__(
        self,
        name: str,
        endpoint: HttpEndpoint,
        call: CallDetails,
        session: aiohttp.ClientSession,
        stamp: Stamp | None = None,
    ) -> None:
        self.name = name
        self._endpoint = endpoint
        self._call = call
        self._session = session
        self._stamp = stamp
        self._runs: dict[str, asyncio.Future[str]] = {}
        """Each tool call's result, by its id: a call of the tool is sent once."""
        self._extra = {"call_id": call.call_id}

    async def __call__(self, tool_call: ToolCall, control: CallControl) -> str:
        if (earlier := self._runs.get(tool_call.id)) is not None:
            log.warning("tool call %s of %s ran before: not sent again", tool_call.id, self.name, extra=self._extra)
            return await asyncio.shield(earlier)
        done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._runs[tool_call.id] = done
        try:
            result = await self._send(tool_call, control)
        except asyncio.CancelledError:
            done.set_result(ToolError("error: the call ended before the tool answered"))
            raise
        except Exception as exc:  # a bug of ours: still an answer for anyone waiting
            done.set_result(ToolError(f"error: {type(exc).__name__}: {exc}"))
            raise
        done.set_result(result)
        return result

    def _request(self, tool_call: ToolCall) -> tuple[bytes | None, dict[str, str], dict[str, str]]:
        """The body, headers and query of the request."""
        endpoint = self._endpoint
        headers = {"User-Agent": USER_AGENT, **endpoint.headers}
        if endpoint.method == "GET":
            query = {k: v if isinstance(v, str) else orjson.dumps(v).decode() for k, v in tool_call.arguments.items()}
            body = b""
            headers |= {"X-Ringline-Call-Id": self._call.call_id, "X-Ringline-Tool-Call-Id": tool_call.id}
        else:
            query = {}
            payload = {
                "type": "tool-calls",
                **self._call.to_dict(),
                "tool_call": {"id": tool_call.id, "name": tool_call.name, "arguments": tool_call.arguments},
            }
            body = orjson.dumps(payload)
            headers["Content-Type"] = "application/json"
        if self._stamp is not None:
            headers |= self._stamp(body, f"{self._call.call_id}:{tool_call.id}")
        return (body or None), headers, query

    async def _send(self, tool_call: ToolCall, control: CallControl) -> str:
        endpoint = self._endpoint
        body, headers, query = self._request(tool_call)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + endpoint.timeout_s
        delay = RETRY_DELAY_S
        attempt = 0
        while True:
            attempt += 1
            try:
                async with asyncio.timeout_at(deadline):
                    async with self._session.request(
                        endpoint.method, endpoint.url, data=body, headers=headers, params=query, allow_redirects=False
                    ) as resp:
                        status, raw = resp.status, await read_at_most(resp.content, MAX_ANSWER_BYTES)
            except TimeoutError:
                return self._failed(control, f"no answer within {endpoint.timeout_s:g} s")
            except aiohttp.ClientConnectorError as exc:  # never connected: nothing was sent
                if attempt > CONNECT_RETRIES or loop.time() + delay >= deadline:
                    tries = f"{attempt} attempt{'s' * (attempt > 1)}"
                    return self._failed(control, f"cannot connect ({tries}): {exc}")
                log.info("tool %s: cannot connect (%s), trying again", self.name, exc, extra=self._extra)
                await asyncio.sleep(delay)
                delay *= 2
                continue
            except aiohttp.ClientError as exc:  # sent, maybe acted on: never sent again
                return self._failed(control, f"the request failed: {type(exc).__name__}: {exc}")
            if raw is None:
                return self._failed(control, f"answered more than {MAX_ANSWER_BYTES // 1024} KiB")
            return self._answer(control, status, raw)

    def _answer(self, control: CallControl, status: int, raw: bytes) -> str:
        text = raw.decode("utf-8", errors="replace").strip()
        if not 200 <= status < 300:
            excerpt = f": {text[:MAX_DETAIL]}" if text else ""
            return self._failed(control, f"answered HTTP {status}{excerpt}")
        if not text:
            return "ok"
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return text
        if isinstance(doc, dict):
            if doc.get("error") not in (None, "", False):
                return self._failed(control, f"answered an error: {_text(doc['error'])[:MAX_DETAIL]}")
            if "result" in doc:
                return _text(doc["result"])
        return _text(doc)

    def _failed(self, control: CallControl, why: str) -> ToolError:
        detail = f"{self.name}: {why}"
        control.fault("tool", detail)
        return ToolError(f"error: the {self.name} tool failed: {why}")


async def read_at_most(stream: aiohttp.StreamReader, limit: int) -> bytes | None:
    """The whole body, or None if it is longer than ``limit`` bytes (reading stops there)."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await stream.read(limit + 1 - size):
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            return None
    return b"".join(chunks)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()
