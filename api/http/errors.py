"""The control API's errors: each is one HTTP status with a stable code and an exact message.

A handler raises one of these; the middleware turns it into the error envelope
(``{"success": false, "error": message, "code": code, "details": {...}, "meta": {...}}``).
Anything else that escapes a handler is our bug: it becomes a 500 with a generic message.
"""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus

from ringline.engine.errors import RinglineError


class ApiError(RinglineError):
    """An error the API answers on purpose. ``details`` maps a dotted field path to a reason."""

    status: int = 400
    code: str = "bad_request"

    def __init__(
        self,
        message: str,
        *,
        details: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = dict(details or {})
        self.headers = dict(headers or {})


class BadRequest(ApiError):
    """The request is unreadable (invalid JSON, a body that is not an object)."""

    status, code = 400, "bad_request"


class Unauthorized(ApiError):
    """No API key, a malformed one, or one that is unknown or revoked."""

    status, code = 401, "unauthorized"

    def __init__(self, message: str, **kw) -> None:
        super().__init__(message, **kw)
        self.headers.setdefault("WWW-Authenticate", 'Bearer realm="ringline"')


class Forbidden(ApiError):
    """A valid key without the scope the endpoint needs."""

    status, code = 403, "forbidden"


class NotFound(ApiError):
    status, code = 404, "not_found"


class Conflict(ApiError):
    """The request clashes with the current state (a duplicate name, a call already ended)."""

    status, code = 409, "conflict"


class ValidationFailed(ApiError):
    """A field is missing, unknown, of the wrong type, out of range or not in its enum."""

    status, code = 422, "validation_error"


class RateLimited(ApiError):
    """Too many requests; ``retry_after`` is in whole seconds (at least 1)."""

    status, code = 429, "rate_limited"

    def __init__(self, message: str, *, retry_after: int, **kw) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after
        self.headers["Retry-After"] = str(retry_after)


class UpstreamFailed(ApiError):
    """A provider we called for the request (telephony) refused it or did not answer."""

    status, code = 502, "upstream_error"


class NotConfigured(ApiError):
    """The server lacks the configuration the request needs."""

    status, code = 503, "not_configured"


class InternalError(ApiError):
    """Only built by the middleware for an unexpected exception; never raised by handlers."""

    status, code = 500, "internal_error"


def code_for_status(status: int) -> str:
    """The stable code of a status raised by aiohttp itself (404 -> ``not_found``, 405 -> ...)."""
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "error"


#: Statuses the API may answer with, for the OpenAPI document's error responses.
ERROR_DESCRIPTIONS: dict[int, str] = {
    400: "The request could not be read (invalid JSON).",
    401: "No API key, or the key is malformed, unknown or revoked.",
    403: "The API key lacks the scope this endpoint needs.",
    404: "No such resource.",
    409: "The request conflicts with the resource's current state.",
    413: "The request body is too large.",
    422: "A field is invalid; `details` maps each dotted field path to its reason.",
    429: "Too many requests; retry after `Retry-After` seconds.",
    500: "An unexpected error on our side; quote `meta.request_id` when reporting it.",
    502: "A provider the request needed (telephony) refused it or did not answer; `error` says why.",
    503: "The server is not configured for this request; `error` says what is missing.",
}
