"""Plivo's Voice API: three REST calls over aiohttp, webhooks checked with the official SDK's
``validate_v3_signature`` (``X-Plivo-Signature-V3`` and its nonce), Plivo XML for the answers.

Why not the SDK's ``plivo.RestClient``: it is synchronous (requests), and its voice requests
reset the base URL to the module constant ``https://api.plivo.com`` on every call, then retry a
5xx twice (placing the call again) and ``print`` about it; it cannot be aimed at a local fake
without patching module globals.

Plivo fetches XML for every call it answers, inbound or outbound, from
``<public_url>/telephony/plivo/inbound`` (set it as the application's answer URL, HTTP POST; our
outbound calls name it with their parameters in the query). The answer is
``<Stream bidirectional keepCallAlive contentType="audio/x-mulaw;rate=8000"
extraHeaders="agent=...,from=...">wss://<public_url>/media/plivo</Stream>``. A transfer points the
live call at the same URL with ``transfer_to``, which answers ``<Dial>``.

Plivo names an outbound call by its ``request_uuid`` until it is answered, then by its
``CallUUID`` (what the media stream carries): when the answer arrives, the call's queued (or
ringing) row is moved to the ``CallUUID``.

Outbound calls name ``<public_url>/telephony/plivo/status`` as their ``ring_url`` and
``hangup_url``; ``plivo_progress`` reads the ``CallStatus`` there (``status.py``), for the
``CallUUID`` or, not answered, the ``RequestUUID``. For inbound calls, set the application's
hangup URL to it too (optional: the media socket records the calls it has).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode
from xml.sax.saxutils import escape, quoteattr

import aiohttp
import orjson
from aiohttp import web
from plivo.utils.signature_v3 import validate_v3_signature

from ringline.api.state import STORE
from ringline.api.store import CallStatus, NotFound
from ringline.api.store import Conflict as StoreConflict
from ringline.api.telephony.base import (
    ParametersTooLarge,
    TelephonyError,
    WebhookRejected,
    inbound_parameters,
    mapping_of,
    media_url,
    server_base,
    webhook_url,
)
from ringline.api.telephony.status import CallProgress, Progress
from ringline.config.settings import PlivoConfig
from ringline.engine.transports.base import TransferFailed
from ringline.engine.transports.socket import Transferrer

log = logging.getLogger(__name__)

MAX_EXTRA_HEADERS = 512
"""Plivo's limit on ``extraHeaders``."""
_UNSAFE = re.compile(r"[,;=]")
CONTENT_TYPE = "audio/x-mulaw;rate=8000"

PROGRESS: dict[str, Progress] = {
    "ringing": Progress.RINGING,
    "in-progress": Progress.ANSWERED,
    "completed": Progress.COMPLETED,
    "busy": Progress.BUSY,
    "no-answer": Progress.NO_ANSWER,
    "cancel": Progress.CANCELLED,
    "timeout": Progress.FAILED,  # Plivo: a carrier or network timeout while connecting, not a ring timeout
    "failed": Progress.FAILED,
}
"""Plivo's ``CallStatus`` values."""


def plivo_progress(form: Mapping[str, str]) -> CallProgress | None:
    """A ring or hang-up callback's ``CallStatus``, for its ``CallUUID`` and ``RequestUUID``; None
    for a status we do not act on."""
    status = form.get("CallStatus", "")
    progress = PROGRESS.get(status)
    ids = tuple(dict.fromkeys(i for k in ("CallUUID", "RequestUUID", "ALegRequestUUID") if (i := form.get(k))))
    if progress is None or not ids:
        return None
    cause = f", HangupCause={form['HangupCause']}" if form.get("HangupCause") else ""
    return CallProgress(ids, progress, f"CallStatus={status}{cause}")


