"""A local Twilio REST API: creating a call and updating a live one, the way api.twilio.com answers
them, so Ringline's ``TwilioRest`` (or any other client of the API) runs unchanged against it::

    async with FakeTwilioRest() as twilio:                    # or: await twilio.start() ... close()
        rest = TwilioRest(twilio.account_sid, twilio.auth_token, base_url=twilio.url)
        ...
        twilio.requests[0].form["Twiml"]                       # every request, recorded whole
        twilio.fault(400, 21211)                               # the next request: Twilio's invalid 'To'

Endpoints (form-encoded bodies, HTTP basic auth with the account SID and auth token):

- ``POST /2010-04-01/Accounts/{AccountSid}/Calls.json``: ``To``, ``From`` and ``Twiml`` (or
  ``Url``) required; ``StatusCallback`` and friends recorded. Answers 201 with a Call resource
  (``sid`` ``CA`` + 32 hex digits, ``status`` ``queued``, ``direction`` ``outbound-api``).
- ``POST /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json``: ``Twiml``, ``Url`` or
  ``Status`` (``completed``/``canceled``) on a call the fake knows (made here, or told of with
  ``add_call``, as an inbound call would be); 404 for others, 400 (21220) for a call already over.
- ``GET`` of the same call: the Call resource.

Errors are Twilio's JSON body ``{"code", "message", "more_info", "status"}``; a wrong account or
token answers 401 with code 20003, as Twilio does. ``fault`` queues an error (or a delay before
answering, or no answer at all) for the next requests.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import email.utils
import re
import secrets
import time
import xml.etree.ElementTree as ET
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from ringline.benchmarks.vendors.server import LoopbackServer

API = "/2010-04-01/Accounts/{account}/Calls"
_E164 = re.compile(r"^\+[1-9][0-9]{1,14}$")
_OVER = frozenset({"completed", "canceled", "failed", "busy", "no-answer"})

MESSAGES: dict[int, tuple[int, str]] = {
    20003: (401, "Authenticate"),
    20404: (404, "The requested resource {path} was not found"),
    20429: (429, "Too Many Requests"),
    20500: (500, "An internal server error has occurred"),
    21201: (400, "No 'To' number is specified"),
    21205: (400, "Url parameter is required. Please provide a Url, Twiml or ApplicationSid."),
    21210: (400, "The source phone number provided, {From}, is not yet verified for your account."),
    21211: (400, "Invalid 'To' Phone Number: {To}"),
    21212: (400, "Invalid 'From' Phone Number: {From}"),
    21213: (400, "No 'From' number is specified"),
    21214: (400, "'To' phone number cannot be reached"),
    21215: (400, "Account not authorized to call {To}. Perhaps you need to enable some international permissions."),
    21220: (400, "Unable to update record. Call is not in-progress. Cannot redirect."),
}
"""Twilio's HTTP status and message per error code (``{To}``, ``{From}``, ``{path}`` filled in)."""


@dataclass(frozen=True, slots=True)
class Fault:
    code: int | None = None
    """Answer Twilio's error ``code`` (its status and message from ``MESSAGES``)."""
    status: int | None = None
    """The HTTP status (default: the code's)."""
    message: str | None = None
    """Overrides the code's message."""
    delay_s: float = 0.0
    """Wait this long before answering (then the error, or the normal answer without ``code``)."""
    hang: bool = False
    """Never answer; the connection stays open until the client leaves or the server closes."""


@dataclass(slots=True)
class RecordedRequest:
    method: str
    path: str
    form: dict[str, str]
    """The form fields (the last value of a repeated one; ``pairs`` has them all)."""
    pairs: list[tuple[str, str]]
    authorized: bool
    """Basic auth carried this account's SID and token."""
    received_at: float
    status: int | None = None
    """What the fake answered (None until it has)."""

    def twiml(self) -> ET.Element:
        """The ``Twiml`` field, parsed (``ET.ParseError`` if it is not XML)."""
        return ET.fromstring(self.form["Twiml"])


@dataclass(slots=True)
class FakeCall:
    sid: str
    to: str
    from_: str
    status: str
    direction: str
    twiml: list[str] = field(default_factory=list)
    """Every TwiML the call was given, in order (created with, then each update)."""
    created_at: float = field(default_factory=time.time)


