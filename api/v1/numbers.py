"""Phone numbers and the SIP trunks that carry calls to and from them.

A phone number is stored as E.164 (a local number is read with ``country``), belongs to one telephony
provider, and may name the agent that answers it (``inbound_agent_id``), the agent that calls from it
(``outbound_agent_id``) and, for provider ``sip``, its SIP trunk. A reference to an agent or trunk
that does not exist is a 422 naming the field; a number already registered is a 409, as is deleting
an agent or trunk a number still uses.

A SIP trunk's ``password`` is kept (the engine needs it to authenticate) but never answered:
responses say only ``password_set``.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import datetime
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic.json_schema import SkipJsonSchema

from ringline.api.http import (
    ApiModel,
    ApiRequest,
    ApiRoutes,
    CountryCode,
    ListQuery,
    Page,
    PhoneNumberError,
    Scope,
    ValidationFailed,
    parse_phone,
)
from ringline.api.http.phone import E164_PATTERN
from ringline.api.http.validation import details
from ringline.api.store import NotFound as StoreNotFound
from ringline.api.store import NumberProvider, Store
from ringline.api.store import PhoneNumber as NumberRow
from ringline.api.store import SipTrunk as TrunkRow
from ringline.api.v1.common import field_error, is_mask, merge_patch, omitted, store_of

routes = ApiRoutes(tag="phone-numbers")
trunk_routes = ApiRoutes(tag="sip-trunks")


# ---- phone numbers ---------------------------------------------------------------------------


class PhoneNumberCreate(ApiModel):
    """A phone number to take or place calls on."""

    number: str = Field(
        min_length=1,
        max_length=64,
        description="International format (`+14155552671`; separators are ignored), or a local number with `country`.",
        examples=["+14155552671"],
    )
    country: CountryCode | None = Field(None, description="How to read a local `number`.")
    provider: NumberProvider = Field(description="The telephony provider the number is with.")
    inbound_agent_id: str | None = Field(None, min_length=1, max_length=100, description="Answers calls to it.")
    outbound_agent_id: str | None = Field(None, min_length=1, max_length=100, description="Places calls from it.")
    sip_trunk_id: str | None = Field(None, min_length=1, max_length=100, description="Provider `sip` only.")
    label: str = Field("", max_length=200, description="A name for people.")

    @model_validator(mode="after")
    def _e164(self) -> Self:
        try:
            self.number = parse_phone(self.number, self.country)
        except PhoneNumberError as exc:
            raise field_error("number", self.number, str(exc)) from None
        if self.sip_trunk_id is not None and self.provider is not NumberProvider.SIP:
            raise field_error("sip_trunk_id", self.sip_trunk_id, "only a number of provider sip uses a SIP trunk")
        return self


class PhoneNumberUpdate(ApiModel):
    """The fields to change; `null` unassigns an agent or the trunk."""

    number: Annotated[str, Field(min_length=1, max_length=64)] | SkipJsonSchema[None] = omitted(
        examples=["+14155552671"]
    )
    country: CountryCode | None = Field(None, description="How to read a local `number`.")
    provider: NumberProvider | SkipJsonSchema[None] = omitted()
    inbound_agent_id: str | None = Field(None, min_length=1, max_length=100)
    outbound_agent_id: str | None = Field(None, min_length=1, max_length=100)
    sip_trunk_id: str | None = Field(None, min_length=1, max_length=100)
    label: Annotated[str, Field(max_length=200)] | SkipJsonSchema[None] = omitted()

    @model_validator(mode="after")
    def _e164(self) -> Self:
        for name in ("number", "provider", "label"):
            if name in self.model_fields_set and getattr(self, name) is None:
                raise field_error(name, None, "may not be null")
        if self.country is not None and self.number is None:
            raise field_error("country", self.country, "only with number")
        if self.number is not None:
            try:
                self.number = parse_phone(self.number, self.country)
            except PhoneNumberError as exc:
                raise field_error("number", self.number, str(exc)) from None
        return self


class PhoneNumberQuery(ListQuery):
    agent_id: str | None = Field(None, max_length=100, description="Only numbers this agent answers or calls from.")


class PhoneNumber(BaseModel):
    id: str
    number: str = Field(pattern=E164_PATTERN, description="E.164.", examples=["+14155552671"])
    provider: NumberProvider
    inbound_agent_id: str | None
    outbound_agent_id: str | None
    sip_trunk_id: str | None
    label: str
    created_at: datetime
    updated_at: datetime


def number_out(row: NumberRow) -> PhoneNumber:
    return PhoneNumber(
        id=row.id,
        number=row.number,
        provider=row.provider,
        inbound_agent_id=row.inbound_agent_id,
        outbound_agent_id=row.outbound_agent_id,
        sip_trunk_id=row.sip_trunk_id,
        label=row.label,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


async def _check_references(store: Store, **ids: str | None) -> None:
    """422 naming each given agent or trunk id that names nothing."""
    missing: dict[str, str] = {}
    for field, value in ids.items():
        if value is None:
            continue
        try:
            await (store.get_sip_trunk(value) if field == "sip_trunk_id" else store.get_agent(value))
        except StoreNotFound as exc:
            missing[field] = str(exc)
    if missing:
        raise ValidationFailed("a referenced agent or SIP trunk does not exist", details=missing)


@routes.post(
    "/phone-numbers",
    body=PhoneNumberCreate,
    response=PhoneNumber,
    scopes={Scope.NUMBERS_WRITE},
    status=201,
    errors={409},
)
async def create_phone_number(req: ApiRequest[PhoneNumberCreate, None]) -> PhoneNumber:
    """Register a phone number.

    409 when the number is registered already."""
    body, store = req.body, store_of(req)
    refs = {"inbound_agent_id": body.inbound_agent_id, "outbound_agent_id": body.outbound_agent_id}
    await _check_references(store, **refs, sip_trunk_id=body.sip_trunk_id)
    row = await store.create_number(
        body.number, body.provider, **refs, sip_trunk_id=body.sip_trunk_id, label=body.label
    )
    return number_out(row)


@routes.get("/phone-numbers", query=PhoneNumberQuery, response=PhoneNumber, many=True, scopes={Scope.NUMBERS_READ})
async def list_phone_numbers(req: ApiRequest[None, PhoneNumberQuery]) -> Page[PhoneNumber]:
    """List phone numbers, newest first."""
    q = req.query
    page = await store_of(req).list_numbers(agent_id=q.agent_id, limit=q.limit, offset=q.offset)
    return Page([number_out(row) for row in page.items], page.total)


@routes.get("/phone-numbers/{number_id}", response=PhoneNumber, scopes={Scope.NUMBERS_READ})
async def get_phone_number(req: ApiRequest[None, None]) -> PhoneNumber:
    """Get a phone number."""
    return number_out(await store_of(req).get_number(req.params["number_id"]))


@routes.patch(
    "/phone-numbers/{number_id}",
    body=PhoneNumberUpdate,
    response=PhoneNumber,
    scopes={Scope.NUMBERS_WRITE},
    errors={409},
)
async def update_phone_number(req: ApiRequest[PhoneNumberUpdate, None]) -> PhoneNumber:
    """Update a phone number.

    Only the fields sent change. 409 when the new number is registered already."""
    store, number_id, body = store_of(req), req.params["number_id"], req.body
    row = await store.get_number(number_id)
    sent = body.model_fields_set - {"country"}
    changes: dict[str, Any] = {name: getattr(body, name) for name in sent}
    provider = changes.get("provider", row.provider)
    trunk = changes.get("sip_trunk_id", row.sip_trunk_id)
    if trunk is not None and provider is not NumberProvider.SIP:
        field = "sip_trunk_id" if "sip_trunk_id" in changes else "provider"
        raise ValidationFailed(
            "only a number of provider sip uses a SIP trunk",
            details={field: "only a number of provider sip uses a SIP trunk"},
        )
    refs = {k: v for k, v in changes.items() if k in ("inbound_agent_id", "outbound_agent_id", "sip_trunk_id")}
    await _check_references(store, **refs)
    row = await store.update_number(number_id, **changes)
    return number_out(row)


@routes.delete("/phone-numbers/{number_id}", scopes={Scope.NUMBERS_WRITE})
async def delete_phone_number(req: ApiRequest[None, None]) -> None:
    """Delete a phone number."""
    await store_of(req).delete_number(req.params["number_id"])


# ---- SIP trunks ------------------------------------------------------------------------------

_HOSTNAME = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?"
)
_PROXY = re.compile(r"(?:sips?:)?(?P<host>\[[^\]]{1,64}\]|[^:\[\]/\s;@]{1,253})(?::(?P<port>[0-9]{1,5}))?")
DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061}


def _check_host(value: str) -> str:
    literal = value[1:-1] if value.startswith("[") and value.endswith("]") else value
    try:
        ipaddress.ip_address(literal)
    except ValueError:
        if literal != value or not _HOSTNAME.fullmatch(value):
            raise ValueError("not a host name or IP address") from None
    return value


class SipTrunkConfig(ApiModel):
    """How to reach a SIP trunk and authenticate to it."""

    host: str = Field(min_length=1, max_length=253, description="The trunk's host name or IP address.")
    port: int | None = Field(None, ge=1, le=65535, description="Default: 5060, or 5061 over TLS.")
    transport: Literal["udp", "tcp", "tls"] = "udp"
    username: str | None = Field(None, min_length=1, max_length=128, description="For digest authentication.")
    password: SecretStr | None = Field(None, min_length=1, max_length=256, description="Never answered back.")
    codecs: list[Literal["PCMU", "PCMA"]] = Field(
        default_factory=lambda: ["PCMU", "PCMA"], min_length=1, max_length=2, description="In order of preference."
    )
    outbound_proxy: str | None = Field(
        None, max_length=300, description="Send requests through this proxy: `host[:port]` or a `sip:` URI."
    )
    registration: bool = Field(False, description="Register with the trunk (needs `username` and `password`).")
    allowed_addresses: list[str] = Field(
        default_factory=list,
        max_length=50,
        description="Addresses or CIDR blocks the trunk calls in from, let in without digest (besides `host` when "
        "it is an IP address).",
        examples=[["203.0.113.0/24"]],
    )

    @field_validator("allowed_addresses")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or CIDR block") from None
        return value

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        return _check_host(value)

    @field_validator("outbound_proxy")
    @classmethod
    def _proxy(cls, value: str | None) -> str | None:
        if value is None:
            return None
        match = _PROXY.fullmatch(value)
        if match is None or (match["port"] and not 1 <= int(match["port"]) <= 65535):
            raise ValueError("not host[:port] or a sip: URI of one")
        _check_host(match["host"])
        return value

    @field_validator("codecs")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("each codec once")
        return value

    @model_validator(mode="after")
    def _credentials(self) -> Self:
        if self.registration and (self.username is None or self.password is None):
            raise field_error("registration", True, "needs username and password")
        return self

    def document(self) -> dict[str, Any]:
        """What the store keeps: the fields given (defaults stay defaults), the password in clear."""
        doc = self.model_dump(mode="json", exclude_unset=True)
        if self.password is not None and "password" in doc:
            doc["password"] = self.password.get_secret_value()
        return doc


class SipTrunkCreate(ApiModel):
    name: str = Field(min_length=1, max_length=200)
    config: SipTrunkConfig


class SipTrunkUpdate(ApiModel):
    """`config` is a JSON merge patch: only the fields sent change, `null` resets one to its default."""

    name: Annotated[str, Field(min_length=1, max_length=200)] | SkipJsonSchema[None] = omitted()
    config: dict[str, Any] | SkipJsonSchema[None] = omitted()

    @model_validator(mode="after")
    def _not_null(self) -> Self:
        for name in ("name", "config"):
            if name in self.model_fields_set and getattr(self, name) is None:
                raise field_error(name, None, "may not be null")
        return self


class SipTrunkSettings(BaseModel):
    """A trunk's configuration as answered: defaults filled, no password."""

    host: str
    port: int
    transport: Literal["udp", "tcp", "tls"]
    username: str | None
    password_set: bool
    codecs: list[Literal["PCMU", "PCMA"]]
    outbound_proxy: str | None
    registration: bool
    allowed_addresses: list[str]


