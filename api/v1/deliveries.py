"""Webhook deliveries: what was sent where, each attempt's outcome, and sending one again.

Every webhook goes through the outbox (``api/webhooks``): a delivery is ``pending`` until a receiver
answered 2xx (``delivered``) or it was given up on after ``[webhooks] max_age_h`` (``failed``). Reading
needs ``calls:read`` (a delivery carries call data); redelivering needs ``calls:write`` (``admin`` has both).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from ringline.api.http import ApiRequest, ApiRoutes, Conflict, ListQuery, NotFound, Page, Scope
from ringline.api.state import WEBHOOKS
from ringline.api.store import DeliveryAttempt, OutboxEvent, OutboxItem, OutboxStatus
from ringline.api.store import NotFound as StoreNotFound
from ringline.api.v1.common import store_of
from ringline.config.settings import WebhookEvent

routes = ApiRoutes(tag="webhook-deliveries")

SCAN_LIMIT = 10_000
"""A filter by event type alone looks at this many newest deliveries (the store filters by call and status)."""
_SCAN_PAGE = 500


class DeliveryQuery(ListQuery):
    status: OutboxStatus | None = Field(None, description="Only `pending`, `delivered` or `failed` deliveries.")
    call_id: str | None = Field(None, min_length=1, max_length=200, description="Only this call's deliveries.")
    event: WebhookEvent | None = Field(
        None,
        description="Only this event type. Without `call_id`, only the newest "
        f"{SCAN_LIMIT:,} deliveries (of the `status` asked for) are searched.",
    )


class Attempt(BaseModel):
    at: datetime
    status_code: int | None = Field(description="The receiver's HTTP status; null when no answer came.")
    error: str | None = Field(description="Why it failed: a timeout, a refused connection, the answer's body...")
    duration_ms: float | None


class Delivery(BaseModel):
    id: int = Field(description="Also sent as the `X-Ringline-Delivery` header: receivers de-duplicate on it.")
    call_id: str | None = Field(description="The call the event is about (null once the call is deleted).")
    seq: int = Field(description="1, 2, ... per call: a call's events are delivered in this order.")
    event: str = Field(description="`status-update`, `end-of-call-report`, ...")
    url: str
    status: OutboxStatus
    attempt_count: int = Field(description="Attempts recorded (requests made, or interrupted by a stop).")
    last_status_code: int | None = Field(description="The last attempt's HTTP status.")
    last_error: str | None
    next_attempt_at: datetime | None = Field(description="While pending: when it is tried next.")
    created_at: datetime
    delivered_at: datetime | None


class DeliveryDetail(Delivery):
    payload: dict[str, Any] = Field(description="The JSON body sent.")
    attempts: list[Attempt] = Field(description="Every attempt, oldest first.")


def delivery_out(item: OutboxItem, attempts: list[DeliveryAttempt]) -> Delivery:
    last = attempts[-1] if attempts else None
    return Delivery(
        id=item.id,
        call_id=item.call_id,
        seq=item.seq,
        event=item.type,
        url=item.url,
        status=item.status,
        attempt_count=len(attempts),
        last_status_code=last.status_code if last is not None else None,
        last_error=item.last_error,
        next_attempt_at=item.next_attempt_at if item.status is OutboxStatus.PENDING else None,
        created_at=item.created_at,
        delivered_at=item.delivered_at,
    )


def attempt_out(a: DeliveryAttempt) -> Attempt:
    return Attempt(at=a.at, status_code=a.status_code, error=a.error, duration_ms=a.duration_ms)


async def _get(req: ApiRequest[Any, Any]) -> OutboxItem:
    raw = req.params["delivery_id"]
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise NotFound(f"no delivery {raw}")
    try:
        return await store_of(req).get_delivery(int(raw))
    except StoreNotFound:
        raise NotFound(f"no delivery {raw}") from None


async def _page(req: ApiRequest[None, DeliveryQuery]) -> tuple[list[OutboxItem], int]:
    q, store = req.query, store_of(req)
    if q.event is None:
        page = await store.list_deliveries(call_id=q.call_id, status=q.status, limit=q.limit, offset=q.offset)
        return list(page.items), page.total
    matched: list[OutboxItem] = []
    scanned = 0
    while scanned < SCAN_LIMIT:
        page = await store.list_deliveries(call_id=q.call_id, status=q.status, limit=_SCAN_PAGE, offset=scanned)
        matched += [item for item in page.items if item.type == q.event]
        scanned += len(page.items)
        if len(page.items) < _SCAN_PAGE:
            break
    return matched[q.offset : q.offset + q.limit], len(matched)


@routes.get("/webhook-deliveries", query=DeliveryQuery, response=Delivery, many=True, scopes={Scope.CALLS_READ})
async def list_deliveries(req: ApiRequest[None, DeliveryQuery]) -> Page[Delivery]:
    """List webhook deliveries, newest first."""
    items, total = await _page(req)
    store = store_of(req)
    return Page([delivery_out(item, await store.list_attempts(item.id)) for item in items], total)


@routes.get("/webhook-deliveries/{delivery_id}", response=DeliveryDetail, scopes={Scope.CALLS_READ})
async def get_delivery(req: ApiRequest[None, None]) -> DeliveryDetail:
    """Get a webhook delivery with its body and every attempt."""
    item = await _get(req)
    attempts = await store_of(req).list_attempts(item.id)
    return DeliveryDetail(
        **delivery_out(item, attempts).model_dump(),
        payload=item.payload,
        attempts=[attempt_out(a) for a in attempts],
    )


@routes.post(
    "/webhook-deliveries/{delivery_id}/redeliver",
    response=DeliveryDetail,
    scopes={Scope.CALLS_WRITE},
    status=201,
    errors={409},
)
async def redeliver(req: ApiRequest[None, None]) -> DeliveryDetail:
    """Send a delivered or failed webhook again.

    Queues a new delivery (answered, `201`) with the same event, body and URL, sent at once: after the
    call's events still pending, like any new event of the call. It is signed afresh and has its own id.
    A delivery still pending cannot be redelivered (`409`): it is retried on its own.
    """
    item = await _get(req)
    if item.status is OutboxStatus.PENDING:
        raise Conflict(f"delivery {item.id} is still pending: it will be retried on its own")
    store = store_of(req)
    event = OutboxEvent(type=item.type, payload=item.payload, url=item.url, call_id=item.call_id)
    try:
        (copy,) = await store.enqueue([event])
    except StoreNotFound:  # the call was deleted in between
        (copy,) = await store.enqueue([OutboxEvent(type=item.type, payload=item.payload, url=item.url)])
    if (webhooks := req.app.get(WEBHOOKS)) is not None:
        webhooks.notify()
    return DeliveryDetail(**delivery_out(copy, []).model_dump(), payload=copy.payload, attempts=[])
