"""Delivering the webhook outbox: one task per app claims due events, POSTs each signed, and records the outcome.

Guarantees (with the store's outbox, ``api/store/outbox.py``):

- **Nothing is lost.** Events are written to the outbox in the transaction of the change that caused
  them; an event leaves it only delivered (a 2xx answer) or given up on (``failed``) once it is
  ``max_age_h`` old. A claim is a lease: events claimed by a process that died come back when it runs out.
  Stopping cleanly hands back what was claimed and not finished, to be sent at once by the next start.
- **In order per call.** The store hands out only the oldest pending event of each call, so event N+1
  of a call is not sent before N is delivered (or given up on). Delivery is at least once: a receiver
  de-duplicates on ``X-Ringline-Delivery``.
- **Calls never wait.** Deliveries are bounded: ``max_in_flight`` at once in all, ``max_in_flight_per_url``
  to one receiver, each at most ``timeout_s``. Claimed events wait in their receiver's lane (memory only,
  at most ``HELD_PER_IN_FLIGHT * max_in_flight`` in all), so a slow or dead receiver backs up its own lane,
  not the others'. An event that waits in its lane past its lease is claimed again by this process (which
  keeps it where it is: the claim only extends the lease and counts one more attempt).
- **Retries back off** exponentially with full jitter: attempt n waits a random time up to
  ``min(backoff_cap_s, backoff_base_s * 2**(n-1))``; any non-2xx answer, timeout or connection error is retried.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import logging
import random
import ssl
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Self

import aiohttp

from ringline.api.store import Conflict, DeliveryAttempt, NotFound, OutboxItem, OutboxStatus, StoreError
from ringline.api.store.base import OutboxStore
from ringline.api.store.records import utcnow
from ringline.api.webhooks.signing import DELIVERY_HEADER, EVENT_HEADER, SEQ_HEADER, sign
from ringline.api.webhooks.targets import CallWebhooks
from ringline.config.settings import WebhookConfig

log = logging.getLogger(__name__)

USER_AGENT = "Ringline-Webhooks/1"
ERROR_BODY_CHARS = 200
"""How much of a failed answer's body is kept as its error."""
MAX_READ_BYTES = 64 * 1024
"""A 2xx answer's body up to this size is read out (and ignored) so its connection can be reused."""
HELD_PER_IN_FLIGHT = 64
"""Claimed events held in memory (in flight or waiting in their lane), per delivery in flight allowed."""


def backoff_s(attempt: int, base_s: float, cap_s: float, rand: Callable[[], float] = random.random) -> float:
    """Seconds to wait after failed attempt ``attempt`` (1, 2, ...): full jitter, ``[0, min(cap, base * 2**(n-1))]``."""
    ceiling = min(cap_s, base_s * 2.0 ** min(max(attempt - 1, 0), 62))
    return rand() * ceiling


def lease_s(config: WebhookConfig) -> float:
    """How long a claim holds events: a few attempts' time (a claim of events still waiting extends it).
    Events a process that died had claimed are sent again this long after."""
    return 6 * config.timeout_s


@dataclass(slots=True)
class _Lane:
    """The events claimed for one receiver URL: waiting, and how many are in flight."""

    waiting: deque[OutboxItem] = field(default_factory=deque)
    in_flight: int = 0