class SipTrunk(BaseModel):
    id: str
    name: str
    config: SipTrunkSettings
    created_at: datetime
    updated_at: datetime


class SipTrunkQuery(ListQuery):
    pass


def trunk_out(row: TrunkRow) -> SipTrunk:
    config = SipTrunkConfig.model_validate(row.config)
    settings = SipTrunkSettings(
        **config.model_dump(exclude={"password", "port"}),
        port=config.port or DEFAULT_PORTS[config.transport],
        password_set=config.password is not None,
    )
    return SipTrunk(id=row.id, name=row.name, config=settings, created_at=row.created_at, updated_at=row.updated_at)


@trunk_routes.post("/sip-trunks", body=SipTrunkCreate, response=SipTrunk, scopes={Scope.NUMBERS_WRITE}, status=201)
async def create_sip_trunk(req: ApiRequest[SipTrunkCreate, None]) -> SipTrunk:
    """Create a SIP trunk."""
    row = await store_of(req).create_sip_trunk(req.body.name, req.body.config.document())
    return trunk_out(row)


@trunk_routes.get("/sip-trunks", query=SipTrunkQuery, response=SipTrunk, many=True, scopes={Scope.NUMBERS_READ})
async def list_sip_trunks(req: ApiRequest[None, SipTrunkQuery]) -> Page[SipTrunk]:
    """List SIP trunks, newest first."""
    page = await store_of(req).list_sip_trunks(limit=req.query.limit, offset=req.query.offset)
    return Page([trunk_out(row) for row in page.items], page.total)


