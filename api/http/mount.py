"""Mounting the control API: a sub-application under ``/api/v1`` with one middleware.

For every request the middleware (1) takes or makes the request id, (2) finds the key's principal,
(3) counts the request against that key's rate limit, or the client address's when there is no
valid key, and (4) turns every error into the envelope: our ``ApiError``s with their status,
aiohttp's 404/405/413 likewise, anything unexpected as a logged 500 that names only the request id.
A response hook stamps ``X-Request-ID`` and ``X-RateLimit-*`` on every response, WebSocket
upgrades and the docs included.

Each declared operation is wrapped by ``_endpoint``: scopes, query and body validation, the
per-call limit, the call, and the envelope around what the handler returned.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from ringline.api.http import envelope
from ringline.api.http.auth import KeyLookup, Principal, authenticate
from ringline.api.http.docs import add_docs_routes
from ringline.api.http.errors import ApiError, Forbidden, InternalError, RateLimited, Unauthorized, code_for_status
from ringline.api.http.openapi import build_openapi
from ringline.api.http.ratelimit import Decision, RateLimiter
from ringline.api.http.routes import ApiRequest, ApiRoutes, Operation
from ringline.api.http.tokens import EventTokenSigner
from ringline.api.http.validation import parse_body, parse_query

log = logging.getLogger(__name__)


class ApiOptions(BaseModel):
    """The control API's settings; every option has one default, here."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prefix: str = Field("/api/v1", pattern=r"^/[A-Za-z0-9/_.-]*[A-Za-z0-9_.-]$")
    title: str = "Ringline control API"
    version: str = "1.0.0"
    """The API's version, as the OpenAPI document states it."""
    requests_per_key: int = Field(1000, ge=1)
    """Requests each API key may make per ``period_s``."""
    requests_per_address: int = Field(100, ge=1)
    """Requests without a valid key (docs, failed authentication) per client address per ``period_s``."""
    commands_per_call: int = Field(10, ge=1)
    """Control commands (say, transfer, end, ...) each call accepts per ``period_s``."""
    period_s: float = Field(60.0, gt=0)
    max_tracked: int = Field(100_000, ge=1)
    """Keys, addresses or calls each rate limiter remembers at most (least recently seen forgotten first)."""
    docs: bool = True
    """Serve ``/openapi.json`` and the ``/docs`` page."""
    max_concurrent: int = Field(4, ge=1)
    """API requests handled at once (WebSocket upgrades aside); more wait their turn. The API shares
    its event loop with live calls' media: this bounds how much of the loop it can take at a time."""


@dataclass(frozen=True, slots=True)
class ApiState:
    keys: KeyLookup
    options: ApiOptions
    per_key: RateLimiter
    per_address: RateLimiter
    per_call: RateLimiter
    wall: Callable[[], float]
    operations: tuple[Operation, ...]
    document: dict[str, Any]
    tokens: EventTokenSigner | None
    gate: asyncio.Semaphore
    errors: Mapping[type[Exception], type[ApiError]]


API_STATE = web.AppKey("api_state", ApiState)
EVENT_TOKENS = web.AppKey("event_tokens", EventTokenSigner)
"""Set when ``setup_api`` is given a signer: the events-token endpoint and the events socket use it."""

REQUEST_ID = web.RequestKey("request_id", str)
PRINCIPAL = web.RequestKey("principal", Principal)
_AUTH_ERROR = web.RequestKey("auth_error", Unauthorized)
_RATE = web.RequestKey("rate", Decision)
_OPERATION = web.RequestKey("operation", Operation)
_SENT = web.RequestKey("sent", web.StreamResponse)

_MISSING_KEY = "missing API key: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'"


def _meta(request: web.Request, state: ApiState) -> dict[str, Any]:
    return envelope.meta(request[REQUEST_ID], state.wall())


