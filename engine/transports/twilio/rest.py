"""Twilio's REST API, the two requests Ringline makes: place an outbound call whose TwiML streams
its media to us, and redirect a live call elsewhere (a transfer).

    async with TwilioRest(account_sid, auth_token) as twilio:
        call = await twilio.create_call(to="+14155550100", from_="+14155550199",
                                        twiml=stream_twiml("wss://voice.example.com/media/twilio", {"agent": "sales"}))
        await twilio.update_call(call.sid, twiml=dial_twiml("sip:desk@pbx.example.com"))

The TwiML builders and the parsing of answers are pure; ``TwilioRest`` is the thin asyncio part
(aiohttp, HTTP basic auth with the account SID and auth token, one timeout per request, no
retries: placing a call twice is worse than failing once). Twilio's error bodies
(``{"code", "message", "more_info", "status"}``) become ``TwilioRestError``.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Self
from xml.sax.saxutils import escape, quoteattr

import aiohttp
import orjson

from ringline.engine.errors import ProviderError
from ringline.engine.transports.base import TransferFailed

log = logging.getLogger(__name__)

API_VERSION = "2010-04-01"
DEFAULT_BASE_URL = "https://api.twilio.com"
MAX_TWIML = 4000
"""Twilio refuses a ``Twiml`` parameter longer than this (characters)."""

TO_ERRORS = frozenset({21211, 21214, 21215, 21216, 21217})
"""Twilio error codes about the called number (invalid, unreachable, not permitted, blocked)."""
FROM_ERRORS = frozenset({21210, 21212, 21213})
"""Twilio error codes about the caller id (not verified, invalid, missing)."""


class TwilioRestError(ProviderError):
    """Twilio refused a request or could not be reached.

    ``status`` is the HTTP status (None: no answer), ``code`` Twilio's error code
    (https://www.twilio.com/docs/errors/CODE) and ``twilio_message`` its own words, when it said."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: int | None = None,
        twilio_message: str | None = None,
        more_info: str | None = None,
        retryable: bool = False,
    ) -> None:
        super().__init__(message, retryable=retryable)
        self.status = status
        self.code = code
        self.twilio_message = twilio_message
        self.more_info = more_info

    @property
    def field(self) -> str | None:
        """``to`` or ``from`` when the error is about that number, else None."""
        if self.code in TO_ERRORS:
            return "to"
        if self.code in FROM_ERRORS:
            return "from"
        return None


# -- pure parts ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TwilioCall:
    """The parts of Twilio's Call resource Ringline reads."""

    sid: str
    status: str
    to: str
    from_: str
    direction: str

    @classmethod
    def parse(cls, body: Any) -> TwilioCall:
        if not isinstance(body, dict):
            raise TwilioRestError("Twilio's answer is not a JSON object")
        sid = body.get("sid")
        if not isinstance(sid, str) or not sid.startswith("CA"):
            raise TwilioRestError("Twilio's answer has no call sid")
        return cls(
            sid=sid,
            status=str(body.get("status") or ""),
            to=str(body.get("to") or ""),
            from_=str(body.get("from") or ""),
            direction=str(body.get("direction") or ""),
        )


def error_from_response(status: int, raw: bytes) -> TwilioRestError:
    """The error a non-2xx answer means. Twilio's body carries ``code``, ``message`` and
    ``more_info``; anything else (a proxy's HTML page) is reported by its status alone."""
    retryable = status == 429 or status >= 500
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("message"), str):
        return TwilioRestError(
            f"Twilio answered HTTP {status} without an error body", status=status, retryable=retryable
        )
    code = body.get("code") if isinstance(body.get("code"), int) else None
    message = body["message"]
    if isinstance(detail := body.get("detail"), str) and detail:
        message = f"{message}: {detail}"  # 401s say "Authenticate" and explain in ``detail``
    more_info = body.get("more_info") if isinstance(body.get("more_info"), str) else None
    text = f"Twilio refused the request (HTTP {status}, error {code}): {message}"
    return TwilioRestError(
        text, status=status, code=code, twilio_message=message, more_info=more_info, retryable=retryable
    )


def stream_twiml(url: str, parameters: Mapping[str, str]) -> str:
    """TwiML that connects the call's media to the WebSocket at ``url``, with ``parameters`` as the
    stream's custom parameters (``start.customParameters`` on the media socket)."""
    params = "".join(f"<Parameter name={quoteattr(k)} value={quoteattr(v)}/>" for k, v in parameters.items())
    return f"<Response><Connect><Stream url={quoteattr(url)}>{params}</Stream></Connect></Response>"