class FakeTwilioRest(LoopbackServer):
    """The fake on 127.0.0.1, port chosen by the OS. ``url`` is the client's base URL."""

    def __init__(self, account_sid: str | None = None, auth_token: str = "twilio-fake-token") -> None:
        super().__init__()
        self.account_sid = account_sid or "AC" + secrets.token_hex(16)
        self.auth_token = auth_token
        self.requests: list[RecordedRequest] = []
        self.calls: dict[str, FakeCall] = {}
        self._faults: deque[Fault] = deque()
        self._arrived = asyncio.Condition()

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/2010-04-01/Accounts/{account}/Calls.json", self._create)
        router.add_post("/2010-04-01/Accounts/{account}/Calls/{sid}.json", self._update)
        router.add_get("/2010-04-01/Accounts/{account}/Calls/{sid}.json", self._fetch)

    # -- scripting and inspection -------------------------------------------------------------

    def fault(
        self,
        status: int | None = None,
        code: int | None = None,
        *,
        message: str | None = None,
        delay_s: float = 0.0,
        hang: bool = False,
        times: int = 1,
    ) -> None:
        """Make the next ``times`` requests fail: with Twilio's error ``code`` (and ``status``,
        default the code's), after ``delay_s``; or never answer (``hang``)."""
        if code is None and status is not None and status >= 400:
            code = {401: 20003, 404: 20404, 429: 20429}.get(status, 20500)
        self._faults.extend([Fault(code, status, message, delay_s, hang)] * times)

    def add_call(self, sid: str, *, to: str = "", from_: str = "", status: str = "in-progress") -> FakeCall:
        """Tell the fake of a call it did not place (an inbound one), so it can be updated."""
        call = self.calls[sid] = FakeCall(sid, to, from_, status, "inbound")
        return call

    async def wait_request(self, n: int = 1) -> RecordedRequest:
        """The ``n``-th request (1-based), once it has been answered."""
        async with self._arrived:
            await self._arrived.wait_for(lambda: len(self.requests) >= n and self.requests[n - 1].status is not None)
        return self.requests[n - 1]

    # -- endpoints ------------------------------------------------------------------------------

    async def _create(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, self._create_call)

    async def _update(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, self._update_call)

    async def _fetch(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, self._fetch_call)

    async def _serve(self, request: web.Request, answer: Any) -> web.StreamResponse:
        pairs = [(k, str(v)) for k, v in (await request.post()).items()] if request.method == "POST" else []
        recorded = RecordedRequest(
            request.method, request.path, dict(pairs), pairs, self._authorized(request), time.monotonic()
        )
        self.requests.append(recorded)
        status = 499  # the client left (or the server closed) before the answer
        try:
            response = await self._answer(request, recorded, answer)
            status = response.status
            return response
        finally:
            async with self._arrived:
                recorded.status = status
                self._arrived.notify_all()

    async def _answer(self, request: web.Request, recorded: RecordedRequest, answer: Any) -> web.Response:
        fault = self._faults.popleft() if self._faults else None
        if fault is not None and fault.hang:
            await self.closing.wait()
            raise web.HTTPServiceUnavailable()
        if fault is not None and fault.delay_s > 0:
            try:
                await asyncio.wait_for(self.closing.wait(), fault.delay_s)
            except TimeoutError:
                pass
        if not recorded.authorized or request.match_info["account"] != self.account_sid:
            return self._error(recorded, 20003, headers={"WWW-Authenticate": 'Basic realm="Twilio API"'})
        if fault is not None and fault.code is not None:
            return self._error(recorded, fault.code, status=fault.status, message=fault.message)
        return answer(request, recorded)

    def _create_call(self, request: web.Request, recorded: RecordedRequest) -> web.Response:
        form = recorded.form
        to, from_ = form.get("To", ""), form.get("From", "")
        if not to:
            return self._error(recorded, 21201)
        if not from_:
            return self._error(recorded, 21213)
        if not (form.get("Twiml") or form.get("Url") or form.get("ApplicationSid")):
            return self._error(recorded, 21205)
        if not (_E164.match(to) or to.startswith(("sip:", "client:"))):
            return self._error(recorded, 21211)
        if not _E164.match(from_):
            return self._error(recorded, 21212)
        call = FakeCall("CA" + secrets.token_hex(16), to, from_, "queued", "outbound-api")
        if twiml := form.get("Twiml"):
            call.twiml.append(twiml)
        self.calls[call.sid] = call
        return web.json_response(self._resource(call), status=201)

    def _update_call(self, request: web.Request, recorded: RecordedRequest) -> web.Response:
        call = self.calls.get(request.match_info["sid"])
        if call is None:
            return self._error(recorded, 20404)
        if call.status in _OVER:
            return self._error(recorded, 21220)
        form = recorded.form
        if status := form.get("Status"):
            call.status = "canceled" if status == "canceled" and call.status == "queued" else "completed"
        elif twiml := form.get("Twiml"):
            call.twiml.append(twiml)
        elif not form.get("Url"):
            return self._error(recorded, 21205)
        return web.json_response(self._resource(call))

    def _fetch_call(self, request: web.Request, recorded: RecordedRequest) -> web.Response:
        call = self.calls.get(request.match_info["sid"])
        if call is None:
            return self._error(recorded, 20404)
        return web.json_response(self._resource(call))

    # -- Twilio's shapes ------------------------------------------------------------------------

    def _authorized(self, request: web.Request) -> bool:
        scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            login, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return (login, password) == (self.account_sid, self.auth_token)

    def _resource(self, call: FakeCall) -> dict[str, Any]:
        uri = f"{API.format(account=self.account_sid)}/{call.sid}.json"
        return {
            "sid": call.sid,
            "account_sid": self.account_sid,
            "api_version": "2010-04-01",
            "to": call.to,
            "to_formatted": call.to,
            "from": call.from_,
            "from_formatted": call.from_,
            "status": call.status,
            "direction": call.direction,
            "date_created": email.utils.formatdate(call.created_at, usegmt=True),
            "date_updated": email.utils.formatdate(usegmt=True),
            "start_time": None,
            "end_time": None,
            "duration": None,
            "price": None,
            "price_unit": "USD",
            "parent_call_sid": None,
            "phone_number_sid": None,
            "answered_by": None,
            "forwarded_from": None,
            "caller_name": None,
            "group_sid": None,
            "queue_time": "0",
            "trunk_sid": None,
            "uri": uri,
            "subresource_uris": {
                "recordings": uri.replace(".json", "/Recordings.json"),
                "notifications": uri.replace(".json", "/Notifications.json"),
            },
        }

    def _error(
        self,
        recorded: RecordedRequest,
        code: int,
        *,
        status: int | None = None,
        message: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> web.Response:
        default_status, template = MESSAGES.get(code, (status or 400, "Error {code}"))
        status = status or default_status
        values = {"To": recorded.form.get("To", ""), "From": recorded.form.get("From", ""), "path": recorded.path}
        body: dict[str, Any] = {
            "code": code,
            "message": message or template.format(code=code, **values),
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        }
        if code == 20003:
            body["detail"] = "Your AccountSid or AuthToken was incorrect."
        return web.json_response(body, status=status, headers=headers)
