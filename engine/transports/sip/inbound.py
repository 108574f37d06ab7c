"""Answering an INVITE: who may call, which media, and the call it carries.

``answer_invite`` runs as one task per incoming call (the UA owns it): authorize the source (a
trusted address, or digest), negotiate the SDP (488 without a common codec), take an RTP port
pair, ring (180), make the call (404 if the application refuses it), answer 200 with our SDP, and
run the leg until the call ends. Every refusal is a final response with a reason and a log line.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ringline.engine.errors import RinglineError
from ringline.engine.transports.rtp.endpoint import PortsExhausted, RtpEndpoint
from ringline.engine.transports.sip.dialog import Dialog, DialogError
from ringline.engine.transports.sip.digest import AuthResult
from ringline.engine.transports.sip.leg import CODECS, LegState, SipLeg, media_session
from ringline.engine.transports.sip.message import Request, SipError, make_response, new_tag
from ringline.engine.transports.sip.sdp import SdpError, SessionDescription, answer

if TYPE_CHECKING:
    from ringline.engine.transports.sip.ua import Addr, SipUserAgent

log = logging.getLogger(__name__)


async def answer_invite(ua: SipUserAgent, invite: Request, source: Addr) -> None:
    if not await _authorized(ua, invite, source):
        return
    try:
        offer = SessionDescription.parse(invite.body)
        _, chosen = answer(offer, ua.host, 9, codecs=tuple(CODECS.values()))
    except SdpError as exc:
        status, reason = (488, "Not Acceptable Here") if invite.body else (488, "Offer Required")
        log.info("sip: refusing INVITE from %s: %s", source[0], exc or "no SDP offer")
        warning = f'399 ringline "{exc or "an SDP offer is required"}"'
        ua.respond(make_response(invite, status, reason, to_tag=new_tag(), headers=[("Warning", warning)]))
        return
    session = media_session(chosen, ua.config.jitter_ms)
    try:
        endpoint = await RtpEndpoint.open(session, ua.ticker, host=ua.config.listen_host, ports=ua.ports)
    except PortsExhausted as exc:
        log.warning("sip: refusing INVITE: %s", exc)
        ua.respond(make_response(invite, 503, "Service Unavailable", to_tag=new_tag(), headers=[("Retry-After", "5")]))
        return
    to_tag = new_tag()
    sid = str(endpoint.local_port)
    sdp, media = answer(offer, ua.host, endpoint.local_port, codecs=(CODECS[chosen.codec],), session_id=sid)
    leg = SipLeg(ua, invite=invite, remote=source, endpoint=endpoint, media=media, parameters=_parameters(invite))
    session.call_id = leg.id
    ua.legs[invite.call_id] = leg
    ua.respond(make_response(invite, 180, to_tag=to_tag, headers=[("Contact", f"<{ua.contact}>")]))
    try:
        call = await ua.calls.open(leg)
    except RinglineError as exc:
        log.warning("sip: call refused: %s", exc, extra=leg.extra)
        warning = [("Warning", f'399 ringline "{exc}"')]
        ua.respond(make_response(invite, 404, "Not Found", to_tag=to_tag, headers=warning))
        ua.legs.pop(invite.call_id, None)
        await endpoint.aclose()
        return
    await leg.ring(ua.config.ring_s)
    headers = [("Contact", f"<{ua.contact}>"), ("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS, REFER, NOTIFY, INFO")]
    ok = make_response(invite, 200, to_tag=to_tag, headers=headers, body=bytes(sdp), content_type="application/sdp")
    if leg.state is LegState.ENDED:  # cancelled while the call was being made: the layer sent 487
        await leg.run(call)
        return
    try:
        dialog = Dialog.from_incoming(invite, ok, local_contact=ua.contact, sent_by=ua.sent_by)
    except DialogError as exc:  # e.g. no Contact: nowhere to send in-dialog requests
        ua.respond(make_response(invite, 400, str(exc), to_tag=to_tag))
        leg.end(leg.reason, f"refused: {exc}")
        await leg.run(call)
        return
    endpoint.discard_pending()  # what came in while it rang is not the call
    ua.respond(ok)
    leg.answered(dialog)
    log.info("sip: answered %s from %s (%s)", invite.call_id, source[0], media.codec, extra=leg.extra)
    await leg.run(call)


async def _authorized(ua: SipUserAgent, invite: Request, source: Addr) -> bool:
    """Whether ``invite`` may go on; if not, it has been answered (401 challenge or 403)."""
    if ua.config.allows(source[0]) or await ua.calls.trusted(source[0]):
        return True
    verifier, config = ua.verifier, ua.config
    if verifier is None or config.password is None:
        log.warning("sip: INVITE from %s refused: address not allowed", source[0])
        ua.respond(make_response(invite, 403, "Forbidden", to_tag=new_tag()))
        return False
    header = invite.headers.get("Authorization")
    now = ua.clock.now()
    if header is not None:
        password = config.password.get_secret_value()
        result = verifier.verify(
            header, method="INVITE", now=now, password_for=lambda user: password if user == config.username else None
        )
        if result is AuthResult.OK:
            return True
        if result is AuthResult.INVALID:
            log.warning("sip: INVITE from %s refused: wrong credentials", source[0])
            ua.respond(make_response(invite, 403, "Forbidden", to_tag=new_tag()))
            return False
    challenge = verifier.challenge(now, stale=header is not None)
    ua.respond(make_response(invite, 401, to_tag=new_tag(), headers=[("WWW-Authenticate", str(challenge))]))
    return False


def _parameters(invite: Request) -> dict[str, str]:
    """The call's parameters (as a media stream's): the caller, the number called, the SIP Call-ID."""
    try:
        caller = invite.from_addr.sip_uri().user or ""
    except SipError:
        caller = invite.from_addr.uri
    return {
        "from": _number(caller),
        "to": _number(invite.sip_uri().user or ""),
        "direction": "inbound",
        "sip_call_id": invite.call_id,
    }


def _number(user: str) -> str:
    """A SIP user part as a phone number where it is one (``+14155550100``, ``14155550100``)."""
    digits = user.removeprefix("+")
    return f"+{digits}" if digits.isdigit() and len(digits) >= 7 else user
