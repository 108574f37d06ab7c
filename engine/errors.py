"""Ringline's error hierarchy.

Errors caused by the remote side (a provider socket sending garbage, a SIP peer, a cloud API
answering 5xx) are distinct from our own bugs: the former are expected, logged and survived;
the latter propagate to a task boundary where they end the call with a recorded reason.
"""

from __future__ import annotations

import datetime
import email.utils
import math
import time


class RinglineError(Exception):
    """Base class of every error Ringline raises on purpose."""


class RemoteProtocolError(RinglineError):
    """The remote side broke its protocol (bad JSON, unknown event, wrong stream id, ...).

    The message is exact and stable: tests assert it, operators grep for it.
    """


class ProviderError(RinglineError):
    """A speech or language provider failed. ``retryable`` tells whether trying again may help;
    ``retry_after`` (seconds), when the provider said how long to wait (``Retry-After`` of a 429)."""

    def __init__(self, message: str, *, retryable: bool = False, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delay-seconds (``"7"``, also ``"0.5"`` as some
    servers send) or an HTTP-date (relative to ``now``, Unix time; default the wall clock: the
    date is the server's wall clock). None when absent or unreadable; never negative."""
    if value is None or not (value := value.strip()):
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:  # RFC 9110 dates are GMT
            when = when.replace(tzinfo=datetime.UTC)
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


class ConfigError(RinglineError):
    """A configuration file or value is invalid."""
