"""The control API's resources under ``/api/v1``: one module per resource, each an ``ApiRoutes`` table."""

from __future__ import annotations

from ringline.api.http import ApiRoutes
from ringline.api.v1 import agents, analysis, calls, control, deliveries, events, keys, numbers, tools, usage

ROUTES: tuple[ApiRoutes, ...] = (
    agents.routes,
    numbers.routes,
    numbers.trunk_routes,
    tools.routes,
    analysis.routes,
    calls.routes,
    events.routes,
    control.routes,
    usage.routes,
    deliveries.routes,
    keys.routes,
)
"""Every resource's routes, in the order the OpenAPI document lists them."""
