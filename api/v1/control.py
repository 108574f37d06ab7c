"""Steering live calls and placing outbound ones.

``POST /calls/{call_id}/control`` sends one command to a call in progress on this engine:
``inject-context``, ``say``, ``end-call`` or ``transfer`` (the body's ``type``). ``POST /calls``
places an outbound call through the REST API of the ``from`` number's provider (Twilio, Telnyx,
Plivo or Vonage: ``api/telephony``): it dials, and once answered streams the call's media to
``[telephony] public_url`` + ``/media/<provider>`` with the agent, direction, numbers and
variables as stream parameters; the call's row, queued here under the provider's call id, is taken
over by the media socket (``CallLedger.opened``) when the stream starts. A call that never gets
there (busy, no answer, failed, cancelled) is ended by the provider's status events
(``api/telephony/status.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Annotated, Any, Literal

import orjson
from aiohttp import ChainMapProxy
from pydantic import (
    BaseModel,
    Field,
    PrivateAttr,
    StringConstraints,
    TypeAdapter,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ringline.api.http import (
    ApiError,
    ApiModel,
    ApiRequest,
    ApiRoutes,
    Conflict,
    CountryCode,
    NotConfigured,
    NotFound,
    PhoneNumber,
    PhoneNumberError,
    Scope,
    UpstreamFailed,
    ValidationFailed,
    parse_phone,
)
from ringline.api.routing import agent_for_call
from ringline.api.sip import place_sip_call
from ringline.api.state import CALLS, STORE, WEBHOOKS
from ringline.api.store import Call as CallRow
from ringline.api.store import CallStatus, Direction, NumberProvider, Store
from ringline.api.store import Conflict as StoreConflict
from ringline.api.store import NotFound as StoreNotFound
from ringline.api.telephony import TELEPHONY, ParametersTooLarge, TelephonyError
from ringline.api.telephony.status import settle_early
from ringline.api.v1.calls import Call as CallOut
from ringline.api.v1.calls import call_out
from ringline.config.settings import Settings
from ringline.engine.call import Call, CallNotActive
from ringline.engine.call import CallStatus as LiveStatus
from ringline.engine.errors import ConfigError
from ringline.engine.registry import CallRegistry
from ringline.engine.transports.base import TransferFailed

log = logging.getLogger(__name__)

routes = ApiRoutes(tag="calls")

# The framework documents the statuses it knows; these two are this module's.

END_WAIT_S = 20.0
"""How long ``end-call`` and ``transfer`` without a message wait for the call to end before answering
(a transfer waits on Twilio: more than its REST timeout, 10 s by default)."""
MAX_TEXT = 4000
MAX_METADATA_BYTES = 16 * 1024


# -- control commands ----------------------------------------------------------------------------

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_TEXT)]


def _destination(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a string")
    value = value.strip()
    if value.lower().startswith(("sip:", "sips:")):
        user, at, host = value.partition(":")[2].partition("@")
        if not (user and at and host) or any(c in value for c in ' <>"\t\r\n') or len(value) > 255:
            raise ValueError("not a SIP URI: want sip:user@host")
        return value
    try:
        return parse_phone(value)
    except PhoneNumberError as exc:
        raise ValueError(f"neither a sip: URI nor a valid phone number ({exc})") from None


Destination = Annotated[
    str,
    Field(
        description="A phone number in international format (answered as E.164) or a `sip:` URI.",
        examples=["+14155552671", "sip:desk@pbx.example.com"],
    ),
]


class InjectContextCommand(ApiModel):
    """Add a system message to the call's conversation."""

    type: Literal["inject-context"]
    content: Text = Field(description="The text the agent is given, as a system message.")
    trigger_response: bool = Field(
        False,
        description="Have the agent answer at once if nobody is speaking and no reply is under way; "
        "otherwise (and by default) the agent's next reply sees the message.",
    )


class SayCommand(ApiModel):
    """Speak a text now, cutting any reply in progress (the caller can interrupt it)."""

    type: Literal["say"]
    content: Text = Field(description="What the agent says, word for word.")
    end_after: bool = Field(False, description="Hang up once the caller has heard it.")


class EndCallCommand(ApiModel):
    """End the call, after speaking `message` if given."""

    type: Literal["end-call"]
    message: Text | None = Field(None, description="A goodbye spoken before hanging up.")


