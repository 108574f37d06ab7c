"""The native SIP user agent in the app: started when ``[telephony.sip]`` is configured.

Who may call without a digest challenge: ``[telephony.sip] allowed_addresses`` and the address of
every SIP trunk in the store (its ``host``, when that is an IP address). A leg becomes a call
through ``open_call`` like any media stream: the called number (Request-URI user) picks its
inbound agent through the numbers table, else the config's default agent answers.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from ringline.api.media import close_call, open_call
from ringline.api.state import SETTINGS, STORE
from ringline.engine.audio.clock import LoopClock
from ringline.engine.call import Call
from ringline.engine.transports.events import CallStarted
from ringline.engine.transports.rtp.clock import RtpTicker
from ringline.engine.transports.sip.leg import SipLeg
from ringline.engine.transports.sip.ua import SipUserAgent

log = logging.getLogger(__name__)

SIP_UA = web.AppKey("sip_ua", SipUserAgent)
TRUNK_PAGE = 500


class AppSipCalls:
    """``SipCalls`` over the app: trunks from the store, calls through ``open_call``."""

    def __init__(self, app: web.Application) -> None:
        self._app = app
        self._clock = LoopClock()

    async def trusted(self, address: str) -> bool:
        store = self._app.get(STORE)
        if store is None:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        page = await store.list_sip_trunks(limit=TRUNK_PAGE)
        for trunk in page.items:
            for allowed in (trunk.config.get("allowed_addresses") or []) + [trunk.config.get("host", "")]:
                try:
                    if ip in ipaddress.ip_network(allowed, strict=False):
                        return True
                except ValueError:
                    continue  # a host name: trunks by name need digest or allowed_addresses
        return False

    async def open(self, leg: SipLeg) -> Call:
        started = CallStarted(leg.id, leg.sip_call_id, leg.parameters)
        return await open_call(self._app, started, leg, self._clock)

    def closed(self, leg: SipLeg, call: Call) -> None:
        close_call(self._app, call)


async def sip_user_agent(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context: the UA and the process's one RTP clock, when ``[telephony.sip]`` is set."""
    config = app[SETTINGS].telephony.sip
    if config is None:
        yield
        return
    ticker = RtpTicker()
    await ticker.start()
    ua = SipUserAgent(config, AppSipCalls(app), ticker=ticker)
    await ua.start()
    app[SIP_UA] = ua
    try:
        yield
    finally:
        await ua.aclose()
        await ticker.aclose()
