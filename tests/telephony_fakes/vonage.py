"""A local Vonage Voice API (``https://api.nexmo.com``) with its signed answer webhooks::

    async with FakeVonage(application_id, public_key_pem) as fake:   # base URL: fake.url
        call, status, ncco = await fake.incoming(answer_url, from_="14155550199", to="14155550100")
        call, status, ncco = await fake.pick_up(uuid)                  # the callee of a created call answers
        status = await fake.event(uuid, "busy")                        # a call event to its event_url

Endpoints (JSON; ``Authorization: Bearer`` an application JWT, RS256 with the application's key,
``application_id`` claim):

- ``POST /v1/calls``: ``to`` (list of endpoints), ``from``, ``answer_url`` (or ``ncco``); answers
  201 ``{"uuid", "status": "started", "direction": "outbound", "conversation_uuid"}``.
- ``PUT /v1/calls/{uuid}``: ``{"action": "hangup"}`` or ``{"action": "transfer", "destination"}``:
  204; 404 for an unknown call, 400 for one over.

Errors are RFC 7807 problems (``type``, ``title``, ``detail``, ``invalid_parameters``). Answer
webhooks are GETs with ``to``, ``from``, ``uuid``, ``conversation_uuid`` added to the URL's query,
signed with a JWT (HS256 with the signature secret; ``iat``, ``jti``, ``application_id``). A
``connect`` to a ``websocket`` endpoint opens the media socket through ``opener`` with its headers.
Call events are POSTed as JSON to the call's ``event_url``, signed the same way with the body's
SHA-256 as ``payload_hash``.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

import jwt
import orjson
from aiohttp import web

from tests.telephony_fakes.base import FakeProvider


@dataclass(slots=True)
class VonageCall:
    uuid: str
    from_: str
    to: str
    answer_url: str
    event_url: str = ""
    status: str = "started"
    """``started``, ``answered``, ``completed``."""
    nccos: list[Any] = field(default_factory=list)


def problem(status: int, title: str, detail: str, invalid: list[str] | None = None) -> web.Response:
    body: dict[str, Any] = {
        "type": "https://developer.nexmo.com/api-errors/voice#" + title.lower().replace(" ", "-"),
        "title": title,
        "detail": detail,
        "instance": str(uuid.uuid4()),
    }
    if invalid:
        body["invalid_parameters"] = [{"name": name, "reason": "Is not valid"} for name in invalid]
    return web.json_response(body, status=status)


class FakeVonage(FakeProvider):
    def __init__(
        self, application_id: str, public_key_pem: str, signature_secret: str = "vonage-signature-secret-0123456789"
    ) -> None:
        super().__init__()
        self.application_id = application_id
        self.public_key_pem = public_key_pem
        self.signature_secret = signature_secret
        self.calls: dict[str, VonageCall] = {}

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/v1/calls", self._create)
        router.add_put("/v1/calls/{uuid}", self._update)

    # -- scripting -----------------------------------------------------------------------------------

    async def incoming(self, answer_url: str, *, from_: str, to: str) -> tuple[VonageCall, int, Any]:
        call = VonageCall(str(uuid.uuid4()), from_, to, answer_url)
        self.calls[call.uuid] = call
        status, ncco = await self.answer(call)
        return call, status, ncco

    async def pick_up(self, call_uuid: str) -> tuple[VonageCall, int, Any]:
        call = self.calls[call_uuid]
        status, ncco = await self.answer(call)
        return call, status, ncco

    async def answer(self, call: VonageCall, *, secret: str | None = None, iat: float | None = None) -> tuple[int, Any]:
        """GET the call's answer URL, signed; connect a ``websocket`` endpoint of the NCCO."""
        call.status = "answered"
        query = urlencode(
            {"to": call.to, "from": call.from_, "uuid": call.uuid, "conversation_uuid": "CON-" + call.uuid}
        )
        url = call.answer_url + ("&" if urlsplit(call.answer_url).query else "?") + query
        claims = {
            "iat": int(time.time() if iat is None else iat),
            "jti": str(uuid.uuid4()),
            "application_id": self.application_id,
        }
        token = jwt.encode(claims, secret or self.signature_secret, algorithm="HS256")
        status, ncco = await self.get_webhook(url, {"Authorization": f"Bearer {token}"})
        if status == 200:
            call.nccos.append(ncco)
            for action in ncco:
                for end in action.get("endpoint", []) if action.get("action") == "connect" else []:
                    if end.get("type") == "websocket":
                        self.open_stream(end["uri"], call.uuid, end.get("headers", {}))
        return status, ncco

    async def event(self, call_uuid: str, status: str, *, secret: str | None = None, **fields: Any) -> int:
        """POST a call event (``status``, and ``fields`` such as ``detail``) to the call's
        ``event_url``, signed with ``secret`` (default: ours); the app's status."""
        call = self.calls[call_uuid]
        call.status = status
        event = {
            "uuid": call.uuid,
            "conversation_uuid": "CON-" + call.uuid,
            "status": status,
            "direction": "outbound",
            "from": call.from_,
            "to": call.to,
            "timestamp": "2026-12-03T10:00:00.000Z",
        } | fields
        body = orjson.dumps(event)
        claims = {
            "iat": int(time.time()),
            "jti": str(uuid.uuid4()),
            "application_id": self.application_id,
            "payload_hash": hashlib.sha256(body).hexdigest(),
        }
        token = jwt.encode(claims, secret or self.signature_secret, algorithm="HS256")
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        return await self.post_webhook(call.event_url, headers, data=body)

    # -- endpoints -----------------------------------------------------------------------------------

    def _authorized(self, request: web.Request) -> bool:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme != "Bearer":
            return False
        try:
            claims = jwt.decode(token, self.public_key_pem, algorithms=["RS256"])
        except jwt.PyJWTError:
            return False
        return claims.get("application_id") == self.application_id and bool(claims.get("jti"))

    async def _serve(self, request: web.Request) -> tuple[dict[str, Any], web.Response | None]:
        recorded = await self.record(request, self._authorized(request))
        if (faulted := await self.take_fault()) is not None:
            return {}, faulted
        if not recorded.authorized:
            return {}, problem(401, "Unauthorized", "You did not provide correct credentials.")
        return recorded.body if isinstance(recorded.body, dict) else {}, None

    async def _create(self, request: web.Request) -> web.Response:
        body, refused = await self._serve(request)
        if refused is not None:
            return refused
        to = body.get("to") or [{}]
        number = str(to[0].get("number", ""))
        if not number.isdigit():
            return problem(400, "Bad Request", "The request failed due to validation errors", ["to[0].number"])
        if not (body.get("answer_url") or body.get("ncco")):
            return problem(400, "Bad Request", "Either answer_url or ncco is required", ["answer_url"])
        call = VonageCall(
            str(uuid.uuid4()), str((body.get("from") or {}).get("number", "")), number, body["answer_url"][0]
        )
        call.event_url = (body.get("event_url") or [""])[0]
        self.calls[call.uuid] = call
        answer = {
            "uuid": call.uuid,
            "status": "started",
            "direction": "outbound",
            "conversation_uuid": "CON-" + call.uuid,
        }
        return web.json_response(answer, status=201)

    async def _update(self, request: web.Request) -> web.Response:
        body, refused = await self._serve(request)
        if refused is not None:
            return refused
        call = self.calls.get(request.match_info["uuid"])
        if call is None:
            return problem(404, "Not Found", "Call not found")
        if call.status == "completed":
            return problem(400, "Bad Request", "The call is already completed")
        if body.get("action") == "hangup":
            call.status = "completed"
        elif body.get("action") == "transfer" and body.get("destination", {}).get("type") == "ncco":
            call.nccos.append(body["destination"]["ncco"])
        else:
            return problem(400, "Bad Request", "Unknown action", ["action"])
        return web.Response(status=204)