class TransferCommand(ApiModel):
    """Hand the call over to a number or SIP URI, after announcing `message` if given."""

    type: Literal["transfer"]
    destination: Destination
    message: Text | None = Field(None, description="Spoken to the caller before the handover.")
    briefing: Text | None = Field(
        None,
        description="A warm transfer: the agent calls `destination`, says this to whoever answers, then connects "
        "the caller (native SIP calls only; elsewhere the transfer fails and the call goes on).",
    )

    @field_validator("destination", mode="before")
    @classmethod
    def _check_destination(cls, value: object) -> str:
        return _destination(value)


Command = InjectContextCommand | SayCommand | EndCallCommand | TransferCommand
CommandType = Literal["inject-context", "say", "end-call", "transfer"]
COMMANDS: dict[str, type[Command]] = {
    "inject-context": InjectContextCommand,
    "say": SayCommand,
    "end-call": EndCallCommand,
    "transfer": TransferCommand,
}


class ControlCommand(ApiModel):
    """One control command; ``type`` says which. Validated as that command's model, so a reason is
    keyed by the field's own name (``content``); documented as the union of the commands."""

    type: CommandType
    _command: Command = PrivateAttr()

    @model_validator(mode="wrap")
    @classmethod
    def _as_command(cls, data: Any, handler: Any) -> ControlCommand:
        kind = data.get("type") if isinstance(data, dict) else None
        model = COMMANDS.get(kind) if isinstance(kind, str) else None
        if model is None:  # report only what is wrong with ``type``
            return handler({"type": kind} if isinstance(data, dict) and "type" in data else {})
        command = model.model_validate(data)
        self = handler({"type": kind})
        self._command = command
        return self

    @property
    def command(self) -> Command:
        return self._command

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: Any, handler: Any) -> Any:
        union = TypeAdapter(Annotated[Command, Field(discriminator="type")]).core_schema
        return handler(union)


LiveCallStatus = Literal["ringing", "in_progress", "forwarding", "ending", "ended"]
_LIVE_STATUS: dict[LiveStatus, LiveCallStatus] = {
    LiveStatus.CREATED: "ringing",
    LiveStatus.ACTIVE: "in_progress",
    LiveStatus.TRANSFERRING: "forwarding",
    LiveStatus.ENDING: "ending",
    LiveStatus.ENDED: "ended",
}


class ControlResult(BaseModel):
    call_id: str
    type: CommandType = Field(description="The command carried out.")
    accepted: bool = Field(True, description="Always true: a command that is refused answers an error.")
    status: LiveCallStatus = Field(
        description="The call's status once the command was taken: `end-call` and `transfer` without a "
        "message answer once the call has ended (`ended`); with one, the call goes on while it is spoken."
    )
    end_reason: str | None = Field(None, description="Why the call ended, if it has (`api_ended`, `transferred`).")
    response_triggered: bool | None = Field(
        None, description="`inject-context`: whether the agent started answering at once."
    )


def _registry(app: ChainMapProxy) -> CallRegistry:
    return app[CALLS]


def _settings(app: ChainMapProxy) -> Settings:
    from ringline.api.state import SETTINGS

    return app[SETTINGS]


@routes.post(
    "/calls/{call_id}/control",
    body=ControlCommand,
    response=ControlResult,
    scopes={Scope.CALLS_WRITE},
    call_limited=True,
    errors={404, 409, 502},
    summary="Send a control command to a live call",
)
async def control_call(req: ApiRequest[ControlCommand, None]) -> ControlResult:
    """The call must be in progress on this engine: 409 while it rings, is being transferred or
    ending, and once it has ended. `end-call` and `transfer` without a message answer once the
    call has ended; a transfer the provider refuses then answers 502, and the call goes on (the
    agent tells the caller, the call is in progress again, a `transfer_failed` event and a fault
    are recorded). A transfer this call cannot make at all (Twilio's REST API not configured)
    answers 409."""
    call_id = req.params["call_id"]
    call = _registry(req.app).get(call_id)
    if call is None:
        raise await _not_live(req.app[STORE], call_id)
    command = req.body.command
    triggered: bool | None = None
    refused: str | None = None
    try:
        match command:
            case InjectContextCommand():
                triggered = await call.inject_context(command.content, respond=command.trigger_response)
            case SayCommand():
                await call.say(command.content, end_after=command.end_after)
            case EndCallCommand():
                await call.hang_up(command.message)
                if command.message is None:
                    await _until_ended(call)
            case TransferCommand():
                await call.transfer(command.destination, command.message, command.briefing)
                if command.message is None:
                    refused = await _until_transferred(call)
    except CallNotActive:
        raise Conflict(f"call {call_id} is {_LIVE_STATUS[call.status]}, not in progress") from None
    except TransferFailed as exc:
        raise Conflict(f"call {call_id} cannot be transferred: {exc}") from None
    if isinstance(command, TransferCommand) and refused is not None:
        raise UpstreamFailed(f"the transfer to {command.destination} failed, the call goes on: {refused}")
    reason = call.record.end_reason if call.status is LiveStatus.ENDED else None
    return ControlResult(
        call_id=call_id,
        type=command.type,
        status=_LIVE_STATUS[call.status],
        end_reason=reason.value if reason is not None else None,
        response_triggered=triggered,
    )


