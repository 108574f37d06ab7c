"""Ringline's error hierarchy.

Errors caused by the remote side (a provider socket sending garbage, a SIP peer, a cloud API
answering 5xx) are distinct from our own bugs: the former are expected, logged and survived;
the latter propagate to a task boundary where they end the call with a recorded reason.
"""

from __future__ import annotations


class RinglineError(Exception):
    """Base class of every error Ringline raises on purpose."""


class RemoteProtocolError(RinglineError):
    """The remote side broke its protocol (bad JSON, unknown event, wrong stream id, ...).

    The message is exact and stable: tests assert it, operators grep for it.
    """


class ProviderError(RinglineError):
    """A speech or language provider failed. ``retryable`` tells whether trying again may help."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class ConfigError(RinglineError):
    """A configuration file or value is invalid."""