@web.middleware
async def api_middleware(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
    state = request.config_dict[API_STATE]
    request[REQUEST_ID] = envelope.request_id_from(request.headers.get(envelope.REQUEST_ID_HEADER))
    if request.headers.get("Upgrade", "").lower() == "websocket":  # lives as long as its call: no slot
        return await _handle(request, handler, state)
    async with state.gate:
        return await _handle(request, handler, state)


async def _handle(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]], state: ApiState
) -> web.StreamResponse:
    try:
        try:
            principal = await authenticate(request, state.keys)
        except Unauthorized as exc:  # only fatal where a key is required: the route decides
            principal = None
            request[_AUTH_ERROR] = exc
        if principal is not None:
            request[PRINCIPAL] = principal
            decision = state.per_key.hit(principal.id)
        else:
            decision = state.per_address.hit(request.remote or "unknown")
        request[_RATE] = decision
        if not decision.allowed:
            period = state.options.period_s
            raise RateLimited(
                f"rate limit exceeded: {decision.limit} requests per {period:g} s", retry_after=decision.retry_seconds
            )
        return await handler(request)
    except Exception as exc:
        if (sent := request.get(_SENT)) is not None:  # a raw handler failed after starting its response
            log.exception(
                "%s %s failed after responding (request %s)", request.method, request.path, request[REQUEST_ID]
            )
            return sent
        return _error_response(request, state, exc)


def _error_response(request: web.Request, state: ApiState, exc: Exception) -> web.Response:
    for kind, error in state.errors.items():
        if isinstance(exc, kind):
            exc = error(str(exc))
            break
    if isinstance(exc, ApiError):
        if (op := request.get(_OPERATION)) is not None and exc.status not in op.error_statuses():
            log.warning("%s %s answered %d, which it does not document", op.method, op.path, exc.status)
        return envelope.failure(exc.message, exc.code, exc.status, _meta(request, state), exc.details, exc.headers)
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:  # a redirect: not an error
            raise exc
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        default_text = f"{exc.status}: {exc.reason}"
        message = exc.text if exc.text and exc.text != default_text else exc.reason.lower()
        return envelope.failure(message, code_for_status(exc.status), exc.status, _meta(request, state), None, headers)
    log.error("unhandled error in %s %s (request %s)", request.method, request.path, request[REQUEST_ID], exc_info=exc)
    message = f"internal error; quote request id {request[REQUEST_ID]} when reporting it"
    return envelope.failure(message, InternalError.code, 500, _meta(request, state))


async def _stamp_headers(request: web.Request, response: web.StreamResponse) -> None:
    request[_SENT] = response
    if (request_id := request.get(REQUEST_ID)) is not None:
        response.headers[envelope.REQUEST_ID_HEADER] = request_id
    if (decision := request.get(_RATE)) is not None:
        for name, value in decision.headers().items():
            response.headers.setdefault(name, value)


def _endpoint(op: Operation) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def endpoint(request: web.Request) -> web.StreamResponse:
        request[_OPERATION] = op
        state = request.config_dict[API_STATE]
        principal = request.get(PRINCIPAL)
        if not op.public:
            if principal is None:
                raise request.get(_AUTH_ERROR) or Unauthorized(_MISSING_KEY)
            if missing := principal.missing(op.scopes):
                raise Forbidden(f"this API key lacks the scope {' and '.join(missing)}")
        query = parse_query(op.query, request.query, op.query_lists) if op.query is not None else None
        body = parse_body(op.body, await request.read()) if op.body is not None else None
        if op.call_limited:
            decision = state.per_call.hit(request.match_info["call_id"])
            if not decision.allowed:
                limit, period = decision.limit, state.options.period_s
                raise RateLimited(
                    f"too many control commands for this call: {limit} per {period:g} s",
                    retry_after=decision.retry_seconds,
                )
        result = await op.handler(ApiRequest(request, principal, body, query, request[REQUEST_ID]))
        return _render(op, result, query, request, state)

    endpoint.__name__ = op.handler.__name__
    return endpoint


