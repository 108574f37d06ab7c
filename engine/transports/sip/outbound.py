"""Placing a call: INVITE through a trunk (or straight to a SIP URI), digest on 401/407, ringing
and early media, then the leg, or the reason there is none.

``dial`` returns a confirmed ``SipLeg`` (we sent the ACK) or raises ``DialFailed`` with the end
reason the call is recorded with: ``busy`` (486, 600, 603), ``no_answer`` (nobody answered within
``no_answer_timeout_s`` of ringing: we CANCEL; or 480/487), ``failed`` (any other refusal, bad
credentials, a far end that never answers at all (timer B's 408), no common codec).

Early media: a provisional answer with SDP (183 Session Progress, or a 180 with a body) sets the
call's RTP session up from it, so the far end's ringback or announcements are taken in (its address
latched, counted) rather than refused. They are not the callee: when the call is answered,
whatever was heard before is dropped, and the call starts on the 200's media.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ringline.engine.errors import RinglineError
from ringline.engine.transports.rtp.endpoint import RtpEndpoint
from ringline.engine.transports.rtp.session import RtpSession
from ringline.engine.transports.sip.dialog import Dialog, DialogError, make_cancel, make_request
from ringline.engine.transports.sip.digest import DigestError, authorize
from ringline.engine.transports.sip.leg import CODECS, SipLeg, media_session
from ringline.engine.transports.sip.message import Request, Response, SipError
from ringline.engine.transports.sip.sdp import SdpError, SessionDescription, make_offer, negotiate
from ringline.engine.transports.sip.uri import NameAddr

if TYPE_CHECKING:
    from ringline.engine.transports.sip.ua import Addr, SipUserAgent

log = logging.getLogger(__name__)


class DialOutcome(enum.Enum):
    BUSY = "busy"
    NO_ANSWER = "no_answer"
    FAILED = "failed"


class DialFailed(RinglineError):
    def __init__(self, outcome: DialOutcome, detail: str) -> None:
        super().__init__(detail)
        self.outcome, self.detail = outcome, detail


BUSY = frozenset({486, 600, 603})
CANCEL_GRACE_S = 32.0
"""After our CANCEL, how long the far end has to end the INVITE (64*T1, RFC 3261 9.1)."""
NOT_ANSWERED = frozenset({480, 487})


@dataclass(frozen=True, slots=True)
class Route:
    """Where an outbound INVITE goes and how it authenticates."""

    target: str
    """The Request-URI: ``sip:+14155550100@trunk.example.com``."""
    address: Addr
    """Where the datagrams go (the trunk, its outbound proxy, or the URI's host)."""
    caller: str
    """Our user part in From (the caller id)."""
    username: str | None = None
    password: str | None = None
    codecs: tuple[str, ...] = ("PCMU", "PCMA")


async def dial(ua: SipUserAgent, route: Route, parameters: dict[str, str], *, call_id: str | None = None) -> SipLeg:
    """INVITE ``route.target`` and wait for the outcome; the leg's call is the caller's to make."""
    session = RtpSession(remote=None)
    endpoint = await RtpEndpoint.open(session, ua.ticker, host=ua.config.listen_host, ports=ua.ports)
    try:
        return await _invite(ua, route, parameters, endpoint, call_id)
    except BaseException:
        await endpoint.aclose()
        raise


async def _invite(
    ua: SipUserAgent, route: Route, parameters: dict[str, str], endpoint: RtpEndpoint, call_id: str | None
) -> SipLeg:
    codecs = tuple(CODECS[name] for name in route.codecs)
    offer = make_offer(ua.host, endpoint.local_port, codecs=codecs)
    invite = make_request(
        "INVITE", route.target, from_=NameAddr(f"sip:{route.caller}@{ua.host}"), to=NameAddr(route.target),
        sent_by=ua.sent_by, contact=ua.contact, body=bytes(offer), content_type="application/sdp",
        headers=[("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS, REFER, NOTIFY, INFO")],
    )  # fmt: skip
    responses: asyncio.Queue[Response] = asyncio.Queue()
    ua.send_request(invite, route.address, responses.put_nowait)
    deadline: float | None = ua.clock.now() + ua.config.no_answer_timeout_s
    authenticated = rang = cancelled = early = False
    try:
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    response = await responses.get()
            except TimeoutError:
                if cancelled:  # RFC 3261 9.1: the far end never ended the INVITE after our CANCEL
                    raise DialFailed(DialOutcome.NO_ANSWER, "no answer, and no 487 to our CANCEL") from None
                if not rang:  # nothing provisional: a CANCEL may not be sent; timer B ends it (408)
                    deadline = None
                    continue
                log.info("sip: no answer from %s in %g s: cancelling", route.target, ua.config.no_answer_timeout_s)
                ua.send_request(make_cancel(invite), route.address, None)
                cancelled = True
                deadline = ua.clock.now() + CANCEL_GRACE_S
                continue
            status = response.status
            if status < 200:
                rang = True
                if response.body and not early:
                    early = _early_media(ua, route, endpoint, invite, response)
                continue
            if status in (401, 407) and not authenticated and route.username and route.password:
                ua.forget(invite)
                try:
                    invite = authorize(invite, response, route.username, route.password)
                except DigestError as exc:
                    raise DialFailed(DialOutcome.FAILED, f"cannot answer the challenge: {exc}") from None
                authenticated = True
                ua.send_request(invite, route.address, responses.put_nowait)
                continue
            if status >= 300:
                outcome = _outcome(status, rang=rang, cancelled=cancelled)
                raise DialFailed(outcome, f"{status} {response.reason}".strip())
            return _answered(ua, route, parameters, endpoint, invite, response, call_id)
    except asyncio.CancelledError:
        if rang and not cancelled:  # nobody wants the call any more: stop it ringing
            ua.send_request(make_cancel(invite), route.address, None)
        raise
    finally:
        ua.forget(invite)


def _early_media(ua: SipUserAgent, route: Route, endpoint: RtpEndpoint, invite: Request, response: Response) -> bool:
    """Take a provisional answer's SDP as early media; whether it could be."""
    try:
        media = negotiate(SessionDescription.parse(invite.body), SessionDescription.parse(response.body))
    except SdpError as exc:
        log.info("sip: %d from %s with unusable SDP (%s): no early media", response.status, route.target, exc)
        return False
    endpoint.session = media_session(media, ua.config.jitter_ms)
    log.info("sip: early media from %s:%d (%s)", media.remote_host, media.remote_port, media.codec)
    return True


def _outcome(status: int, *, rang: bool, cancelled: bool) -> DialOutcome:
    if cancelled or status in NOT_ANSWERED or (status == 408 and rang):
        return DialOutcome.NO_ANSWER  # a 408 with nothing before it is timer B: the far end is not there
    return DialOutcome.BUSY if status in BUSY else DialOutcome.FAILED


def _answered(
    ua: SipUserAgent,
    route: Route,
    parameters: dict[str, str],
    endpoint: RtpEndpoint,
    invite: Request,
    response: Response,
    call_id: str | None,
) -> SipLeg:
    """A 2xx: ACK it (always: RFC 3261 13.2.2.4), then take the answer's media or hang up."""
    try:
        dialog = Dialog.from_outgoing(invite, response, sent_by=ua.sent_by)
    except (DialogError, SipError) as exc:
        raise DialFailed(DialOutcome.FAILED, f"unusable 2xx: {exc}") from None
    ua.send_request(dialog.create_ack(invite), route.address, None)
    try:
        media = negotiate(SessionDescription.parse(invite.body), SessionDescription.parse(response.body))
    except SdpError as exc:
        ua.send_request(dialog.create_request("BYE"), route.address, None)
        raise DialFailed(DialOutcome.FAILED, f"the answer's SDP: {exc or 'no common codec'}") from None
    # The session was made before we knew the codec (or for early media): make it again on the
    # answer's media (nothing was sent), and drop what was heard before the callee answered.
    endpoint.session = media_session(media, ua.config.jitter_ms)
    if dropped := endpoint.discard_pending():
        log.debug("sip: %d frames heard before the answer dropped", dropped)
    leg = SipLeg(
        ua, invite=invite, remote=route.address, endpoint=endpoint, media=media, parameters=parameters, call_id=call_id
    )
    endpoint.session.call_id = leg.id
    ua.legs[invite.call_id] = leg
    leg.confirmed(dialog)
    log.info("sip: %s answered (%s)", route.target, media.codec, extra=leg.extra)
    return leg