@trunk_routes.get("/sip-trunks/{trunk_id}", response=SipTrunk, scopes={Scope.NUMBERS_READ})
async def get_sip_trunk(req: ApiRequest[None, None]) -> SipTrunk:
    """Get a SIP trunk."""
    return trunk_out(await store_of(req).get_sip_trunk(req.params["trunk_id"]))


@trunk_routes.patch("/sip-trunks/{trunk_id}", body=SipTrunkUpdate, response=SipTrunk, scopes={Scope.NUMBERS_WRITE})
async def update_sip_trunk(req: ApiRequest[SipTrunkUpdate, None]) -> SipTrunk:
    """Update a SIP trunk.

    A masked `password` (`****`) keeps the current one."""
    store, trunk_id, body = store_of(req), req.params["trunk_id"], req.body
    row = await store.get_sip_trunk(trunk_id)
    if "name" in body.model_fields_set and body.name is None:
        raise ValidationFailed("invalid request body", details={"name": "may not be null"})
    changes: dict[str, Any] = {"name": body.name} if body.name is not None else {}
    if body.config is not None:
        patch = dict(body.config)
        if is_mask(patch.get("password")):
            del patch["password"]
        try:
            config = SipTrunkConfig.model_validate(merge_patch(row.config, patch))
        except ValidationError as exc:
            raise ValidationFailed("invalid SIP trunk configuration", details=details(exc, "config.")) from None
        changes["config"] = config.document()
    row = await store.update_sip_trunk(trunk_id, **changes)
    return trunk_out(row)


@trunk_routes.delete("/sip-trunks/{trunk_id}", scopes={Scope.NUMBERS_WRITE}, errors={409})
async def delete_sip_trunk(req: ApiRequest[None, None]) -> None:
    """Delete a SIP trunk.

    Refused (409) while a phone number uses it."""
    await store_of(req).delete_sip_trunk(req.params["trunk_id"])