def _render(op: Operation, result: Any, query: Any, request: web.Request, state: ApiState) -> web.StreamResponse:
    """The envelope around a handler's result; a result that breaks the declaration is a bug (500)."""
    where = f"{op.method} {op.path} ({op.handler.__qualname__})"
    if op.raw:
        if not isinstance(result, web.StreamResponse):
            raise TypeError(f"{where} is raw and must return a StreamResponse, not {type(result).__name__}")
        return result
    pagination = None
    if op.response is None:
        if result is not None:
            raise TypeError(f"{where} declares no response and must return None, not {type(result).__name__}")
        data = None
    elif op.many:
        if not isinstance(result, envelope.Page) or not all(isinstance(i, op.response) for i in result.items):
            raise TypeError(f"{where} must return a Page of {op.response.__name__}")
        data = [item.model_dump(mode="json", by_alias=True) for item in result.items]
        pagination = envelope.pagination(query.limit, query.offset, result.total)
    else:
        if not isinstance(result, op.response):
            raise TypeError(f"{where} must return {op.response.__name__}, not {type(result).__name__}")
        data = result.model_dump(mode="json", by_alias=True)
    return envelope.success(data, envelope.meta(request[REQUEST_ID], state.wall(), pagination), op.status)


def build_api_app(
    routes: Iterable[ApiRoutes],
    keys: KeyLookup,
    *,
    options: ApiOptions | None = None,
    tokens: EventTokenSigner | None = None,
    errors: Mapping[type[Exception], type[ApiError]] | None = None,
    clock: Callable[[], float] = time.monotonic,
    wall: Callable[[], float] = time.time,
) -> web.Application:
    """The API as an application to mount at ``options.prefix``. ``errors`` maps the exceptions of
    the layers below (the store's not-found and conflict) to the API errors they answer as, with
    their message; ``clock`` (monotonic seconds) drives the rate limiters, ``wall`` (Unix seconds)
    the envelope's timestamps."""
    options = options or ApiOptions()
    operations = tuple(op for table in routes for op in table)
    seen: dict[str, Operation] = {}
    for op in operations:
        if (other := seen.setdefault(op.operation_id, op)) is not op:
            raise ValueError(f"operationId {op.operation_id!r} of {op.method} {op.path} is also {other.path}'s")
    document = build_openapi(
        operations,
        title=options.title,
        version=options.version,
        server_url=options.prefix,
        per_call_note=f"Limited to {options.commands_per_call} control commands per {options.period_s:g} s per call.",
    )

    def limiter(limit: int) -> RateLimiter:
        return RateLimiter(limit, options.period_s, clock=clock, max_keys=options.max_tracked)

    app = web.Application(middlewares=[api_middleware])
    app[API_STATE] = ApiState(
        keys=keys,
        options=options,
        per_key=limiter(options.requests_per_key),
        per_address=limiter(options.requests_per_address),
        per_call=limiter(options.commands_per_call),
        wall=wall,
        operations=operations,
        document=document,
        tokens=tokens,
        gate=asyncio.Semaphore(options.max_concurrent),
        errors=dict(errors or {}),
    )
    if tokens is not None:
        app[EVENT_TOKENS] = tokens
    for op in operations:
        app.router.add_route(op.method, op.path, _endpoint(op))
    if options.docs:
        add_docs_routes(app, document, options.title)
    app.on_response_prepare.append(_stamp_headers)
    return app


def setup_api(app: web.Application, routes: Iterable[ApiRoutes], keys: KeyLookup, **kw: Any) -> web.Application:
    """Mount the API on ``app`` at ``options.prefix`` (``/api/v1``); returns the sub-application.
    Keyword arguments are ``build_api_app``'s."""
    api = build_api_app(routes, keys, **kw)
    app.add_subapp(api[API_STATE].options.prefix, api)
    return api
