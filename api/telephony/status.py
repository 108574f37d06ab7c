"""Provider call-status callbacks: the end of calls the media socket never had.

An outbound call is stored ``queued`` under the provider's call id (``POST /api/v1/calls``) and the
media socket takes it over once the callee answers and the stream starts (``CallLedger.opened``).
A call the provider never connects (busy, no answer, failed, cancelled), or one answered whose
stream never reached us, has no media socket to end it; the provider's status events do:

- Twilio: ``StatusCallback`` of the create-call request (``initiated ringing answered completed``),
  ``CallStatus`` in the form;
- Telnyx: ``call.hangup`` with its ``hangup_cause``, among the call's other events at
  ``/telephony/telnyx/inbound`` (the dial's ``webhook_url``; that route hands it here);
- Plivo: the call's ``ring_url`` and ``hangup_url``, ``CallStatus`` in the form;
- Vonage: the call's ``event_url``, ``status`` in the JSON body.

``POST /telephony/{provider}/status`` checks the provider's signature as the inbound webhook does
(403 otherwise), then each provider module reads its own words into a ``CallProgress``
(``twilio_progress``, ``telnyx_progress``, ``plivo_progress``, ``vonage_progress``) and
``record_progress`` applies it:

============  =========================================================================
row           what a status event does
============  =========================================================================
queued        ``ringing``: the row becomes ``ringing``; a final status ends the row with
ringing       its reason (``END_REASONS``); each change queues a ``status-update``
in_progress   nothing: the media socket owns the call and records its end
forwarding    nothing (as ``in_progress``)
ended         nothing: duplicates and late or out-of-order events are harmless
not found     nothing, logged, answered 200; a final status is kept for a moment in case
              the row is still being created (``EarlyProgress``, ``settle_early``)
============  =========================================================================

A call live on this engine (or that was: the registry keeps its record) is the media socket's,
whatever its row says. Every verified callback is answered 200: providers retry an error answer
(Telnyx and Vonage, then go to their failover URL; Twilio logs error 11200), and an id that is not
ours will not become ours by retrying: inbound calls that never reached the socket, Vonage's
WebSocket leg, calls of other applications on the same account.
"""

from __future__ import annotations

import enum
import logging
from collections import OrderedDict
from dataclasses import dataclass

from aiohttp import ChainMapProxy, web

from ringline.api.routing import agent_for_call
from ringline.api.state import CALLS, SETTINGS, STORE, WEBHOOKS
from ringline.api.store import Call, CallStatus, Conflict, NotFound
from ringline.api.telephony import verified_control
from ringline.config.settings import AgentConfig
from ringline.engine.errors import ConfigError

log = logging.getLogger(__name__)

AppState = web.Application | ChainMapProxy


class Progress(enum.StrEnum):
    """How far a call got, in our words."""

    RINGING = "ringing"
    ANSWERED = "answered"
    COMPLETED = "completed"
    """Answered, then over: the media socket's to record, unless the stream never started."""
    BUSY = "busy"
    NO_ANSWER = "no_answer"
    FAILED = "failed"
    CANCELLED = "cancelled"


END_REASONS: dict[Progress, str] = {
    Progress.BUSY: "busy",
    Progress.NO_ANSWER: "no_answer",
    Progress.FAILED: "failed",
    Progress.CANCELLED: "cancelled",
    Progress.COMPLETED: "failed",
}
"""The ``end_reason`` a final status gives a call that never went ``in_progress``. ``completed``
there means the callee answered but the media stream never started (a wrong public URL, a refused
agent): the call failed."""


@dataclass(frozen=True, slots=True)
class CallProgress:
    """One status event of a call, as a provider module read it."""

    call_ids: tuple[str, ...]
    """The provider's ids of the call, the one our row most likely has first (Plivo: the
    ``CallUUID``, then the ``RequestUUID`` an unanswered call is stored under)."""
    progress: Progress
    said: str
    """The provider's own words, for the log: ``CallStatus=busy``, ``hangup_cause=user_busy``."""

    @property
    def final(self) -> bool:
        return self.progress in END_REASONS


class EarlyProgress:
    """The final status of calls not in the store, kept (the last ``limit``) in case the row is
    being created: a provider may report a call that fails at once before ``POST /calls`` has
    stored it. ``POST /calls`` takes what is kept for its call once stored (``settle_early``)."""

    def __init__(self, limit: int = 1024) -> None:
        self._limit = limit
        self._kept: OrderedDict[str, tuple[str, CallProgress]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._kept)

    def keep(self, provider: str, event: CallProgress) -> None:
        for call_id in event.call_ids:
            self._kept[call_id] = (provider, event)
            self._kept.move_to_end(call_id)
        while len(self._kept) > self._limit:
            self._kept.popitem(last=False)

    def take(self, call_id: str) -> tuple[str, CallProgress] | None:
        """The provider and the event kept for ``call_id`` (forgotten under all its ids), if any."""
        kept = self._kept.pop(call_id, None)
        if kept is not None:
            for other in kept[1].call_ids:
                self._kept.pop(other, None)
        return kept