class WebhookDispatcher:
    """Delivers the outbox of ``store``. ``async with`` (or ``start()``/``aclose()``) runs it.

    ``webhooks`` wakes it as soon as events are written (without it, or for events written by other
    processes, it looks every ``poll_s``). ``clock`` is the wall clock it reads the outbox by."""

    def __init__(
        self,
        store: OutboxStore,
        config: WebhookConfig,
        *,
        webhooks: CallWebhooks | None = None,
        clock: Callable[[], datetime] = utcnow,
        tls: ssl.SSLContext | None = None,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._store = store
        self._config = config
        self._webhooks = webhooks
        self._clock = clock
        self._tls = tls
        self._rand = rand
        self._secret = config.secret.get_secret_value().encode() if config.secret is not None else None
        self._lease_s = lease_s(config)
        self._per_url = config.max_in_flight_per_url
        self._max_held = config.max_in_flight * HELD_PER_IN_FLIGHT
        self._wake = asyncio.Event()
        self._lanes: dict[str, _Lane] = {}
        self._held: dict[int, OutboxItem] = {}
        """Claimed and not finished (waiting in a lane or being sent or marked)."""
        self._sending: dict[int, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._in_flight = 0
        self._retries: list[datetime] = []
        """When retries this process scheduled fall due (a heap): the loop wakes for them."""
        self._session: aiohttp.ClientSession | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._unlisten: Callable[[], None] | None = None
        self._closing = False
        self._claims = 0
        self._quiet_after = -1
        """The number of the last claim that found nothing due, with nothing held (-1: busy)."""
        self._settled = asyncio.Event()
        self.delivered = 0
        self.failed = 0

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def start(self) -> None:
        if self._loop_task is not None:
            raise RuntimeError("the webhook dispatcher is already running")
        connector = aiohttp.TCPConnector(limit=self._config.max_in_flight, limit_per_host=0, ssl=self._tls or True)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self._config.timeout_s),
            headers={"User-Agent": USER_AGENT},
        )
        if self._webhooks is not None:
            self._unlisten = self._webhooks.listen(self.wake)
        self._loop_task = asyncio.create_task(self._run(), name="webhook-dispatcher")

    def wake(self) -> None:
        """Look at the outbox now (events were written)."""
        self._wake.set()

    async def drain(self, timeout_s: float) -> bool:
        """Deliver what is due now (say, the last events of calls that just ended) for up to ``timeout_s``;
        whether nothing due was left. Events retried later stay in the outbox for the next start."""
        start = self._claims
        self.wake()
        try:
            async with asyncio.timeout(timeout_s):
                while self._quiet_after <= start:
                    self._settled.clear()
                    await self._settled.wait()
        except TimeoutError:
            return False
        return True

    async def aclose(self) -> None:
        """Stop: cancel the requests in flight, let outcomes being written finish, and hand back every
        event claimed and not finished (due at once, for the next start)."""
        self._closing = True
        if self._unlisten is not None:
            self._unlisten()
            self._unlisten = None
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
            self._loop_task = None
        for task in self._sending.values():
            task.cancel()
        while self._tasks:
            await asyncio.gather(*tuple(self._tasks), return_exceptions=True)
        now = self._clock()
        for item in list(self._held.values()):
            attempt = DeliveryAttempt(at=now, error="interrupted: the webhook dispatcher stopped")
            await self._mark(item, self._store.mark_retry(item.id, attempt, now))
        self._held.clear()
        self._lanes.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    # ---- claiming ---------------------------------------------------------------------------

    async def _run(self) -> None:
        batch = 2 * self._config.max_in_flight
        while True:
            self._wake.clear()
            now = self._clock()
            self._claims += 1
            claim = self._claims
            limit = min(batch, self._max_held - len(self._held))
            try:
                items = await self._store.claim_due(now, limit, lease_s=self._lease_s) if limit > 0 else []
            except StoreError as exc:
                log.error("webhook outbox: cannot claim due events: %s", exc)
                items = []
            self._quiet_after = claim if not items and not self._held else -1
            self._settled.set()
            while self._retries and self._retries[0] <= now:
                heapq.heappop(self._retries)
            for item in items:
                self._accept(item)
            if len(items) < limit or limit <= 0:
                await self._idle()
            else:
                await asyncio.sleep(0)  # more may be due: claim again, letting the calls run first

    async def _idle(self) -> None:
        """Until woken, the next retry this process scheduled falls due, or ``poll_s``."""
        wait = self._config.poll_s
        if self._retries:
            wait = min(wait, max(0.0, (self._retries[0] - self._clock()).total_seconds()))
        try:
            async with asyncio.timeout(wait):
                await self._wake.wait()
        except TimeoutError:
            pass

    def _accept(self, item: OutboxItem) -> None:
        if item.id in self._held:  # our own claim, claimed again after its lease: still in its lane
            return
        self._held[item.id] = item
        self._lanes.setdefault(item.url, _Lane()).waiting.append(item)
        self._pump()

    def _pump(self) -> None:
        """Start what the bounds allow, a lane at a time in turn."""
        started = True
        while started and self._in_flight < self._config.max_in_flight:
            started = False
            for url, lane in list(self._lanes.items()):
                if self._in_flight >= self._config.max_in_flight:
                    break
                if lane.waiting and lane.in_flight < self._per_url:
                    self._start(url, lane, lane.waiting.popleft())
                    started = True
                elif not lane.waiting and not lane.in_flight:
                    del self._lanes[url]

    def _start(self, url: str, lane: _Lane, item: OutboxItem) -> None:
        lane.in_flight += 1
        self._in_flight += 1
        task = asyncio.create_task(self._guarded(item), name=f"webhook-{item.id}")
        self._tasks.add(task)

        def done(task: asyncio.Task[None]) -> None:
            self._tasks.discard(task)
            lane.in_flight -= 1
            self._in_flight -= 1
            if not self._closing:
                self._pump()

        task.add_done_callback(done)

    # ---- delivering -------------------------------------------------------------------------

    async def _guarded(self, item: OutboxItem) -> None:
        """The task boundary of one delivery: a bug is logged, and the event is taken again after its lease."""
        try:
            await self._deliver(item)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("webhook %d: delivery failed unexpectedly", item.id, extra={"call_id": item.call_id})
            self._held.pop(item.id, None)

    async def _deliver(self, item: OutboxItem) -> None:
        now = self._clock()
        deadline = item.created_at + timedelta(hours=self._config.max_age_h)
        if now >= deadline:
            attempt = DeliveryAttempt(at=now, error=f"gave up: not delivered within {self._config.max_age_h:g} h")
            await self._mark(item, self._store.mark_failed(item.id, attempt), failed=True)
            return
        if self._secret is None:
            error = "not sent: no webhook secret (set [webhooks] secret or RINGLINE_WEBHOOK_SECRET), events go signed"
            await self._mark(item, self._store.mark_failed(item.id, DeliveryAttempt(at=now, error=error)), failed=True)
            return
        task = asyncio.current_task()
        assert task is not None
        self._sending[item.id] = task
        try:
            attempt = await self._post(item, now)
        finally:
            del self._sending[item.id]
        if attempt.status_code is not None and 200 <= attempt.status_code < 300:
            await self._mark(item, self._store.mark_delivered(item.id, attempt))
            return
        retry_at = self._clock() + timedelta(
            seconds=backoff_s(item.attempts, self._config.backoff_base_s, self._config.backoff_cap_s, self._rand)
        )
        extra = {"call_id": item.call_id}
        if retry_at >= deadline:
            log.warning("webhook %d to %s failed for good: %s", item.id, item.url, _why(attempt), extra=extra)
            await self._mark(item, self._store.mark_failed(item.id, attempt), failed=True)
            return
        log.info("webhook %d to %s failed (%s); retry at %s", item.id, item.url, _why(attempt), retry_at, extra=extra)
        await self._mark(item, self._store.mark_retry(item.id, attempt, retry_at))
        heapq.heappush(self._retries, retry_at)
        self._wake.set()

    async def _post(self, item: OutboxItem, now: datetime) -> DeliveryAttempt:
        assert self._session is not None and self._secret is not None
        body = json.dumps(item.payload, separators=(",", ":"), ensure_ascii=False).encode()
        headers = {
            "Content-Type": "application/json",
            EVENT_HEADER: item.type,
            DELIVERY_HEADER: str(item.id),
            **sign(self._secret, body, now.timestamp()),
        }
        if item.call_id is not None:
            headers[SEQ_HEADER] = str(item.seq)
        loop = asyncio.get_running_loop()
        start = loop.time()
        status, error = None, None
        try:
            async with self._session.post(item.url, data=body, headers=headers, allow_redirects=False) as resp:
                status = resp.status
                if not 200 <= status < 300:
                    text = (await resp.content.read(ERROR_BODY_CHARS)).decode(errors="replace").strip()
                    error = f"HTTP {status}: {text}" if text else None
                elif resp.content_length is not None and resp.content_length <= MAX_READ_BYTES:
                    await resp.read()  # read out, the connection is kept for the next delivery
        except TimeoutError:
            error = f"no answer within {self._config.timeout_s:g} s"
        except aiohttp.ClientError as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        except (OSError, ValueError) as exc:  # a URL aiohttp cannot use, a refused socket
            error = f"{type(exc).__name__}: {exc}"
        duration_ms = round((loop.time() - start) * 1000, 3)
        return DeliveryAttempt(at=now, status_code=status, error=error, duration_ms=duration_ms)

    async def _mark(self, item: OutboxItem, outcome: Awaitable[OutboxItem], *, failed: bool = False) -> None:
        """Write an outcome; the event is no longer ours whatever happens (a write that failed leaves it
        claimed: it is taken again when its lease ends)."""
        try:
            marked = await outcome
        except (Conflict, NotFound) as exc:  # finished meanwhile by another process, or deleted
            log.info("webhook %d: %s", item.id, exc)
        except StoreError as exc:
            log.error("webhook %d: cannot record its outcome: %s", item.id, exc, extra={"call_id": item.call_id})
        else:
            if marked.status is OutboxStatus.DELIVERED:
                self.delivered += 1
            elif failed:
                self.failed += 1
        finally:
            self._held.pop(item.id, None)
        if not self._closing:
            self._wake.set()  # the call's next event can go; a drain looks again


def _why(attempt: DeliveryAttempt) -> str:
    return attempt.error or f"HTTP {attempt.status_code}"
