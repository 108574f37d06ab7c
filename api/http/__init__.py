"""The control API's HTTP framework: declared routes, API keys and scopes, rate limits, the response
envelope, validation, and the OpenAPI document with its docs page. Resources build on this."""

from ringline.api.http.auth import ALL_SCOPES, KeyLookup, MemoryKeyStore, Principal, Scope, generate_key, hash_key
from ringline.api.http.envelope import Page
from ringline.api.http.errors import (
    ApiError,
    BadRequest,
    Conflict,
    Forbidden,
    NotConfigured,
    NotFound,
    RateLimited,
    Unauthorized,
    UpstreamFailed,
    ValidationFailed,
)
from ringline.api.http.mount import API_STATE, EVENT_TOKENS, ApiOptions, build_api_app, setup_api
from ringline.api.http.phone import CountryCode, PhoneNumber, PhoneNumberError, parse_phone
from ringline.api.http.ratelimit import Decision, RateLimiter
from ringline.api.http.routes import ApiRequest, ApiRoutes, Operation
from ringline.api.http.tokens import EventToken, EventTokenSigner, TokenError
from ringline.api.http.validation import ApiModel, ListQuery

__all__ = [
    "ALL_SCOPES",
    "API_STATE",
    "EVENT_TOKENS",
    "ApiError",
    "ApiModel",
    "ApiOptions",
    "ApiRequest",
    "ApiRoutes",
    "BadRequest",
    "Conflict",
    "CountryCode",
    "Decision",
    "EventToken",
    "EventTokenSigner",
    "Forbidden",
    "KeyLookup",
    "ListQuery",
    "MemoryKeyStore",
    "NotConfigured",
    "NotFound",
    "Operation",
    "Page",
    "PhoneNumber",
    "PhoneNumberError",
    "Principal",
    "RateLimited",
    "RateLimiter",
    "Scope",
    "TokenError",
    "Unauthorized",
    "UpstreamFailed",
    "ValidationFailed",
    "build_api_app",
    "generate_key",
    "hash_key",
    "parse_phone",
    "setup_api",
]