EARLY_PROGRESS = web.AppKey("early_progress", EarlyProgress)


class Applied(enum.StrEnum):
    """What ``record_progress`` did."""

    RINGING = "ringing"
    ENDED = "ended"
    MEDIA = "media"
    """Nothing: the call is (or was) the media socket's."""
    UNCHANGED = "unchanged"
    """Nothing: already ended, or no change this status calls for."""
    UNKNOWN = "unknown"


async def status_webhook(request: web.Request) -> web.Response:
    """``POST /telephony/{provider}/status``: a provider's call-status event."""
    control = await verified_control(request, "status callback")
    event = await control.call_progress(request)
    if event is None:
        log.debug("%s: status callback ignored: not a call status we act on", control.name)
    else:
        await record_progress(request.app, control.name, event)
    return web.Response(status=200)


async def record_progress(app: AppState, provider: str, event: CallProgress) -> Applied:
    """Apply ``event`` to the call's row (see the module's table)."""
    registry = app[CALLS]
    if any(registry.get(i) is not None or registry.find_record(i) is not None for i in event.call_ids):
        log.debug("%s: %s for a call of the media socket: left to it", provider, event.said)
        return Applied.MEDIA
    row = await _find(app, event.call_ids)
    if row is None:
        if event.final:
            app[EARLY_PROGRESS].keep(provider, event)
        log.info("%s: status callback (%s) for call %s, not in the store", provider, event.said, event.call_ids[0])
        return Applied.UNKNOWN
    return await _apply(app, provider, row, event)


async def settle_early(app: AppState, call_id: str) -> Call | None:
    """The call's row once ended by a final status that came before it was stored, if one did."""
    kept = app[EARLY_PROGRESS].take(call_id)
    if kept is None:
        return None
    provider, event = kept
    row = await _find(app, (call_id,))
    if row is None or await _apply(app, provider, row, event) is not Applied.ENDED:
        return None
    return await app[STORE].get_call(call_id)


async def _find(app: AppState, call_ids: tuple[str, ...]) -> Call | None:
    for call_id in call_ids:
        try:
            return await app[STORE].get_call(call_id)
        except NotFound:
            continue
    return None


async def _apply(app: AppState, provider: str, row: Call, event: CallProgress) -> Applied:
    extra = {"call_id": row.id}
    if row.status is CallStatus.ENDED:
        log.debug("%s: %s for a call already ended (%s)", provider, event.said, row.end_reason, extra=extra)
        return Applied.UNCHANGED
    if row.status is not CallStatus.QUEUED and row.status is not CallStatus.RINGING:
        log.debug("%s: %s for a call %s: the media socket's", provider, event.said, row.status.value, extra=extra)
        return Applied.MEDIA
    store, webhooks = app[STORE], app[WEBHOOKS]
    try:
        if event.final:
            reason = END_REASONS[event.progress]
            outbox = webhooks.status_update(await _agent(app, row.agent_id))
            await store.end_call(row.id, reason, outbox=outbox)
            webhooks.notify()
            log.info("%s: call ended before it was in progress: %s (%s)", provider, reason, event.said, extra=extra)
            return Applied.ENDED
        if event.progress is Progress.RINGING and row.status is CallStatus.QUEUED:
            outbox = webhooks.status_update(await _agent(app, row.agent_id))
            await store.update_call_status(row.id, CallStatus.RINGING, outbox=outbox)
            webhooks.notify()
            log.info("%s: call ringing", provider, extra=extra)
            return Applied.RINGING
    except (Conflict, NotFound):  # ended (or moved) since we read it: a duplicate raced us
        log.debug("%s: %s for a call that changed meanwhile", provider, event.said, extra=extra)
    return Applied.UNCHANGED


async def _agent(app: AppState, agent_id: str | None) -> AgentConfig | None:
    """The agent whose webhook settings the call's status-update follows (None: the account's)."""
    if agent_id is None:
        return None
    try:
        return (await agent_for_call(app[SETTINGS], app[STORE], {"agent": agent_id}))[1]
    except ConfigError as exc:
        log.warning("status-update of a call of agent %s goes to the account's URL: %s", agent_id, exc)
        return None
