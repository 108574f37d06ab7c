"""Phone numbers: parsed by libphonenumber (the ``phonenumbers`` port), stored and answered as E.164.

``PhoneNumber`` is a pydantic type: it accepts an international number with or without separators
(``+1 (415) 555-2671``), checks it is a valid number for its country (not merely the right
length), and normalizes it to E.164 (``+14155552671``). A local number needs its country; models
that accept one take a ``CountryCode`` field beside it and call ``parse_phone(value, country)``
in a validator::

    class NumberCreate(ApiModel):
        number: str
        country: CountryCode | None = None

        @model_validator(mode="after")
        def _e164(self) -> Self:
            self.number = parse_phone(self.number, self.country)
            return self
"""

from __future__ import annotations

from typing import Annotated

import phonenumbers
from pydantic import AfterValidator, BeforeValidator, Field, WithJsonSchema

MAX_INPUT = 64
E164_PATTERN = r"^\+[1-9][0-9]{1,14}$"
_SERIAL = phonenumbers.PhoneNumberFormat.E164


class PhoneNumberError(ValueError):
    """Not a valid phone number; the message says why (pydantic reports it as the field's reason)."""


def parse_phone(value: str, country: str | None = None) -> str:
    """``value`` as E.164. Without ``+`` and a country calling code, ``country`` (ISO 3166-1
    alpha-2, e.g. ``"GB"``) says how to read a local number (``020 7183 8750``)."""
    if not isinstance(value, str):
        raise PhoneNumberError("must be a string")
    if len(value) > MAX_INPUT:
        raise PhoneNumberError(f"too long for a phone number (at most {MAX_INPUT} characters)")
    region = country.upper() if country else None
    if region is not None and region not in phonenumbers.SUPPORTED_REGIONS:
        raise PhoneNumberError(f"unknown country code {country!r}")
    try:
        number = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException as exc:
        if exc.error_type == phonenumbers.NumberParseException.INVALID_COUNTRY_CODE:
            if region is None and not value.strip().startswith("+"):
                raise PhoneNumberError("not in international format: start with + and the country code") from None
            raise PhoneNumberError("unknown country calling code") from None
        raise PhoneNumberError("not a phone number") from None
    if not phonenumbers.is_valid_number(number):
        raise PhoneNumberError("not a valid phone number for its country")
    return phonenumbers.format_number(number, _SERIAL)


def _international(value: object) -> str:
    if not isinstance(value, str):
        raise PhoneNumberError("must be a string")
    return parse_phone(value)


def _country(value: object) -> str:
    if not isinstance(value, str) or value.upper() not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError("not an ISO 3166-1 alpha-2 country code with a phone numbering plan")
    return value.upper()


PhoneNumber = Annotated[
    str,
    BeforeValidator(_international),
    WithJsonSchema(
        {
            "type": "string",
            "minLength": 3,
            "maxLength": MAX_INPUT,
            "description": "A phone number in international format; separators are ignored. Answered as E.164.",
            "examples": ["+14155552671"],
        },
        mode="validation",
    ),
    WithJsonSchema(
        {"type": "string", "pattern": E164_PATTERN, "description": "E.164", "examples": ["+14155552671"]},
        mode="serialization",
    ),
]
"""A valid phone number in international format, normalized to E.164."""

CountryCode = Annotated[
    str,
    AfterValidator(_country),
    Field(min_length=2, max_length=2, description="ISO 3166-1 alpha-2 country code", examples=["US", "GB"]),
]
"""An ISO 3166-1 alpha-2 country that has a numbering plan, uppercased (``gb`` -> ``GB``)."""
