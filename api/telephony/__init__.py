"""Telephony providers' call control (REST) and inbound webhooks: Twilio, Telnyx, Plivo, Vonage.

``open_controls`` makes the configured providers' controls (``app[TELEPHONY]``, also the media
sockets' ``app[CONTROLS]`` for transfers); ``inbound_webhook`` serves
``/telephony/{provider}/inbound``: the provider's signature is checked (403 otherwise, the reason
logged), then the provider's answer opens the media socket ``/media/{provider}``.
``/telephony/{provider}/status`` takes the providers' call-status events, checked the same way
(``status.py``: calls that end before their media socket opens).
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from aiohttp import web

from ringline.api.telephony.base import (
    ParametersTooLarge,
    ProviderControl,
    TelephonyError,
    WebhookRejected,
    media_url,
)
from ringline.config.settings import TelephonyConfig

log = logging.getLogger(__name__)

TELEPHONY = web.AppKey("telephony", dict[str, ProviderControl])
"""Call control per configured provider (``twilio``, ``telnyx``, ``plivo``, ``vonage``)."""

__all__ = [
    "TELEPHONY",
    "ParametersTooLarge",
    "ProviderControl",
    "TelephonyError",
    "WebhookRejected",
    "inbound_webhook",
    "media_url",
    "open_controls",
    "verified_control",
]


@asynccontextmanager
async def open_controls(
    config: TelephonyConfig, tls: ssl.SSLContext | None = None
) -> AsyncIterator[dict[str, ProviderControl]]:
    """The controls of the providers ``config`` configures, started; closed on exit."""
    controls: dict[str, ProviderControl] = {}
    async with AsyncExitStack() as stack:
        if config.twilio is not None:
            from ringline.api.telephony.twilio import TwilioControl

            twilio = await TwilioControl(config.twilio, config.public_url, tls=tls).start()
            stack.push_async_callback(twilio.aclose)
            controls["twilio"] = twilio
        if config.telnyx is not None:
            from ringline.api.telephony.telnyx import TelnyxControl

            telnyx = await TelnyxControl(config.telnyx, config.public_url, tls=tls).start()
            stack.push_async_callback(telnyx.aclose)
            controls["telnyx"] = telnyx
        if config.plivo is not None:
            from ringline.api.telephony.plivo import PlivoControl

            plivo = await PlivoControl(config.plivo, config.public_url).start()
            stack.push_async_callback(plivo.aclose)
            controls["plivo"] = plivo
        if config.vonage is not None:
            from ringline.api.telephony.vonage import VonageControl

            vonage = await VonageControl(config.vonage, config.public_url).start()
            stack.push_async_callback(vonage.aclose)
            controls["vonage"] = vonage
        if controls:
            log.info("telephony call control: %s", ", ".join(controls))
        yield controls


async def verified_control(request: web.Request, what: str) -> ProviderControl:
    """The control of the route's ``{provider}``, once it has verified that ``request`` is the
    provider's own: 404 for a provider not configured, 403 for a signature that fails (logged as
    ``<provider>: <what> refused from <address>: <why>``)."""
    provider = request.match_info["provider"]
    control = request.app[TELEPHONY].get(provider)
    if control is None:
        known = ", ".join(sorted(request.app[TELEPHONY])) or "none"
        raise web.HTTPNotFound(text=f"telephony provider {provider!r} is not configured (configured: {known})")
    try:
        await control.verify(request)
    except WebhookRejected as exc:
        log.warning("%s: %s refused from %s: %s", provider, what, request.remote, exc)
        raise web.HTTPForbidden(text="invalid webhook signature") from None
    return control


async def inbound_webhook(request: web.Request) -> web.StreamResponse:
    """``/telephony/{provider}/inbound``: a provider's inbound-call webhook."""
    control = await verified_control(request, "inbound webhook")
    provider = control.name
    try:
        return await control.answer_inbound(request)
    except ParametersTooLarge as exc:  # the webhook URL's own agent/var_* query is more than the provider carries
        log.error("%s: cannot answer an inbound call: %s", provider, exc)
        raise web.HTTPBadRequest(text=str(exc)) from None
    except TelephonyError as exc:
        log.error("%s: could not answer an inbound call: %s", provider, exc)
        raise web.HTTPBadGateway(text=f"{control.label} refused the answer: {exc}") from None
