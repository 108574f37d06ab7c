"""One SIP call leg: its dialog and RTP, and the call's ``MediaTransport``.

The leg is made by ``inbound.answer_invite`` (or ``outbound.dial``) once the media is negotiated.
``run(call)`` is the leg's task boundary: it starts the call when the dialog is confirmed (the
ACK came, or we sent it), feeds the call what RTP brings (a frame a tick, RFC 4733 digits, marks
as the ticker plays them), and whatever way the leg ends (BYE either way, CANCEL, no ACK, the
call ending itself, the server stopping), ends the call with a recorded reason and frees the
RTP ports.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import uuid
from typing import TYPE_CHECKING

from ringline.engine.audio.formats import ALAW_8K, MULAW_8K, AudioFormat
from ringline.engine.record import EndReason
from ringline.engine.transports.base import Briefing, SendDtmfFailed, TransferFailed
from ringline.engine.transports.events import AudioReceived, DtmfReceived, MarkPlayed
from ringline.engine.transports.rtp.endpoint import RtpEndpoint
from ringline.engine.transports.rtp.session import RtpSession
from ringline.engine.transports.sip.dialog import Dialog, DialogError
from ringline.engine.transports.sip.message import Request, make_response
from ringline.engine.transports.sip.sdp import PCMA, PCMU, NegotiatedMedia, SdpError, SessionDescription, answer

if TYPE_CHECKING:
    from ringline.engine.call import Call
    from ringline.engine.transports.sip.ua import Addr, SipUserAgent

log = logging.getLogger(__name__)

FORMATS = {"PCMU": MULAW_8K, "PCMA": ALAW_8K}
CODECS = {"PCMU": PCMU, "PCMA": PCMA}


def media_session(media: NegotiatedMedia, jitter_ms: int) -> RtpSession:
    """An RTP session for negotiated ``media``: its codec, payload types and address."""
    return RtpSession(
        fmt=FORMATS[media.codec],
        payload_type=media.payload_type,
        dtmf_payload_type=media.dtmf_payload_type,
        remote=(media.remote_host, media.remote_port),
        jitter_delay=jitter_ms / 1000,
    )


REFER_TIMEOUT_S = 15.0
"""How long a REFER may take to report its outcome (NOTIFY) before it counts as failed (within
the control API's 20 s wait for a transfer's outcome)."""
BRIEFING_GRACE_S = 5.0
"""How much longer than its audio a briefing may take to play out."""


class ReferRefused(TransferFailed):
    """The far end would not take the REFER itself (it may not do transfers at all)."""


class LegState(enum.Enum):
    SETTING_UP = "setting_up"
    """INVITE under way: answering it, or waiting for the far end to answer ours."""
    ANSWERED = "answered"
    """We answered 200 and wait for the ACK."""
    CONFIRMED = "confirmed"
    ENDED = "ended"


def new_call_id() -> str:
    return "SIP" + uuid.uuid4().hex


class SipLeg:
    """A call over SIP. ``format`` is fixed for the call: a re-INVITE may move the media elsewhere,
    put it on hold or change the codec (kept if offered again; else the offer's first we take), and
    the RTP session translates between the new codec and ``format`` (``RtpSession.switch_codec``)."""

    def __init__(
        self,
        ua: SipUserAgent,
        *,
        invite: Request,
        remote: Addr,
        endpoint: RtpEndpoint,
        media: NegotiatedMedia,
        parameters: dict[str, str],
        call_id: str | None = None,
    ) -> None:
        self.ua = ua
        self.id = call_id or new_call_id()
        self.sip_call_id = invite.call_id
        self.invite = invite
        self.remote = remote
        """Where in-dialog requests go: the address the dialog's requests came from (or went to)."""
        self.endpoint = endpoint
        self.media = media
        self.parameters = parameters
        self.format: AudioFormat = FORMATS[media.codec]
        self.dialog: Dialog | None = None
        self.call: Call | None = None
        self.state = LegState.SETTING_UP
        self.reason, self.detail = EndReason.TRANSPORT_CLOSED, ""
        self._confirmed = asyncio.Event()
        self._ended = asyncio.Event()
        self._bye_sent = False
        self._refer_outcome: asyncio.Future[int] | None = None
        self._transferring: asyncio.Task[None] | None = None
        self.bridged: SipLeg | None = None
        """The leg this one is joined to once the call is transferred through us (``Bridge``)."""
        self._sdp_version = 0
        self.extra = {"call_id": self.id}

    def _set_state(self, new: LegState) -> None:
        log.debug("sip leg %s -> %s", self.state.value, new.value, extra=self.extra)
        self.state = new

    # -- MediaTransport -------------------------------------------------------------------------

    async def send_audio(self, payload: bytes) -> None:
        self.endpoint.send_audio(payload)

    async def mark(self, name: str) -> None:
        self.endpoint.mark(name)

    async def clear(self) -> None:
        self.endpoint.clear()

    async def hangup(self) -> None:
        self._bye()

    @property
    def transfer_unavailable(self) -> str | None:
        return None if self.state is LegState.CONFIRMED else f"the SIP dialog is {self.state.value}"

    async def transfer(self, destination: str, briefing: Briefing | None = None) -> None:
        """Cold: a blind transfer (RFC 3515 REFER, RFC 5589), the far end calls ``destination``
        and tells us how it went (NOTIFY with a sipfrag); on success we hang up. A far end that
        refuses REFER gets a bridged second leg instead. Warm (``briefing``): we call
        ``destination`` ourselves, say the briefing to whoever answers, then bridge the caller in."""
        if self.dialog is None or self.state is not LegState.CONFIRMED:
            raise TransferFailed(self.transfer_unavailable or "no dialog")
        self._transferring = asyncio.current_task()  # the caller hanging up cancels it
        if briefing is None:
            try:
                await self._refer(destination)
                return
            except ReferRefused as exc:
                log.info("sip: %s; bridging a second leg instead", exc, extra=self.extra)
        other = await self.ua.transfer_leg(self, destination, briefing)
        if self.state is not LegState.CONFIRMED:  # the caller left while it was answered
            await other.abandon(EndReason.TRANSFERRED, "the caller hung up during the transfer")
            raise TransferFailed("the caller hung up during the transfer")
        self.bridged = other

    async def _refer(self, destination: str) -> None:
        assert self.dialog is not None
        host, port = self.remote
        target = destination if destination.startswith(("sip:", "sips:")) else f"sip:{destination}@{host}:{port}"
        refer = self.dialog.create_request(
            "REFER", headers=[("Refer-To", f"<{target}>"), ("Referred-By", f"<{self.ua.contact}>")]
        )
        self._refer_outcome = asyncio.get_running_loop().create_future()
        response = await self.ua.request(refer, self.remote)
        if response.status >= 300:
            raise ReferRefused(f"the far end refused REFER: {response.status} {response.reason}")
        try:
            async with asyncio.timeout(REFER_TIMEOUT_S):
                status = await self._refer_outcome
        except TimeoutError:
            raise TransferFailed(f"no transfer outcome within {REFER_TIMEOUT_S:g} s") from None
        if status >= 300:
            raise TransferFailed(f"the transfer failed: {status}")
        self._bye()

    async def send_dtmf(self, keys: str) -> None:
        """RFC 4733 telephone-events when the far end took them, else in-band tones."""
        if self.media.dtmf_payload_type is None:
            raise SendDtmfFailed("the far end did not negotiate telephone-event (RFC 4733)")
        try:
            self.endpoint.send_dtmf(keys)
        except ValueError as exc:
            raise SendDtmfFailed(str(exc)) from None

    # -- the call ---------------------------------------------------------------------------------

    async def run(self, call: Call) -> None:
        """Carry ``call`` to its end (the leg's task boundary)."""
        self.call = call
        try:
            await self._confirmed.wait()
            if self.state is LegState.CONFIRMED:
                await call.start()
                await self._pump(call)
        except asyncio.CancelledError:
            self.reason, self.detail = EndReason.SERVER_SHUTDOWN, "leg cancelled"
            raise
        except Exception as exc:
            log.exception("sip leg failed", extra=self.extra)
            self.reason, self.detail = EndReason.ERROR, f"{type(exc).__name__}: {exc}"
        finally:
            await self._finish()

    async def _pump(self, call: Call) -> None:
        record = call.record
        async for event in self.endpoint:
            if isinstance(event, AudioReceived):
                await call.on_audio(event.payload)
            elif isinstance(event, MarkPlayed):
                call.on_mark(event.name)
            elif isinstance(event, DtmfReceived):
                await call.on_dtmf(event.digit)
            if record.end_reason is not None:  # it ended itself (and said BYE through hangup)
                self.reason, self.detail = record.end_reason, record.end_detail
                return

    async def _finish(self) -> None:
        call = self.call
        if call is not None:
            await call.end(self.reason, self.detail)
            self.ua.calls.closed(self, call)
        if self.bridged is not None and self.state is not LegState.ENDED:
            self.ua.bridge(self, self.bridged)  # the media goes on without the agent
            return
        self._set_state(LegState.ENDED)
        self._confirmed.set()
        await self.hang_up_and_release()

    async def hang_up_and_release(self) -> None:
        """Hang up (unless the far end did: its BYE counts as ours) and free the ports."""
        self._bye()
        await self.endpoint.aclose()
        self.ua.release(self)
        self._ended.set()

    async def brief(self, audio: bytes) -> None:
        """Play ``audio`` (a warm transfer's briefing) to this leg and return once it has played.
        Raises ``TransferFailed`` if the far end hangs up first."""
        self.endpoint.send_audio(audio)
        self.endpoint.mark("briefing")
        async with asyncio.timeout(self.format.duration(len(audio)) + BRIEFING_GRACE_S):
            async for event in self.endpoint:
                if isinstance(event, MarkPlayed) and event.name == "briefing":
                    return
        raise TransferFailed("the transfer target hung up during the briefing")

    def end(self, reason: EndReason, detail: str = "") -> None:
        """End the leg from the signalling side: its ``run`` finishes the call."""
        if self.state is LegState.ENDED:
            return
        self.reason, self.detail = reason, detail
        self._set_state(LegState.ENDED)
        self._confirmed.set()
        self.endpoint.stop()  # ends the pump
        transferring = self._transferring
        if transferring is not None and not transferring.done() and transferring is not asyncio.current_task():
            transferring.cancel()  # nobody left to hand over: stop ringing the destination

    async def ring(self, seconds: float) -> None:
        """Let it ring ``seconds`` before answering (a CANCEL cuts it short)."""
        if seconds > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    await self._confirmed.wait()

    async def abandon(self, reason: EndReason, detail: str) -> None:
        """End a leg that never got its call (hanging up if the dialog is up)."""
        self.end(reason, detail)
        await self._finish()

    async def end_from_server(self) -> None:
        self.end(EndReason.SERVER_SHUTDOWN, "server stopping")
        await self._ended.wait()

    def _bye(self) -> None:
        if self._bye_sent or self.dialog is None or self.state is LegState.SETTING_UP:
            return
        self._bye_sent = True
        self.ua.send_request(self.dialog.create_request("BYE"), self.remote, None)

    # -- signalling --------------------------------------------------------------------------------

    def answered(self, dialog: Dialog) -> None:
        """We sent the 200 (inbound): wait for the ACK."""
        self.dialog = dialog
        self._set_state(LegState.ANSWERED)

    def confirmed(self, dialog: Dialog) -> None:
        """The dialog is up (we got the ACK, or sent it for an outbound call)."""
        self.dialog = dialog
        dialog.confirm()
        self._set_state(LegState.CONFIRMED)
        self._confirmed.set()

    def cancelled(self) -> None:
        """The caller cancelled before we answered (the layer answered 487)."""
        self.end(EndReason.CALLER_HANGUP, "cancelled before answer")

    def never_acked(self) -> None:
        if self.state is LegState.ANSWERED:
            self.end(EndReason.TRANSPORT_CLOSED, "our 200 OK was never acknowledged")

    def on_request(self, request: Request, addr: Addr) -> None:
        """An in-dialog request (or the ACK of our 200). Raises ``DialogError`` (481, 500)."""
        method, dialog = request.method, self.dialog
        if method == "ACK":
            if self.state is LegState.ANSWERED and dialog is not None:
                self.confirmed(dialog)
            return
        if dialog is None:
            self.ua.respond(make_response(request, 481, "Call/Transaction Does Not Exist"))
            return
        if request.to_tag != dialog.local_tag:
            raise DialogError("Call/Transaction Does Not Exist", status=481)
        dialog.receive_request(request)
        if method == "BYE":
            self.ua.respond(make_response(request, 200))
            self._bye_sent = True
            self.end(EndReason.CALLER_HANGUP)
        elif method == "INVITE":
            self._reinvite(request)
        elif method == "NOTIFY":
            self.ua.respond(make_response(request, 200))
            self._refer_progress(request)
        elif method == "INFO":
            self.ua.respond(make_response(request, 200))
        else:
            self.ua.respond(make_response(request, 405, headers=[("Allow", "INVITE, ACK, BYE, NOTIFY, INFO")]))

    def _reinvite(self, request: Request) -> None:
        """Hold, unhold, a new media address or a new codec: answer with our same port, and the
        codec we have if it is offered again."""
        current = CODECS[self.media.codec]
        others = tuple(codec for codec in CODECS.values() if codec != current)
        try:
            offer = SessionDescription.parse(request.body)
            for codecs in ((current,), others):
                try:
                    sdp, media = answer(
                        offer, self.ua.host, self.endpoint.local_port, codecs=codecs,
                        session_id=self.invite.call_id[:8].encode().hex(), session_version=self._sdp_version + 1,
                    )  # fmt: skip
                    break
                except SdpError:
                    if codecs is others:
                        raise
        except SdpError as exc:
            self.ua.respond(make_response(request, 488, "Not Acceptable Here", headers=[("Warning", f'399 - "{exc}"')]))
            return
        self._sdp_version += 1
        session = self.endpoint.session
        if media.codec != self.media.codec or media.dtmf_payload_type != session.dtmf_payload_type:
            session.switch_codec(media.payload_type, FORMATS[media.codec], media.dtmf_payload_type)
            if media.codec != self.media.codec:
                log.info("sip re-INVITE: codec %s -> %s", self.media.codec, media.codec, extra=self.extra)
        self.media = media
        if (media.remote_host, media.remote_port) != self.endpoint.session.remote and not media.on_hold:
            self.endpoint.session.set_remote((media.remote_host, media.remote_port))
        log.info("sip re-INVITE: %s", "on hold" if media.on_hold else "media resumed", extra=self.extra)
        headers = [("Contact", f"<{self.ua.contact}>")]
        ok = make_response(request, 200, headers=headers, body=bytes(sdp), content_type="application/sdp")
        self.ua.respond(ok)

    def _refer_progress(self, notify: Request) -> None:
        """A NOTIFY of our REFER's progress: its body is a sipfrag status line."""
        if self._refer_outcome is None or self._refer_outcome.done():
            return
        line = notify.body.split(b"\r\n", 1)[0].decode("utf-8", "replace")
        parts = line.split(" ", 2)
        if len(parts) >= 2 and parts[0] == "SIP/2.0" and parts[1].isdigit() and int(parts[1]) >= 200:
            self._refer_outcome.set_result(int(parts[1]))
