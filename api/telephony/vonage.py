"""Vonage's Voice API: three REST calls over aiohttp with the application JWT made by the official
``vonage-jwt`` package; signed webhooks (``Authorization: Bearer``, HS256 with the signature secret)
checked with its ``verify_signature``, then for freshness and the body's ``payload_hash``.

Why not ``vonage.Vonage``: its HTTP client is synchronous (requests), retries, and always builds
``https://{api_host}``, so it cannot reach a plain-HTTP local fake.

Vonage asks ``<public_url>/telephony/vonage/inbound`` (the application's answer URL, GET by
default) for an NCCO for every call it answers; our outbound calls name it too, with their
parameters in the query (Vonage adds ``to``, ``from``, ``uuid``). The NCCO connects the call to
``wss://<public_url>/media/vonage`` (``audio/l16;rate=16000``) with the stream parameters, and the
call's ``uuid``, as ``headers``: the WebSocket itself carries no call id.

Our outbound calls send their events to ``<public_url>/telephony/vonage/status`` (``event_url``,
POST, signed like the answer webhook); ``vonage_progress`` reads their ``status`` (``status.py``).
The WebSocket leg's own events come there too, under its own uuid: not a call of ours, ignored.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import aiohttp
import jwt
import orjson
from aiohttp import web
from vonage_jwt import JwtClient, VonageVerifyJwtError
from vonage_jwt.verify_jwt import verify_signature

from ringline.api.telephony.base import (
    TelephonyError,
    WebhookRejected,
    inbound_parameters,
    media_url,
    server_base,
)
from ringline.api.telephony.status import CallProgress, Progress
from ringline.config.settings import VonageConfig
from ringline.engine.transports.base import TransferFailed
from ringline.engine.transports.socket import Transferrer

log = logging.getLogger(__name__)

CONTENT_TYPE = "audio/l16;rate=16000"
_VONAGE_QUERY = frozenset({"to", "from", "uuid", "conversation_uuid", "region_url", "endpoint_type"})

PROGRESS: dict[str, Progress] = {
    "ringing": Progress.RINGING,
    "answered": Progress.ANSWERED,
    "completed": Progress.COMPLETED,
    "busy": Progress.BUSY,
    "timeout": Progress.NO_ANSWER,  # the ringing timer ran out
    "unanswered": Progress.NO_ANSWER,  # unreachable, or declined by the callee
    "rejected": Progress.FAILED,  # refused before it was connected
    "failed": Progress.FAILED,
    "cancelled": Progress.CANCELLED,
}
"""Vonage's event ``status`` values we act on (``started``, ``disconnected``, ``human``, ``machine`` ...
change nothing)."""


def vonage_progress(event: Any) -> CallProgress | None:
    """An event's ``uuid`` and ``status``; None for an event that is not a status we act on."""
    if not isinstance(event, dict):
        return None
    uuid, status = event.get("uuid"), event.get("status")
    progress = PROGRESS.get(status) if isinstance(status, str) else None
    if not isinstance(uuid, str) or not uuid or progress is None:
        return None
    detail = f", detail={event['detail']}" if event.get("detail") else ""
    return CallProgress((uuid,), progress, f"status={status}{detail}")


def e164(number: str) -> str:
    """Vonage writes numbers without ``+``."""
    return f"+{number}" if number.isdigit() else number


def endpoint(destination: str) -> dict[str, str]:
    if destination.lower().startswith(("sip:", "sips:")):
        return {"type": "sip", "uri": destination}
    return {"type": "phone", "number": destination.removeprefix("+")}


def connect_ncco(url: str, headers: Mapping[str, str]) -> list[dict[str, Any]]:
    socket = {"type": "websocket", "uri": url, "content-type": CONTENT_TYPE, "headers": dict(headers)}
    return [{"action": "connect", "endpoint": [socket]}]


