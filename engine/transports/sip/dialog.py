"""SIP dialogs, sans-IO (RFC 3261 section 12, 13.2.2.4, 9.1).

A ``Dialog`` holds what RFC 3261 12 says a dialog is (Call-ID, tags, CSeq counters, route set,
remote target) and builds in-dialog requests (BYE, re-INVITE, ACK for a 2xx, REFER, NOTIFY, INFO)
with the right headers; ``receive_request`` validates an in-dialog request (CSeq order -> 500).
``DialogTable`` finds the dialog of an incoming message (unknown dialog -> 481).
``make_request`` and ``make_cancel`` build requests outside any dialog.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from ringline.engine.transports.sip.headers import Headers, SipError
from ringline.engine.transports.sip.message import Request, Response, new_branch, new_call_id, new_tag
from ringline.engine.transports.sip.uri import NameAddr, SipUri

log = logging.getLogger(__name__)

TARGET_REFRESH = frozenset({"INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY", "REFER"})
"""Methods that carry a Contact and may change the remote target (RFC 3261 12.2, RFC 6665)."""


class DialogError(SipError):
    """An in-dialog request that does not fit its dialog; ``status`` is the answer (481, 500)."""


class DialogState(enum.Enum):
    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


@dataclass(frozen=True, slots=True)
class DialogId:
    call_id: str
    local_tag: str
    remote_tag: str


def _via(sent_by: tuple[str, int]) -> str:
    return f"SIP/2.0/UDP {sent_by[0]}:{sent_by[1]};branch={new_branch()};rport"


def _contact_uri(message: Request | Response) -> str | None:
    contact = message.contact
    return contact.uri if contact else None


class Dialog:
    """One dialog, as UAC (``from_outgoing``) or UAS (``from_incoming``).

    ``sent_by`` is our ``(host, port)`` for the Via of requests we send; ``local_contact`` our
    Contact URI."""

    def __init__(
        self,
        *,
        call_id: str,
        local_tag: str,
        remote_tag: str,
        local_uri: NameAddr,
        remote_uri: NameAddr,
        remote_target: str,
        route_set: tuple[str, ...],
        local_seq: int,
        remote_seq: int | None,
        local_contact: str,
        sent_by: tuple[str, int],
        state: DialogState,
        is_uac: bool,
    ) -> None:
        self.call_id = call_id
        self.local_tag = local_tag
        self.remote_tag = remote_tag
        self.local_uri = local_uri
        self.remote_uri = remote_uri
        self.remote_target = remote_target
        self.route_set = route_set
        self.local_seq = local_seq
        self.remote_seq = remote_seq
        self.local_contact = local_contact
        self.sent_by = sent_by
        self.state = state
        self.is_uac = is_uac

    @classmethod
    def from_incoming(
        cls, request: Request, response: Response, *, local_contact: str, sent_by: tuple[str, int]
    ) -> Dialog:
        """The UAS side (RFC 3261 12.1.1): ``response`` is the 1xx or 2xx we send, with our To tag."""
        to, from_ = response.to_addr, request.from_addr
        if not to.tag:
            raise ValueError("the response creating a dialog needs a To tag")
        target = _contact_uri(request)
        if target is None:
            raise DialogError("missing Contact header")
        return cls(
            call_id=request.call_id,
            local_tag=to.tag,
            remote_tag=from_.tag or "",
            local_uri=NameAddr(to.uri, to.display_name),
            remote_uri=NameAddr(from_.uri, from_.display_name),
            remote_target=target,
            route_set=tuple(request.headers.get_all("Record-Route")),
            local_seq=0,
            remote_seq=request.cseq.number,
            local_contact=local_contact,
            sent_by=sent_by,
            state=DialogState.CONFIRMED if response.status >= 200 else DialogState.EARLY,
            is_uac=False,
        )

    @classmethod
    def from_outgoing(cls, request: Request, response: Response, *, sent_by: tuple[str, int]) -> Dialog:
        """The UAC side (RFC 3261 12.1.2): ``response`` is a 1xx (with To tag) or 2xx we received."""
        from_, to = request.from_addr, response.to_addr
        target = _contact_uri(response)
        if target is None or not to.tag:
            raise DialogError("missing Contact header" if target is None else "missing To tag")
        return cls(
            call_id=request.call_id,
            local_tag=from_.tag or "",
            remote_tag=to.tag,
            local_uri=NameAddr(from_.uri, from_.display_name),
            remote_uri=NameAddr(to.uri, to.display_name),
            remote_target=target,
            route_set=tuple(reversed(response.headers.get_all("Record-Route"))),
            local_seq=request.cseq.number,
            remote_seq=None,
            local_contact=_contact_uri(request) or "",
            sent_by=sent_by,
            state=DialogState.CONFIRMED if response.status >= 200 else DialogState.EARLY,
            is_uac=True,
        )

    @property
    def id(self) -> DialogId:
        return DialogId(self.call_id, self.local_tag, self.remote_tag)

    def _set_state(self, new: DialogState) -> None:
        log.debug("dialog %s: %s -> %s", self.call_id, self.state.value, new.value, extra={"call_id": self.call_id})
        self.state = new

    def confirm(self) -> None:
        """A 2xx to the INVITE was sent (UAS) or received (UAC)."""
        if self.state is DialogState.EARLY:
            self._set_state(DialogState.CONFIRMED)

    def terminate(self) -> None:
        if self.state is not DialogState.TERMINATED:
            self._set_state(DialogState.TERMINATED)

    # -- responses to our requests (UAC of the request) -------------------------------------------

    def receive_response(self, response: Response) -> None:
        """Update the dialog from a response to a request we sent in it: a 2xx to INVITE confirms it
        (refreshing the target, and the route set while early); 481 or 408 end it (RFC 3261 12.2.1.2);
        a final failure of the initial INVITE ends an early dialog."""
        status, method = response.status, response.cseq.method
        if status in (481, 408):
            self.terminate()
        elif 200 <= status < 300 and method in TARGET_REFRESH:
            if (target := _contact_uri(response)) is not None:
                self.remote_target = target
            if self.state is DialogState.EARLY and method == "INVITE":
                if self.is_uac:
                    self.route_set = tuple(reversed(response.headers.get_all("Record-Route")))
                self.confirm()
        elif status >= 300 and method == "INVITE" and self.state is DialogState.EARLY:
            self.terminate()

    # -- requests from the peer -------------------------------------------------------------------

    def receive_request(self, request: Request) -> None:
        """Check an in-dialog request (RFC 3261 12.2.2): its CSeq must not go back (``DialogError``
        with status 500); records the remote CSeq, refreshes the target, and BYE ends the dialog.
        ACK and CANCEL reuse their INVITE's number and are not checked."""
        if request.method not in ("ACK", "CANCEL"):
            number = request.cseq.number
            if self.remote_seq is not None and number < self.remote_seq:
                raise DialogError(f"CSeq {number} lower than {self.remote_seq}", status=500)
            self.remote_seq = number
        if request.method in TARGET_REFRESH and (target := _contact_uri(request)) is not None:
            self.remote_target = target
        if request.method == "BYE":
            self.terminate()

    # -- requests we send -------------------------------------------------------------------------

    def create_request(
        self,
        method: str,
        *,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        content_type: str | None = None,
    ) -> Request:
        """A new in-dialog request (RFC 3261 12.2.1.1) with the next local CSeq: BYE, re-INVITE,
        REFER, NOTIFY, INFO, UPDATE... For the ACK of a 2xx use ``create_ack``."""
        self.local_seq += 1
        return self._request(method, self.local_seq, headers, body, content_type)

    def create_ack(self, invite: Request, *, body: bytes = b"", content_type: str | None = None) -> Request:
        """The ACK for a 2xx to ``invite`` (RFC 3261 13.2.2.4): the INVITE's CSeq number, a new
        branch, the INVITE's credentials."""
        creds = [(n, v) for n, v in invite.headers if n in ("Authorization", "Proxy-Authorization")]
        return self._request("ACK", invite.cseq.number, creds, body, content_type)

    def _request(
        self, method: str, number: int, extra: Iterable[tuple[str, str]], body: bytes, content_type: str | None
    ) -> Request:
        uri, routes = self._target_and_routes()
        out = [("Via", _via(self.sent_by)), ("Max-Forwards", "70")]
        out += [("Route", r) for r in routes]
        out += [("From", str(self.local_uri.with_tag(self.local_tag)))]
        to = self.remote_uri.with_tag(self.remote_tag) if self.remote_tag else self.remote_uri
        out += [("To", str(to)), ("Call-ID", self.call_id), ("CSeq", f"{number} {method}")]
        if method in TARGET_REFRESH and self.local_contact:
            out.append(("Contact", f"<{self.local_contact}>"))
        out += list(extra)
        if body and content_type:
            out.append(("Content-Type", content_type))
        return Request(method, uri, Headers(out), body)

    def _target_and_routes(self) -> tuple[str, list[str]]:
        """Request-URI and Route headers: loose routing when the first route has ``lr``, else the
        strict-routing rewrite of RFC 3261 12.2.1.1."""
        if not self.route_set:
            return self.remote_target, []
        first = NameAddr.parse(self.route_set[0])
        if first.sip_uri().param("lr") is not None:
            return self.remote_target, list(self.route_set)
        uri = str(first.sip_uri().without_headers())
        return uri, [*self.route_set[1:], f"<{self.remote_target}>"]


