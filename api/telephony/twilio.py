"""Twilio call control: ``TwilioRest`` (``engine/transports/twilio/rest.py``) for the REST calls, the
official SDK's ``RequestValidator`` for ``X-Twilio-Signature``, and TwiML for inbound calls.

Inbound: point the number's Voice webhook (HTTP POST) at ``<public_url>/telephony/twilio/inbound``;
it answers ``<Connect><Stream url="wss://<public_url>/media/twilio">`` with the numbers and
``direction`` (and the webhook URL's ``agent``/``var_*`` query) as ``<Parameter>``s.

Outbound calls ask for their status events at ``<public_url>/telephony/twilio/status``
(``StatusCallback``, events ``initiated ringing answered completed``); ``twilio_progress`` reads
their ``CallStatus`` (``status.py``).

Why not the SDK's REST client: ``twilio.rest.Client`` with ``AsyncTwilioHttpClient`` can be aimed
at a fake only by overwriting ``client.api.base_url`` (and ``TWILIO_EDGE``/``TWILIO_REGION`` in the
environment would still rewrite the host), its aiohttp session takes neither our TLS context nor a
total timeout, and it retries through ``aiohttp-retry``, where placing a call twice is worse than
failing once. ``TwilioRest`` is the same two form POSTs, with Twilio's error codes mapped to fields.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Mapping

from aiohttp import web
from twilio.request_validator import RequestValidator

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
from ringline.config.settings import TwilioConfig
from ringline.engine.transports.socket import Transferrer
from ringline.engine.transports.twilio.rest import MAX_TWIML, TwilioRest, TwilioRestError, stream_twiml

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Twilio-Signature"

PROGRESS: dict[str, Progress] = {
    "ringing": Progress.RINGING,
    "in-progress": Progress.ANSWERED,
    "completed": Progress.COMPLETED,
    "busy": Progress.BUSY,
    "no-answer": Progress.NO_ANSWER,
    "failed": Progress.FAILED,
    "canceled": Progress.CANCELLED,
}
"""Twilio's ``CallStatus`` values we act on (``queued`` and ``initiated`` change nothing)."""


def twilio_progress(form: Mapping[str, str]) -> CallProgress | None:
    """A status callback's ``CallSid`` and ``CallStatus``; None for a status we do not act on."""
    call_sid, status = form.get("CallSid", ""), form.get("CallStatus", "")
    progress = PROGRESS.get(status)
    if not call_sid or progress is None:
        return None
    return CallProgress((call_sid,), progress, f"CallStatus={status}")


class TwilioControl:
    """``ProviderControl`` for Twilio. Open it (``start``) before use."""

    name = "twilio"
    label = "Twilio"

    def __init__(self, config: TwilioConfig, public_url: str | None, *, tls: ssl.SSLContext | None = None) -> None:
        self.rest = TwilioRest(
            config.account_sid,
            config.auth_token.get_secret_value(),
            base_url=config.api_base_url,
            timeout_s=config.timeout_s,
            tls=tls,
        )
        self._validator = RequestValidator(config.auth_token.get_secret_value())
        self._public_url = public_url

    def __repr__(self) -> str:
        return f"<TwilioControl {self.rest.account_sid}>"

    async def start(self) -> TwilioControl:
        await self.rest.start()
        return self

    async def aclose(self) -> None:
        await self.rest.aclose()

    # -- REST ----------------------------------------------------------------------------------

    def twiml(self, parameters: Mapping[str, str]) -> str:
        """The TwiML of an outbound call: stream to our media socket. ``ParametersTooLarge`` past
        Twilio's limit."""
        if self._public_url is None:
            raise TelephonyError("Twilio calls need [telephony] public_url")
        twiml = stream_twiml(media_url(self._public_url, self.name), parameters)
        if len(twiml) > MAX_TWIML:
            why = f"too large: the stream parameters make {len(twiml)} characters of TwiML, Twilio takes {MAX_TWIML}"
            raise ParametersTooLarge(why)
        return twiml

    async def place_call(self, *, to: str, from_: str, parameters: Mapping[str, str]) -> str:
        twiml = self.twiml(parameters)
        callback = f"{self._public_url}/telephony/{self.name}/status"
        try:
            call = await self.rest.create_call(to=to, from_=from_, twiml=twiml, status_callback=callback)
        except TwilioRestError as exc:
            raise _telephony_error(exc) from exc
        return call.sid

    async def hangup(self, call_id: str) -> None:
        try:
            await self.rest.hangup_call(call_id)
        except TwilioRestError as exc:
            raise _telephony_error(exc) from exc

    def transferrer(self, call_id: str) -> Transferrer:
        return self.rest.transferrer(call_id)

    # -- webhooks ------------------------------------------------------------------------------

    async def verify(self, request: web.Request) -> None:
        signature = request.headers.get(SIGNATURE_HEADER)
        if not signature:
            raise WebhookRejected(f"no {SIGNATURE_HEADER} header")
        form = await request.post() if request.method == "POST" else {}
        url = webhook_url(request, self._public_url)
        if not self._validator.validate(url, form, signature):
            raise WebhookRejected(f"{SIGNATURE_HEADER} does not match {url} and its parameters")

    async def answer_inbound(self, request: web.Request) -> web.Response:
        form = await request.post() if request.method == "POST" else request.query
        call_sid, from_, to = str(form.get("CallSid", "")), str(form.get("From", "")), str(form.get("To", ""))
        parameters = inbound_parameters(request, from_, to)
        url = media_url(server_base(request, self._public_url), self.name)
        twiml = stream_twiml(url, parameters)
        log.info("twilio: inbound call from %s to %s streams to %s", from_, to, url, extra={"call_id": call_sid})
        return web.Response(text=twiml, content_type="application/xml")

    async def call_progress(self, request: web.Request) -> CallProgress | None:
        return twilio_progress(mapping_of(await request.post()))


def _telephony_error(exc: TwilioRestError) -> TelephonyError:
    return TelephonyError(
        str(exc), status=exc.status, field=exc.field, provider_message=exc.twilio_message, retryable=exc.retryable
    )
