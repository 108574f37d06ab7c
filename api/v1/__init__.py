"""The control API's resources under ``/api/v1``: one module per resource, each an ``ApiRoutes`` table."""

from __future__ import annotations

from ringline.api.http import ApiRoutes

ROUTES: tuple[ApiRoutes, ...] = ()
"""Every resource's routes, in the order the OpenAPI document lists them."""
