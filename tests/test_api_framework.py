"""The control API's framework on a real server on 127.0.0.1, driven by a real HTTP client.

A tiny example resource ("widgets", plus a call control command and a live-events socket) is
declared here exactly as the real resources declare theirs. Rate limits run on a fake clock.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import re
from dataclasses import dataclass, field
from typing import Literal

import aiohttp
import jsonschema
import orjson
import pytest
from aiohttp import web
from openapi_spec_validator import validate as validate_openapi
from pydantic import BaseModel, Field, ValidationError

from ringline.api.http import (
    EVENT_TOKENS,
    ApiModel,
    ApiOptions,
    ApiRequest,
    ApiRoutes,
    Conflict,
    EventTokenSigner,
    ListQuery,
    MemoryKeyStore,
    NotFound,
    Page,
    PhoneNumber,
    PhoneNumberError,
    RateLimiter,
    Scope,
    TokenError,
    build_api_app,
    generate_key,
    hash_key,
    parse_phone,
    setup_api,
)
from ringline.api.http.envelope import request_id_from

pytestmark = pytest.mark.timeout(30)

NOW = 1_700_000_000.0  # the wall clock of every envelope: 2023-11-14T22:13:20Z
STAMP = "2023-11-14T22:13:20.000Z"


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


# ---- the example resource -------------------------------------------------------------------


class WidgetSpec(ApiModel):
    speed: float = Field(1.0, ge=0.5, le=2.0)


class WidgetCreate(ApiModel):
    name: str = Field(min_length=1, max_length=20)
    size: int = Field(1, ge=1, le=10)
    colour: Literal["red", "blue"] = "red"
    phone: PhoneNumber | None = None
    spec: WidgetSpec = WidgetSpec()


class Widget(BaseModel):
    id: str
    name: str
    size: int
    colour: Literal["red", "blue"]
    phone: PhoneNumber | None
    spec: WidgetSpec


class WidgetQuery(ListQuery):
    colour: Literal["red", "blue"] | None = None
    name: list[str] = Field(default_factory=list, description="Any of these names.")


class Say(ApiModel):
    text: str = Field(min_length=1, max_length=200)


class Said(BaseModel):
    call_id: str
    text: str


class EventsQuery(ApiModel):
    token: str = Field(max_length=2048)


@dataclass
class Shelf:
    widgets: dict[str, Widget] = field(default_factory=dict)
    said: list[Said] = field(default_factory=list)


SHELF = web.AppKey("shelf", Shelf)

routes = ApiRoutes(tag="widgets")


@routes.post("/widgets", body=WidgetCreate, response=Widget, scopes={Scope.AGENTS_WRITE}, status=201, errors={409})
async def create_widget(req: ApiRequest[WidgetCreate, None]) -> Widget:
    """Create a widget.

    Names are unique.
    """
    shelf = req.app[SHELF]
    if any(w.name == req.body.name for w in shelf.widgets.values()):
        raise Conflict(f"a widget named {req.body.name!r} exists", details={"name": "taken"})
    widget = Widget(id=f"w{len(shelf.widgets) + 1}", **req.body.model_dump())
    shelf.widgets[widget.id] = widget
    return widget


@routes.get("/widgets", query=WidgetQuery, response=Widget, many=True, scopes={Scope.AGENTS_READ})
async def list_widgets(req: ApiRequest[None, WidgetQuery]) -> Page[Widget]:
    q = req.query
    found = [
        w
        for w in req.app[SHELF].widgets.values()
        if (q.colour is None or w.colour == q.colour) and (not q.name or w.name in q.name)
    ]
    return Page(found[q.offset : q.offset + q.limit], len(found))


@routes.get("/widgets/{widget_id}", response=Widget, scopes={Scope.AGENTS_READ})
async def get_widget(req: ApiRequest[None, None]) -> Widget:
    if (widget := req.app[SHELF].widgets.get(req.params["widget_id"])) is None:
        raise NotFound(f"no widget {req.params['widget_id']}")
    return widget


@routes.delete("/widgets/{widget_id}", scopes={Scope.AGENTS_WRITE})
async def delete_widget(req: ApiRequest[None, None]) -> None:
    if req.app[SHELF].widgets.pop(req.params["widget_id"], None) is None:
        raise NotFound(f"no widget {req.params['widget_id']}")


@routes.get("/broken", response=Widget)
async def broken(req: ApiRequest[None, None]) -> Widget:
    raise RuntimeError("secret detail: password=hunter2")


@routes.get("/wrong-type", response=Widget)
async def wrong_type(req: ApiRequest[None, None]) -> Widget:
    return {"id": "not a model"}  # type: ignore[return-value]


@routes.post("/calls/{call_id}/say", body=Say, response=Said, scopes={Scope.CALLS_WRITE}, call_limited=True)
async def say(req: ApiRequest[Say, None]) -> Said:
    said = Said(call_id=req.params["call_id"], text=req.body.text)
    req.app[SHELF].said.append(said)
    return said


@routes.get("/calls/{call_id}/events", raw=True, public=True, query=EventsQuery, errors={401}, tag="calls")
async def call_events(req: ApiRequest[None, EventsQuery]) -> web.WebSocketResponse:
    """Live events of a call (WebSocket).

    Authenticate with ``?token=`` from ``POST /calls/{call_id}/events/token``.
    """
    claims = req.app[EVENT_TOKENS].verify(req.query.token, req.params["call_id"])
    ws = web.WebSocketResponse()
    await ws.prepare(req.http)
    await ws.send_json({"event": "hello", "call_id": claims.call_id, "key_id": claims.key_id})
    await ws.close()
    return ws


@routes.get("/calls/{call_id}/crash", raw=True, scopes={Scope.CALLS_READ})
async def crash_after_upgrade(req: ApiRequest[None, None]) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(req.http)
    raise RuntimeError("lost the event stream")


# ---- the server -----------------------------------------------------------------------------


@dataclass
class Server:
    url: str
    keys: MemoryKeyStore
    clock: FakeClock
    signer: EventTokenSigner
    shelf: Shelf
    admin: str
    reader: str
    writer: str
    session: aiohttp.ClientSession

    def request(self, method: str, path: str, key: str | None = None, header: str = "bearer", **kw):
        headers = kw.pop("headers", {})
        if key is not None:
            headers |= {"Authorization": f"Bearer {key}"} if header == "bearer" else {"X-API-Key": key}
        return self.session.request(method, self.url + path, headers=headers, **kw)


@pytest.fixture
async def serve():
    cleanups = []

    async def start(**options) -> Server:
        keys = MemoryKeyStore()
        admin, _ = keys.create("ops", {Scope.ADMIN}, key_id="key_admin")
        reader, _ = keys.create("dashboard", {Scope.AGENTS_READ}, key_id="key_reader")
        writer, _ = keys.create("crm", {Scope.AGENTS_READ, Scope.AGENTS_WRITE, Scope.CALLS_WRITE}, key_id="key_writer")
        clock = FakeClock()
        signer = EventTokenSigner(b"s" * 32, now=lambda: NOW)
        app = web.Application()
        app[SHELF] = Shelf()
        setup_api(app, [routes], keys, options=ApiOptions(**options), tokens=signer, clock=clock, wall=lambda: NOW)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        session = aiohttp.ClientSession()
        cleanups.append((session, runner))
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/api/v1"
        return Server(url, keys, clock, signer, app[SHELF], admin, reader, writer, session)

    yield start
    for session, runner in cleanups:
        await session.close()
        await runner.cleanup()


async def call(server: Server, method: str, path: str, key: str | None = None, **kw) -> tuple[int, dict, dict]:
    async with server.request(method, path, key, **kw) as resp:
        return resp.status, await resp.json(), dict(resp.headers)


def assert_error(body: dict, code: str, error: str | None = None, details: dict | None = None) -> None:
    assert set(body) == {"success", "error", "code", "details", "meta"}
    assert body["success"] is False
    assert body["code"] == code
    if error is not None:
        assert body["error"] == error
    assert body["details"] == (details or {})
    assert body["meta"]["timestamp"] == STAMP
    assert body["meta"]["request_id"]


# ---- auth -----------------------------------------------------------------------------------


async def test_missing_key_is_401_with_www_authenticate(serve):
    server = await serve()
    status, body, headers = await call(server, "GET", "/widgets")
    assert status == 401
    assert_error(body, "unauthorized", "missing API key: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'")
    assert headers["WWW-Authenticate"] == 'Bearer realm="ringline"'


@pytest.mark.parametrize(
    ("headers", "error"),
    [
        ({"Authorization": "Bearer not-a-key"}, "malformed API key"),
        ({"X-API-Key": "rl_short"}, "malformed API key"),
        (
            {"Authorization": "Basic dXNlcjpwYXNz"},
            "unsupported Authorization scheme: use 'Bearer KEY' or the X-API-Key header",
        ),
        ({"Authorization": "Bearer "}, "empty bearer token"),
        ({"Authorization": "Bearer " + generate_key()}, "invalid or revoked API key"),
        (
            {"Authorization": "Bearer " + generate_key(), "X-API-Key": generate_key()},
            "Authorization and X-API-Key carry different keys",
        ),
    ],
)
async def test_bad_keys_are_401(serve, headers, error):
    server = await serve()
    status, body, _ = await call(server, "GET", "/widgets", headers=headers)
    assert status == 401
    assert_error(body, "unauthorized", error)


async def test_revoked_key_is_401(serve):
    server = await serve()
    key, principal = server.keys.create("temp", {Scope.AGENTS_READ})
    assert (await call(server, "GET", "/widgets", key))[0] == 200
    assert server.keys.revoke(principal.id)
    status, body, _ = await call(server, "GET", "/widgets", key)
    assert status == 401
    assert_error(body, "unauthorized", "invalid or revoked API key")


@pytest.mark.parametrize("header", ["bearer", "x-api-key"])
async def test_both_header_forms_authenticate(serve, header):
    server = await serve()
    status, body, _ = await call(server, "POST", "/widgets", server.writer, header=header, json={"name": "a"})
    assert status == 201
    assert body["data"]["name"] == "a"
    # the same key in both headers is fine too
    same = {"Authorization": f"Bearer {server.reader}", "X-API-Key": server.reader}
    assert (await call(server, "GET", "/widgets", headers=same))[0] == 200


async def test_missing_scope_is_403_and_admin_passes(serve):
    server = await serve()
    status, body, _ = await call(server, "POST", "/widgets", server.reader, json={"name": "a"})
    assert status == 403
    assert_error(body, "forbidden", "this API key lacks the scope agents:write")
    assert server.shelf.widgets == {}  # refused before the handler ran
    status, body, _ = await call(server, "POST", "/widgets", server.admin, json={"name": "a"})
    assert status == 201


def test_keys_are_random_prefixed_and_stored_only_as_hashes():
    key = generate_key()
    assert re.fullmatch(r"rl_[A-Za-z0-9_-]{43}", key)
    assert generate_key() != key
    assert hash_key(key) == hashlib.sha256(key.encode()).hexdigest()
    store = MemoryKeyStore()
    secret, principal = store.create("x", {"calls:read"})
    assert secret not in repr(store.__dict__)
    assert hash_key(secret) in store._by_hash
    with pytest.raises(ValueError, match=r"unknown scopes \['calls:delete'\]"):
        store.create("y", {"calls:delete"})


# ---- envelope -------------------------------------------------------------------------------


async def test_success_envelope_and_request_id_echo(serve):
    server = await serve()
    status, body, headers = await call(
        server, "POST", "/widgets", server.writer, json={"name": "a", "phone": "+1 (415) 555-2671"}
    )
    assert status == 201
    assert body == {
        "success": True,
        "data": {"id": "w1", "name": "a", "size": 1, "colour": "red", "phone": "+14155552671", "spec": {"speed": 1.0}},
        "meta": {"request_id": headers["X-Request-ID"], "timestamp": STAMP},
    }
    assert headers["X-Request-ID"].startswith("req_")
    assert headers["Content-Type"] == "application/json"
    # a sane incoming id is echoed, in the header and the body
    status, body, headers = await call(server, "GET", "/widgets/w1", server.reader, headers={"X-Request-ID": "abc-123"})
    assert status == 200
    assert headers["X-Request-ID"] == body["meta"]["request_id"] == "abc-123"
    # an insane one is replaced
    status, body, headers = await call(server, "GET", "/widgets/w1", server.reader, headers={"X-Request-ID": "<x>" * 3})
    assert headers["X-Request-ID"].startswith("req_") and body["meta"]["request_id"] == headers["X-Request-ID"]


def test_request_id_sanity():
    assert request_id_from("trace-1.2:3_x") == "trace-1.2:3_x"
    for bad in (None, "", "-leading", "a" * 129, "sp ace", "ünï"):
        assert re.fullmatch(r"req_[0-9a-f]{24}", request_id_from(bad))


async def test_list_envelope_has_pagination(serve):
    server = await serve()
    for name in ("a", "b", "c"):
        await call(server, "POST", "/widgets", server.writer, json={"name": name, "colour": "blue"})
    status, body, _ = await call(server, "GET", "/widgets?limit=2", server.reader)
    assert status == 200
    assert [w["name"] for w in body["data"]] == ["a", "b"]
    assert body["meta"]["pagination"] == {"limit": 2, "offset": 0, "total": 3, "has_more": True}
    status, body, _ = await call(server, "GET", "/widgets?limit=2&offset=2", server.reader)
    assert [w["name"] for w in body["data"]] == ["c"]
    assert body["meta"]["pagination"] == {"limit": 2, "offset": 2, "total": 3, "has_more": False}
    status, body, _ = await call(server, "GET", "/widgets", server.reader, params=[("name", "a"), ("name", "c")])
    assert [w["name"] for w in body["data"]] == ["a", "c"]
    assert body["meta"]["pagination"] == {"limit": 50, "offset": 0, "total": 2, "has_more": False}
    status, body, _ = await call(server, "GET", "/widgets?colour=red", server.reader)
    assert body["data"] == [] and body["meta"]["pagination"]["total"] == 0


async def test_none_response_is_data_null(serve):
    server = await serve()
    await call(server, "POST", "/widgets", server.writer, json={"name": "a"})
    status, body, _ = await call(server, "DELETE", "/widgets/w1", server.writer)
    assert (status, body["success"], body["data"]) == (200, True, None)
    status, body, _ = await call(server, "DELETE", "/widgets/w1", server.writer)
    assert status == 404
    assert_error(body, "not_found", "no widget w1")


# ---- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "details"),
    [
        ({"name": "a", "size": 11}, {"size": "Input should be less than or equal to 10"}),
        ({"name": ""}, {"name": "String should have at least 1 character"}),
        ({"name": "a", "colour": "green"}, {"colour": "Input should be 'red' or 'blue'"}),
        ({"name": "a", "spec": {"speed": 3}}, {"spec.speed": "Input should be less than or equal to 2"}),
        ({"name": "a", "spec": {"sped": 1}}, {"spec.sped": "unknown field"}),
        ({"name": "a", "colour2": "red"}, {"colour2": "unknown field"}),
        ({"size": 2}, {"name": "required"}),
        (
            {"name": "a", "phone": "415 555 2671"},
            {"phone": "not in international format: start with + and the country code"},
        ),
        ({"name": "a", "phone": "+1 555 0100"}, {"phone": "not a valid phone number for its country"}),
        ([1, 2], {"body": "must be a JSON object"}),
    ],
)
async def test_invalid_body_is_422_with_field_details(serve, payload, details):
    server = await serve()
    status, body, _ = await call(server, "POST", "/widgets", server.writer, json=payload)
    assert status == 422
    assert_error(body, "validation_error", details=details)
    assert server.shelf.widgets == {}


@pytest.mark.parametrize(
    ("query", "details"),
    [
        ("limit=101", {"query.limit": "Input should be less than or equal to 100"}),
        ("limit=0", {"query.limit": "Input should be greater than or equal to 1"}),
        ("offset=-1", {"query.offset": "Input should be greater than or equal to 0"}),
        ("limit=ten", {"query.limit": "Input should be a valid integer, unable to parse string as an integer"}),
        ("bogus=1", {"query.bogus": "unknown field"}),
        ("limit=1&limit=2", {"query.limit": "given more than once"}),
    ],
)
async def test_invalid_query_is_422(serve, query, details):
    server = await serve()
    status, body, _ = await call(server, "GET", "/widgets?" + query, server.reader)
    assert status == 422
    assert_error(body, "validation_error", "invalid query parameters", details)


@pytest.mark.parametrize(
    ("data", "error"),
    [(b'{"name": "a",', "invalid JSON: "), (b"", "a JSON request body is required"), (b"nul", "invalid JSON: ")],
)
async def test_unreadable_body_is_400(serve, data, error):
    server = await serve()
    status, body, _ = await call(
        server, "POST", "/widgets", server.writer, data=data, headers={"Content-Type": "application/json"}
    )
    assert status == 400
    assert body["code"] == "bad_request" and body["error"].startswith(error)


async def test_oversized_body_is_an_enveloped_413(serve):
    server = await serve()
    big = b'{"name": "' + b"a" * (2 * 1024 * 1024) + b'"}'
    status, body, _ = await call(server, "POST", "/widgets", server.writer, data=io.BytesIO(big))
    assert status == 413
    assert body["code"] == "request_entity_too_large" and body["error"].startswith("Maximum request body size")


async def test_conflict_is_409_with_details(serve):
    server = await serve()
    await call(server, "POST", "/widgets", server.writer, json={"name": "a"})
    status, body, _ = await call(server, "POST", "/widgets", server.writer, json={"name": "a"})
    assert status == 409
    assert_error(body, "conflict", "a widget named 'a' exists", {"name": "taken"})


def test_phone_numbers():
    assert parse_phone("+1 (415) 555-2671") == "+14155552671"
    assert parse_phone("+44 20 7183 8750") == "+442071838750"
    assert parse_phone("020 7183 8750", "GB") == "+442071838750"
    assert parse_phone("020 7183 8750", "gb") == "+442071838750"
    assert parse_phone("(415) 555-2671", "US") == "+14155552671"
    assert parse_phone("+33 1 42 68 53 00", "US") == "+33142685300"  # an international number ignores the country
    cases = [
        (("4155552671", None), "not in international format: start with + and the country code"),
        (("+1 555 0100", None), "not a valid phone number for its country"),
        (("+999 1234567", None), "unknown country calling code"),
        (("hello", None), "not a phone number"),
        (("020 7183 8750", "XX"), "unknown country code 'XX'"),
        (("+1" + "5" * 70, None), "too long for a phone number (at most 64 characters)"),
    ]
    for (value, country), message in cases:
        with pytest.raises(PhoneNumberError) as err:
            parse_phone(value, country)
        assert str(err.value) == message


def test_phone_number_type_rejects_non_strings():
    class M(ApiModel):
        phone: PhoneNumber

    with pytest.raises(ValidationError, match="must be a string"):
        M(phone=14155552671)
    assert M(phone="+14155552671").phone == "+14155552671"


# ---- errors from aiohttp and from bugs ------------------------------------------------------


async def test_unknown_route_and_method_are_enveloped(serve):
    server = await serve()
    status, body, headers = await call(server, "GET", "/nothing-here", server.reader)
    assert status == 404
    assert_error(body, "not_found", "not found")
    assert "X-RateLimit-Limit" in headers and "X-Request-ID" in headers
    status, body, headers = await call(server, "PUT", "/widgets", server.reader)
    assert status == 405
    assert_error(body, "method_not_allowed", "method not allowed")
    assert set(headers["Allow"].split(",")) == {"GET", "POST"}


async def test_unexpected_exception_is_a_500_that_leaks_nothing(serve, caplog):
    server = await serve()
    with caplog.at_level(logging.ERROR, logger="ringline.api.http.mount"):
        async with server.request("GET", "/broken", server.reader, headers={"X-Request-ID": "trace-500"}) as resp:
            text = await resp.text()
            status, headers = resp.status, resp.headers
    assert status == 500
    assert "hunter2" not in text and "Traceback" not in text and "RuntimeError" not in text
    body = orjson.loads(text)
    assert_error(body, "internal_error", "internal error; quote request id trace-500 when reporting it")
    assert headers["X-Request-ID"] == "trace-500"
    [record] = [r for r in caplog.records if r.name == "ringline.api.http.mount"]
    assert record.getMessage() == "unhandled error in GET /api/v1/broken (request trace-500)"
    assert record.exc_info is not None and "hunter2" in str(record.exc_info[1])


async def test_a_handler_breaking_its_declaration_is_a_500(serve, caplog):
    server = await serve()
    with caplog.at_level(logging.ERROR, logger="ringline.api.http.mount"):
        status, body, _ = await call(server, "GET", "/wrong-type", server.reader)
    assert status == 500 and body["code"] == "internal_error"
    assert "must return Widget, not dict" in str(caplog.records[-1].exc_info[1])


# ---- rate limits ----------------------------------------------------------------------------


async def test_rate_limit_headers_on_every_response_and_429_after_the_limit(serve):
    server = await serve(requests_per_key=3, period_s=60)
    seen = []
    for _ in range(3):
        status, _, headers = await call(server, "GET", "/widgets", server.reader)
        assert status == 200
        seen.append((headers["X-RateLimit-Limit"], headers["X-RateLimit-Remaining"], headers["X-RateLimit-Reset"]))
    assert seen == [("3", "2", "20"), ("3", "1", "40"), ("3", "0", "60")]
    status, body, headers = await call(server, "GET", "/widgets", server.reader)
    assert status == 429
    assert_error(body, "rate_limited", "rate limit exceeded: 3 requests per 60 s")
    assert headers["Retry-After"] == "20"
    assert (headers["X-RateLimit-Remaining"], headers["X-RateLimit-Reset"]) == ("0", "60")
    # another key has its own budget
    assert (await call(server, "GET", "/widgets", server.writer))[0] == 200
    # a 404 and an error count and carry the headers too
    server.clock.advance(20)
    status, _, headers = await call(server, "GET", "/widgets/none", server.reader)
    assert status == 404 and headers["X-RateLimit-Remaining"] == "0"
    server.clock.advance(20)
    status, _, headers = await call(server, "GET", "/widgets", server.reader)
    assert status == 200 and headers["X-RateLimit-Remaining"] == "0"
    server.clock.advance(60)
    status, _, headers = await call(server, "GET", "/widgets", server.reader)
    assert status == 200 and headers["X-RateLimit-Remaining"] == "2"


async def test_requests_without_a_valid_key_are_limited_per_address(serve):
    server = await serve(requests_per_address=2)
    guesses = [{"Authorization": "Bearer " + generate_key()} for _ in range(3)]
    assert (await call(server, "GET", "/widgets", headers=guesses[0]))[0] == 401
    status, _, headers = await call(server, "GET", "/widgets", headers=guesses[1])
    assert status == 401 and headers["X-RateLimit-Limit"] == "2" and headers["X-RateLimit-Remaining"] == "0"
    status, body, headers = await call(server, "GET", "/widgets", headers=guesses[2])
    assert status == 429 and headers["Retry-After"] == "30"
    # a real key is counted against itself, not the address
    status, _, headers = await call(server, "GET", "/widgets", server.reader)
    assert status == 200 and headers["X-RateLimit-Limit"] == "1000"


async def test_control_commands_are_limited_per_call(serve):
    server = await serve(commands_per_call=2)
    for _ in range(2):
        status, body, _ = await call(server, "POST", "/calls/CA1/say", server.writer, json={"text": "hi"})
        assert status == 200 and body["data"] == {"call_id": "CA1", "text": "hi"}
    # invalid commands are refused before they count
    assert (await call(server, "POST", "/calls/CA1/say", server.writer, json={"txt": "hi"}))[0] == 422
    status, body, headers = await call(server, "POST", "/calls/CA1/say", server.writer, json={"text": "third"})
    assert status == 429
    assert_error(body, "rate_limited", "too many control commands for this call: 2 per 60 s")
    assert headers["Retry-After"] == "30"
    assert headers["X-RateLimit-Limit"] == "1000"  # the key's own limit is still reported
    assert [s.text for s in server.shelf.said] == ["hi", "hi"]
    assert (await call(server, "POST", "/calls/CA2/say", server.writer, json={"text": "other call"}))[0] == 200
    server.clock.advance(30)
    assert (await call(server, "POST", "/calls/CA1/say", server.writer, json={"text": "later"}))[0] == 200


def test_gcra_limiter_arithmetic():
    clock = FakeClock(0.0)
    limiter = RateLimiter(4, 60.0, clock=clock)
    decisions = [limiter.hit("k") for _ in range(5)]
    assert [d.allowed for d in decisions] == [True, True, True, True, False]
    assert [d.remaining for d in decisions] == [3, 2, 1, 0, 0]
    assert decisions[3].reset_after == pytest.approx(60.0)
    assert decisions[4].retry_after == pytest.approx(15.0)
    assert decisions[4].headers() == {
        "X-RateLimit-Limit": "4",
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": "60",
        "Retry-After": "15",
    }
    clock.advance(14.9)
    assert not limiter.hit("k").allowed  # refusals do not push the key further back...
    clock.advance(0.1)
    d = limiter.hit("k")
    assert d.allowed and d.remaining == 0  # ...one slot back every 15 s, no window-edge burst
    clock.advance(45.0)
    assert limiter.hit("k").remaining == 2


def test_limiter_forgets_idle_keys_and_caps_memory():
    clock = FakeClock(0.0)
    limiter = RateLimiter(10, 60.0, clock=clock, max_keys=50)
    for i in range(20):
        limiter.hit(f"k{i}")
    assert len(limiter) == 20
    clock.advance(6.0)  # each key's single request is forgotten after period / limit
    limiter.hit("fresh")
    assert len(limiter) == 1
    for i in range(200):
        limiter.hit(f"flood{i}")
    assert len(limiter) == 50
    with pytest.raises(ValueError):
        RateLimiter(0, 60.0)


# ---- event tokens ---------------------------------------------------------------------------


def test_event_tokens_sign_verify_expire_and_bind_to_the_call():
    now = FakeClock(NOW)
    signer = EventTokenSigner(b"k" * 32, now=now)
    issued = signer.issue("CA1", "key_writer")
    assert issued.expires_at == NOW + 300
    claims = signer.verify(issued.token, "CA1")
    assert (claims.call_id, claims.key_id) == ("CA1", "key_writer")

    def refused(token: str, call_id: str = "CA1") -> str:
        with pytest.raises(TokenError) as err:
            signer.verify(token, call_id)
        assert err.value.status == 401
        return err.value.message

    assert refused(issued.token, "CA2") == "token is for another call"
    version, payload, signature = issued.token.split(".")
    forged = EventTokenSigner(b"x" * 32, now=now).issue("CA1", "key_writer").token
    assert refused(forged) == "bad token signature"
    other = signer.issue("CA2", "key_writer").token.split(".")[1]
    assert refused(f"{version}.{other}.{signature}") == "bad token signature"  # payload swapped
    assert refused("garbage") == "malformed token"
    assert refused(f"v2.{payload}.{signature}") == "malformed token"
    now.advance(299)
    assert signer.verify(issued.token, "CA1").call_id == "CA1"
    now.advance(1)
    assert refused(issued.token) == "token expired"
    with pytest.raises(ValueError, match="at least 32 bytes"):
        EventTokenSigner(b"short")


async def test_events_socket_accepts_a_token_and_refuses_a_bad_one(serve):
    server = await serve()
    token = server.signer.issue("CA9", "key_reader").token
    ws_url = server.url.replace("http", "ws", 1) + "/calls/CA9/events"
    async with server.session.ws_connect(ws_url, params={"token": token}) as ws:
        assert await ws.receive_json(timeout=5) == {"event": "hello", "call_id": "CA9", "key_id": "key_reader"}
        assert ws._response.headers["X-Request-ID"].startswith("req_")
        assert "X-RateLimit-Limit" in ws._response.headers
    status, body, _ = await call(server, "GET", "/calls/CA8/events", params={"token": token})
    assert status == 401
    assert_error(body, "unauthorized", "token is for another call")
    status, body, _ = await call(server, "GET", "/calls/CA9/events")
    assert status == 422 and body["details"] == {"query.token": "required"}


async def test_a_socket_failing_after_the_upgrade_is_logged_not_enveloped(serve, caplog):
    server = await serve()
    ws_url = server.url.replace("http", "ws", 1) + "/calls/CA9/crash"
    with caplog.at_level(logging.ERROR, logger="ringline.api.http.mount"):
        async with server.session.ws_connect(ws_url, headers={"X-API-Key": server.admin}) as ws:
            msg = await ws.receive(timeout=5)
            assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    [record] = caplog.records
    assert record.getMessage().startswith("GET /api/v1/calls/CA9/crash failed after responding (request req_")
    assert str(record.exc_info[1]) == "lost the event stream"
    status, body, _ = await call(server, "GET", "/calls/CA9/crash")  # before the upgrade: an envelope
    assert status == 401 and body["code"] == "unauthorized"


# ---- OpenAPI and docs -----------------------------------------------------------------------


async def test_openapi_document_is_valid_and_describes_the_routes(serve):
    server = await serve()
    status, doc, headers = await call(server, "GET", "/openapi.json")  # public: no key
    assert status == 200
    validate_openapi(doc)
    assert doc["openapi"] == "3.1.0"
    assert doc["servers"] == [{"url": "/api/v1"}]
    assert set(doc["paths"]) == {
        "/widgets",
        "/widgets/{widget_id}",
        "/broken",
        "/wrong-type",
        "/calls/{call_id}/say",
        "/calls/{call_id}/events",
        "/calls/{call_id}/crash",
    }
    create = doc["paths"]["/widgets"]["post"]
    assert create["operationId"] == "createWidget"
    assert create["summary"] == "Create a widget."
    assert create["description"].startswith("Names are unique.\n\nScopes: `agents:write`")
    assert create["tags"] == ["widgets"]
    assert create["security"] == [{"bearerAuth": ["agents:write"]}, {"apiKeyHeader": ["agents:write"]}]
    assert create["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/WidgetCreate"
    }
    assert set(create["responses"]) == {"201", "400", "401", "403", "409", "413", "422", "429", "500"}
    listing = doc["paths"]["/widgets"]["get"]
    params = {p["name"]: p for p in listing["parameters"]}
    assert set(params) == {"limit", "offset", "colour", "name"}
    assert params["limit"]["schema"]["maximum"] == 100 and params["limit"]["required"] is False
    assert params["name"]["schema"]["type"] == "array"
    get_one = doc["paths"]["/widgets/{widget_id}"]["get"]
    assert get_one["parameters"] == [
        {"name": "widget_id", "in": "path", "required": True, "schema": {"type": "string"}}
    ]
    assert "404" in get_one["responses"]
    events = doc["paths"]["/calls/{call_id}/events"]["get"]
    assert events["security"] == [] and "101" in events["responses"] and events["tags"] == ["calls"]
    say_op = doc["paths"]["/calls/{call_id}/say"]["post"]
    assert "Limited to 10 control commands per 60 s per call." in say_op["description"]
    schemes = doc["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": schemes["bearerAuth"]["description"],
    }
    assert schemes["apiKeyHeader"]["in"] == "header" and schemes["apiKeyHeader"]["name"] == "X-API-Key"
    assert {"Widget", "WidgetCreate", "WidgetSpec", "Meta", "ListMeta", "Pagination", "ErrorEnvelope"} <= set(
        doc["components"]["schemas"]
    )
    assert "WidgetQuery" not in doc["components"]["schemas"]  # documented as parameters instead


def _response_schema(doc: dict, path: str, method: str, status: int) -> tuple[dict, dict]:
    spec = doc["paths"][path][method]["responses"][str(status)]
    if "$ref" in spec:
        spec = doc["components"]["responses"][spec["$ref"].rsplit("/", 1)[1]]
    return spec["content"]["application/json"]["schema"] | {"components": doc["components"]}, spec["headers"]


async def test_responses_match_their_documented_schemas_and_headers(serve):
    server = await serve(requests_per_key=4)
    _, doc, _ = await call(server, "GET", "/openapi.json")
    exchanges = [
        ("post", "/widgets", "/widgets", server.writer, {"name": "a", "phone": "+14155552671"}),
        ("post", "/widgets", "/widgets", server.writer, {"name": "a"}),  # 409
        ("post", "/widgets", "/widgets", server.writer, {"name": 5}),  # 422
        ("get", "/widgets", "/widgets?limit=1", server.reader, None),
        ("get", "/widgets/{widget_id}", "/widgets/w1", server.reader, None),
        ("get", "/widgets/{widget_id}", "/widgets/w7", server.reader, None),  # 404
        ("post", "/widgets", "/widgets", server.reader, {"name": "b"}),  # 403
        ("get", "/widgets", "/widgets", None, None),  # 401
        ("delete", "/widgets/{widget_id}", "/widgets/w1", server.admin, None),
        ("get", "/broken", "/broken", server.admin, None),  # 500
        ("get", "/widgets", "/widgets", server.reader, None),  # 429: the reader's fifth
    ]
    statuses = []
    for method, template, path, key, payload in exchanges:
        status, body, headers = await call(server, method.upper(), path, key, json=payload)
        statuses.append(status)
        schema, documented_headers = _response_schema(doc, template, method, status)
        jsonschema.validate(body, schema, cls=jsonschema.Draft202012Validator)
        for name, header in documented_headers.items():
            required = header.get("required") or ("$ref" in header and doc["components"]["headers"][name]["required"])
            if required:
                assert name in headers, (path, status, name)
    assert statuses == [201, 409, 422, 200, 200, 404, 403, 401, 200, 500, 429]


async def test_docs_page_and_its_assets_are_served_locally(serve):
    server = await serve()
    async with server.request("GET", "/docs") as resp:
        assert resp.status == 200
        assert resp.content_type == "text/html"
        page = await resp.text()
        assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
        assert "X-RateLimit-Remaining" in resp.headers and "X-Request-ID" in resp.headers
    assert "<title>Ringline control API</title>" in page
    assets = re.findall(r'(?:src|href)="(docs/[^"]+)"', page)
    assert set(assets) == {
        "docs/swagger-ui.css",
        "docs/swagger-ui-bundle.js",
        "docs/init.js",
        "docs/favicon-32x32.png",
        "docs/favicon-16x16.png",
    }
    assert "http" not in page  # nothing from another origin
    for asset in assets:
        async with server.request("GET", "/" + asset) as resp:
            assert resp.status == 200, asset
            content = await resp.read()
            assert len(content) > 100
    async with server.request("GET", "/docs/swagger-ui-bundle.js") as resp:
        assert "javascript" in resp.content_type
        assert b"SwaggerUIBundle" in await resp.read()
    async with server.request("GET", "/docs/init.js") as resp:
        assert 'url: "openapi.json"' in await resp.text()
    # public pages ignore a stale key instead of refusing it
    async with server.request("GET", "/openapi.json", generate_key()) as resp:
        assert resp.status == 200
    status, body, _ = await call(server, "GET", "/docs/swagger-editor-bundle.js")
    assert status == 404 and body["code"] == "not_found"
    async with server.request("GET", "/docs/", allow_redirects=False) as resp:
        assert resp.status == 308 and resp.headers["Location"] == "../docs"


# ---- declarations that cannot be served honestly are refused ---------------------------------


class Loose(BaseModel):
    name: str


def test_declaration_mistakes_are_caught_at_import():
    table = ApiRoutes()
    with pytest.raises(TypeError, match=r"Loose \(body of POST /x\) must forbid extra fields"):
        table.post("/x", body=Loose)
    with pytest.raises(TypeError, match="a list endpoint's query must subclass ListQuery"):
        table.get("/x", response=Widget, many=True)
    with pytest.raises(ValueError, match="call_limited needs a {call_id} path parameter"):
        table.post("/calls/{id}/say", call_limited=True)
    with pytest.raises(ValueError, match=r"unknown scopes \['agents:delete'\]"):
        table.get("/x", scopes={"agents:delete"})(get_widget)
    with pytest.raises(ValueError, match="no regular expressions"):
        table.get("/x/{id:\\d+}")
    with pytest.raises(ValueError, match=r"no description for error statuses \[418\]"):
        table.get("/x", errors={418})
    with pytest.raises(ValueError, match="status must be 2xx"):
        table.post("/x", status=302)
    twice = ApiRoutes()
    twice.get("/a")(get_widget)
    twice.get("/b")(get_widget)
    with pytest.raises(ValueError, match="operationId 'getWidget' of GET /b is also /a's"):
        build_api_app([twice], MemoryKeyStore())


# ---- sharing the loop with live calls -----------------------------------------------------------

gate_routes = ApiRoutes(tag="gate")
GATE = web.AppKey("gate", dict)


@gate_routes.get("/slow", public=True)
async def slow(req: ApiRequest[None, None]) -> None:
    state = req.app[GATE]
    state["inside"] += 1
    state["most"] = max(state["most"], state["inside"])
    state["entered"].set()
    await state["release"].wait()
    state["inside"] -= 1


async def test_at_most_max_concurrent_requests_are_handled_at_once() -> None:
    app = web.Application()
    app[GATE] = {"inside": 0, "most": 0, "entered": asyncio.Event(), "release": asyncio.Event()}
    setup_api(app, [gate_routes], MemoryKeyStore(), options=ApiOptions(max_concurrent=2))
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/api/v1/slow"
    try:
        async with aiohttp.ClientSession() as session:

            async def get() -> int:
                async with session.get(url) as resp:
                    return resp.status

            requests = [asyncio.create_task(get()) for _ in range(5)]
            while app[GATE]["inside"] < 2:  # two are in; the others wait for a slot
                app[GATE]["entered"].clear()
                await app[GATE]["entered"].wait()
            assert app[GATE]["inside"] == 2
            app[GATE]["release"].set()
            assert await asyncio.gather(*requests) == [200] * 5
            assert app[GATE]["most"] == 2
    finally:
        await runner.cleanup()
