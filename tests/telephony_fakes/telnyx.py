"""A local Telnyx Call Control API (``https://api.telnyx.com/v2``) with its webhooks, so the official
SDK runs unchanged against it::

    async with FakeTelnyx() as fake:        # base_url: fake.url; webhooks signed with fake.public_key
        await fake.incoming(webhook_url, from_="+1...", to="+1...")   # a call arrives
        await fake.pick_up(call_control_id)                            # the callee answers a dialled call
        await fake.hang_up(call_control_id, "user_busy")               # or it ends: call.hangup

Endpoints (JSON bodies, ``Authorization: Bearer <api key>``):

- ``POST /v2/calls`` (dial): ``connection_id``, ``to``, ``from`` required; answers
  ``{"data": {"call_control_id", "call_leg_id", "call_session_id", "is_alive": false, "record_type": "call"}}``.
- ``POST /v2/calls/{call_control_id}/actions/{answer,hangup,transfer,streaming_start}``:
  ``{"data": {"result": "ok"}}``; 404 for a call the fake does not know, 422 (90018) for one over.

Errors are Telnyx's ``{"errors": [{"code", "title", "detail", "source": {"pointer"}}]}``. After an
``answer`` the fake posts ``call.answered`` (with the answer's ``client_state``); after a
``streaming_start`` it opens the media socket through ``opener`` with the ``custom_parameters``
(and ``from``/``to``). ``hang_up`` ends a call with ``call.hangup`` and its ``hangup_cause``;
``hangup_at_dial`` has the next dial's call end so before the dial is answered. Webhooks are signed
as Telnyx signs them: Ed25519 over ``"{timestamp}|{body}"`` in ``telnyx-signature-ed25519``, the
Unix time in ``telnyx-timestamp``.
"""

from __future__ import annotations

import base64
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any, ClassVar

import orjson
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tests.telephony_fakes.base import FakeProvider

_E164 = re.compile(r"^\+[1-9][0-9]{1,14}$")
ACTIONS = ("answer", "hangup", "transfer", "streaming_start")


@dataclass(slots=True)
class TelnyxCall:
    call_control_id: str
    from_: str
    to: str
    direction: str
    webhook_url: str
    client_state: str | None = None
    state: str = "parked"
    """``parked`` (ringing), ``answered``, ``bridging`` (transferred), ``hangup``."""


def error(status: int, code: str, title: str, detail: str, pointer: str | None = None) -> web.Response:
    entry: dict[str, Any] = {"code": code, "title": title, "detail": detail}
    if pointer is not None:
        entry["source"] = {"pointer": pointer}
    return web.json_response({"errors": [entry]}, status=status)