def dial_twiml(destination: str) -> str:
    """TwiML that hands the call to ``destination``: a phone number, or a ``sip:``/``sips:`` URI."""
    if destination.lower().startswith(("sip:", "sips:")):
        return f"<Response><Dial><Sip>{escape(destination)}</Sip></Dial></Response>"
    return f"<Response><Dial>{escape(destination)}</Dial></Response>"


def call_form(
    to: str,
    from_: str,
    twiml: str,
    status_callback: str | None = None,
    status_callback_events: Sequence[str] = ("initiated", "ringing", "answered", "completed"),
) -> list[tuple[str, str]]:
    """The form fields of a create-call request (``StatusCallbackEvent`` repeats). With
    ``status_callback``, Twilio POSTs the call's ``CallStatus`` there at each of those events
    (``completed`` carries the final one: ``completed``, ``busy``, ``no-answer``, ``failed``,
    ``canceled``)."""
    if len(twiml) > MAX_TWIML:
        raise ValueError(f"the TwiML is {len(twiml)} characters; Twilio takes at most {MAX_TWIML}")
    form = [("To", to), ("From", from_), ("Twiml", twiml)]
    if status_callback:
        form += [("StatusCallback", status_callback), ("StatusCallbackMethod", "POST")]
        form += [("StatusCallbackEvent", event) for event in status_callback_events]
    return form


# -- the client ----------------------------------------------------------------------------------


class TwilioRest:
    """One account's REST client. Open it (``async with`` or ``start``) before use; one connection
    pool serves every request."""

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        timeout_s: float = 10.0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.account_sid = account_sid
        self._headers = {"Authorization": aiohttp.encode_basic_auth(account_sid, auth_token)}
        self._calls_url = f"{base_url.rstrip('/')}/{API_VERSION}/Accounts/{account_sid}/Calls"
        self._timeout_s = timeout_s
        self._tls = tls
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"<TwilioRest {self.account_sid}>"  # never the token

    async def start(self) -> Self:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._timeout_s),
                connector=aiohttp.TCPConnector(ssl=self._tls if self._tls is not None else True),
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self

    async def aclose(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def create_call(self, *, to: str, from_: str, twiml: str, status_callback: str | None = None) -> TwilioCall:
        """Place a call from ``from_`` (a number of the account) to ``to``, running ``twiml`` once
        answered, its status events POSTed to ``status_callback`` if given. Returns Twilio's call
        (``status`` ``queued``). ``ValueError`` for TwiML over ``MAX_TWIML`` characters."""
        form = call_form(to, from_, twiml, status_callback)
        return TwilioCall.parse(await self._post(f"{self._calls_url}.json", form))

    async def update_call(self, call_sid: str, *, twiml: str) -> TwilioCall:
        """Replace what the live call ``call_sid`` is doing with ``twiml`` (its media stream ends)."""
        if len(twiml) > MAX_TWIML:
            raise ValueError(f"the TwiML is {len(twiml)} characters; Twilio takes at most {MAX_TWIML}")
        return TwilioCall.parse(await self._post(f"{self._calls_url}/{call_sid}.json", [("Twiml", twiml)]))

    async def hangup_call(self, call_sid: str) -> TwilioCall:
        """End the call ``call_sid`` (``Status=completed``; a queued or ringing call is cancelled)."""
        return TwilioCall.parse(await self._post(f"{self._calls_url}/{call_sid}.json", [("Status", "completed")]))

    def transferrer(self, call_sid: str) -> Callable[[str], Awaitable[None]]:
        """What ``SocketTransport.transferrer`` wants for call ``call_sid``: redirect it to a
        destination, raising ``TransferFailed`` with Twilio's reason if it refuses."""

        async def transfer(destination: str) -> None:
            try:
                await self.update_call(call_sid, twiml=dial_twiml(destination))
            except TwilioRestError as exc:
                raise TransferFailed(str(exc)) from exc
            log.info("twilio: call redirected to %s", destination, extra={"call_id": call_sid})

        return transfer

    async def _post(self, url: str, form: list[tuple[str, str]]) -> Any:
        if self._session is None:
            raise RuntimeError("TwilioRest is not started")
        try:
            async with self._session.post(url, data=form, headers=self._headers) as response:
                raw = await response.read()
                status = response.status
        except TimeoutError:
            raise TwilioRestError(f"Twilio did not answer within {self._timeout_s:g} s", retryable=True) from None
        except aiohttp.ClientError as exc:
            raise TwilioRestError(f"cannot reach Twilio: {exc}", retryable=True) from exc
        if not 200 <= status < 300:
            raise error_from_response(status, raw)
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise TwilioRestError(f"Twilio answered HTTP {status} with a body that is not JSON") from None