def extra_headers(parameters: Mapping[str, str]) -> str:
    """``k=v,k=v`` (Plivo's format); ``ParametersTooLarge`` past 512 characters or for a separator
    inside a name or value."""
    if bad := [k for k, v in parameters.items() if _UNSAFE.search(k) or _UNSAFE.search(v)]:
        raise ParametersTooLarge(f"Plivo's extraHeaders cannot carry ',', ';' or '=': in {', '.join(bad)}")
    text = ",".join(f"{k}={v}" for k, v in parameters.items())
    if len(text) > MAX_EXTRA_HEADERS:
        why = f"too large: the stream parameters make {len(text)} characters of extraHeaders, Plivo takes"
        raise ParametersTooLarge(f"{why} {MAX_EXTRA_HEADERS}")
    return text


def stream_xml(url: str, parameters: Mapping[str, str]) -> str:
    attributes = (
        f'bidirectional="true" keepCallAlive="true" contentType={quoteattr(CONTENT_TYPE)} '
        f"extraHeaders={quoteattr(extra_headers(parameters))}"
    )
    return f"<Response><Stream {attributes}>{escape(url)}</Stream></Response>"


def dial_xml(destination: str) -> str:
    target = "User" if destination.lower().startswith(("sip:", "sips:")) else "Number"
    return f"<Response><Dial><{target}>{escape(destination)}</{target}></Dial></Response>"


