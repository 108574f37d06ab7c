"""Telnyx Call Control through the official SDK (``telnyx.AsyncTelnyx``, httpx, no retries: placing a
call twice is worse than failing once), webhooks checked with the SDK's Ed25519 verifier.

Telnyx drives a call with webhooks, all posted to ``<public_url>/telephony/telnyx/inbound`` (set it
as the Call Control application's webhook URL; outbound calls name it themselves):

- ``call.initiated`` of an incoming call: we ``answer`` it, with the stream parameters in
  ``client_state`` (base64 JSON);
- ``call.answered`` carrying our ``client_state`` (an inbound call we answered, or an outbound one we
  dialled with it): we ``streaming_start`` to ``wss://<public_url>/media/telnyx``, bidirectional RTP
  in PCMU, the parameters as ``custom_parameters`` (``from`` and ``to`` travel in the stream's own
  ``start`` fields). ``dial`` and ``answer`` take a ``stream_url`` but no custom parameters.
- ``call.hangup`` is the call's status (``telnyx_progress``): a call we dialled that ends before
  its media stream starts (``hangup_cause`` ``user_busy``, ``no_answer`` ...) is ended in the store
  with that reason (``status.py``); ``/telephony/telnyx/status`` takes these events too;
- anything else is acknowledged and ignored.
"""

from __future__ import annotations

import base64
import binascii
import logging
import ssl
from collections.abc import Mapping
from typing import Any

import httpx
import orjson
import telnyx
from aiohttp import web
from telnyx.lib.webhook_verification import WebhookVerificationError, verify_webhook_signature

from ringline.api.telephony.base import (
    ParametersTooLarge,
    TelephonyError,
    WebhookRejected,
    inbound_parameters,
    media_url,
    server_base,
)
from ringline.api.telephony.status import CallProgress, Progress, record_progress
from ringline.config.settings import TelnyxConfig
from ringline.engine.transports.base import TransferFailed
from ringline.engine.transports.socket import Transferrer

log = logging.getLogger(__name__)

MAX_CLIENT_STATE = 4096
"""Characters of ``client_state`` (base64) we send at most."""
NATIVE = ("from", "to")
"""Parameters the stream's ``start`` carries in its own fields."""
_STATE_KEY = "ringline"

HANGUP_CAUSES: dict[str, Progress] = {
    "user_busy": Progress.BUSY,
    "call_rejected": Progress.BUSY,  # the callee declined: for the caller, a busy line
    "no_answer": Progress.NO_ANSWER,
    "timeout": Progress.NO_ANSWER,  # the dial's timeout_secs passed while it rang
    "originator_cancel": Progress.CANCELLED,
    "not_found": Progress.FAILED,
    "unspecified": Progress.FAILED,
    "normal_clearing": Progress.COMPLETED,
    "time_limit": Progress.COMPLETED,
}
"""``call.hangup``'s ``hangup_cause``; any other (or none) is ``failed``."""


def telnyx_progress(event: Any) -> CallProgress | None:
    """A ``call.hangup`` event's call and ``hangup_cause``; None for any other event."""
    data = event.get("data") if isinstance(event, dict) else None
    payload = data.get("payload") if isinstance(data, dict) else None
    if not isinstance(payload, dict) or data.get("event_type") != "call.hangup":
        return None
    call_id, cause = payload.get("call_control_id"), payload.get("hangup_cause")
    if not isinstance(call_id, str) or not call_id:
        return None
    progress = HANGUP_CAUSES.get(cause, Progress.FAILED) if isinstance(cause, str) else Progress.FAILED
    return CallProgress((call_id,), progress, f"hangup_cause={cause}")


def encode_state(parameters: Mapping[str, str]) -> str:
    """The ``client_state`` that carries a call's stream parameters."""
    state = base64.b64encode(orjson.dumps({_STATE_KEY: dict(parameters)})).decode()
    if len(state) > MAX_CLIENT_STATE:
        why = f"too large: the stream parameters make {len(state)} characters of client_state, Telnyx takes"
        raise ParametersTooLarge(f"{why} {MAX_CLIENT_STATE}")
    return state


def decode_state(state: object) -> dict[str, str] | None:
    """The stream parameters in a ``client_state`` we sent, or None (absent, or not ours)."""
    if not isinstance(state, str) or not state:
        return None
    try:
        value = orjson.loads(base64.b64decode(state, validate=True))
    except (binascii.Error, orjson.JSONDecodeError):
        return None
    params = value.get(_STATE_KEY) if isinstance(value, dict) else None
    if not isinstance(params, dict):
        return None
    return {str(k): str(v) for k, v in params.items()}


def error_of(exc: telnyx.APIError, what: str) -> TelephonyError:
    """Telnyx's ``{"errors": [{"code", "title", "detail", "source": {"pointer"}}]}`` as our error."""
    if isinstance(exc, telnyx.APITimeoutError):
        return TelephonyError(f"Telnyx did not answer {what} in time", retryable=True)
    if isinstance(exc, telnyx.APIConnectionError):
        return TelephonyError(f"cannot reach Telnyx for {what}: {exc}", retryable=True)
    status = exc.status_code if isinstance(exc, telnyx.APIStatusError) else None
    errors = exc.body.get("errors") if isinstance(exc.body, dict) else None
    first = errors[0] if isinstance(errors, list) and errors and isinstance(errors[0], dict) else {}
    said = ": ".join(str(first[k]) for k in ("title", "detail") if first.get(k)) or None
    pointer = (first.get("source") or {}).get("pointer") if isinstance(first.get("source"), dict) else None
    field = {"/to": "to", "/from": "from"}.get(str(pointer)) if said else None
    code = f", error {first['code']}" if first.get("code") else ""
    text = f"Telnyx refused {what} (HTTP {status}{code}): {said or 'no reason given'}"
    retryable = status is not None and (status == 429 or status >= 500)
    return TelephonyError(text, status=status, field=field, provider_message=said, retryable=retryable)


