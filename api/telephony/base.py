"""What every telephony provider's call control offers the server, and the parts they share.

A ``ProviderControl`` is one provider's REST API and webhooks, as far as Ringline needs them:

- ``place_call`` dials out; once answered, the provider opens the media socket
  ``<public_url>/media/<provider>`` with the call's stream parameters (``agent``, ``from``, ``to``,
  ``direction``, ``var_*``: see ``api/media.py`` ``open_call``);
- ``hangup`` and ``transferrer`` act on a live call by the provider's call id (the one the media
  socket's ``start`` carries);
- ``verify`` checks that an inbound webhook is the provider's own (its signature), and
  ``answer_inbound`` answers it with what opens the media socket (markup, JSON, or a REST command);
- ``call_progress`` reads a verified call-status callback (``status.py``).

Errors: ``WebhookRejected`` (a webhook that is not the provider's: 403), ``TelephonyError`` (the
provider refused a request or could not be reached), ``ParametersTooLarge`` (the stream parameters
do not fit what the provider carries; found before anything is sent).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

from aiohttp import web

from ringline.engine.errors import ProviderError, RinglineError
from ringline.engine.transports.socket import Transferrer

if TYPE_CHECKING:
    from ringline.api.telephony.status import CallProgress

_SOCKET_SCHEMES = {"https": "wss", "http": "ws"}


class WebhookRejected(RinglineError):
    """An inbound webhook failed its signature check (missing, malformed, stale or wrong): it is
    not from the provider, and is answered 403. The message says why, for the log."""


class TelephonyError(ProviderError):
    """A provider refused a call-control request or could not be reached.

    ``status`` is the HTTP status (None: no answer); ``field`` is ``to`` or ``from`` when the
    refusal is about that number, and ``provider_message`` the provider's own words then."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        field: str | None = None,
        provider_message: str | None = None,
        retryable: bool = False,
    ) -> None:
        super().__init__(message, retryable=retryable)
        self.status = status
        self.field = field
        self.provider_message = provider_message


class ParametersTooLarge(ValueError):
    """The stream parameters are more than the provider carries; nothing was sent."""


class ProviderControl(Protocol):
    """One provider's call control: REST calls out, webhooks in."""

    name: str
    """The provider as in URLs and the numbers table: ``twilio``, ``telnyx``, ``plivo``, ``vonage``."""
    label: str
    """Its name for people: ``Twilio``."""

    async def place_call(self, *, to: str, from_: str, parameters: Mapping[str, str]) -> str:
        """Dial ``to`` from ``from_``; the answered call streams to our media socket with
        ``parameters``. Returns the provider's call id, which the media socket's call will carry.
        Raises ``ParametersTooLarge`` before sending, ``TelephonyError`` if refused."""
        ...

    async def hangup(self, call_id: str) -> None:
        """End the call ``call_id``; ``TelephonyError`` if refused."""
        ...

    def transferrer(self, call_id: str) -> Transferrer:
        """What hands the live call ``call_id`` to a phone number or ``sip:`` URI, raising
        ``TransferFailed`` with the provider's reason if it refuses."""
        ...

    async def verify(self, request: web.Request) -> None:
        """Raise ``WebhookRejected`` unless ``request`` carries the provider's valid signature."""
        ...

    async def answer_inbound(self, request: web.Request) -> web.Response:
        """Answer a verified inbound-call webhook so that the call's media reaches our socket."""
        ...

    async def call_progress(self, request: web.Request) -> CallProgress | None:
        """The call status a verified status callback reports (``status.py``); None for an event
        that is not one we act on."""
        ...

    async def aclose(self) -> None:
        """Release the HTTP client."""
        ...


def media_url(public_url: str, provider: str) -> str:
    """The provider's media socket on this server, as the provider reaches it:
    ``https://voice.example.com`` -> ``wss://voice.example.com/media/twilio``."""
    scheme, rest = public_url.split("://", 1)
    return f"{_SOCKET_SCHEMES.get(scheme, scheme)}://{rest.rstrip('/')}/media/{provider}"


def webhook_url(request: web.Request, public_url: str | None) -> str:
    """The URL the provider requested (what webhook signatures cover): our public URL plus the
    path and query when known (behind a proxy ``request.url`` is the proxy's), else the request's."""
    if public_url is None:
        return str(request.url)
    return public_url.rstrip("/") + request.path_qs


def server_base(request: web.Request, public_url: str | None) -> str:
    """Our base URL as the provider reaches it: ``public_url``, else the request's own origin."""
    return public_url if public_url is not None else f"{request.scheme}://{request.host}"


def inbound_parameters(request: web.Request, from_: str, to: str, **extra: str) -> dict[str, str]:
    """The stream parameters of an inbound call: the numbers, ``direction`` ``inbound``, and the
    webhook URL's own ``agent`` and ``var_*`` query parameters (a provider's webhook may be set to
    ``.../inbound?agent=sales&var_team=emea``). Without ``agent`` the called number's inbound agent
    answers (``api/routing.py``), or the ``assistant-request`` webhook chooses."""
    parameters = {"from": from_, "to": to, "direction": "inbound"}
    query = request.query
    if agent := query.get("agent"):
        parameters["agent"] = agent
    parameters |= {k: v for k, v in query.items() if k.startswith("var_") and len(k) > 4}
    return parameters | extra


def check_size(parameters: Mapping[str, str], limit: int, what: str) -> None:
    """``ParametersTooLarge`` if the parameters' names and values add up to more than ``limit``
    characters, which is what ``what`` (``Telnyx's client_state``) carries."""
    size = sum(len(k) + len(v) for k, v in parameters.items())
    if size > limit:
        raise ParametersTooLarge(f"too large: the stream parameters make {size} characters, {what} takes {limit}")


def mapping_of(values: Mapping[str, object]) -> dict[str, str]:
    """A form's or query's values as strings."""
    return {str(k): str(v) for k, v in values.items()}
