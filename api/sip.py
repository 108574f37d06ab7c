"""The native SIP user agent in the app: started when ``[telephony.sip]`` is configured.

Who may call without a digest challenge: ``[telephony.sip] allowed_addresses``, and each SIP trunk
in the store: its ``allowed_addresses`` and its ``host`` when that is an IP address (one store query
per INVITE from any other source; the per-source rate limit comes first). A leg becomes a call
through ``open_call`` like any media stream: the called number (Request-URI user) picks its
inbound agent through the numbers table, else the config's default agent answers.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from ringline.api.http import NotConfigured, ValidationFailed
from ringline.api.media import close_call, open_call
from ringline.api.state import SETTINGS, STORE, WEBHOOKS
from ringline.api.store import Call as CallRow
from ringline.api.store import PhoneNumber, StoreError
from ringline.api.v1.numbers import SipTrunkConfig
from ringline.config.settings import AgentConfig
from ringline.config.sip import SipConfig
from ringline.engine.audio.clock import LoopClock
from ringline.engine.call import Call
from ringline.engine.errors import RinglineError
from ringline.engine.record import EndReason
from ringline.engine.transports.base import TransferFailed
from ringline.engine.transports.events import CallStarted
from ringline.engine.transports.rtp.clock import RtpTicker
from ringline.engine.transports.rtp.pacer import RtpPacer
from ringline.engine.transports.sip.leg import SipLeg, new_call_id
from ringline.engine.transports.sip.outbound import DialFailed, Route, dial
from ringline.engine.transports.sip.ua import SipUserAgent
from ringline.engine.transports.sip.uri import SipUri

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

    async def route(self, destination: str, leg: SipLeg) -> Route:
        """A ``sip:`` URI directly; a number through the trunk of our number on the call (the
        one called, or calling out), else through the peer the call came from."""
        ours = leg.parameters.get("from" if leg.parameters.get("direction") == "outbound" else "to", "")
        caller = ours or "ringline"
        try:
            if destination.startswith(("sip:", "sips:")):
                uri = SipUri.parse(destination)
                return Route(target=destination, address=await _resolve(uri.host, uri.port or 5060), caller=caller)
            trunk_id = leg.parameters.get("sip_trunk_id")
            if trunk_id is None and ours and (number := await self._app[STORE].find_number(ours)) is not None:
                trunk_id = number.sip_trunk_id
            if trunk_id is not None:
                trunk = SipTrunkConfig.model_validate((await self._app[STORE].get_sip_trunk(trunk_id)).config)
                return await _route(trunk, destination, caller=caller)
        except (OSError, RinglineError, StoreError, ValueError) as exc:
            raise TransferFailed(f"cannot reach {destination}: {exc}") from None
        host, port = leg.remote
        return Route(target=f"sip:{destination}@{host}:{port}", address=leg.remote, caller=caller)

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
    ticker = RtpTicker(pacer=_pacer(config))
    await ticker.start()
    ua = SipUserAgent(config, AppSipCalls(app), ticker=ticker)
    await ua.start()
    app[SIP_UA] = ua
    try:
        yield
    finally:
        await ua.aclose()
        await ticker.aclose()


def _pacer(config: SipConfig) -> RtpPacer | None:
    if config.rtp_pacing == "loop":
        return None
    if not RtpPacer.available():
        log.warning("sip: rtp_pacing = 'process' needs Linux; the event loop sends RTP instead")
        return None
    return RtpPacer(lead=config.rtp_pacing_lead_ms / 1000, realtime=config.rtp_pacing_realtime)


async def place_sip_call(
    app: web.Application,
    number: PhoneNumber,
    to: str,
    parameters: dict[str, str],
    agent: AgentConfig,
    queue: Callable[[str], Awaitable[CallRow]],
) -> CallRow:
    """Dial ``to`` through ``number``'s SIP trunk. The call's row is written (``queue``) before
    the INVITE goes, so whatever comes back has a row to land in: the answered call takes it over
    (``open_call``), a refusal ends it with ``busy``, ``no_answer`` or ``failed``."""
    ua = app.get(SIP_UA)
    if ua is None:
        raise NotConfigured("outbound SIP calls need the SIP user agent: configure [telephony.sip]")
    if number.sip_trunk_id is None:
        raise ValidationFailed("no SIP trunk", details={"from": f"{number.number} has no sip_trunk_id to call through"})
    trunk = SipTrunkConfig.model_validate((await app[STORE].get_sip_trunk(number.sip_trunk_id)).config)
    if trunk.transport != "udp":
        why = f"the trunk's transport is {trunk.transport}; the SIP user agent speaks UDP only"
        raise ValidationFailed("unsupported SIP transport", details={"from": why})
    route = await _route(trunk, to, caller=number.number)
    call_id = new_call_id()
    row = await queue(call_id)
    ua.spawn(
        _dial_and_run(app, ua, route, parameters | {"sip_trunk_id": number.sip_trunk_id}, agent, call_id),
        f"sip-dial-{call_id}",
    )
    return row


async def _route(trunk: SipTrunkConfig, to: str, *, caller: str) -> Route:
    port = trunk.port or 5060
    host, via_port = trunk.host, port
    if trunk.outbound_proxy:
        proxy = trunk.outbound_proxy.removeprefix("sip:").split(";", 1)[0]
        host, _, proxy_port = proxy.partition(":")
        via_port = int(proxy_port) if proxy_port else 5060
    address = await _resolve(host, via_port)
    password = trunk.password.get_secret_value() if trunk.password is not None else None
    return Route(
        target=f"sip:{to}@{trunk.host}:{port}", address=address, caller=caller,
        username=trunk.username, password=password, codecs=tuple(trunk.codecs),
    )  # fmt: skip


async def _resolve(host: str, port: int) -> tuple[str, int]:
    infos = await asyncio.get_running_loop().getaddrinfo(host.strip("[]"), port, type=socket.SOCK_DGRAM)
    return infos[0][4][:2]


async def _dial_and_run(
    app: web.Application, ua: SipUserAgent, route: Route, parameters: dict[str, str], agent: AgentConfig, call_id: str
) -> None:
    try:
        leg = await dial(ua, route, parameters, call_id=call_id)
    except DialFailed as exc:
        log.info("sip: outbound call not answered: %s (%s)", exc.outcome.value, exc.detail, extra={"call_id": call_id})
        webhooks = app[WEBHOOKS]
        await app[STORE].end_call(call_id, exc.outcome.value, outbox=webhooks.status_update(agent))
        webhooks.notify()
        return
    calls = AppSipCalls(app)
    try:
        call = await calls.open(leg)
    except RinglineError as exc:
        log.warning("sip: answered call refused: %s", exc, extra=leg.extra)
        await leg.abandon(EndReason.ERROR, f"refused: {exc}")
        return
    await leg.run(call)