class TelnyxControl:
    """``ProviderControl`` for Telnyx. Open it (``start``) before use."""

    name = "telnyx"
    label = "Telnyx"

    def __init__(self, config: TelnyxConfig, public_url: str | None, *, tls: ssl.SSLContext | None = None) -> None:
        self._config = config
        self._public_url = public_url
        self._tls = tls
        self._client: telnyx.AsyncTelnyx | None = None

    def __repr__(self) -> str:
        return f"<TelnyxControl {self._config.api_base_url}>"

    async def start(self) -> TelnyxControl:
        if self._client is None:
            http = httpx.AsyncClient(
                verify=self._tls if self._tls is not None else True, timeout=self._config.timeout_s
            )
            self._client = telnyx.AsyncTelnyx(
                api_key=self._config.api_key.get_secret_value(),
                base_url=self._config.api_base_url,
                timeout=self._config.timeout_s,
                max_retries=0,
                http_client=http,
            )
        return self

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()

    @property
    def client(self) -> telnyx.AsyncTelnyx:
        if self._client is None:
            raise RuntimeError("TelnyxControl is not started")
        return self._client

    # -- REST ----------------------------------------------------------------------------------

    async def place_call(self, *, to: str, from_: str, parameters: Mapping[str, str]) -> str:
        if self._config.connection_id is None:
            raise TelephonyError("Telnyx calls need [telephony.telnyx] connection_id (the Call Control application)")
        if self._public_url is None:
            raise TelephonyError("Telnyx calls need [telephony] public_url")
        state = encode_state(parameters)
        try:
            dialled = await self.client.calls.dial(
                connection_id=self._config.connection_id,
                to=to,
                from_=from_,
                client_state=state,
                webhook_url=f"{self._public_url}/telephony/{self.name}/inbound",
                webhook_url_method="POST",
            )
        except telnyx.APIError as exc:
            raise error_of(exc, "the call") from exc
        call_control_id = dialled.data.call_control_id if dialled.data is not None else None
        if not call_control_id:
            raise TelephonyError("Telnyx's answer has no call_control_id")
        return call_control_id

    async def hangup(self, call_id: str) -> None:
        try:
            await self.client.calls.actions.hangup(call_id)
        except telnyx.APIError as exc:
            raise error_of(exc, "the hang-up") from exc

    def transferrer(self, call_id: str) -> Transferrer:
        async def transfer(destination: str) -> None:
            try:
                await self.client.calls.actions.transfer(call_id, to=destination)
            except telnyx.APIError as exc:
                raise TransferFailed(str(error_of(exc, "the transfer"))) from exc
            log.info("telnyx: call transferred to %s", destination, extra={"call_id": call_id})

        return transfer

    # -- webhooks ------------------------------------------------------------------------------

    async def verify(self, request: web.Request) -> None:
        if self._config.public_key is None:
            raise WebhookRejected("no [telephony.telnyx] public_key to check webhook signatures with")
        try:
            verify_webhook_signature(await request.read(), request.headers, self._config.public_key)
        except WebhookVerificationError as exc:
            raise WebhookRejected(exc.message) from None

    async def answer_inbound(self, request: web.Request) -> web.Response:
        try:
            event = orjson.loads(await request.read())
            data = event["data"]
            kind, payload = str(data["event_type"]), data["payload"]
            call_id = str(payload["call_control_id"])
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise web.HTTPBadRequest(text=f"not a Telnyx call event: {exc!r}") from None
        if kind == "call.initiated" and payload.get("direction") == "incoming":
            await self._answer(request, call_id, payload)
        elif kind == "call.answered" and (parameters := decode_state(payload.get("client_state"))) is not None:
            await self._stream(request, call_id, parameters)
        elif (progress := telnyx_progress(event)) is not None:
            await record_progress(request.app, self.name, progress)
        else:
            log.debug("telnyx: %s ignored", kind, extra={"call_id": call_id})
        return web.json_response({})

    async def call_progress(self, request: web.Request) -> CallProgress | None:
        try:
            return telnyx_progress(orjson.loads(await request.read()))
        except orjson.JSONDecodeError:
            return None

    async def _answer(self, request: web.Request, call_id: str, payload: dict[str, Any]) -> None:
        from_, to = str(payload.get("from", "")), str(payload.get("to", ""))
        state = encode_state(inbound_parameters(request, from_, to))
        try:
            await self.client.calls.actions.answer(call_id, client_state=state)
        except telnyx.APIError as exc:
            raise error_of(exc, "the answer") from exc
        log.info("telnyx: inbound call from %s to %s answered", from_, to, extra={"call_id": call_id})

    async def _stream(self, request: web.Request, call_id: str, parameters: dict[str, str]) -> None:
        url = media_url(server_base(request, self._public_url), self.name)
        custom = [{"name": k, "value": v} for k, v in parameters.items() if k not in NATIVE]
        try:
            await self.client.calls.actions.start_streaming(
                call_id,
                stream_url=url,
                stream_track="inbound_track",
                stream_bidirectional_mode="rtp",
                stream_bidirectional_codec="PCMU",
                custom_parameters=custom,  # type: ignore[arg-type]
            )
        except telnyx.APIError as exc:
            raise error_of(exc, "the media stream") from exc
        log.info("telnyx: call answered, streaming to %s", url, extra={"call_id": call_id})