class DialogTable:
    """The dialogs of one UA, found from incoming messages."""

    def __init__(self) -> None:
        self._dialogs: dict[DialogId, Dialog] = {}

    def __len__(self) -> int:
        return len(self._dialogs)

    def add(self, dialog: Dialog) -> None:
        self._dialogs[dialog.id] = dialog

    def remove(self, dialog: Dialog) -> None:
        self._dialogs.pop(dialog.id, None)

    def get(self, dialog_id: DialogId) -> Dialog | None:
        return self._dialogs.get(dialog_id)

    def for_request(self, request: Request) -> Dialog | None:
        """The dialog of an incoming request, None for a request outside any dialog (no To tag).
        A To tag naming no dialog raises ``DialogError`` (status 481; for an ACK, drop it)."""
        to_tag = request.to_tag
        if to_tag is None:
            return None
        dialog = self._dialogs.get(DialogId(request.call_id, to_tag, request.from_tag or ""))
        if dialog is None:
            raise DialogError(f"no dialog for Call-ID {request.call_id[:80]!r}", status=481)
        return dialog

    def for_response(self, response: Response) -> Dialog | None:
        """The dialog a response belongs to (our From tag, their To tag), if any."""
        return self._dialogs.get(DialogId(response.call_id, response.from_tag or "", response.to_tag or ""))


