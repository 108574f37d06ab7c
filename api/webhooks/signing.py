"""Webhook signatures: how Ringline signs each POST, and how a receiver checks one.

Every webhook carries two headers::

    X-Ringline-Timestamp: 1718000000
    X-Ringline-Signature: v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd

The signature is the hex HMAC-SHA256, keyed with the account's webhook secret (``[webhooks] secret``
or ``$RINGLINE_WEBHOOK_SECRET``), of the timestamp (Unix seconds, as sent), a ``.``, and the raw
request body, byte for byte as received: ``hmac_sha256(secret, b"1718000000." + body)``.
``X-Ringline-Signature`` may hold several comma-separated ``v1=`` values (while a secret is being
rotated); one matching is enough.

A receiver verifies before it parses the body:

1. read the raw body (not a re-serialized JSON document: any re-encoding changes the bytes);
2. recompute the HMAC over ``{timestamp}.{body}`` and compare it in constant time
   (``hmac.compare_digest``);
3. reject a timestamp more than 5 minutes from its own clock, so a captured request cannot be
   replayed later;
4. de-duplicate on ``X-Ringline-Delivery`` (the delivery's id): delivery is at least once, and a
   delivery retried after a timeout may arrive twice.

In Python, ``verify(secret, request.headers, await request.read(), time.time())`` does 2 and 3 and
raises ``SignatureError`` saying why. The other headers: ``X-Ringline-Event`` (the event type),
``X-Ringline-Delivery`` and, for a call's events, ``X-Ringline-Call-Seq`` (1, 2, 3 ... in the order
the call's events happened; they are delivered in that order).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping

TIMESTAMP_HEADER = "X-Ringline-Timestamp"
SIGNATURE_HEADER = "X-Ringline-Signature"
EVENT_HEADER = "X-Ringline-Event"
DELIVERY_HEADER = "X-Ringline-Delivery"
SEQ_HEADER = "X-Ringline-Call-Seq"
SCHEME = "v1"
TOLERANCE_S = 300.0
"""How far a timestamp may be from the receiver's clock (either way) by default."""


class SignatureError(ValueError):
    """A webhook whose signature does not verify; the message says why."""


def signature(secret: str | bytes, timestamp: int, body: bytes) -> str:
    """The hex HMAC-SHA256 of ``{timestamp}.{body}``."""
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, b"%d." % timestamp + body, hashlib.sha256).hexdigest()


def sign(secret: str | bytes, body: bytes, now: float) -> dict[str, str]:
    """The signature headers of a webhook with this ``body`` sent at ``now`` (Unix seconds)."""
    timestamp = int(now)
    return {TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: f"{SCHEME}={signature(secret, timestamp, body)}"}


def verify(
    secret: str | bytes | Iterable[str | bytes],
    headers: Mapping[str, str],
    body: bytes,
    now: float,
    tolerance_s: float = TOLERANCE_S,
) -> int:
    """Check a webhook's signature headers against its raw ``body``; its timestamp on success.

    ``secret`` may be several secrets (any one may have signed); ``headers`` is looked up without
    regard to case; ``now`` is the receiver's clock in Unix seconds. Raises ``SignatureError`` for a
    missing or malformed header, a timestamp more than ``tolerance_s`` from ``now``, or no match."""
    lowered = {k.lower(): v for k, v in headers.items()}
    raw_ts = lowered.get(TIMESTAMP_HEADER.lower())
    raw_sig = lowered.get(SIGNATURE_HEADER.lower())
    if raw_ts is None:
        raise SignatureError(f"missing {TIMESTAMP_HEADER} header")
    if raw_sig is None:
        raise SignatureError(f"missing {SIGNATURE_HEADER} header")
    if not raw_ts.isascii() or not raw_ts.isdigit() or len(raw_ts) > 12:
        raise SignatureError(f"malformed {TIMESTAMP_HEADER} header: want Unix seconds")
    timestamp = int(raw_ts)
    if abs(now - timestamp) > tolerance_s:
        raise SignatureError(f"timestamp {timestamp} is more than {tolerance_s:g} s from now ({int(now)})")
    offered = [v.strip().removeprefix(f"{SCHEME}=") for v in raw_sig.split(",") if v.strip().startswith(f"{SCHEME}=")]
    if not offered:
        raise SignatureError(f"no {SCHEME}= signature in {SIGNATURE_HEADER} header")
    secrets = [secret] if isinstance(secret, str | bytes) else list(secret)
    for key in secrets:
        expected = signature(key, timestamp, body)
        if any(hmac.compare_digest(expected.encode(), sig.encode()) for sig in offered):
            return timestamp
    raise SignatureError("signature does not match")
