"""Webhooks: call events POSTed, signed, to the account's or the agent's receiver, from a durable outbox.

``targets`` says where an event goes (``webhook_url``, ``outbox_event``); ``signing`` signs and
verifies; ``dispatcher`` delivers what the outbox holds, in order per call, with retries."""

from ringline.api.webhooks.dispatcher import WebhookDispatcher
from ringline.api.webhooks.signing import SignatureError, sign, verify
from ringline.api.webhooks.targets import (
    EVENT_TYPES,
    CallWebhooks,
    outbox_event,
    restart_outbox,
    status_payload,
    webhook_url,
)

__all__ = [
    "EVENT_TYPES",
    "CallWebhooks",
    "SignatureError",
    "WebhookDispatcher",
    "outbox_event",
    "restart_outbox",
    "sign",
    "status_payload",
    "verify",
    "webhook_url",
]