def make_request(
    method: str,
    uri: str,
    *,
    from_: NameAddr,
    to: NameAddr,
    sent_by: tuple[str, int],
    call_id: str | None = None,
    cseq: int = 1,
    contact: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    content_type: str | None = None,
) -> Request:
    """A request outside any dialog (INVITE, OPTIONS, REGISTER, MESSAGE; RFC 3261 8.1.1): a new
    branch, a From tag when ``from_`` has none, a new Call-ID unless given."""
    SipUri.parse(uri)
    out = [("Via", _via(sent_by)), ("Max-Forwards", "70")]
    out += [("From", str(from_ if from_.tag else from_.with_tag(new_tag()))), ("To", str(to))]
    out += [("Call-ID", call_id or new_call_id(sent_by[0])), ("CSeq", f"{cseq} {method}")]
    if contact:
        out.append(("Contact", f"<{contact}>"))
    out += list(headers)
    if body and content_type:
        out.append(("Content-Type", content_type))
    return Request(method, uri, Headers(out), body)


def make_cancel(request: Request) -> Request:
    """The CANCEL of a pending ``request`` (RFC 3261 9.1): same Request-URI, Call-ID, From, To,
    CSeq number and Route, and only its top Via (so the same branch)."""
    out = [("Via", request.headers.get("Via") or ""), ("Max-Forwards", "70")]
    out += [(n, v) for n, v in request.headers if n == "Route"]
    out += [(n, request.headers.get(n) or "") for n in ("From", "To", "Call-ID")]
    out.append(("CSeq", f"{request.cseq.number} CANCEL"))
    return Request("CANCEL", request.uri, Headers(out))