class PlivoControl:
    """``ProviderControl`` for Plivo. Open it (``start``) before use."""

    name = "plivo"
    label = "Plivo"

    def __init__(self, config: PlivoConfig, public_url: str | None) -> None:
        self._config = config
        self._headers = {
            "Authorization": aiohttp.encode_basic_auth(config.auth_id, config.auth_token.get_secret_value())
        }
        self._base = f"{config.api_base_url}/v1/Account/{config.auth_id}/Call/"
        self._public_url = public_url
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"<PlivoControl {self._config.auth_id}>"

    async def start(self) -> PlivoControl:
        if self._session is None:
            timeout = aiohttp.ClientTimeout(total=self._config.timeout_s)
            self._session = aiohttp.ClientSession(timeout=timeout, cookie_jar=aiohttp.DummyCookieJar())
        return self

    async def aclose(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    # -- REST ----------------------------------------------------------------------------------

    def answer_url(self, query: Mapping[str, str]) -> str:
        if self._public_url is None:
            raise TelephonyError("Plivo calls need [telephony] public_url")
        return f"{self._public_url}/telephony/{self.name}/inbound?{urlencode(query)}"

    async def place_call(self, *, to: str, from_: str, parameters: Mapping[str, str]) -> str:
        extra_headers(parameters)  # refuse what the stream could not carry before dialling
        query = {k: v for k, v in parameters.items() if k not in ("from", "to")}
        status = f"{self._public_url}/telephony/{self.name}/status"
        body = {"from": from_, "to": to, "answer_url": self.answer_url(query), "answer_method": "POST"}
        body |= {"ring_url": status, "ring_method": "POST", "hangup_url": status, "hangup_method": "POST"}
        answer = await self._request("POST", self._base, body, "the call")
        request_uuid = answer.get("request_uuid") if isinstance(answer, dict) else None
        if isinstance(request_uuid, list):  # several destinations: one uuid each
            request_uuid = request_uuid[0] if request_uuid else None
        if not isinstance(request_uuid, str) or not request_uuid:
            raise TelephonyError("Plivo's answer has no request_uuid")
        return request_uuid

    async def hangup(self, call_id: str) -> None:
        await self._request("DELETE", f"{self._base}{call_id}/", None, "the hang-up")

    def transferrer(self, call_id: str) -> Transferrer:
        async def transfer(destination: str) -> None:
            body = {"legs": "aleg", "aleg_url": self.answer_url({"transfer_to": destination}), "aleg_method": "POST"}
            try:
                await self._request("POST", f"{self._base}{call_id}/", body, "the transfer")
            except TelephonyError as exc:
                raise TransferFailed(str(exc)) from exc
            log.info("plivo: call transferred to %s", destination, extra={"call_id": call_id})

        return transfer

    async def _request(self, method: str, url: str, body: dict[str, str] | None, what: str) -> Any:
        if self._session is None:
            raise RuntimeError("PlivoControl is not started")
        try:
            async with self._session.request(method, url, json=body, headers=self._headers) as response:
                raw, status = await response.read(), response.status
        except TimeoutError:
            raise TelephonyError(
                f"Plivo did not answer {what} within {self._config.timeout_s:g} s", retryable=True
            ) from None
        except aiohttp.ClientError as exc:
            raise TelephonyError(f"cannot reach Plivo for {what}: {exc}", retryable=True) from exc
        try:
            answer = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError:
            answer = None
        if 200 <= status < 300:
            return answer
        said = answer.get("error") if isinstance(answer, dict) else None
        said = said if isinstance(said, str) and said else None
        field = next((f for f in ("to", "from") if said and f"'{f}'" in said.lower()), None) if status == 400 else None
        retryable = status == 429 or status >= 500
        text = f"Plivo refused {what} (HTTP {status}): {said or 'no reason given'}"
        raise TelephonyError(text, status=status, field=field, provider_message=said, retryable=retryable)

    # -- webhooks ------------------------------------------------------------------------------

    async def verify(self, request: web.Request) -> None:
        signature = request.headers.get("X-Plivo-Signature-V3")
        nonce = request.headers.get("X-Plivo-Signature-V3-Nonce")
        if not signature or not nonce:
            raise WebhookRejected("no X-Plivo-Signature-V3 and X-Plivo-Signature-V3-Nonce headers")
        params = mapping_of(await request.post()) if request.method == "POST" else {}
        url = webhook_url(request, self._public_url)
        token = self._config.auth_token.get_secret_value()
        if not validate_v3_signature(request.method, url, nonce, token, signature, params):
            raise WebhookRejected(f"X-Plivo-Signature-V3 does not match {url} and its parameters")

    async def answer_inbound(self, request: web.Request) -> web.Response:
        form = mapping_of(await request.post()) if request.method == "POST" else mapping_of(request.query)
        call_uuid = form.get("CallUUID", "")
        if destination := request.query.get("transfer_to"):
            log.info("plivo: transferring to %s", destination, extra={"call_id": call_uuid})
            return web.Response(text=dial_xml(destination), content_type="application/xml")
        outbound = request.query.get("direction") == "outbound"
        if outbound:  # the numbers as dialled: From is ours, To the callee
            parameters = {"from": form.get("From", ""), "to": form.get("To", "")} | dict(request.query)
            await self._adopt(request, form.get("RequestUUID", ""), call_uuid)
        else:
            parameters = inbound_parameters(request, form.get("From", ""), form.get("To", ""))
        url = media_url(server_base(request, self._public_url), self.name)
        log.info(
            "plivo: call %s streams to %s", "answered" if outbound else "arrived", url, extra={"call_id": call_uuid}
        )
        return web.Response(text=stream_xml(url, parameters), content_type="application/xml")

    async def call_progress(self, request: web.Request) -> CallProgress | None:
        form = mapping_of(await request.post()) if request.method == "POST" else mapping_of(request.query)
        return plivo_progress(form)

    async def _adopt(self, request: web.Request, request_uuid: str, call_uuid: str) -> None:
        """Move the queued (or ringing) row of an outbound call from its ``request_uuid`` to its
        ``CallUUID``."""
        if not request_uuid or not call_uuid or request_uuid == call_uuid:
            return
        store = request.app[STORE]
        try:
            row = await store.get_call(request_uuid)
        except NotFound:
            return
        if row.status is not CallStatus.QUEUED and row.status is not CallStatus.RINGING:
            return
        try:
            await store.create_call(
                row.direction,
                id=call_uuid,
                agent_id=row.agent_id,
                status=row.status,
                from_number=row.from_number,
                to_number=row.to_number,
                metadata=row.metadata,
                variables=row.variables,
            )
        except StoreConflict:
            return
        await store.delete_call(request_uuid)
        log.info("plivo: request %s answered as call %s", request_uuid, call_uuid, extra={"call_id": call_uuid})
