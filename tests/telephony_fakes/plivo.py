"""A local Plivo Voice API (``https://api.plivo.com``) with its answer-URL webhooks::

    async with FakePlivo() as fake:                     # base URL: fake.url
        status, xml = await fake.incoming(answer_url, from_="+1...", to="+1...")
        status, xml = await fake.pick_up(request_uuid)  # the callee of a dialled call answers
        status = await fake.ring(request_uuid)           # ring_url: CallStatus ringing
        status = await fake.hang_up(request_uuid, "busy")  # hangup_url: the call's end

Endpoints (HTTP basic auth with the auth id and token; JSON bodies):

- ``POST /v1/Account/{auth_id}/Call/``: ``from``, ``to``, ``answer_url`` required (``ring_url``,
  ``hangup_url`` kept); answers 201 ``{"api_id", "message": "call fired", "request_uuid"}``.
- ``DELETE /v1/Account/{auth_id}/Call/{call_uuid}/``: 204; 404 for a call not live.
- ``POST /v1/Account/{auth_id}/Call/{call_uuid}/`` with ``legs``/``aleg_url``: 202
  ``{"api_id", "message": "call transferred"}``; the fake fetches the new XML from ``aleg_url``.

Errors are ``{"api_id", "error"}`` (the fake's messages are its own, in Plivo's shape). Every
webhook is signed as Plivo signs them (``X-Plivo-Signature-V3``: base64 HMAC-SHA256 with the auth
token over the URL, its sorted query, the sorted POST parameters and the nonce). An answer whose
XML is a ``<Stream>`` opens the media socket through ``opener`` with ``extraHeaders`` as parameters.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from aiohttp import web

from tests.telephony_fakes.base import FakeProvider


@dataclass(slots=True)
class PlivoCall:
    request_uuid: str
    call_uuid: str
    from_: str
    to: str
    direction: str
    answer_url: str
    ring_url: str = ""
    hangup_url: str = ""
    status: str = "queued"
    """``queued``, ``in-progress``, ``completed``."""
    xml: list[str] = field(default_factory=list)
    """Every XML document the app answered for this call."""


def signature_v3(token: str, url: str, params: dict[str, str], nonce: str) -> str:
    parts = urlsplit(url)
    query = sorted(parse_qsl(parts.query, keep_blank_values=True))
    base = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    if query or params:
        base += "?" + "&".join(f"{k}={v}" for k, v in query)
    if query and params:
        base += "."
    base += "".join(f"{k}{params[k]}" for k in sorted(params))
    digest = hmac.new(token.encode(), f"{base}.{nonce}".encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


class FakePlivo(FakeProvider):
    def __init__(self, auth_id: str = "MAFAKE0000PLIVO00001", auth_token: str = "plivo-fake-token") -> None:
        super().__init__()
        self.auth_id, self.auth_token = auth_id, auth_token
        self.calls: dict[str, PlivoCall] = {}
        """By call_uuid (and by request_uuid until answered)."""

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/v1/Account/{auth_id}/Call/", self._create)
        router.add_delete("/v1/Account/{auth_id}/Call/{uuid}/", self._hangup)
        router.add_post("/v1/Account/{auth_id}/Call/{uuid}/", self._transfer)

    # -- scripting -----------------------------------------------------------------------------------

    async def incoming(self, answer_url: str, *, from_: str, to: str) -> tuple[PlivoCall, int, str]:
        call_uuid = str(uuid.uuid4())
        call = PlivoCall("", call_uuid, from_, to, "inbound", answer_url)
        self.calls[call_uuid] = call
        status, xml = await self.fetch_xml(call, answer_url)
        return call, status, xml

    async def pick_up(self, request_uuid: str) -> tuple[PlivoCall, int, str]:
        call = self.calls.pop(request_uuid)
        self.calls[call.call_uuid] = call
        status, xml = await self.fetch_xml(call, call.answer_url)
        return call, status, xml

    async def ring(self, request_uuid: str) -> int:
        """The dialled call rings: ``CallStatus`` ``ringing`` to its ``ring_url``; the app's status."""
        call = self.calls[request_uuid]
        params = {"CallUUID": call.call_uuid, "RequestUUID": call.request_uuid, "CallStatus": "ringing"}
        params |= {"From": call.from_, "To": call.to, "Direction": call.direction, "Event": "Ring"}
        status, _ = await self.post_signed(call.ring_url, params)
        return status

    async def hang_up(self, call_id: str, status: str, cause: str = "", *, token: str | None = None) -> int:
        """The call (by ``request_uuid`` or ``call_uuid``) ends with ``CallStatus`` ``status``, posted
        to its ``hangup_url`` as Plivo does, signed with ``token`` (default: ours); the app's status."""
        call = self.calls.get(call_id) or next(c for c in self.calls.values() if c.request_uuid == call_id)
        call.status = "completed"
        params = {"CallUUID": call.call_uuid, "CallStatus": status, "Event": "Hangup", "Direction": call.direction}
        params |= {"From": call.from_, "To": call.to, "HangupCause": cause or status, "Duration": "0"}
        if call.request_uuid:
            params["RequestUUID"] = call.request_uuid
        code, _ = await self.post_signed(call.hangup_url, params, token=token)
        return code

    async def post_signed(self, url: str, params: dict[str, str], *, token: str | None = None) -> tuple[int, str]:
        """POST ``params`` to ``url`` with Plivo's V3 signature; the app's status and answer."""
        nonce = secrets.token_hex(10)
        signature = signature_v3(token or self.auth_token, url, params, nonce)
        headers = {"X-Plivo-Signature-V3-Nonce": nonce, "X-Plivo-Signature-V3": signature}
        return await self.post_form(url, headers, params)

    async def fetch_xml(self, call: PlivoCall, url: str, *, signed: bool = True) -> tuple[int, str]:
        """POST the call's parameters to ``url`` as Plivo does; act on a ``<Stream>`` answer."""
        call.status = "in-progress"
        params = {
            "CallUUID": call.call_uuid,
            "From": call.from_,
            "To": call.to,
            "Direction": call.direction,
            "CallStatus": "in-progress",
            "Event": "StartApp",
        }
        if call.request_uuid:
            params["RequestUUID"] = call.request_uuid
        nonce = secrets.token_hex(10)
        headers = {"X-Plivo-Signature-V3-Nonce": nonce}
        if signed:
            headers["X-Plivo-Signature-V3"] = signature_v3(self.auth_token, url, params, nonce)
        status, xml = await self.post_form(url, headers, params)
        if status == 200:
            call.xml.append(xml)
            stream = ET.fromstring(xml).find("Stream")
            if stream is not None and stream.text:
                pairs = [p.partition("=") for p in stream.attrib.get("extraHeaders", "").split(",") if p]
                self.open_stream(stream.text.strip(), call.call_uuid, {k: v for k, _, v in pairs})
        return status, xml

    async def post_form(self, url: str, headers: dict[str, str], params: dict[str, str]) -> tuple[int, str]:
        if self._session is None:
            import aiohttp

            self._session = aiohttp.ClientSession()
        async with self._session.post(self.route(url), headers=headers, data=params) as resp:
            self.webhooks.append((url, resp.status))
            return resp.status, await resp.text()

    # -- endpoints -----------------------------------------------------------------------------------

    def _authorized(self, request: web.Request) -> bool:
        expected = base64.b64encode(f"{self.auth_id}:{self.auth_token}".encode()).decode()
        return request.headers.get("Authorization") == f"Basic {expected}"

    async def _serve(self, request: web.Request) -> tuple[dict[str, Any], web.Response | None]:
        recorded = await self.record(request, self._authorized(request))
        if (faulted := await self.take_fault()) is not None:
            return {}, faulted
        if not recorded.authorized or request.match_info["auth_id"] != self.auth_id:
            return {}, self.error(401, "Authentication failed: invalid auth_id or auth_token")
        return recorded.body if isinstance(recorded.body, dict) else {}, None

    def error(self, status: int, message: str) -> web.Response:
        return web.json_response({"api_id": str(uuid.uuid4()), "error": message}, status=status)

    async def _create(self, request: web.Request) -> web.Response:
        body, refused = await self._serve(request)
        if refused is not None:
            return refused
        for name in ("from", "to", "answer_url"):
            if not body.get(name):
                return self.error(400, f"'{name}' is a required parameter")
        if not str(body["to"]).lstrip("+").isdigit():
            return self.error(400, f"invalid 'to' number: {body['to']}")
        request_uuid = str(uuid.uuid4())
        call = PlivoCall(request_uuid, str(uuid.uuid4()), body["from"], body["to"], "outbound", body["answer_url"])
        call.ring_url, call.hangup_url = body.get("ring_url", ""), body.get("hangup_url", "")
        self.calls[request_uuid] = call
        answer = {"api_id": str(uuid.uuid4()), "message": "call fired", "request_uuid": request_uuid}
        return web.json_response(answer, status=201)

    async def _hangup(self, request: web.Request) -> web.Response:
        _, refused = await self._serve(request)
        if refused is not None:
            return refused
        call = self.calls.get(request.match_info["uuid"])
        if call is None or call.status == "completed":
            return self.error(404, "call not found")
        call.status = "completed"
        return web.Response(status=204)

    async def _transfer(self, request: web.Request) -> web.Response:
        body, refused = await self._serve(request)
        if refused is not None:
            return refused
        call = self.calls.get(request.match_info["uuid"])
        if call is None or call.status != "in-progress":
            return self.error(404, "call not found or not in progress")
        if body.get("legs") != "aleg" or not body.get("aleg_url"):
            return self.error(400, "legs and aleg_url are required")
        self.spawn(self.fetch_xml(call, body["aleg_url"]))
        return web.json_response({"api_id": str(uuid.uuid4()), "message": "call transferred"}, status=202)