class FakeTelnyx(FakeProvider):
    URL_TEMPLATE: ClassVar[str] = "http://127.0.0.1:{port}/v2"

    def __init__(self, api_key: str = "KEYtelnyx-fake") -> None:
        super().__init__()
        self.api_key = api_key
        self._signing = Ed25519PrivateKey.generate()
        raw = self._signing.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.public_key = base64.b64encode(raw).decode()
        self.calls: dict[str, TelnyxCall] = {}
        self.hangup_at_dial: str | None = None
        """A ``hangup_cause``: the next dialled call ends with it, reported before the dial's answer."""

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/v2/calls", self._dial)
        router.add_post("/v2/calls/{id}/actions/{action}", self._action)

    # -- scripting -----------------------------------------------------------------------------------

    async def incoming(self, webhook_url: str, *, from_: str, to: str) -> tuple[TelnyxCall, int]:
        """A call arrives for ``to``: ``call.initiated`` (incoming) to the app. The call and the app's status."""
        call = TelnyxCall(new_call_control_id(), from_, to, "incoming", webhook_url)
        self.calls[call.call_control_id] = call
        return call, await self.event(call, "call.initiated")

    async def pick_up(self, call_control_id: str) -> int:
        """The callee of a dialled call answers: ``call.answered`` to the app."""
        call = self.calls[call_control_id]
        call.state = "answered"
        return await self.event(call, "call.answered")

    async def hang_up(
        self, call_control_id: str, cause: str, *, url: str | None = None, signer: FakeTelnyx | None = None
    ) -> int:
        """The call ends (``call.hangup`` with ``hangup_cause`` ``cause``, to ``url`` or the call's
        webhook URL, signed by ``signer``'s key, default ours); the app's status."""
        call = self.calls[call_control_id]
        call.state = "hangup"
        extra = {"hangup_cause": cause, "hangup_source": "callee", "sip_hangup_cause": "486"}
        return await self.event(call, "call.hangup", extra=extra, url=url, signer=signer)

    async def event(
        self,
        call: TelnyxCall,
        event_type: str,
        *,
        timestamp: int | None = None,
        extra: dict[str, Any] | None = None,
        url: str | None = None,
        signer: FakeTelnyx | None = None,
    ) -> int:
        """Post a call event (with ``extra`` payload fields), signed, to ``url`` or the call's webhook
        URL; the app's status."""
        payload = {
            "call_control_id": call.call_control_id,
            "call_leg_id": str(uuid.uuid4()),
            "call_session_id": str(uuid.uuid4()),
            "client_state": call.client_state,
            "connection_id": "1494404757140276705",
            "direction": call.direction,
            "from": call.from_,
            "to": call.to,
            "state": call.state,
        } | (extra or {})
        body = orjson.dumps(
            {
                "data": {
                    "event_type": event_type,
                    "id": str(uuid.uuid4()),
                    "occurred_at": "2026-12-03T10:00:00.000000Z",
                    "payload": payload,
                    "record_type": "event",
                },
                "meta": {"attempt": 1, "delivered_to": call.webhook_url},
            }
        )
        return await self.post_webhook(url or call.webhook_url, (signer or self).sign(body, timestamp), data=body)

    def sign(self, body: bytes, timestamp: int | None = None) -> dict[str, str]:
        ts = str(int(time.time()) if timestamp is None else timestamp)
        signature = self._signing.sign(ts.encode() + b"|" + body)
        return {
            "Content-Type": "application/json",
            "telnyx-signature-ed25519": base64.b64encode(signature).decode(),
            "telnyx-timestamp": ts,
        }

    # -- endpoints -----------------------------------------------------------------------------------

    def _authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self.api_key}"

    async def _serve(self, request: web.Request) -> tuple[dict[str, Any] | None, web.Response | None]:
        recorded = await self.record(request, self._authorized(request))
        if (faulted := await self.take_fault()) is not None:
            recorded.status = faulted.status
            return None, faulted
        if not recorded.authorized:
            recorded.status = 401
            detail = "Could not understand the provided credentials."
            return None, error(401, "10009", "Authentication failed", detail)
        return recorded.body if isinstance(recorded.body, dict) else {}, None

    async def _dial(self, request: web.Request) -> web.Response:
        body, refused = await self._serve(request)
        if refused is not None or body is None:
            return refused or web.HTTPInternalServerError()
        for name in ("connection_id", "to", "from"):
            if not body.get(name):
                return self._answered(
                    error(422, "10032", "Missing required parameter", f"'{name}' is required.", f"/{name}")
                )
        if not _E164.match(body["to"]) and not str(body["to"]).startswith("sip:"):
            detail = "The 'to' phone number or SIP URI is invalid."
            return self._answered(error(422, "10016", "Invalid phone number", detail, "/to"))
        if not _E164.match(body["from"]):
            return self._answered(error(422, "10016", "Invalid phone number", "The 'from' number is invalid.", "/from"))
        call = TelnyxCall(new_call_control_id(), body["from"], body["to"], "outgoing", body.get("webhook_url", ""))
        call.client_state = body.get("client_state")
        self.calls[call.call_control_id] = call
        if self.hangup_at_dial is not None:
            cause, self.hangup_at_dial = self.hangup_at_dial, None
            await self.hang_up(call.call_control_id, cause)
        data = {
            "call_control_id": call.call_control_id,
            "call_leg_id": str(uuid.uuid4()),
            "call_session_id": str(uuid.uuid4()),
            "is_alive": False,
            "record_type": "call",
        }
        return self._answered(web.json_response({"data": data}))

    async def _action(self, request: web.Request) -> web.Response:
        body, refused = await self._serve(request)
        if refused is not None or body is None:
            return refused or web.HTTPInternalServerError()
        action, call = request.match_info["action"], self.calls.get(request.match_info["id"])
        if action not in ACTIONS:
            return self._answered(error(404, "10005", "Resource not found", f"No action {action}."))
        if call is None:
            return self._answered(error(404, "10005", "Resource not found", "The requested call was not found."))
        if call.state == "hangup":
            detail = "This call is no longer active and can't receive commands."
            return self._answered(error(422, "90018", "Call has already ended", detail))
        if action == "answer":
            call.state, call.client_state = "answered", body.get("client_state", call.client_state)
            self.spawn(self.event(call, "call.answered"))
        elif action == "hangup":
            call.state = "hangup"
        elif action == "transfer":
            if not body.get("to"):
                return self._answered(error(422, "10032", "Missing required parameter", "'to' is required.", "/to"))
            call.state = "bridging"
        elif action == "streaming_start":
            custom = {p["name"]: p["value"] for p in body.get("custom_parameters") or []}
            self.open_stream(body["stream_url"], call.call_control_id, {"from": call.from_, "to": call.to} | custom)
        return self._answered(web.json_response({"data": {"result": "ok"}}))

    def _answered(self, response: web.Response) -> web.Response:
        self.requests[-1].status = response.status
        return response


def new_call_control_id() -> str:
    return "v3:" + base64.urlsafe_b64encode(uuid.uuid4().bytes + uuid.uuid4().bytes[:8]).decode().rstrip("=")