async def _not_live(store: Store, call_id: str) -> ApiError:
    try:
        row = await store.get_call(call_id)
    except StoreNotFound:
        return NotFound(f"no call {call_id}")
    if row.status is CallStatus.ENDED:
        return Conflict(f"call {call_id} has ended ({row.end_reason}), it is not in progress")
    if row.status is CallStatus.QUEUED or row.status is CallStatus.RINGING:
        return Conflict(f"call {call_id} is {row.status.value}, not in progress yet")
    return Conflict(f"call {call_id} is {row.status.value} but not live on this engine")


async def _until_ended(call: Call) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(END_WAIT_S):
            await call.wait_ended()


async def _until_transferred(call: Call) -> str | None:
    """Wait for the hand-over: None once done (or still going after ``END_WAIT_S``), else why not."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(END_WAIT_S):
            return await call.wait_transfer()
    return None


# -- outbound calls --------------------------------------------------------------------------------

VariableName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]


class OutboundCallCreate(ApiModel):
    country: CountryCode | None = Field(None, description="How to read a local `to` number.")
    to: str = Field(
        min_length=1,
        max_length=64,
        description="The number to call: international format, or local with `country`. Answered as E.164.",
        examples=["+14155552671"],
    )
    from_: PhoneNumber = Field(
        alias="from",
        description="The caller id: one of your numbers (`/numbers`); its provider (Twilio, Telnyx, Plivo or "
        "Vonage) places the call.",
    )
    agent_id: str | None = Field(
        None,
        min_length=1,
        max_length=100,
        description="The agent that talks: an API agent's id or a config file agent's name. "
        "Default: the `from` number's outbound agent, else the config's default agent.",
    )
    variables: dict[VariableName, Annotated[str, StringConstraints(max_length=1000)]] = Field(
        default_factory=dict,
        max_length=50,
        description="Values of the agent's `{{placeholders}}` for this call.",
    )
    metadata: dict[str, Any] = Field(
        default_factory=dict,
        description="Your data, kept with the call and sent back in its webhooks (at most 16 KiB of JSON).",
    )
    first_name: Name | None = Field(None, description="The callee's first name; also the variable `first_name`.")
    last_name: Name | None = Field(None, description="The callee's last name; also the variable `last_name`.")

    @field_validator("to")
    @classmethod
    def _e164(cls, value: str, info: ValidationInfo) -> str:
        return parse_phone(value, info.data.get("country"))

    @field_validator("metadata")
    @classmethod
    def _small(cls, value: dict[str, Any]) -> dict[str, Any]:
        if len(orjson.dumps(value)) > MAX_METADATA_BYTES:
            raise ValueError(f"more than {MAX_METADATA_BYTES // 1024} KiB of JSON")
        return value


OUTBOUND_PROVIDERS = (
    NumberProvider.TWILIO,
    NumberProvider.TELNYX,
    NumberProvider.PLIVO,
    NumberProvider.VONAGE,
    NumberProvider.SIP,
)
_NEEDS = {
    NumberProvider.TWILIO: "outbound calls need Twilio's REST API: set [telephony.twilio] account_sid and auth_token",
    NumberProvider.TELNYX: "outbound calls from Telnyx numbers need [telephony.telnyx] api_key and connection_id",
    NumberProvider.PLIVO: "outbound calls from Plivo numbers need [telephony.plivo] auth_id and auth_token",
    NumberProvider.VONAGE: "outbound calls from Vonage numbers need [telephony.vonage] application_id and private_key",
}


@routes.post(
    "/calls",
    body=OutboundCallCreate,
    response=CallOut,
    status=201,
    scopes={Scope.CALLS_WRITE},
    errors={502, 503},
    summary="Place an outbound call",
)
async def create_outbound_call(req: ApiRequest[OutboundCallCreate, None]) -> CallOut:
    """The `from` number's provider (Twilio, Telnyx, Plivo or Vonage) dials `to`; the call is answered
    by the agent once the callee picks up. The call is created `queued`, with the provider's call id
    as its id, may become `ringing`, and becomes `in_progress` when its media stream starts. A call
    that never gets that far is ended by the provider's status callback
    (`/telephony/<provider>/status`), its `end_reason` what the provider reported: `busy`,
    `no_answer`, `failed` (also a call answered whose media stream never started) or `cancelled`;
    a `status-update` webhook tells of it, as of every status change. The request is checked first
    (422: `from` must be one of your numbers on one of those providers, the agent must exist); then
    it needs that provider's `[telephony.<provider>]` and `[telephony] public_url` (else 503). The
    provider refusing a number answers 422 with its message; any other refusal or no answer, 502."""
    body = req.body
    settings = _settings(req.app)
    store = req.app[STORE]
    number = await store.find_number(body.from_)
    if number is None:
        raise ValidationFailed("unknown caller id", details={"from": f"{body.from_} is not one of your numbers"})
    if number.provider not in OUTBOUND_PROVIDERS:
        reason = (
            f"{body.from_} is a number on {number.provider.value}; outbound calls are placed through "
            "Twilio, Telnyx, Plivo, Vonage or SIP-trunk numbers"
        )
        raise ValidationFailed("caller id cannot place calls", details={"from": reason})
    try:
        agent_id, agent = await agent_for_call(
            settings, store, {"agent": body.agent_id or number.outbound_agent_id or ""}
        )
    except ConfigError as exc:
        raise ValidationFailed("unknown agent", details={"agent_id": str(exc)}) from None
    names = {k: v for k, v in (("first_name", body.first_name), ("last_name", body.last_name)) if v is not None}
    variables = names | body.variables
    parameters = {"agent": agent_id, "direction": "outbound", "from": body.from_, "to": body.to}
    parameters |= {f"var_{k}": v for k, v in variables.items()}

    async def queue(call_id: str) -> CallRow:
        """The call's row, queued under ``call_id`` (or, if its media started first, completed)."""
        try:
            row = await store.create_call(
                Direction.OUTBOUND,
                id=call_id,
                agent_id=agent_id,
                status=CallStatus.QUEUED,
                from_number=body.from_,
                to_number=body.to,
                metadata=body.metadata,
                variables=variables,
                outbox=req.app[WEBHOOKS].status_update(agent),
            )
            req.app[WEBHOOKS].notify()
        except StoreConflict:  # the media stream started first and recorded the call: add what it lacks
            row = await store.update_call(call_id, metadata=body.metadata, variables=variables)
        return row

    if number.provider is NumberProvider.SIP:
        return call_out(req, await place_sip_call(req.app, number, body.to, parameters, agent, queue))
    provider = req.app[TELEPHONY].get(number.provider.value)
    if provider is None:
        raise NotConfigured(_NEEDS[number.provider])
    if settings.telephony.public_url is None:
        raise NotConfigured(
            f"outbound calls need [telephony] public_url: the address {provider.label} reaches this server at"
        )
    try:
        call_id = await provider.place_call(to=body.to, from_=body.from_, parameters=parameters)
    except ParametersTooLarge as exc:
        raise ValidationFailed("variables too large", details={"variables": str(exc)}) from None
    except TelephonyError as exc:
        if exc.field is not None and exc.provider_message:
            message = exc.provider_message
            raise ValidationFailed(
                f"{provider.label} refused the call: {message}", details={exc.field: message}
            ) from None
        raise UpstreamFailed(f"{provider.label} did not place the call: {exc}") from None
    log.info("outbound call placed through %s", provider.label, extra={"call_id": call_id})
    row = await queue(call_id)
    return call_out(req, await settle_early(req.app, call_id) or row)  # its end may have been reported already