class VonageControl:
    """``ProviderControl`` for Vonage. Open it (``start``) before use."""

    name = "vonage"
    label = "Vonage"

    def __init__(self, config: VonageConfig, public_url: str | None) -> None:
        assert config.private_key is not None  # the config refuses a missing one
        self._config = config
        self._jwt = JwtClient(config.application_id, config.private_key.get_secret_value())
        self._calls_url = f"{config.api_base_url}/v1/calls"
        self._public_url = public_url
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"<VonageControl {self._config.application_id}>"

    async def start(self) -> VonageControl:
        if self._session is None:
            timeout = aiohttp.ClientTimeout(total=self._config.timeout_s)
            self._session = aiohttp.ClientSession(timeout=timeout, cookie_jar=aiohttp.DummyCookieJar())
        return self

    async def aclose(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    # -- REST ----------------------------------------------------------------------------------

    async def place_call(self, *, to: str, from_: str, parameters: Mapping[str, str]) -> str:
        if self._public_url is None:
            raise TelephonyError("Vonage calls need [telephony] public_url")
        query = urlencode({k: v for k, v in parameters.items() if k not in _VONAGE_QUERY})
        body = {
            "to": [endpoint(to)],
            "from": {"type": "phone", "number": from_.removeprefix("+")},
            "answer_url": [f"{self._public_url}/telephony/{self.name}/inbound?{query}"],
            "answer_method": "GET",
            "event_url": [f"{self._public_url}/telephony/{self.name}/status"],
            "event_method": "POST",
        }
        answer = await self._request("POST", self._calls_url, body, "the call")
        uuid = answer.get("uuid") if isinstance(answer, dict) else None
        if not isinstance(uuid, str) or not uuid:
            raise TelephonyError("Vonage's answer has no call uuid")
        return uuid

    async def hangup(self, call_id: str) -> None:
        await self._request("PUT", f"{self._calls_url}/{call_id}", {"action": "hangup"}, "the hang-up")

    def transferrer(self, call_id: str) -> Transferrer:
        async def transfer(destination: str) -> None:
            ncco = [{"action": "connect", "endpoint": [endpoint(destination)]}]
            body = {"action": "transfer", "destination": {"type": "ncco", "ncco": ncco}}
            try:
                await self._request("PUT", f"{self._calls_url}/{call_id}", body, "the transfer")
            except TelephonyError as exc:
                raise TransferFailed(str(exc)) from exc
            log.info("vonage: call transferred to %s", destination, extra={"call_id": call_id})

        return transfer

    async def _request(self, method: str, url: str, body: dict[str, Any], what: str) -> Any:
        if self._session is None:
            raise RuntimeError("VonageControl is not started")
        headers = {"Authorization": f"Bearer {self._jwt.generate_application_jwt().decode()}"}
        try:
            async with self._session.request(method, url, json=body, headers=headers) as response:
                raw, status = await response.read(), response.status
        except TimeoutError:
            raise TelephonyError(
                f"Vonage did not answer {what} within {self._config.timeout_s:g} s", retryable=True
            ) from None
        except aiohttp.ClientError as exc:
            raise TelephonyError(f"cannot reach Vonage for {what}: {exc}", retryable=True) from exc
        try:
            answer = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError:
            answer = None
        if 200 <= status < 300:
            return answer
        problem = answer if isinstance(answer, dict) else {}  # RFC 7807: type, title, detail, invalid_parameters
        said = ": ".join(str(problem[k]) for k in ("title", "detail") if problem.get(k)) or None
        names = {str(p.get("name", "")) for p in problem.get("invalid_parameters") or [] if isinstance(p, dict)}
        field = next((f for f in ("to", "from") if any(n == f or n.startswith(f + "[") for n in names)), None)
        retryable = status == 429 or status >= 500
        text = f"Vonage refused {what} (HTTP {status}): {said or 'no reason given'}"
        raise TelephonyError(text, status=status, field=field, provider_message=said, retryable=retryable)

    # -- webhooks ------------------------------------------------------------------------------

    async def verify(self, request: web.Request) -> None:
        secret = self._config.signature_secret
        if secret is None:
            raise WebhookRejected("no [telephony.vonage] signature_secret to check signed webhooks with")
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise WebhookRejected("no signed JWT in Authorization: Bearer")
        try:
            if not verify_signature(token, secret.get_secret_value()):
                raise WebhookRejected("the JWT's signature does not match the signature secret")
            claims = jwt.decode(token, secret.get_secret_value(), algorithms=["HS256"], options={"verify_iat": False})
        except (VonageVerifyJwtError, jwt.PyJWTError) as exc:  # a malformed token, or expired
            raise WebhookRejected(f"the JWT is not valid: {exc}") from None
        issued = claims.get("iat")
        if not isinstance(issued, int | float) or abs(time.time() - issued) > self._config.webhook_tolerance_s:
            raise WebhookRejected(
                f"the JWT was issued at {issued!r}, not within {self._config.webhook_tolerance_s:g} s"
            )
        body = await request.read()
        if body:
            digest = hashlib.sha256(body).hexdigest()
            if not hmac.compare_digest(str(claims.get("payload_hash", "")), digest):
                raise WebhookRejected("the JWT's payload_hash does not match the body")

    async def answer_inbound(self, request: web.Request) -> web.Response:
        values = dict(request.query)
        if request.method == "POST" and request.content_type == "application/json":
            posted = await request.json()
            values |= {k: str(v) for k, v in posted.items()} if isinstance(posted, dict) else {}
        uuid = values.get("uuid", "")
        from_, to = e164(values.get("from", "")), e164(values.get("to", ""))
        if values.get("direction") == "outbound":  # a call we placed: our query, the numbers as dialled
            parameters = {k: v for k, v in values.items() if k not in _VONAGE_QUERY} | {"from": from_, "to": to}
        else:
            parameters = inbound_parameters(request, from_, to)
        url = media_url(server_base(request, self._public_url), self.name)
        log.info("vonage: call connects to %s", url, extra={"call_id": uuid})
        return web.json_response(connect_ncco(url, parameters | {"uuid": uuid}))

    async def call_progress(self, request: web.Request) -> CallProgress | None:
        event: Any = dict(request.query)
        if request.method == "POST" and request.content_type == "application/json":
            try:
                event = await request.json()
            except ValueError:
                return None
        return vonage_progress(event)
